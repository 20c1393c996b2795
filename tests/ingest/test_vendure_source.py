"""Vendure as the source of the catalog and open orders feeds: a real Vendure 3 server (npm) seeded with the demo
world's SKUs, pulled through the real assets into the warehouse, where the same landing and contracts judge the rows;
reads by change, bad data, the refusal to read stock back from a push target, and what Vendure's `updatedAt` shows."""

import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cx_pipeline.assets.resources import SOURCES, VendureSourceResource, resources_from_env, source_from_env
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.ingest.sources import vendure
from cx_pipeline.simulator import Simulator, build_world
from cx_pipeline.simulator.vendure_shop import VendureServer
from cx_pipeline.warehouse import connect
from tests.helpers import TOKEN, WORLD_NOW, check_results, materializations, nodes, resources

WORLD_SKUS = 30  # every SKU is a Vendure product: small keeps the shop's setup to seconds
ORDERS = 3


@pytest.fixture
def sim() -> Iterator[Simulator]:  # replaces conftest's: a smaller world, one Vendure product per SKU
    with Simulator(world=build_world(seed=7, n_skus=WORLD_SKUS, now=WORLD_NOW), token=TOKEN) as server:
        yield server


@pytest.fixture
def shop(sim: Simulator) -> Iterator[VendureServer]:
    """The world's SKUs as Vendure variants, with category and supplier facets, and a few paid orders."""
    with VendureServer() as server:
        server.ids = server.seed_world(sim.world, orders=ORDERS)  # type: ignore[attr-defined]
        yield server


def source(shop: VendureServer, **settings: object) -> VendureSourceResource:
    return VendureSourceResource(
        url=shop.admin_url,
        username=shop.username,
        password=shop.password,
        warehouse="WH-WEST",
        promise_days=3,
        backoff_seconds=0.05,
        **settings,
    )


def run(sim: Simulator, shop: VendureServer, warehouse_path: Path, **settings: object) -> dg.ExecuteInProcessResult:
    """The ingest room's assets and contracts with the catalog and open orders from Vendure (the rest from the REST
    simulator, over the same world's SKUs)."""
    vendure_source = source(shop, **settings)
    return dg.materialize(
        nodes("ingest"),
        resources={**resources(sim, warehouse_path), "catalog": vendure_source, "oms": vendure_source},
        raise_on_error=False,
    )


def table(warehouse_path: Path, sql: str) -> pd.DataFrame:
    with connect(str(warehouse_path), read_only=True) as con:
        return con.execute(sql).df()


@pytest.mark.slow
def test_variants_and_orders_land_from_vendure_and_pass_their_contracts(sim, shop, warehouse_path):
    result = run(sim, shop, warehouse_path)

    checks = check_results(result)
    assert checks["raw_catalog"].passed and checks["raw_open_orders"].passed
    catalog = table(warehouse_path, "SELECT * FROM raw_catalog").set_index("sku")
    world = sim.world.current("products").set_index("sku")
    assert sorted(catalog.index) == sorted(world.index)
    for column in ("category", "supplier_id"):
        assert (catalog[column] == world.loc[catalog.index, column]).all(), column
    assert (catalog["price"].astype(float) == world.loc[catalog.index, "price"].round(2)).all()
    assert set(catalog["status"]) == {"active"} and set(catalog["currency"]) == {"USD"}
    orders = table(warehouse_path, "SELECT * FROM raw_open_orders")
    assert len(orders) == ORDERS and set(orders["status"]) == {"open"} and set(orders["qty"]) == {2}
    assert set(orders["sku"]) == set(list(shop.ids)[:ORDERS]) and orders["customer_id"].notna().all()
    assert (orders["promised_at"] - orders["ordered_at"] == pd.Timedelta(days=3)).all()

    # a second run reads only what changed: one edited variant, no orders (no look-back for this part)
    time.sleep(1.1)  # Vendure stores whole seconds in SQLite: an edit must fall in a later second than the cursor
    edited = list(shop.ids)[10]
    shop.update_variant(shop.ids[edited], price=1999)
    second = run(sim, shop, warehouse_path, order_lookback_days=0)

    metadata = materializations(second)
    assert check_results(second)["raw_catalog"].passed
    read = metadata["raw_catalog"]
    # a read by change: the edit, and what changed in the second before the cursor (re-read on purpose, landing as
    # unchanged). How many that is depends on how fast the shop was seeded (Vendure keeps whole seconds: all of it
    # when seeded within a second), so the bound is the one filter the read must have asked for.
    assert read["rows_updated"] == 1 and read["rows_fetched"] == 1 + read["rows_unchanged"] <= WORLD_SKUS
    assert table(warehouse_path, "SELECT updated_since FROM ingest_batches WHERE feed = 'catalog' ORDER BY fetched_at")[
        "updated_since"
    ].notna().tolist() == [False, True]
    orders = metadata["raw_open_orders"]
    assert orders["rows_new"] == orders["rows_updated"] == 0 and orders["rows_fetched"] == orders["rows_unchanged"]
    price = table(warehouse_path, f"SELECT price FROM raw_catalog WHERE sku = '{edited}'")["price"]
    assert price.astype(float).tolist() == [19.99]


