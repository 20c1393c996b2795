"""Shopify inventory levels as the source of the on-hand feed: the Shopify test server (built from the published Admin
GraphQL schema) stocked with the demo world's on-hand at two locations, read whole by a bulk operation or page by
page over real HTTP, landed through the real raw_on_hand asset and judged by its contract; bad data, a failed or
stuck bulk operation, one bulk operation at a time, and cost-based throttling."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cx_pipeline.assets.resources import (
    ShopifyInventoryResource,
    WmsResource,
    WmsSources,
    shopify_inventory_source,
    source_from_env,
)
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.graphql import ShopifyGraphQL
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.ingest.sources import shopify_bulk, shopify_inventory
from cx_pipeline.simulator import Simulator
from cx_pipeline.simulator.shopify import DEFAULT_LOCATION, ShopifySimulator
from cx_pipeline.warehouse import connect
from tests.helpers import TOKEN as SIM_TOKEN
from tests.helpers import check_results, materializations, nodes, resources

TOKEN = "shpat_inventory_test_0123456789abcdef"
SCOPES = ("read_products", "read_inventory", "read_locations")
# the shop's locations (gid, name) for the world's warehouses, and the mapping back the source is configured with
LOCATIONS = {"WH-EAST": ("gid://shopify/Location/2", "East DC"), "WH-WEST": ("gid://shopify/Location/3", "West DC")}
WAREHOUSES = {name: warehouse for warehouse, (_, name) in LOCATIONS.items()}
COLUMNS = ["sku", "warehouse", "on_hand", "in_qc", "damaged"]
ON_HAND = FEEDS["on_hand"]


def stocked_shop(sim: Simulator, **settings: object) -> ShopifySimulator:
    """A shop holding the world's on-hand: what is not in QC or damaged is available (nothing committed)."""
    stock = sim.world.on_hand()
    variants = dict.fromkeys(stock["sku"].unique(), 0)
    # the shop's clock (its answers' Date) is the world's, as the snapshot's as_of
    server = ShopifySimulator(variants, token=TOKEN, scopes=SCOPES, now=lambda: sim.world.clock, **settings)
    for gid, name in LOCATIONS.values():
        server.add_location(gid, name)
    for row in stock.itertuples():
        available = int(row.on_hand - row.in_qc - row.damaged)
        gid = LOCATIONS[row.warehouse][0]
        server.set_quantities(
            row.sku, gid, available=available, quality_control=int(row.in_qc), damaged=int(row.damaged)
        )
    for sku in stock["sku"].unique():
        server.unstock(sku, DEFAULT_LOCATION)
    return server


@pytest.fixture
def shop(sim: Simulator) -> ShopifySimulator:
    with stocked_shop(sim, restore_rate=50_000) as server:
        yield server


def source(shop: ShopifySimulator, **settings: object) -> ShopifyInventoryResource:
    settings = {"locations": WAREHOUSES, "bulk_poll_seconds": 0.01, "backoff_seconds": 0.05, **settings}
    return ShopifyInventoryResource(shop_url=shop.url, access_token=TOKEN, **settings)


def run(sim: Simulator, shop: ShopifySimulator, warehouse_path: Path, **settings: object) -> dg.ExecuteInProcessResult:
    """The catalog (from the REST simulator, the same world) and on-hand from Shopify, through the real assets and
    their contracts."""
    return dg.materialize(
        nodes("ingest"),
        selection=dg.AssetSelection.assets("raw_catalog", "raw_on_hand"),
        resources={**resources(sim, warehouse_path), "wms": source(shop, **settings)},
        raise_on_error=False,
    )


def table(warehouse_path: Path, sql: str) -> pd.DataFrame:
    with connect(str(warehouse_path), read_only=True) as con:
        return con.execute(sql).df()


def world_stock(sim: Simulator) -> pd.DataFrame:
    return sim.world.on_hand()[COLUMNS].sort_values(["sku", "warehouse"]).reset_index(drop=True)


def landed(warehouse_path: Path) -> pd.DataFrame:
    return table(warehouse_path, f"SELECT {', '.join(COLUMNS)} FROM raw_on_hand ORDER BY sku, warehouse")


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "paged"])
def test_inventory_levels_land_into_raw_on_hand_and_pass_their_contract(sim, shop, warehouse_path, bulk):
    skus = sorted(sim.world.on_hand()["sku"].unique())
    untracked, elsewhere = skus[0], skus[1]
    shop.set_tracked(untracked, False)  # Shopify keeps no count of it: no stock truth to land
    shop.add_location("gid://shopify/Location/9", "Closed store", active=False)
    shop.set_quantities(elsewhere, "gid://shopify/Location/9", available=7)  # an inactive location: left out

    result = run(sim, shop, warehouse_path, bulk=bulk)

    assert result.success and check_results(result)["raw_on_hand"].passed
    expected = world_stock(sim)
    expected = expected[expected["sku"] != untracked].reset_index(drop=True)
    pd.testing.assert_frame_equal(landed(warehouse_path), expected, check_dtype=False)
    operations = [a.operation for a in shop.answers]
    assert ("bulkOperationRunQuery" in operations) == bulk and ("inventoryItems" in operations) != bulk
    batch = table(
        warehouse_path, "SELECT source, updated_since IS NULL AS whole FROM ingest_batches WHERE feed = 'on_hand'"
    )
    assert batch.to_dict("records") == [{"source": "shopify", "whole": True}]  # read whole


