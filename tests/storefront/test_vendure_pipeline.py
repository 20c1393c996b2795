"""The whole pipeline pushing to a real Vendure 3 store with two stock locations (issue 16's end-to-end check):
after a run, every SKU's customer view matches the plan, and the next run has nothing left to change."""

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from cx_pipeline.assets.resources import StorefrontResource
from cx_pipeline.simulator import Simulator, build_world
from cx_pipeline.simulator.vendure_shop import VendureServer
from tests.helpers import TOKEN, WORLD_NOW, materializations

pytestmark = pytest.mark.slow  # a real Vendure server from npm and two pipeline runs

DEFAULT = "Default Stock Location"
WORLD_SKUS = 40  # every SKU is a product in Vendure: small keeps the store's setup to seconds


@pytest.fixture
def sim() -> Iterator[Simulator]:  # replaces conftest's: a smaller world, one Vendure product per SKU
    with Simulator(world=build_world(seed=7, n_skus=WORLD_SKUS, now=WORLD_NOW), token=TOKEN) as server:
        yield server


@pytest.fixture
def store(sim: Simulator) -> Iterator[VendureServer]:
    """The demo SKUs in Vendure, each with 5 units at the default location and 2 at East (wrong on purpose)."""
    with VendureServer() as server:
        ids = server.create_products(dict.fromkeys(sim.world.storefront, 5))
        east = server.create_stock_location("East")
        for variant in ids.values():
            server.update_variant(variant, stockLevels=[{"stockLocationId": east, "stockOnHand": 2}])
        yield server


def desired(path: Path) -> dict[str, tuple[str, int]]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT sku, publish_status, publish_quantity FROM stock_position").fetchall()
    return {sku: (status, quantity) for sku, status, quantity in rows}


def test_a_run_against_vendure_converges_on_what_customers_see(run_all, store, warehouse_path):
    shop = StorefrontResource(
        adapter="vendure",
        url=store.admin_url,
        username=store.username,
        password=store.password,
        locations={"WH-WEST": DEFAULT, "WH-EAST": "East"},
        backoff_seconds=0.05,
    )

    first = run_all(storefront=shop)

    assert first.success
    pushed = materializations(first)["storefront_status_push"]
    assert pushed["pushed"] > 0 and pushed["failed"] == 0 and pushed["customer_view_mismatches"] == 0
    want = desired(warehouse_path)
    seen = store.shop_stock_levels()
    assert {sku: seen[sku] != "OUT_OF_STOCK" for sku in want} == {sku: s == "in_stock" for sku, (s, _) in want.items()}
    sample = next(sku for sku, (status, quantity) in want.items() if status == "in_stock" and quantity > 1)
    (variant,) = store.variant_ids(sample)
    levels = store.variant(variant)["levels"]  # location -> (on hand, allocated)
    assert set(levels) == {DEFAULT, "East"}
    assert sum(on_hand - allocated for on_hand, allocated in levels.values()) == want[sample][1]

    second = run_all(storefront=shop)

    assert second.success
    assert materializations(second)["storefront_push_plan"]["changes"] == 0  # converged: nothing left to write