@pytest.mark.slow
def test_the_daily_full_read_finds_a_variant_deleted_in_vendure(sim, shop, warehouse_path):
    assert check_results(run(sim, shop, warehouse_path))["raw_catalog"].passed
    deleted = list(shop.ids)[7]
    shop.delete_variant(shop.ids[deleted])  # Vendure soft-deletes: the variant leaves every list, no tombstone

    by_change = run(sim, shop, warehouse_path)
    assert materializations(by_change)["raw_catalog"]["read"] == "changes"
    assert deleted in table(warehouse_path, "SELECT sku FROM valid_catalog")["sku"].tolist()  # it cannot see that

    full = run(sim, shop, warehouse_path, full_read_every_hours=0)

    meta = materializations(full)["raw_catalog"]
    assert check_results(full)["raw_catalog"].passed
    assert meta["read"] == "full" and (meta["drift_changed"], meta["drift_new"], meta["drift_gone"]) == (0, 0, 1)
    assert deleted not in table(warehouse_path, "SELECT sku FROM valid_catalog")["sku"].tolist()


@pytest.mark.slow
def test_bad_variants_are_quarantined_and_named(sim, shop, warehouse_path):
    skus = list(shop.ids)
    shop.update_variant(shop.ids[skus[3]], sku="")  # Vendure accepts a variant without SKU
    shop.update_variant(shop.ids[skus[4]], facetValueIds=[])  # no supplier (nor category) facet

    result = run(sim, shop, warehouse_path)

    checks = check_results(result)
    assert not checks["raw_catalog"].passed
    quarantined = table(warehouse_path, "SELECT feed, row_key, expectation FROM quarantine WHERE feed = 'catalog'")
    assert quarantined.loc[quarantined["row_key"] == skus[4], "expectation"].str.contains("supplier_id").any()
    assert quarantined["expectation"].str.contains("sku").any()
    assert skus[4] not in set(table(warehouse_path, "SELECT sku FROM valid_catalog")["sku"])


VARIANT = """query($id: ID!) { productVariant(id: $id) { updatedAt stockLevels { updatedAt } } }"""
ORDER = """{ orders(options: {sort: {id: DESC}, take: 1}) { items { id updatedAt state lines { id } } } }"""