def test_the_whole_ingest_room_with_on_hand_from_shopify_and_each_run_reads_it_whole(sim, shop, warehouse_path):
    # receipts and purchase orders from the WMS's REST API, on-hand from the shop: one WmsSources resource
    wms = WmsResource(base_url=sim.url, token=SIM_TOKEN, backoff_seconds=0.05)
    sources = WmsSources(receipts=wms, purchase_orders=wms, on_hand=source(shop))

    def ingest() -> dg.ExecuteInProcessResult:
        return dg.materialize(nodes("ingest"), resources={**resources(sim, warehouse_path), "wms": sources})

    first = ingest()
    assert all(check.passed for check in check_results(first).values())
    assert materializations(first)["raw_receipts"]["rows_fetched"] > 0
    skus = sorted(sim.world.on_hand()["sku"].unique())
    shop.set_quantities(skus[5], LOCATIONS["WH-WEST"][0], available=0, committed=1)  # a sale, then a count
    shop.set_tracked(skus[6], False)  # no longer counted by the shop

    second = materializations(ingest())["raw_on_hand"]

    assert (second["updated_since"], second["rows_updated"]) == ("full load", 1)
    gone = table(warehouse_path, "SELECT row_key FROM snapshot_absent WHERE feed = 'on_hand' ORDER BY row_key")
    assert gone["row_key"].tolist() == [f"{skus[6]}|WH-EAST", f"{skus[6]}|WH-WEST"]
    valid = table(warehouse_path, "SELECT DISTINCT sku FROM valid_on_hand")["sku"]
    assert skus[6] not in set(valid) and skus[5] in set(valid)


def test_a_bulk_read_lands_the_same_rows_as_the_paged_read(sim, shop, warehouse_path):
    shop.set_quantities(sim.world.on_hand()["sku"].iloc[0], LOCATIONS["WH-EAST"][0], committed=4, reserved=2)
    graphql = ShopifyGraphQL(shop.url, TOKEN, api_version="2026-01")
    landings = {}
    with connect(str(warehouse_path)) as con:
        for bulk in (True, False):
            read = shopify_inventory.InventoryRead(WAREHOUSES, bulk=bulk, bulk_poll=0.01, page_size=50)
            batch = shopify_inventory.pull(con, graphql, ON_HAND, read)
            landings[bulk] = con.execute("SELECT * EXCLUDE (_batch_id) FROM landing_on_hand ORDER BY _row").df()
            assert batch.as_of == sim.world.clock and (batch.pages > 5) != bulk
    graphql.close()
    pd.testing.assert_frame_equal(landings[True], landings[False])
    assert len(landings[True]) == len(sim.world.on_hand())


