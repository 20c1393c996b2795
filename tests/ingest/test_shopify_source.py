"""Shopify as the source of the catalog and open orders feeds: the Shopify test server (built from the published Admin
GraphQL schema, backed by the demo world) on 127.0.0.1, pulled through the real assets into the warehouse, where the
same landing and contracts judge the rows; reads by change, bad data and cost-based throttling."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cx_pipeline.assets.resources import SOURCES, ShopifySourceResource, source_from_env
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.graphql import ShopifyGraphQL
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.ingest.sources import shopify
from cx_pipeline.ingest.sources.shopify_bulk import BulkSettings
from cx_pipeline.simulator import Simulator
from cx_pipeline.simulator.shopify import ShopifySimulator
from cx_pipeline.warehouse import connect
from tests.helpers import check_results, materializations, nodes, resources

TOKEN = "shpat_source_test_0123456789abcdef"
SCOPES = ("read_products", "read_orders")


@pytest.fixture
def shop(sim: Simulator) -> ShopifySimulator:
    # A generous restore rate keeps the suite fast; throttling has a test of its own.
    with ShopifySimulator(world=sim.world, token=TOKEN, scopes=SCOPES, restore_rate=50_000) as server:
        yield server


def source(shop: ShopifySimulator, **settings: object) -> ShopifySourceResource:
    return ShopifySourceResource(shop_url=shop.url, access_token=TOKEN, backoff_seconds=0.05, **settings)


def run(sim: Simulator, shop: ShopifySimulator, warehouse_path: Path, **settings: object) -> dg.ExecuteInProcessResult:
    """The ingest room's assets and contracts with the catalog and open orders from Shopify (the rest from the REST
    simulator, over the same world)."""
    shopify_source = source(shop, **settings)
    return dg.materialize(
        nodes("ingest"),
        resources={**resources(sim, warehouse_path), "catalog": shopify_source, "oms": shopify_source},
        raise_on_error=False,
    )


def table(warehouse_path: Path, sql: str) -> pd.DataFrame:
    with connect(str(warehouse_path), read_only=True) as con:
        return con.execute(sql).df()


def world_lines(sim: Simulator) -> pd.DataFrame:
    """The world's current orders, one row per line, as the open orders feed should hold them."""
    orders = sim.world.current("orders")
    return orders.merge(sim.world.order_lines, on="order_id").set_index(["order_id", "line_no"]).sort_index()


def searches(shop: ShopifySimulator, operation: str) -> list[str | None]:
    return [query for name, query in shop.searches if name == operation]


def test_products_and_orders_land_from_shopify_and_pass_their_contracts(sim, shop, warehouse_path):
    result = run(sim, shop, warehouse_path)

    assert result.success
    checks = check_results(result)
    assert checks["raw_catalog"].passed and checks["raw_open_orders"].passed
    catalog = table(warehouse_path, "SELECT *, attributes::VARCHAR AS attrs FROM raw_catalog").set_index("sku")
    world = sim.world.current("products").set_index("sku")
    assert sorted(catalog.index) == sorted(world.index)
    for column in ("title", "category", "supplier_id", "status", "currency", "registered_at", "updated_at"):
        assert (catalog[column] == world.loc[catalog.index, column]).all(), column
    assert (catalog["price"].astype(float) == world.loc[catalog.index, "price"]).all()
    sku = catalog.index[0]  # the variant's options become its attributes (their values as text)
    assert json.loads(catalog.at[sku, "attrs"]).keys() == world.at[sku, "attributes"].keys()

    orders = table(warehouse_path, "SELECT * FROM raw_open_orders").set_index(["order_id", "line_no"]).sort_index()
    expected = world_lines(sim)
    assert orders.index.equals(expected.index)
    for column in ("sku", "warehouse", "qty", "status", "ordered_at", "promised_at", "updated_at"):
        assert (orders[column] == expected[column]).all(), column
    assert orders["customer_id"].notna().all()
    assert searches(shop, "products") and set(searches(shop, "products") + searches(shop, "orders")) == {None}
    assert materializations(result)["raw_open_orders"]["rows_fetched"] == len(expected)


def test_a_second_run_reads_only_what_changed_since_the_cursor(sim, shop, warehouse_path):
    assert run(sim, shop, warehouse_path).success
    cursors = table(warehouse_path, "SELECT feed, cursor FROM ingest_batches").set_index("feed")["cursor"]
    sim.world.advance(24)  # a day on: new orders, some shipped, a few catalog edits
    edited = sim.world.current("products")["sku"].iloc[5]
    shop.edit_product(edited, price="19.99")

    result = run(sim, shop, warehouse_path)

    assert result.success and check_results(result)["raw_catalog"].passed
    metadata = materializations(result)
    products, lines = sim.world.current("products"), world_lines(sim)
    changed = set(products.loc[products["updated_at"] >= cursors["catalog"], "sku"]) | {edited}
    assert metadata["raw_catalog"]["rows_fetched"] == len(changed) < len(products) / 5
    assert metadata["raw_catalog"]["rows_updated"] >= 1
    changed_lines = lines[lines["updated_at"] >= cursors["open_orders"]]
    assert metadata["raw_open_orders"]["rows_fetched"] == len(changed_lines) < len(lines) / 5
    # the shop was asked for changes since each cursor, not for everything
    for operation, feed in (("products", "catalog"), ("orders", "open_orders")):
        since = cursors[feed].tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        assert searches(shop, operation)[-1] == f"updated_at:>='{since}'"
    price = table(warehouse_path, f"SELECT price FROM raw_catalog WHERE sku = '{edited}'")["price"]
    assert price.astype(float).tolist() == [19.99]


