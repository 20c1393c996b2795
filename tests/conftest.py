"""Shared fixtures: a fresh demo world served over real HTTP on 127.0.0.1, a DuckDB file in tmp_path."""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Browser, sync_playwright

from cx_pipeline.simulator import Simulator, build_world
from tests.helpers import TOKEN, WORLD_NOW, nodes, resources

SMALL_WORLD_SKUS = 300  # large enough for every kind of receipt, small enough for a fast suite


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that drives a browser is slow too (`pytest -m "not slow"` leaves it out of the fast loop)."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(world=build_world(seed=7, n_skus=SMALL_WORLD_SKUS, now=WORLD_NOW), token=TOKEN) as server:
        yield server


@pytest.fixture
def warehouse_path(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


Runner = Callable[..., dg.ExecuteInProcessResult]


@pytest.fixture
def run_pipeline(sim: Simulator, warehouse_path: Path) -> Runner:
    """Materialize every raw feed and its contract check (plus `extra` assets) against the simulator."""

    def run(extra: tuple[dg.AssetsDefinition, ...] = (), **api: object) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [*nodes("ingest"), *extra],
            resources=resources(sim, warehouse_path, **api),
            raise_on_error=False,
        )

    return run


@pytest.fixture
def run_all(sim: Simulator, warehouse_path: Path) -> Runner:
    """Materialize the whole graph against the simulator. `config` is per-asset config by asset name;
    `resources` replaces some of the simulator-bound resources (e.g. a misconfigured storefront)."""

    def run(config: dict[str, dict] | None = None, **replaced: object) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            nodes(),
            resources={**resources(sim, warehouse_path), **replaced},
            run_config={"ops": {name: {"config": c} for name, c in (config or {}).items()}},
            raise_on_error=False,
        )

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