def test_negative_quantities_and_items_without_sku_are_quarantined_and_named(sim, shop, warehouse_path):
    skus = sorted(sim.world.on_hand()["sku"].unique())
    shop.set_quantities(skus[2], LOCATIONS["WH-EAST"][0], on_hand=-3)  # the shop's count gone wrong
    shop.variant(skus[3]).sku = ""  # an item without SKU: it cannot be keyed

    result = run(sim, shop, warehouse_path)

    check = check_results(result)["raw_on_hand"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    quarantined = table(warehouse_path, "SELECT row_key, expectation FROM quarantine WHERE feed = 'on_hand'")
    negative = quarantined[quarantined["row_key"] == f"{skus[2]}|WH-EAST"]
    assert negative["expectation"].str.contains("on_hand").any()
    assert quarantined["expectation"].str.contains("sku").any()
    valid = table(warehouse_path, "SELECT sku, warehouse FROM valid_on_hand")
    assert not ((valid["sku"] == skus[2]) & (valid["warehouse"] == "WH-EAST")).any()


def test_a_failed_bulk_operation_fails_the_pull_clearly(sim, shop, warehouse_path):
    shop.fail_next_bulk("INTERNAL_SERVER_ERROR")
    graphql = ShopifyGraphQL(shop.url, TOKEN, api_version="2026-01")
    read = shopify_inventory.InventoryRead(WAREHOUSES, bulk_poll=0.01)
    with connect(str(warehouse_path)) as con, pytest.raises(UpstreamError, match=r"FAILED.*INTERNAL_SERVER_ERROR"):
        shopify_inventory.pull(con, graphql, ON_HAND, read)
    graphql.close()
    assert [op.status for op in shop.bulk.operations] == ["FAILED"]


def test_a_bulk_operation_that_does_not_finish_in_time_fails_the_pull(sim, shop, warehouse_path):
    shop.bulk.running_polls = 10**6  # RUNNING for good
    graphql = ShopifyGraphQL(shop.url, TOKEN, api_version="2026-01")
    read = shopify_inventory.InventoryRead(WAREHOUSES, bulk_timeout=0.05, bulk_poll=0.01)
    with connect(str(warehouse_path)) as con, pytest.raises(UpstreamError, match="still RUNNING after"):
        shopify_inventory.pull(con, graphql, ON_HAND, read)
    graphql.close()


def test_one_bulk_operation_at_a_time(sim, shop, warehouse_path):
    graphql = ShopifyGraphQL(shop.url, TOKEN, api_version="2026-01")
    variables = {"query": shopify_inventory.BULK_ITEMS}
    first = graphql.query("bulkOperationRunQuery", shopify_bulk.RUN_BULK, variables, cost=10)
    second = graphql.query("bulkOperationRunQuery", shopify_bulk.RUN_BULK, variables, cost=10)
    assert first["bulkOperationRunQuery"]["bulkOperation"]["status"] == "CREATED"
    assert second["bulkOperationRunQuery"]["userErrors"][0]["code"] == "OPERATION_IN_PROGRESS"
    # a pull meeting a running operation waits for it within its timeout, then says why it gave up
    read = shopify_inventory.InventoryRead(WAREHOUSES, bulk_timeout=0.05, bulk_poll=0.01)
    with connect(str(warehouse_path)) as con, pytest.raises(UpstreamError, match=r"refused: .*already in progress"):
        shopify_inventory.pull(con, graphql, ON_HAND, read)
    graphql.close()


def test_cost_based_throttling_is_honoured(sim, warehouse_path):
    # A small bucket refilled fast: the paged read paces itself by the reported throttle status, and waits out the
    # two THROTTLED answers the shop gives whatever its bucket holds.
    with stocked_shop(sim, bucket_size=1000, restore_rate=20_000) as server:
        server.throttle_next(2)
        graphql = ShopifyGraphQL(server.url, TOKEN, api_version="2026-01", backoff_factor=0.01)
        read = shopify_inventory.InventoryRead(WAREHOUSES, bulk=False, page_size=40, max_levels=5)
        with connect(str(warehouse_path)) as con:
            batch = shopify_inventory.pull(con, graphql, ON_HAND, read)
        graphql.close()
    assert server.throttled == 2 and graphql.throttled == 2 and graphql.waits
    assert batch.rows == len(sim.world.on_hand()) and batch.pages > 5
    assert not any(a.code == "MAX_COST_EXCEEDED" for a in server.answers)


def test_the_inventory_source_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CX_ON_HAND_URL", "https://cx-demo.myshopify.com")
    monkeypatch.setenv("CX_ON_HAND_TOKEN", TOKEN)
    monkeypatch.setenv("CX_ON_HAND_LOCATIONS", '{"East DC": "WH-EAST"}')
    monkeypatch.setenv("CX_ON_HAND_SHOPIFY_BULK", "0")
    monkeypatch.setenv("CX_ON_HAND_SHOPIFY_MAX_LEVELS", "80")
    resource = shopify_inventory_source("on_hand")
    assert isinstance(resource, ShopifyInventoryResource) and resource.source_name == "shopify"
    assert (resource.locations, resource.bulk, resource.max_levels) == ({"East DC": "WH-EAST"}, False, 80)
    assert not hasattr(resource, "full_read_every_hours")  # read whole every run


def test_cx_on_hand_source_shopify_is_refused_only_for_the_shop_the_stock_is_pushed_to(monkeypatch):
    monkeypatch.setenv("CX_ON_HAND_SOURCE", "shopify")
    monkeypatch.setenv("CX_ON_HAND_URL", "https://stock-master.myshopify.com")
    monkeypatch.setenv("CX_ON_HAND_TOKEN", TOKEN)
    wms = source_from_env("wms")  # the storefront is another system (the REST shape)
    assert isinstance(wms, WmsSources) and isinstance(wms.on_hand, ShopifyInventoryResource)
    assert isinstance(wms.receipts, WmsResource) and isinstance(wms.purchase_orders, WmsResource)

    monkeypatch.setenv("CX_STOREFRONT_ADAPTER", "shopify")
    monkeypatch.setenv("CX_STOREFRONT_URL", "https://another-shop.myshopify.com")
    assert isinstance(source_from_env("wms").on_hand, ShopifyInventoryResource)  # another shop: its stock is its own

    monkeypatch.setenv("CX_STOREFRONT_URL", "https://stock-master.myshopify.com/")
    with pytest.raises(ValueError, match=r"CX_ON_HAND_SOURCE='shopify' is refused: the stock truth comes from"):
        source_from_env("wms")
    monkeypatch.setenv("CX_WMS_SOURCE", "shopify")  # Shopify has no receipts nor purchase orders
    monkeypatch.delenv("CX_ON_HAND_SOURCE")
    with pytest.raises(ValueError, match=r"CX_WMS_SOURCE='shopify' is refused"):
        source_from_env("wms")