def test_the_daily_full_read_finds_deleted_products_and_edits_the_reads_by_change_missed(sim, shop, warehouse_path):
    assert run(sim, shop, warehouse_path).success
    products = table(warehouse_path, "SELECT sku FROM raw_catalog ORDER BY updated_at")["sku"].tolist()
    deleted, missed = products[-1], products[0]
    shop.delete_product(deleted)
    with connect(str(warehouse_path)) as con:  # an edit whose change the reads by change never brought
        con.execute("UPDATE raw_catalog SET title = 'lost edit' WHERE sku = ?", [missed])

    result = run(sim, shop, warehouse_path, full_read_every_hours=0)  # the full read is due every run

    meta = materializations(result)["raw_catalog"]
    assert result.success and check_results(result)["raw_catalog"].passed
    assert meta["read"] == "full" and (meta["drift_changed"], meta["drift_new"], meta["drift_gone"]) == (1, 0, 1)
    valid = table(warehouse_path, "SELECT sku, title FROM valid_catalog").set_index("sku")["title"]
    assert deleted not in valid.index and valid[missed] != "lost edit"
    assert searches(shop, "products")[-1] is None  # read whole


def test_bad_products_and_order_lines_are_quarantined_and_named(sim, shop, warehouse_path):
    products = sim.world.current("products")["sku"].tolist()
    shop.edit_product(products[3], sku="")  # a variant without SKU
    shop.edit_product(products[4], price="12.345")  # more decimals than a price has
    order = world_lines(sim).reset_index().iloc[10]
    shop.edit_order_line(order["order_id"], int(order["line_no"]), quantity=1.5)  # a fractional quantity

    result = run(sim, shop, warehouse_path)

    checks = check_results(result)
    assert not checks["raw_catalog"].passed and checks["raw_catalog"].severity == dg.AssetCheckSeverity.WARN
    assert not checks["raw_open_orders"].passed
    quarantined = table(warehouse_path, "SELECT feed, row_key, expectation FROM quarantine")
    catalog = quarantined[quarantined["feed"] == "catalog"]
    assert catalog.loc[catalog["row_key"] == products[4], "expectation"].str.contains("price").any()
    assert catalog["expectation"].str.contains("sku").any()
    line = quarantined[quarantined["row_key"] == f"{order['order_id']}|{order['line_no']}"]
    assert line["expectation"].str.contains("qty").any()
    assert products[4] not in set(table(warehouse_path, "SELECT sku FROM valid_catalog")["sku"])


def test_cost_based_throttling_is_honoured(sim, warehouse_path):
    # A small bucket refilled fast: the source paces itself by the reported throttle status, and waits out the two
    # THROTTLED answers the shop gives whatever its bucket holds.
    with ShopifySimulator(world=sim.world, token=TOKEN, scopes=SCOPES, bucket_size=1000, restore_rate=20_000) as server:
        server.throttle_next(2)
        graphql = ShopifyGraphQL(server.url, TOKEN, api_version="2026-01", backoff_factor=0.01)
        with connect(str(warehouse_path)) as con:
            batch = shopify.pull(con, graphql, FEEDS["catalog"], None, shopify.ShopifyLimits(page_size=100))
        graphql.close()
    assert server.throttled == 2 and graphql.throttled == 2
    assert batch.rows == len(sim.world.current("products")) and batch.pages > 5
    assert graphql.waits and not any(a.code == "MAX_COST_EXCEEDED" for a in server.answers)
    assert batch.as_of == sim.world.clock  # the shop's clock, from the Date of its answers


def test_a_shop_that_keeps_throttling_fails_the_pull_clearly(sim, warehouse_path):
    with ShopifySimulator(world=sim.world, token=TOKEN, scopes=SCOPES, restore_rate=50_000) as server:
        server.throttle_next(10)
        graphql = ShopifyGraphQL(server.url, TOKEN, api_version="2026-01", throttle_attempts=3, backoff_factor=0.01)
        with connect(str(warehouse_path)) as con, pytest.raises(UpstreamError, match="still throttled after 3"):
            shopify.pull(con, graphql, FEEDS["open_orders"], None, shopify.ShopifyLimits())
        graphql.close()


def test_an_order_with_more_lines_than_asked_for_fails_naming_the_setting(sim, shop, warehouse_path):
    graphql = ShopifyGraphQL(shop.url, TOKEN, api_version="2026-01")
    with connect(str(warehouse_path)) as con, pytest.raises(UpstreamError, match="max_lines"):
        shopify.pull(con, graphql, FEEDS["open_orders"], None, shopify.ShopifyLimits(max_lines=1))
    graphql.close()


