"""The Vendure adapter against a real Vendure 3 server (installed from npm, on 127.0.0.1): what the shop API
reports to customers after each push is the proof."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cx_pipeline.simulator.vendure_shop import VendureServer, free_port
from cx_pipeline.storefront.adapters import StockUpdate, StorefrontConfigError
from cx_pipeline.storefront.adapters.vendure import VendureStorefront

pytestmark = pytest.mark.slow  # a real Vendure server from npm

STOCK = {f"VND-{i:03d}": (0 if i % 4 == 0 else 5 + i) for i in range(120)}
DEFAULT = "Default Stock Location"


@pytest.fixture(scope="module")
def shop() -> Iterator[VendureServer]:
    with VendureServer() as server:
        server.create_products(STOCK)
        yield server


def connect(shop: VendureServer, **kwargs: Any) -> VendureStorefront:
    vendure = VendureStorefront(
        shop.admin_url, shop.username, shop.password, **{"page_size": 50, "backoff_factor": 0.05, **kwargs}
    )
    vendure.check()
    return vendure


@pytest.fixture
def adapter(shop: VendureServer) -> Iterator[VendureStorefront]:
    vendure = connect(shop)
    yield vendure
    vendure.close()


@pytest.fixture
def settings(shop: VendureServer) -> Iterator[Callable[..., None]]:
    """Change the shop's global settings for one test; they are set back after it."""
    yield shop.set_global_settings
    shop.set_global_settings(trackInventory=True, outOfStockThreshold=0)


def update(sku: str, status: str, quantity: int, before: tuple[str | None, int | None] = (None, None), **split):
    return StockUpdate(sku, status, quantity, *before, by_warehouse=split)


def states(vendure: VendureStorefront) -> dict[str, tuple[str, int]]:
    return {sku: (status, quantity) for sku, status, quantity in vendure.read().itertuples(index=False)}


def answers(results) -> list[tuple[str, bool, str | None, int | None]]:
    return [(r.sku, r.ok, r.status_after, r.quantity_after) for r in results]


def test_read_pages_through_every_variant(adapter):
    state = adapter.read().set_index("sku")
    assert len(state) == len(STOCK)
    assert state.loc["VND-000"].tolist() == ["out_of_stock", 0]
    assert state.loc["VND-001"].tolist() == ["in_stock", 6]
    assert adapter.warnings == []  # one location, everything tracked, nothing disabled or duplicated


def test_writes_flip_what_customers_see_and_a_second_read_diffs_to_nothing(shop, adapter):
    before = states(adapter)
    updates = [
        update("VND-001", "out_of_stock", 0, before["VND-001"]),
        update("VND-002", "out_of_stock", 0, before["VND-002"]),
        update("VND-004", "in_stock", 12, before["VND-004"]),  # back in stock
        update("VND-005", "in_stock", 3, before["VND-005"]),  # quantity only
    ]
    sent: list[str] = []
    for session in (adapter.client.session, adapter.shop_client.session):
        session.hooks["response"].append(lambda response, **_: sent.append(response.url))
    results = adapter.write(updates, "plan-1")
    assert answers(results) == [
        ("VND-001", True, "out_of_stock", 0),
        ("VND-002", True, "out_of_stock", 0),
        ("VND-004", True, "in_stock", 12),
        ("VND-005", True, "in_stock", 3),
    ]
    # a batch costs four requests whatever its size: resolve, write, read back (admin), what customers see (shop)
    assert len(sent) == 4 and sent[-1].startswith(shop.shop_url)
    levels = shop.shop_stock_levels()
    assert levels["VND-001"] == levels["VND-002"] == "OUT_OF_STOCK"
    assert levels["VND-004"] != "OUT_OF_STOCK" and levels["VND-005"] != "OUT_OF_STOCK"

    reread = connect(shop)
    after = states(reread)
    assert {u.sku: after[u.sku] for u in updates} == {u.sku: (u.status, u.quantity) for u in updates}
    assert results == adapter.write(updates, "plan-1")  # repeating a batch is harmless


def test_an_unknown_sku_fails_alone(adapter):
    adapter.read()
    results = adapter.write([update("VND-010", "in_stock", 7, ("in_stock", 15)), update("NOPE-1", "in_stock", 1)], "k")
    assert [(r.sku, r.ok) for r in results] == [("VND-010", True), ("NOPE-1", False)]
    assert results[1].response == "unknown sku in Vendure"


