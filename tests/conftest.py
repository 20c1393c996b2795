"""Shared fixtures: a fresh demo world served over real HTTP on 127.0.0.1, a DuckDB file in tmp_path; and one
world per module for tests that only read from it."""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import pytest
from playwright.sync_api import Browser, sync_playwright

from cx_pipeline.simulator import Simulator, World, build_world
from tests.helpers import TOKEN, WORLD_NOW, nodes, resources

SMALL_WORLD_SKUS = 300  # large enough for every kind of receipt, small enough for a fast suite


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that drives a browser is slow too (`pytest -m "not slow"` leaves it out of the fast loop)."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def small_world() -> World:
    return build_world(seed=7, n_skus=SMALL_WORLD_SKUS, now=WORLD_NOW)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A fresh world of the test's own: for a test that injects faults, moves the clock or writes (a run that
    pushes to the storefront or sends notices), and for one that counts requests."""
    with Simulator(world=small_world(), token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    """One world served for a whole module; take it through `sim_readonly`, which checks it is left as found."""
    with Simulator(world=small_world(), token=TOKEN) as server:
        yield server


@pytest.fixture
def sim_readonly(shared_sim: Simulator) -> Iterator[Simulator]:
    """The module's shared world, for a test that only reads from it: no fault, no clock move, no write, and no
    assertion on the request counts (they hold the other tests' requests too). Fails the test that changed it."""
    world = shared_sim.world
    clock, notices = world.clock_seconds, len(world.notifications)
    storefront = {sku: dict(state) for sku, state in world.storefront.items()}
    yield shared_sim
    left = shared_sim.faults.active()
    shared_sim.faults.clear()  # so that only the test that left them fails
    assert left == [], "a test on the shared simulator left faults behind: use `sim`"
    assert world.clock_seconds == clock, "a test on the shared simulator moved its clock: use `sim`"
    assert world.storefront == storefront and len(world.notifications) == notices, (
        "a test on the shared simulator wrote to it: use `sim`"
    )


@pytest.fixture
def warehouse_path(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


Runner = Callable[..., dg.ExecuteInProcessResult]


def ingest(sim: Simulator, warehouse_path: Path, extra: tuple = (), **api: object) -> dg.ExecuteInProcessResult:
    """Materialize every raw feed and its contract check (plus `extra` assets) against the simulator."""
    return dg.materialize(
        [*nodes("ingest"), *extra], resources=resources(sim, warehouse_path, **api), raise_on_error=False
    )


def run_everything(
    sim: Simulator, warehouse_path: Path, config: dict[str, dict] | None = None, **replaced: object
) -> dg.ExecuteInProcessResult:
    """Materialize the whole graph against the simulator. `config` is per-asset config by asset name;
    `replaced` replaces some of the simulator-bound resources (e.g. a misconfigured storefront)."""
    return dg.materialize(
        nodes(),
        resources={**resources(sim, warehouse_path), **replaced},
        run_config={"ops": {name: {"config": c} for name, c in (config or {}).items()}},
        raise_on_error=False,
    )


class SharedRun(NamedTuple):
    result: dg.ExecuteInProcessResult
    warehouse_path: Path  # the app store is app.sqlite beside it
    world: World


def first_run(directory: Path, prepare: Callable[[World, Path], object] | None = None) -> SharedRun:
    """The whole graph run once on a fresh small world into `directory`, `prepare(world, warehouse_path)` first:
    for a module-scoped fixture whose tests only read what the run left (its server is gone afterwards)."""
    warehouse_path = directory / "warehouse.duckdb"
    with Simulator(world=small_world(), token=TOKEN) as sim:
        if prepare is not None:
            prepare(sim.world, warehouse_path)
        return SharedRun(run_everything(sim, warehouse_path), warehouse_path, sim.world)


@pytest.fixture
def run_pipeline(sim: Simulator, warehouse_path: Path) -> Runner:
    """`ingest` against the test's own simulator."""

    def run(extra: tuple[dg.AssetsDefinition, ...] = (), **api: object) -> dg.ExecuteInProcessResult:
        return ingest(sim, warehouse_path, extra, **api)

    return run


@pytest.fixture
def run_pipeline_readonly(sim_readonly: Simulator, warehouse_path: Path) -> Runner:
    """`ingest` against the module's shared simulator (ingest only reads from it), into the test's own warehouse."""

    def run(extra: tuple[dg.AssetsDefinition, ...] = (), **api: object) -> dg.ExecuteInProcessResult:
        return ingest(sim_readonly, warehouse_path, extra, **api)

    return run


@pytest.fixture
def run_all(sim: Simulator, warehouse_path: Path) -> Runner:
    """`run_everything` against the test's own simulator (a run writes to it: the push, the notices)."""

    def run(config: dict[str, dict] | None = None, **replaced: object) -> dg.ExecuteInProcessResult:
        return run_everything(sim, warehouse_path, config, **replaced)

    return run


# Flags for a root sandbox without network: no sandbox, no background calls home (refused here).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")  # per module: Playwright's sync API holds the main thread's event loop
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright (which never downloads a browser of its own)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("the browser tests need Debian's chromium: `apt-get install chromium` (.ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