@pytest.mark.slow
def test_what_vendures_updated_at_shows_and_misses():
    """The delta question against the real server (recorded in docs/architecture.md, "Vendure as a source"): a
    stock adjustment moves the variant's `updatedAt`; an allocation (an order placed) and a fulfilment move only the
    stock level's; fulfilling or shipping an order does not move the order's `updatedAt`."""
    with VendureServer() as shop:
        variant_id = shop.create_variant("DELTA-1", 10)

        def variant() -> tuple[str, str]:
            data = shop.admin(VARIANT, id=variant_id)["productVariant"]
            return data["updatedAt"], data["stockLevels"][0]["updatedAt"]

        def pause() -> None:
            time.sleep(1.1)  # SQLite keeps whole seconds: each step must land in a later one

        start = variant()
        pause()
        shop.update_variant(variant_id, stockOnHand=7)  # a stock adjustment
        adjusted = variant()
        pause()
        shop.place_order(variant_id, 2)  # an allocation
        allocated = variant()
        order = shop.admin(ORDER)["orders"]["items"][0]
        pause()
        fulfilment = shop.admin(
            """mutation($l: ID!) { addFulfillmentToOrder(input: {lines: [{orderLineId: $l, quantity: 1}],
            handler: {code: "manual-fulfillment", arguments: [{name: "method", value: "post"},
            {name: "trackingCode", value: "T1"}]}}) { ... on Fulfillment { id } } }""",
            l=order["lines"][0]["id"],
        )["addFulfillmentToOrder"]["id"]
        shop.admin(
            """mutation($f: ID!) { transitionFulfillmentToState(id: $f, state: "Shipped") { __typename } }""",
            f=fulfilment,
        )
        fulfilled = variant()
        shipped = shop.admin(ORDER)["orders"]["items"][0]

    assert adjusted[0] > start[0] and adjusted[1] > start[1]  # adjustment: variant and stock level
    assert allocated[0] == adjusted[0] and allocated[1] > adjusted[1]  # allocation: the stock level only
    assert fulfilled[0] == adjusted[0] and fulfilled[1] > allocated[1]  # fulfilment: the stock level only
    assert shipped["state"] == "PartiallyShipped" and shipped["updatedAt"] == order["updatedAt"]  # order: unmoved


@pytest.mark.slow
def test_the_look_back_sees_an_order_ship_though_its_updated_at_stands_still(sim, shop, warehouse_path):
    assert check_results(run(sim, shop, warehouse_path))["raw_open_orders"].passed
    order = shop.admin(ORDER)["orders"]["items"][0]
    for query in (
        """mutation($l: ID!) { addFulfillmentToOrder(input: {lines: [{orderLineId: $l, quantity: 2}],
        handler: {code: "manual-fulfillment", arguments: [{name: "method", value: "post"},
        {name: "trackingCode", value: "T1"}]}}) { ... on Fulfillment { id } } }""",
    ):
        shop.admin(query, l=order["lines"][0]["id"])

    result = run(sim, shop, warehouse_path)

    assert check_results(result)["raw_open_orders"].passed
    assert materializations(result)["raw_open_orders"]["rows_fetched"] == ORDERS  # the look-back: every recent order
    lines = table(warehouse_path, "SELECT status FROM raw_open_orders")["status"]
    assert sorted(lines) == ["open"] * (ORDERS - 1) + ["shipped"]