def test_a_variant_deleted_after_the_read_fails_alone_and_a_recreated_sku_is_written_by_its_new_id(shop, adapter):
    adapter.read()
    (old,) = shop.variant_ids("VND-011")
    shop.delete_variant(old)
    results = adapter.write([update("VND-011", "out_of_stock", 0), update("VND-012", "out_of_stock", 0)], "k")
    assert [(r.sku, r.ok, r.response) for r in results] == [
        ("VND-011", False, "unknown sku in Vendure"),
        ("VND-012", True, "ok"),
    ]

    new = shop.create_variant("VND-011", 9)  # the SKU comes back as a new variant; the adapter never saw its id
    assert answers(adapter.write([update("VND-011", "out_of_stock", 0)], "k2")) == [
        ("VND-011", True, "out_of_stock", 0)
    ]
    assert shop.variant(new)["levels"] == {DEFAULT: (0, 0)}
    assert shop.shop_stock_levels()["VND-011"] == "OUT_OF_STOCK"


def test_a_variant_deleted_during_the_write_fails_alone(shop):
    (victim,) = shop.variant_ids("VND-013")

    class DeletedMeanwhile(VendureStorefront):
        def _send(self, inputs):  # after the ids were resolved, before the mutation
            shop.delete_variant(victim)
            return super()._send(inputs)

    vendure = DeletedMeanwhile(shop.admin_url, shop.username, shop.password)
    vendure.check()
    results = vendure.write([update("VND-013", "out_of_stock", 0), update("VND-014", "in_stock", 4)], "k")
    assert not results[0].ok and results[0].response.startswith("vendure:")
    assert answers(results)[1] == ("VND-014", True, "in_stock", 4)
    assert shop.shop_stock_levels()["VND-014"] == "IN_STOCK"


def test_a_disabled_variant_reads_out_of_stock_and_cannot_be_pushed_back_on_sale(shop, adapter):
    (variant,) = shop.variant_ids("VND-015")
    shop.update_variant(variant, enabled=False)
    assert states(adapter)["VND-015"] == ("out_of_stock", 0)
    assert any("disabled in Vendure" in w and "VND-015" in w for w in adapter.warnings)

    back, gone = adapter.write([update("VND-015", "in_stock", 5)], "k") + adapter.write(
        [update("VND-015", "out_of_stock", 0)], "k2"
    )
    assert not back.ok and "disabled" in back.response and back.status_after == "out_of_stock"
    assert (gone.ok, gone.status_after) == (True, "out_of_stock")
    assert shop.variant(variant)["levels"] == {DEFAULT: (0, 0)}  # no units wait there for it to be enabled


def test_untracked_items_read_in_stock_and_are_never_switched_to_tracking_unasked(shop, adapter, settings):
    (inherits,), (untracked,) = shop.variant_ids("VND-020"), shop.variant_ids("VND-021")
    shop.update_variant(inherits, trackInventory="INHERIT")
    shop.update_variant(untracked, trackInventory="FALSE")
    settings(trackInventory=False)  # INHERIT now means: not tracked

    now = states(adapter)
    assert now["VND-020"] == ("in_stock", 0)  # no units, but the shop sells it
    assert now["VND-021"] == ("in_stock", 26)
    assert now["VND-022"] == ("in_stock", 27)  # TRUE stays tracked whatever the global setting
    assert any("2 SKU(s) not tracked" in w and "VND-020, VND-021" in w for w in adapter.warnings)

    off, quantity = adapter.write([update("VND-020", "out_of_stock", 0), update("VND-021", "in_stock", 3)], "k")
    assert not off.ok and "not tracked" in off.response and "enable_tracking=True" in off.response
    assert (quantity.ok, quantity.status_after, quantity.quantity_after) == (True, "in_stock", 3)
    assert shop.variant(inherits)["trackInventory"] == "INHERIT"
    assert shop.variant(untracked) == {"trackInventory": "FALSE", "levels": {DEFAULT: (3, 0)}}
    assert shop.shop_stock_levels()["VND-020"] == "IN_STOCK"

    tracking = connect(shop, enable_tracking=True)
    assert answers(tracking.write([update("VND-020", "out_of_stock", 0)], "k2")) == [
        ("VND-020", True, "out_of_stock", 0)
    ]
    assert shop.variant(inherits)["trackInventory"] == "TRUE"
    assert shop.shop_stock_levels()["VND-020"] == "OUT_OF_STOCK"