def test_order_mapping_states_and_promise():
    order = {
        "id": "gid://shopify/Order/7",
        "name": "#1007",
        "createdAt": "2026-11-01T10:00:00Z",
        "updatedAt": "2026-11-02T10:00:00Z",
        "cancelledAt": None,
        "customer": {"id": "gid://shopify/Customer/42"},
        "lineItems": {
            "nodes": [
                {"id": "L1", "sku": "A", "quantity": 2, "currentQuantity": 2, "unfulfilledQuantity": 2},
                {"id": "L2", "sku": "B", "quantity": 1, "currentQuantity": 1, "unfulfilledQuantity": 0},
                {"id": "L3", "sku": "C", "quantity": 3, "currentQuantity": 0, "unfulfilledQuantity": 0},
            ]
        },
        "fulfillmentOrders": {
            "nodes": [
                {
                    "assignedLocation": {"name": "WH-EAST"},
                    "fulfillBy": None,
                    "lineItems": {"nodes": [{"lineItem": {"id": "L1"}}]},
                },
                {
                    "assignedLocation": {"name": "WH-WEST"},
                    "fulfillBy": "2026-11-04T00:00:00Z",
                    "lineItems": {"nodes": [{"lineItem": {"id": "L2"}}]},
                },
            ]
        },
    }
    record = shopify.order_record(order, pd.Timedelta(days=3))
    assert (record["order_id"], record["customer_id"]) == ("#1007", "42")
    lines = pd.DataFrame(record["lines"]).set_index("sku")
    assert lines["status"].to_dict() == {"A": "open", "B": "shipped", "C": "cancelled"}
    assert lines["qty"].to_dict() == {"A": 2, "B": 1, "C": 3}  # a removed line keeps what was ordered
    assert lines["warehouse"].to_dict() == {"A": "WH-EAST", "B": "WH-WEST", "C": "WH-EAST"}
    assert lines.at["A", "promised_at"].startswith("2026-11-04T10:00")  # no fulfillBy: placed + 3 days
    assert lines.at["B", "promised_at"] == "2026-11-04T00:00:00Z"
    assert shopify.order_record({**order, "cancelledAt": "2026-11-02T10:00:00Z"})["lines"][0]["status"] == "cancelled"


def test_the_shopify_source_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CX_CATALOG_SOURCE", "shopify")
    monkeypatch.setenv("CX_OMS_SOURCE", "shopify")
    monkeypatch.setenv("CX_OMS_PROMISE_DAYS", "3")
    monkeypatch.setenv("CX_OMS_SHOPIFY_MAX_LINES", "40")
    assert "shopify" in SOURCES["catalog"] and "shopify" in SOURCES["oms"]
    catalog, oms = source_from_env("catalog"), source_from_env("oms")
    assert isinstance(catalog, ShopifySourceResource) and isinstance(oms, ShopifySourceResource)
    assert (oms.promise_days, oms.max_lines, catalog.promise_days) == (3.0, 40, 0.0)


def test_a_bulk_full_read_of_the_catalog_lands_the_same_rows_as_the_paged_read(sim, shop, warehouse_path):
    products = sim.world.current("products")["sku"].tolist()
    shop.edit_product(products[3], sku="")  # still one row, without SKU, both ways
    shop.edit_product(products[4], status="ARCHIVED")
    graphql = ShopifyGraphQL(shop.url, TOKEN, api_version="2026-01")
    landings = {}
    with connect(str(warehouse_path)) as con:
        for bulk in (BulkSettings(poll=0.01), None):
            batch = shopify.pull(con, graphql, FEEDS["catalog"], None, shopify.ShopifyLimits(), bulk=bulk)
            landings[bulk is not None] = con.execute(
                "SELECT * EXCLUDE (_row, _raw, _batch_id) FROM landing_catalog ORDER BY sku NULLS FIRST"
            ).df()
            assert batch.as_of == sim.world.clock and batch.rows == len(products)
    graphql.close()
    pd.testing.assert_frame_equal(landings[True], landings[False])
    assert [a.operation for a in shop.answers].count("bulkOperationRunQuery") == 1


def test_the_catalog_full_reads_by_bulk_operation_find_deleted_products(sim, shop, warehouse_path):
    first = run(sim, shop, warehouse_path, bulk_full_reads=True, bulk_poll_seconds=0.01)
    assert first.success and check_results(first)["raw_catalog"].passed
    assert [a.operation for a in shop.answers].count("bulkOperationRunQuery") == 1  # the first read is full
    deleted = sim.world.current("products")["sku"].iloc[-1]
    shop.delete_product(deleted)

    result = run(sim, shop, warehouse_path, bulk_full_reads=True, bulk_poll_seconds=0.01, full_read_every_hours=0)

    meta = materializations(result)["raw_catalog"]
    assert result.success and meta["read"] == "full" and meta["drift_gone"] == 1
    assert [a.operation for a in shop.answers].count("bulkOperationRunQuery") == 2
    assert deleted not in set(table(warehouse_path, "SELECT sku FROM valid_catalog")["sku"])