def test_catalog_and_order_mapping():
    mapping = vendure.VendureMapping(warehouse="WH-EAST", promise=timedelta(days=2))
    product = {"name": "Boot", "enabled": True, "updatedAt": "2026-11-03T00:00:00Z", "facetValues": []}
    variant = {
        "id": "7",
        "name": "Boot 42",
        "sku": "B-42",
        "price": 12999,
        "currencyCode": "EUR",
        "enabled": True,
        "createdAt": "2026-11-01T00:00:00Z",
        "updatedAt": "2026-11-02T00:00:00Z",
        "facetValues": [
            {"code": "shoes", "name": "Shoes", "facet": {"code": "category"}},
            {"code": "acme", "name": "SUP-1", "facet": {"code": "supplier"}},
        ],
        "options": [{"code": "42", "name": "42", "group": {"code": "size", "name": "Size"}}],
    }
    row = vendure.catalog_row(variant, product, mapping)
    assert (row["sku"], row["title"], row["category"], row["supplier_id"]) == ("B-42", "Boot 42", "Shoes", "SUP-1")
    assert (row["price"], row["currency"], row["status"]) == ("129.99", "EUR", "active")
    assert row["registered_at"] == "2026-11-01T00:00:00Z" and row["updated_at"] == "2026-11-03T00:00:00Z"
    assert row["attributes"] == {"Size": "42"}
    assert vendure.catalog_row(variant, {**product, "enabled": False}, mapping)["status"] == "inactive"
    assert vendure.catalog_row({**variant, "sku": ""}, product, mapping)["sku"] is None

    order = {
        "id": "1",
        "code": "ABC",
        "state": "PaymentSettled",
        "orderPlacedAt": "2026-11-01T10:00:00Z",
        "updatedAt": "2026-11-01T10:00:00Z",
        "customer": {"id": "5"},
        "lines": [
            {"id": "1", "quantity": 2, "orderPlacedQuantity": 2, "productVariant": {"sku": "A"}},
            {"id": "2", "quantity": 1, "orderPlacedQuantity": 1, "productVariant": {"sku": "B"}},
            {"id": "3", "quantity": 0, "orderPlacedQuantity": 3, "productVariant": {"sku": "C"}},
        ],
        "fulfillments": [
            {"state": "Shipped", "lines": [{"orderLineId": "2", "quantity": 1}]},
            {"state": "Cancelled", "lines": [{"orderLineId": "1", "quantity": 2}]},
        ],
    }
    record = vendure.order_record(order, mapping)
    assert (record["order_id"], record["customer_id"], record["ordered_at"]) == ("ABC", "5", "2026-11-01T10:00:00Z")
    lines = pd.DataFrame(record["lines"]).set_index("sku")
    assert lines["status"].to_dict() == {"A": "open", "B": "shipped", "C": "cancelled"}
    assert lines["qty"].to_dict() == {"A": 2, "B": 1, "C": 3}  # a cancelled line keeps what was ordered
    assert set(lines["warehouse"]) == {"WH-EAST"} and lines.at["A", "promised_at"].startswith("2026-11-03T10:00")
    assert {x["status"] for x in vendure.order_record({**order, "state": "Cancelled"}, mapping)["lines"]} == {
        "cancelled"
    }
    assert vendure.changed_since(None) == {"sort": {"updatedAt": "ASC"}}
    since = pd.Timestamp("2026-11-01T10:00:05Z").to_pydatetime()
    assert vendure.changed_since(since)["filter"] == {"updatedAt": {"after": "2026-11-01T10:00:04Z"}}


class FakeList:
    """A Vendure list sorted by `updatedAt` in whole seconds (as SQLite keeps them), answering list options as the
    server does: `updatedAt` after / between, `id` notIn, skip/take; rows of one second in any order (a new shuffle
    each time), and `between_page` runs after every answer: the changes made while the pull pages."""

    def __init__(self, stamps: dict[str, datetime], between_page: Callable[[int], None] = lambda page: None) -> None:
        self.rows, self.between_page, self.asked = dict(stamps), between_page, []
        self.shuffle = random.Random(3)

    def fetch(self, options: dict) -> list[dict]:
        self.asked.append(options)
        bounds, ids = options.get("filter", {}).get("updatedAt", {}), options.get("filter", {}).get("id", {})
        after, between = bounds.get("after"), bounds.get("between")

        def wanted(row_id: str, at: datetime) -> bool:
            if after and not at > vendure.parse_stamp(after):
                return False
            if between and not vendure.parse_stamp(between["start"]) <= at <= vendure.parse_stamp(between["end"]):
                return False
            return row_id not in ids.get("notIn", [])

        rows = [(at, self.shuffle.random(), row_id) for row_id, at in self.rows.items() if wanted(row_id, at)]
        rows.sort()  # by updatedAt, ties in no particular order
        chosen = rows[options["skip"] : options["skip"] + options["take"]]
        items = [{"id": row_id, "updatedAt": vendure.stamp(at)} for at, _, row_id in chosen]
        self.between_page(len(self.asked))
        return items


T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def read_all(fake: FakeList, since: datetime | None, page_size: int, max_pages: int = 100) -> list[dict]:
    options = vendure.changed_since(since)
    pages = vendure.keyset_pages(fake.fetch, options, "updatedAt", page_size, max_pages)
    return [item for page in vendure.latest(pages, "id", page_size) for item in page]