def test_the_global_out_of_stock_threshold_counts_in_reads_and_writes(shop, adapter, settings):
    settings(outOfStockThreshold=3)
    (own,), (backorders,) = shop.variant_ids("VND-033"), shop.variant_ids("VND-034")
    shop.update_variant(own, useGlobalOutOfStockThreshold=False, outOfStockThreshold=1)
    shop.update_variant(backorders, useGlobalOutOfStockThreshold=False, outOfStockThreshold=-2)
    now = states(adapter)
    assert now["VND-030"] == ("in_stock", 32) and now["VND-033"] == ("in_stock", 37)
    assert now["VND-032"] == ("out_of_stock", 0)  # no units: below the threshold is not a shortfall

    results = adapter.write(
        [update("VND-032", "in_stock", 3), update("VND-036", "in_stock", 2), update("VND-033", "in_stock", 4)], "k"
    )
    assert answers(results) == [
        ("VND-032", True, "in_stock", 3),
        ("VND-036", True, "in_stock", 2),  # was: "stockOnHand cannot be negative"
        ("VND-033", True, "in_stock", 4),
    ]
    levels = shop.shop_stock_levels()
    assert (levels["VND-032"], levels["VND-036"], levels["VND-033"]) == ("IN_STOCK", "LOW_STOCK", "IN_STOCK")
    assert [shop.variant(v)["levels"][DEFAULT][0] for v in [*shop.variant_ids("VND-032"), own]] == [6, 5]

    out, backordered = adapter.write([update("VND-032", "out_of_stock", 0), update("VND-034", "out_of_stock", 0)], "o")
    assert (out.ok, out.status_after) == (True, "out_of_stock")
    assert shop.shop_stock_levels()["VND-032"] == "OUT_OF_STOCK"
    # a negative threshold sells beyond stock: stock is never set below allocated, so this cannot be reached
    assert not backordered.ok and "threshold is -2 (backorders)" in backordered.response
    assert backordered.status_after == "in_stock"


def test_units_allocated_after_the_read_are_kept_on_hand(shop, adapter):
    (variant,) = shop.variant_ids("VND-041")
    assert states(adapter)["VND-041"] == ("in_stock", 46)
    shop.place_order(variant, 2)  # between the plan's read and the write
    assert answers(adapter.write([update("VND-041", "out_of_stock", 0, ("in_stock", 46))], "k")) == [
        ("VND-041", True, "out_of_stock", 0)
    ]
    assert shop.variant(variant)["levels"] == {DEFAULT: (2, 2)}  # not 0 on hand against 2 allocated
    assert shop.shop_stock_levels()["VND-041"] == "OUT_OF_STOCK"
    adapter.write([update("VND-041", "in_stock", 4)], "k2")
    assert shop.variant(variant)["levels"] == {DEFAULT: (6, 2)}


def test_a_shortfall_reads_negative_so_the_next_plan_repairs_it(shop, adapter):
    (variant,) = shop.variant_ids("VND-042")
    shop.place_order(variant, 3)
    locations = shop.stock_locations()
    shop.update_variant(variant, stockLevels=[{"stockLocationId": locations[DEFAULT], "stockOnHand": 1}])

    assert states(adapter)["VND-042"] == ("out_of_stock", -2)  # not clamped to the 0 a plan would also want
    assert any("fewer units on hand than Vendure allocated" in w and "VND-042" in w for w in adapter.warnings)
    assert answers(adapter.write([update("VND-042", "out_of_stock", 0, ("out_of_stock", -2))], "k")) == [
        ("VND-042", True, "out_of_stock", 0)
    ]
    assert shop.variant(variant)["levels"] == {DEFAULT: (3, 3)}
    assert states(adapter)["VND-042"] == ("out_of_stock", 0)


def test_a_sku_on_two_variants_goes_out_of_stock_on_both_and_refuses_a_quantity(shop, adapter):
    second = shop.create_variant("VND-050", 4)
    first, again = shop.variant_ids("VND-050")
    assert again == second
    assert states(adapter)["VND-050"] == ("in_stock", 59)
    assert any(f"VND-050 (variants {first}, {second})" in w for w in adapter.warnings)

    refused, out = adapter.write([update("VND-050", "in_stock", 5)], "k") + adapter.write(
        [update("VND-050", "out_of_stock", 0)], "k2"
    )
    assert not refused.ok and f"ids {first}, {second}" in refused.response
    assert (out.ok, out.status_after, out.quantity_after) == (True, "out_of_stock", 0)
    assert [shop.variant(v)["levels"] for v in (first, second)] == [{DEFAULT: (0, 0)}] * 2


def test_an_administrator_who_cannot_write_fails_at_check(shop):
    shop.create_administrator("reader@example.com", "reader-pass-1", ["ReadCatalog"])
    reader = VendureStorefront(shop.admin_url, "reader@example.com", "reader-pass-1", retries=0)
    with pytest.raises(StorefrontConfigError) as error:
        reader.check()
    assert "lacks the UpdateCatalog (or UpdateProduct) permission" in str(error.value)
    assert "reader-pass-1" not in str(error.value)

    shop.create_administrator(
        "stock@example.com", "stock-pass-1", ["ReadProduct", "ReadStockLocation", "UpdateProduct"]
    )
    writer = VendureStorefront(shop.admin_url, "stock@example.com", "stock-pass-1", retries=0)
    writer.check()
    assert writer.write([update("VND-060", "out_of_stock", 0)], "k")[0].ok