def test_a_row_moving_to_the_end_while_paging_loses_no_row_and_lands_once():
    """A read row changing between two pages jumps to the end of the list sorted by `updatedAt`: with skip/take
    the row at the next page boundary was skipped. Paging by the key reads every row, each staged once, the moved
    one as it is now."""
    stamps = {f"v{i}": T0 + timedelta(seconds=i) for i in range(10)}

    def adjust(page: int) -> None:
        if page == 1:  # after the first page (v0..v2): a stock adjustment of v1
            fake.rows["v1"] = T0 + timedelta(minutes=5)

    fake = FakeList(stamps, adjust)
    rows = read_all(fake, since=T0, page_size=3)

    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(stamps) and len(ids) == len(set(ids))  # none lost, none twice
    assert {r["id"]: r["updatedAt"] for r in rows}["v1"] == vendure.stamp(T0 + timedelta(minutes=5))  # read last
    assert all(o["skip"] == 0 for o in fake.asked)
    # each page starts one second (the overlap) before the previous page's latest updatedAt
    assert fake.asked[1]["filter"] == {"updatedAt": {"after": vendure.stamp(T0 + timedelta(seconds=1))}}

    # the same changes with skip/take, as before: v3 shifts to skip 2 and is never read
    fake = FakeList(stamps, adjust)
    skipped = {
        i["id"] for s in range(0, 12, 3) for i in fake.fetch({**vendure.changed_since(T0), "skip": s, "take": 3})
    }
    assert "v3" not in skipped


def test_a_page_full_of_one_second_is_read_whole_and_the_paging_ends():
    """Many rows in one second (more than a page): asking after the page's second less the overlap would return the
    same page forever; that second is read by id instead, while rows of it change, and the pages go on after it."""
    stamps = {f"a{i}": T0 for i in range(3)}
    stamps |= {f"s{i:02}": T0 + timedelta(seconds=5) for i in range(23)}
    stamps |= {f"z{i}": T0 + timedelta(seconds=6 + i) for i in range(4)}

    def changes(page: int) -> None:
        if page == 2:  # a row of the crowded second, read or not yet, changes: it moves to the end
            fake.rows["s07"] = fake.rows["s19"] = T0 + timedelta(minutes=1)

    fake = FakeList(stamps, changes)
    rows = read_all(fake, since=None, page_size=5)

    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(stamps) and len(ids) == len(set(ids))
    assert len(fake.asked) < 20  # it ends: no page asked twice
    assert any("id" in o.get("filter", {}) for o in fake.asked)  # the crowded second was read by id

    with pytest.raises(UpstreamError, match="max_pages=3"):
        read_all(FakeList(stamps), since=None, page_size=5, max_pages=3)


def test_the_vendure_source_comes_from_the_environment(monkeypatch):
    for role in ("CATALOG", "OMS"):
        monkeypatch.setenv(f"CX_{role}_SOURCE", "vendure")
    monkeypatch.setenv("CX_OMS_WAREHOUSE", "WH-WEST")
    monkeypatch.setenv("CX_OMS_PROMISE_DAYS", "3")
    assert "vendure" in SOURCES["catalog"] and "vendure" in SOURCES["oms"]
    catalog, oms = source_from_env("catalog"), source_from_env("oms")
    assert isinstance(catalog, VendureSourceResource) and isinstance(oms, VendureSourceResource)
    assert (oms.warehouse, oms.promise_days, catalog.warehouse) == ("WH-WEST", 3.0, "")


@pytest.mark.parametrize("shop_kind", ["vendure", "shopify"])
def test_a_push_target_is_never_the_on_hand_source(monkeypatch, shop_kind):
    monkeypatch.setenv("CX_WMS_SOURCE", shop_kind)
    with pytest.raises(ValueError, match=r"stock truth comes from the WMS.*own writes"):
        source_from_env("wms")


def test_the_wms_address_may_not_be_the_shop_the_stock_is_pushed_to(monkeypatch):
    monkeypatch.setenv("CX_STOREFRONT_ADAPTER", "vendure")
    monkeypatch.setenv("CX_STOREFRONT_URL", "http://shop.example/admin-api")
    monkeypatch.setenv("CX_WMS_URL", "http://shop.example/admin-api/")
    with pytest.raises(ValueError, match="CX_WMS_URL is the vendure storefront"):
        resources_from_env()