@pytest.mark.parametrize(
    ("url", "password", "message"),
    [
        (None, "wrong-password", "rejected the username/password"),
        ("http://127.0.0.1:{free}/admin-api", None, "cannot reach Vendure"),
        ("{root}/health", None, "without a Vendure login result"),
        ("{root}/shop-api", None, "is Vendure's shop API, not the admin API"),
    ],
)
def test_misconfiguration_fails_at_check_with_a_clear_message(shop, url, password, message):
    url = (url or shop.admin_url).format(free=free_port(), root=shop.admin_url.removesuffix("/admin-api"))
    vendure = VendureStorefront(url, shop.username, password or shop.password, retries=0)
    with pytest.raises(StorefrontConfigError) as error:
        vendure.check()
    assert message in str(error.value) and "wrong-password" not in str(error.value)


# --- several stock locations: a shop of its own, so the main one keeps a single location ---------------------

DEPOT = {f"LOC-{i}": 5 for i in range(1, 7)}


@pytest.fixture(scope="module")
def depot() -> Iterator[VendureServer]:
    """A shop with a second stock location, East, where every variant holds 4 units too (9 for sale)."""
    with VendureServer() as server:
        ids = server.create_products(DEPOT)
        east = server.create_stock_location("East")
        for variant in ids.values():
            server.update_variant(variant, stockLevels=[{"stockLocationId": east, "stockOnHand": 4}])
        yield server


def test_without_a_mapping_a_write_empties_every_other_location(depot):
    vendure = connect(depot)
    assert any("2 stock locations and the adapter has no `locations` mapping" in w for w in vendure.warnings)
    assert states(vendure)["LOC-1"] == ("in_stock", 9)  # read adds all locations

    assert answers(vendure.write([update("LOC-1", "out_of_stock", 0), update("LOC-2", "in_stock", 3)], "k")) == [
        ("LOC-1", True, "out_of_stock", 0),
        ("LOC-2", True, "in_stock", 3),
    ]
    (one,), (two,) = depot.variant_ids("LOC-1"), depot.variant_ids("LOC-2")
    assert depot.variant(one)["levels"] == {DEFAULT: (0, 0), "East": (0, 0)}
    assert depot.variant(two)["levels"] == {DEFAULT: (3, 0), "East": (0, 0)}
    assert depot.shop_stock_levels()["LOC-1"] == "OUT_OF_STOCK"


def test_mapped_locations_get_their_warehouse_share(depot):
    vendure = connect(depot, locations={"WH-WEST": DEFAULT, "WH-EAST": "East"})
    assert vendure.warnings == []
    results = vendure.write(
        [update("LOC-3", "in_stock", 5, **{"WH-EAST": 3, "WH-WEST": 2}), update("LOC-4", "in_stock", 6)], "k"
    )
    assert answers(results) == [("LOC-3", True, "in_stock", 5), ("LOC-4", True, "in_stock", 6)]
    (three,), (four,) = depot.variant_ids("LOC-3"), depot.variant_ids("LOC-4")
    assert depot.variant(three)["levels"] == {DEFAULT: (2, 0), "East": (3, 0)}
    assert depot.variant(four)["levels"] == {DEFAULT: (6, 0), "East": (0, 0)}  # no split: the first warehouse's


def test_a_location_the_mapping_leaves_out_is_reported_or_emptied_never_silently_on_sale(depot):
    partial = connect(depot, locations={"WH-WEST": DEFAULT})
    assert any("'East' is not in `locations`" in w for w in partial.warnings)
    partial.read()
    assert any("LOC-5" in w and "'East', which `locations` does not map" in w for w in partial.warnings)

    (result,) = partial.write([update("LOC-5", "out_of_stock", 0)], "k")
    assert not result.ok and (result.status_after, result.quantity_after) == ("in_stock", 4)
    assert "'East' is not in `locations` and still holds 4 sellable unit(s)" in result.response
    assert depot.shop_stock_levels()["LOC-5"] == "IN_STOCK"  # the audit says so; nothing pretends otherwise

    emptying = connect(depot, locations={"WH-WEST": DEFAULT}, zero_unmapped_locations=True)
    assert emptying.warnings == []
    assert answers(emptying.write([update("LOC-5", "out_of_stock", 0)], "k2")) == [("LOC-5", True, "out_of_stock", 0)]
    (five,) = depot.variant_ids("LOC-5")
    assert depot.variant(five)["levels"] == {DEFAULT: (0, 0), "East": (0, 0)}
    assert depot.shop_stock_levels()["LOC-5"] == "OUT_OF_STOCK"


def test_a_mapping_to_a_location_vendure_lacks_fails_at_check(depot):
    with pytest.raises(StorefrontConfigError, match=r"no stock location named 'Nowhere'.*'East'"):
        connect(depot, locations={"WH-WEST": DEFAULT, "WH-NORTH": "Nowhere"})
