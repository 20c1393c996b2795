"""ShopifyStorefront against the local Shopify Admin GraphQL simulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable, Iterator

import pandas as pd
import pytest
import requests

from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.simulator.shopify import INVALID_TOKEN, ShopifySimulator
from cx_pipeline.storefront.adapters.base import StockUpdate, StorefrontConfigError
from cx_pipeline.storefront.adapters.shopify import STALE, ShopifyStorefront

TOKEN = "shpat_test_0123456789abcdef"
CLIENT_ID = "0f3c5e1d2b4a69788796a5b4c3d2e1f0"
SECRET = "shpss_test_secret_fedcba9876543210"
SKUS = {f"SKU-{n:03d}": n % 4 for n in range(1, 251)}  # a quarter of them out of stock
WEST, POPUP, BACK_OFFICE = "gid://shopify/Location/2", "gid://shopify/Location/3", "gid://shopify/Location/4"

Factory = Callable[..., ShopifyStorefront]


@pytest.fixture
def shop() -> Iterator[ShopifySimulator]:
    # "": a variant without SKU. A Plus shop's restore rate keeps the suite fast; pacing has tests of its own.
    with ShopifySimulator({**SKUS, "": 7}, token=TOKEN, restore_rate=1000) as sim:
        yield sim


@pytest.fixture
def storefront(shop: ShopifySimulator) -> Iterator[Factory]:
    """Adapters aimed at `shop` (closed afterwards), with fast client retries."""
    made: list[ShopifyStorefront] = []

    def make(
        sim: ShopifySimulator | None = None,
        *,
        shop_url: str = "",
        token: str = TOKEN,
        location: str = "1",
        **settings: object,
    ) -> ShopifyStorefront:
        options = {"retries": 2, "backoff_factor": 0.01, **settings}
        adapter = ShopifyStorefront(shop_url or (sim or shop).url, token, location, **options)  # type: ignore[arg-type]
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


def plan(state: pd.DataFrame, changes: dict[str, tuple[str, int]]) -> list[StockUpdate]:
    """Updates to `changes` (sku -> status, quantity), with the state as read as the before values."""
    before = state.set_index("sku")
    return [
        StockUpdate(sku, status, qty, before.at[sku, "status"], int(before.at[sku, "quantity"]))
        for sku, (status, qty) in changes.items()
    ]


class Clock:
    """A pinned clock the simulator's token expiry and the adapter's renewal both read."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_accepts_a_good_configuration(shop: ShopifySimulator, storefront: Factory) -> None:
    storefront().check()
    assert shop.requests["shop"] == 1


@pytest.mark.parametrize(
    "settings",
    [
        {"token": "shpat_wrong_token_value"},
        {"shop_url": f"http://127.0.0.1:{free_port()}"},  # nothing listens there
        {"api_version": "2019-04"},  # answered 404, like a wrong shop URL
        {"location": "999"},
    ],
    ids=["bad-token", "bad-url", "bad-version", "unknown-location"],
)
def test_check_and_write_refuse_a_bad_configuration(
    shop: ShopifySimulator, storefront: Factory, settings: dict[str, object]
) -> None:
    adapter = storefront(**settings)
    with pytest.raises(StorefrontConfigError) as raised:
        adapter.check()
    with pytest.raises(StorefrontConfigError):
        adapter.write([StockUpdate("SKU-001", "out_of_stock", 0, "in_stock", 1)], "run-1/0")
    assert TOKEN not in str(raised.value) and "shpat_wrong" not in str(raised.value)
    assert shop.requests["inventorySetQuantities"] == 0 and shop.available("SKU-001") == 1


def test_read_pages_through_every_variant_with_a_sku(shop: ShopifySimulator, storefront: Factory) -> None:
    shop.variants[0].available.clear()  # SKU-001 is not stocked at the location
    adapter = storefront(page_size=100)
    state = adapter.read()
    # each variant asks for up to max_locations=10 inventory levels: 29 a page keeps a page under 1000 points
    assert adapter.page_size == 29 and shop.requests["productVariants"] == math.ceil(251 / 29)
    assert not shop.throttled and not any(a.code == "MAX_COST_EXCEEDED" for a in shop.answers)
    (unstocked,) = adapter.write([StockUpdate("SKU-001", "in_stock", 3, None, None)], "run-1/0")
    assert not unstocked.ok and "not stocked at any configured location" in unstocked.response
    assert len(state) == 249 and state["sku"].is_unique and "SKU-001" not in set(state["sku"])
    row = state.set_index("sku").loc["SKU-004"]
    assert (row["status"], row["quantity"]) == ("out_of_stock", 0)
    assert state.set_index("sku").loc["SKU-250", "quantity"] == 2


@pytest.mark.parametrize("version", ["2026-01", "2026-04"])
def test_write_out_and_back_in_stock_then_a_read_diffs_to_nothing(
    shop: ShopifySimulator, storefront: Factory, version: str
) -> None:
    adapter = storefront(api_version=version, batch_size=50)
    state = adapter.read()
    changes = {f"SKU-{n:03d}": ("out_of_stock", 0) for n in range(1, 120, 2) if n % 4}
    changes |= {f"SKU-{n:03d}": ("in_stock", 5) for n in range(4, 200, 4)}
    updates = plan(state, changes)
    results = [r for i in range(0, len(updates), 50) for r in adapter.write(updates[i : i + 50], f"run-1/{i}")]

    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert {r.sku: (r.status_after, r.quantity_after) for r in results} == changes
    expected = state.set_index("sku")
    for sku, (status, qty) in changes.items():
        expected.loc[sku] = [status, qty]
    pd.testing.assert_frame_equal(storefront().read().set_index("sku"), expected)
    group = shop.adjustment_groups[0]
    assert group["reason"] == "correction" and group["referenceDocumentUri"] == "gid://cx-pipeline/StockSync/run-1%2F0"


def test_a_quantity_changed_since_the_read_is_reported_and_left_alone(
    shop: ShopifySimulator, storefront: Factory
) -> None:
    adapter = storefront()
    state = adapter.read()
    shop.set_available("SKU-001", 9)  # a merchant edits it meanwhile
    updates = plan(state, {"SKU-001": ("out_of_stock", 0), "SKU-002": ("out_of_stock", 0)})
    stale, fine = adapter.write(updates, "run-1/0")

    assert (stale.ok, stale.response) == (False, STALE) and fine.ok
    assert shop.available("SKU-001") == 9 and shop.available("SKU-002") == 0
    # Shopify rejects the whole mutation; the adapter resends the rest, which is applied once.
    assert shop.requests["inventorySetQuantities"] == 2 and len(shop.adjustment_groups) == 1
    # The next run re-reads, re-plans, and succeeds.
    (again,) = adapter.write(plan(adapter.read(), {"SKU-001": ("out_of_stock", 0)}), "run-2/0")
    assert again.ok and shop.available("SKU-001") == 0


def test_an_unknown_sku_fails_alone(shop: ShopifySimulator, storefront: Factory) -> None:
    updates = [
        StockUpdate("NO-SUCH-SKU", "out_of_stock", 0, "in_stock", 3),
        StockUpdate("SKU-003", "out_of_stock", 0, "in_stock", 3),
    ]
    unknown, known = storefront().write(updates, "run-1/0")  # no read first: SKUs are looked up
    assert not unknown.ok and "unknown SKU" in unknown.response
    assert known.ok and shop.available("SKU-003") == 0


def test_the_same_batch_twice_applies_once(shop: ShopifySimulator, storefront: Factory) -> None:
    state = storefront().read()
    updates = plan(state, {"SKU-005": ("out_of_stock", 0), "SKU-008": ("in_stock", 6)})
    first = storefront().write(updates, "run-1/0")
    replay = storefront().write(updates, "run-1/0")  # e.g. the run retried by the orchestrator
    # The shop already shows the batch: nothing is sent again, and the read-back says it is done.
    assert all(r.ok for r in first + replay) and [r.quantity_after for r in replay] == [0, 6]
    assert shop.requests["inventorySetQuantities"] == 1 and len(shop.adjustment_groups) == 1
    # Another change planned from the same, now stale, read is refused rather than written over the first.
    stale = plan(state, {"SKU-005": ("in_stock", 3), "SKU-008": ("in_stock", 9)})
    assert {r.response for r in storefront().write(stale, "run-2/0")} == {STALE}
    assert shop.available("SKU-005") == 0 and shop.available("SKU-008") == 6


def test_a_small_bucket_is_paced_without_being_throttled(storefront: Factory) -> None:
    with ShopifySimulator({f"S{n}": 1 for n in range(30)}, token=TOKEN, bucket_size=40, restore_rate=400) as sim:
        adapter = storefront(sim, batch_size=5, page_size=5, max_locations=1)  # a page of 5 costs 37 of 40 points
        state = adapter.read()
        updates = plan(state, {sku: ("out_of_stock", 0) for sku in state["sku"]})
        results = [r for i in range(0, 30, 5) for r in adapter.write(updates[i : i + 5], f"run-1/{i}")]
        assert all(r.ok for r in results) and len(sim.adjustment_groups) == 6
        assert adapter.waits and sim.throttled == 0  # it waited for the bucket instead of hitting it


def test_a_throttled_answer_is_waited_out_and_retried(shop: ShopifySimulator, storefront: Factory) -> None:
    adapter, impatient = storefront(), storefront(throttle_attempts=3)
    for ready in (adapter, impatient):  # checked and read: the next request is the write
        ready.check()
        ready.read()
    shop.throttle_next(2)
    paced = len(adapter.waits)  # the read paces its pages too
    (result,) = adapter.write([StockUpdate("SKU-001", "out_of_stock", 0, "in_stock", 1)], "run-1/0")
    assert result.ok and shop.throttled == 2 and len(adapter.waits) - paced == 2
    assert len(shop.adjustment_groups) == 1

    shop.throttle_next(3)
    with pytest.raises(UpstreamError, match="still throttled"):
        impatient.write([StockUpdate("SKU-002", "out_of_stock", 0, "in_stock", 2)], "run-1/1")
    assert len(shop.adjustment_groups) == 1


@pytest.mark.parametrize("after_apply", [False, True], ids=["before-apply", "answer-lost-after-apply"])
def test_a_5xx_on_a_write_is_retried_and_applied_once(
    shop: ShopifySimulator, storefront: Factory, after_apply: bool
) -> None:
    adapter = storefront()
    adapter.check()
    adapter.read()  # the next request is the write
    shop.fail_next(1, status=503, after_apply=after_apply)
    (result,) = adapter.write([StockUpdate("SKU-002", "in_stock", 9, "in_stock", 2)], "run-1/0")
    assert result.ok and shop.available("SKU-002") == 9
    assert shop.requests["inventorySetQuantities"] == 2 and len(shop.adjustment_groups) == 1


def test_the_simulator_answers_like_shopify_outside_the_adapter(shop: ShopifySimulator) -> None:
    def post(query: str, token: str = TOKEN, version: str = "2026-01") -> requests.Response:
        url = f"{shop.url}/admin/api/{version}/graphql.json"
        return requests.post(url, json={"query": query}, headers={"X-Shopify-Access-Token": token}, timeout=5)

    assert post("{ shop { name } }", token="nope").json() == {"errors": INVALID_TOKEN}
    unsupported = post("{ orders(first: 1) { nodes { id } } }")
    assert unsupported.status_code == 200 and unsupported.json()["errors"][0]["extensions"]["code"] == "undefinedField"
    without_key = post("mutation { inventorySetQuantities(input: {}) { userErrors { code } } }", version="2026-04")
    assert without_key.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    cost = post("{ shop { name } }").json()["extensions"]["cost"]
    assert cost["requestedQueryCost"] == 2 and set(cost["throttleStatus"]) == {
        "maximumAvailable",
        "currentlyAvailable",
        "restoreRate",
    }
    scopes = post("{ shop { name } currentAppInstallation { accessScopes { handle } } }").json()["data"]
    assert scopes["currentAppInstallation"]["accessScopes"] == [
        {"handle": "read_products"},
        {"handle": "write_inventory"},
        {"handle": "read_locations"},
    ]
    # 100 variants with up to 10 inventory levels each: 2 + 100 x (4 + 3 x 10) points, over the limit
    too_costly = requests.post(
        f"{shop.url}/admin/api/2026-01/graphql.json",
        json={
            "query": "query($first: Int!, $levels: Int!) { productVariants(first: $first) { nodes { id } } }",
            "variables": {"first": 100, "levels": 10},
        },
        headers={"X-Shopify-Access-Token": TOKEN},
        timeout=5,
    ).json()
    assert too_costly["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert "Query cost is 3402" in too_costly["errors"][0]["message"]


def test_the_simulator_denies_fields_outside_the_granted_scopes() -> None:
    with ShopifySimulator(SKUS, restore_rate=1000, token=TOKEN, scopes=("read_products",)) as sim:
        query = "query($l: Int!) { productVariants(first: 1) { nodes { id } } }"
        answer = requests.post(
            f"{sim.url}/admin/api/2026-01/graphql.json",
            json={"query": query.replace("$l", "$levels"), "variables": {"levels": 1}},
            headers={"X-Shopify-Access-Token": TOKEN},
            timeout=5,
        ).json()
        (error,) = answer["errors"]
        assert answer["data"] == {"productVariants": None} and error["extensions"]["code"] == "ACCESS_DENIED"
        assert (
            error["message"]
            == "Access denied for inventoryLevels field. Required access: `read_inventory` access scope."
        )
        assert error["extensions"]["requiredAccess"] == "`read_inventory` access scope."


# -- access scopes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "mapped", "missing"),
    [
        (("read_products",), False, "read_inventory, write_inventory"),
        (("read_products", "write_inventory"), True, "read_locations"),  # a name mapping needs the location list
    ],
    ids=["no-inventory-scopes", "no-locations-scope"],
)
def test_check_names_the_missing_access_scopes_before_any_write(
    storefront: Factory, scopes: tuple[str, ...], mapped: bool, missing: str
) -> None:
    with ShopifySimulator(SKUS, restore_rate=1000, token=TOKEN, scopes=scopes) as sim:
        where = {"location": "", "locations": {"WH-EAST": "Main warehouse"}} if mapped else {}
        adapter = storefront(sim, **where)
        with pytest.raises(StorefrontConfigError, match=f"lacks the access scopes {missing} ") as raised:
            adapter.check()
        assert "nothing was written" in str(raised.value)
        with pytest.raises(StorefrontConfigError):
            adapter.write([StockUpdate("SKU-001", "out_of_stock", 0, "in_stock", 1)], "run-1/0")
        assert sim.requests["inventorySetQuantities"] == 0 and sim.available("SKU-001") == 1


def test_a_write_scope_includes_its_read_scope(storefront: Factory) -> None:
    # Shopify lists write_inventory alone when it was granted; read_inventory comes with it.
    with ShopifySimulator(SKUS, restore_rate=1000, token=TOKEN, scopes=("read_products", "write_inventory")) as sim:
        adapter = storefront(sim)
        adapter.check()
        (result,) = adapter.write(plan(adapter.read(), {"SKU-001": ("out_of_stock", 0)}), "run-1/0")
        assert result.ok and sim.available("SKU-001") == 0


# -- locations ---------------------------------------------------------------------------------------------


def test_each_mapped_location_gets_its_warehouses_share(shop: ShopifySimulator, storefront: Factory) -> None:
    shop.add_location(WEST, "West DC")
    for sku, west in [("SKU-001", 0), ("SKU-002", 2), ("SKU-003", 0), ("SKU-004", 0)]:
        shop.set_available(sku, west, WEST)
    adapter = storefront(location="", locations={"WH-EAST": "1", "WH-WEST": "west dc"})  # an id and a name
    state = adapter.read().set_index("sku")
    assert state.loc["SKU-002", "quantity"] == 4  # 2 at Main + 2 at West DC: what a customer can buy
    before = {sku: ("in_stock", int(state.at[sku, "quantity"])) for sku in ("SKU-001", "SKU-002", "SKU-003", "SKU-004")}

    def update(sku: str, status: str, quantity: int, split: dict[str, int]) -> StockUpdate:
        return StockUpdate(sku, status, quantity, *before[sku], by_warehouse=split)

    results = adapter.write(
        [
            update("SKU-001", "in_stock", 10, {"WH-EAST": 6, "WH-WEST": 4}),
            update("SKU-002", "in_stock", 5, {}),  # no split known: the default location gets it all
            update("SKU-003", "out_of_stock", 0, {}),
            update("SKU-004", "in_stock", 7, {"WH-WEST": 4, "WH-NORTH": 3}),  # a warehouse without a location
        ],
        "run-1/0",
    )
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert [(r.status_after, r.quantity_after) for r in results] == [
        ("in_stock", 10),
        ("in_stock", 5),
        ("out_of_stock", 0),
        ("in_stock", 7),
    ]
    split = {sku: (shop.available(sku), shop.available(sku, WEST)) for sku in before}
    assert split == {"SKU-001": (6, 4), "SKU-002": (5, 0), "SKU-003": (0, 0), "SKU-004": (3, 4)}
    assert any("WH-NORTH" in w for w in adapter.warnings)


def test_an_unknown_or_inactive_mapped_location_is_a_config_error(shop: ShopifySimulator, storefront: Factory) -> None:
    with pytest.raises(StorefrontConfigError, match="the shop's locations are: 'Main warehouse'"):
        storefront(location="", locations={"WH-EAST": "Nowhere"}).check()
    shop.add_location(WEST, "West DC", active=False)
    with pytest.raises(StorefrontConfigError, match="is inactive"):
        storefront(location="", locations={"WH-EAST": "1", "WH-WEST": "West DC"}).check()


@pytest.mark.parametrize("zero", [False, True], ids=["reported", "zeroed"])
def test_units_at_a_location_the_pipeline_does_not_set(shop: ShopifySimulator, storefront: Factory, zero: bool) -> None:
    shop.add_location(POPUP, "Pop-up store")
    shop.add_location(BACK_OFFICE, "Back office", fulfills_online_orders=False)
    shop.set_available("SKU-005", 3, POPUP)  # SKU-005 also has 1 at the configured location
    shop.set_available("SKU-005", 5, BACK_OFFICE)  # not sold online: neither counted nor touched
    adapter = storefront(zero_unmapped_locations=zero)
    state = adapter.read()
    assert state.set_index("sku").loc["SKU-005", "quantity"] == 4
    (warning,) = [w for w in adapter.warnings if "Pop-up store" in w]
    assert "1 SKUs" in warning and "SKU-005" in warning and "Back office" not in warning

    (result,) = adapter.write(plan(state, {"SKU-005": ("in_stock", 2)}), "run-1/0")
    assert shop.available("SKU-005") == 2 and shop.available("SKU-005", BACK_OFFICE) == 5
    if zero:
        assert result.ok and shop.available("SKU-005", POPUP) == 0
    else:
        assert not result.ok and (result.status_after, result.quantity_after) == ("in_stock", 5)
        assert "3 at 'Pop-up store'" in result.response and "zero_unmapped_locations" in result.response
        assert shop.available("SKU-005", POPUP) == 3


def test_a_mapped_location_that_does_not_sell_online_is_flagged(shop: ShopifySimulator, storefront: Factory) -> None:
    shop.add_location(BACK_OFFICE, "Back office", fulfills_online_orders=False)
    shop.set_available("SKU-001", 0, BACK_OFFICE)
    adapter = storefront(location="", locations={"WH-EAST": "1", "WH-WEST": "Back office"})
    adapter.check()
    assert any("does not fulfil online orders" in w for w in adapter.warnings)
    (result,) = adapter.write(
        [StockUpdate("SKU-001", "in_stock", 5, "in_stock", 1, by_warehouse={"WH-EAST": 2, "WH-WEST": 3})], "run-1/0"
    )
    # the write went through, but customers can buy only the 2 units at Main: it does not count
    assert not result.ok and result.quantity_after == 2 and "'Back office'" in result.response


# -- items that are always for sale ------------------------------------------------------------------------


def test_items_sold_whatever_their_stock_read_in_stock_and_refuse_going_out(
    shop: ShopifySimulator, storefront: Factory
) -> None:
    shop.set_policy("SKU-001", "CONTINUE")
    shop.set_policy("SKU-004", "CONTINUE")  # 0 available, still for sale
    shop.set_tracked("SKU-002", False)
    adapter = storefront()
    state = adapter.read()
    shown = state.set_index("sku")
    assert shown.loc["SKU-004"].tolist() == ["in_stock", 0] and shown.loc["SKU-002"].tolist() == ["in_stock", 2]
    (warning,) = [w for w in adapter.warnings if "always for sale" in w]
    assert warning.startswith("3 SKUs") and "2 sell when out of stock" in warning and "1 have untracked" in warning
    assert "SKU-001, SKU-004" in warning and "SKU-002" in warning
    adapter.read()
    assert sum("always for sale" in w for w in adapter.warnings) == 1  # a second read replaces, not repeats

    policy, untracked = adapter.write(
        plan(state, {"SKU-001": ("out_of_stock", 0), "SKU-002": ("out_of_stock", 0)}), "r/0"
    )
    assert not policy.ok and (policy.status_after, policy.quantity_after) == ("in_stock", 0)
    assert "inventoryPolicy is CONTINUE" in policy.response and "never changes" in policy.response
    assert shop.variant("SKU-001").policy == "CONTINUE" and shop.available("SKU-001") == 0  # the units are right
    assert not untracked.ok and "enable_tracking" in untracked.response and untracked.status_after == "in_stock"
    assert not shop.variant("SKU-002").tracked and shop.available("SKU-002") == 2  # nothing written

    tracking = storefront(enable_tracking=True)
    (result,) = tracking.write(plan(state, {"SKU-002": ("out_of_stock", 0)}), "r/1")
    assert result.ok and shop.variant("SKU-002").tracked and shop.available("SKU-002") == 0


# -- short-lived tokens ------------------------------------------------------------------------------------


def test_client_credentials_tokens_are_renewed_before_expiry_and_after_a_401(
    storefront: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    with ShopifySimulator(
        SKUS, restore_rate=1000, token="", client_id=CLIENT_ID, client_secret=SECRET, clock=clock
    ) as sim:
        adapter = storefront(sim, token="", client_id=CLIENT_ID, client_secret=SECRET, clock=clock)
        adapter.check()
        state = adapter.read()
        assert sim.tokens_issued == 1 and sim.requests["access_token"] == 1

        clock.now += 86_399 - 60  # a minute before the token expires: renewed first, never refused
        (first,) = adapter.write(plan(state, {"SKU-001": ("out_of_stock", 0)}), "run-1/0")
        assert first.ok and sim.tokens_issued == 2 and not any(a.status == 401 for a in sim.answers)

        sim.expire_tokens()  # expired (or revoked) early: the 401 renews it once, and the call goes through
        (second,) = adapter.write(plan(state, {"SKU-002": ("out_of_stock", 0)}), "run-1/1")
        assert second.ok and sim.tokens_issued == 3 and sum(a.status == 401 for a in sim.answers) == 1

        secrets = [SECRET, *sim.issued_tokens()]
        assert not [s for s in secrets if s in caplog.text or s in repr(adapter)]


def test_refused_client_credentials_are_a_config_error(storefront: Factory) -> None:
    with ShopifySimulator(SKUS, restore_rate=1000, token="", client_id=CLIENT_ID, client_secret=SECRET) as sim:
        with pytest.raises(StorefrontConfigError, match="invalid_client") as raised:
            storefront(sim, token="", client_id=CLIENT_ID, client_secret="shpss_wrong_secret_000").check()
        assert "shpss_wrong" not in str(raised.value) and SECRET not in str(raised.value)
        assert sim.requests["shop"] == 0  # nothing asked of the API without a token

        adapter = storefront(sim, token="", client_id=CLIENT_ID, client_secret=SECRET)
        state = adapter.read()
        sim.client_secret = "shpss_rotated_secret_111"  # rotated in the Dev Dashboard, and the token expires
        sim.expire_tokens()
        with pytest.raises(StorefrontConfigError, match="refused the client credentials"):
            adapter.write(plan(state, {"SKU-001": ("out_of_stock", 0)}), "run-1/0")
        assert sim.requests["inventorySetQuantities"] == 0


def test_credentials_and_a_location_are_required(shop: ShopifySimulator) -> None:
    with pytest.raises(StorefrontConfigError, match="no credentials"):
        ShopifyStorefront(shop.url, "", "1")
    with pytest.raises(StorefrontConfigError, match="not both"):
        ShopifyStorefront(shop.url, TOKEN, "1", client_id=CLIENT_ID, client_secret=SECRET)
    with pytest.raises(StorefrontConfigError, match="no location"):
        ShopifyStorefront(shop.url, TOKEN)


def test_the_token_endpoint_answers_like_shopify() -> None:
    clock = Clock()
    with ShopifySimulator(
        SKUS, restore_rate=1000, token="", client_id=CLIENT_ID, client_secret=SECRET, clock=clock
    ) as sim:

        def grant(**form: str) -> requests.Response:
            return requests.post(f"{sim.url}/admin/oauth/access_token", data=form, timeout=5)

        wrong = grant(grant_type="client_credentials", client_id=CLIENT_ID, client_secret="nope")
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_client"
        assert set(wrong.json()) == {"error", "error_description"}
        assert grant(client_id=CLIENT_ID, client_secret=SECRET).json()["error"] == "invalid_request"
        answer = grant(grant_type="client_credentials", client_id=CLIENT_ID, client_secret=SECRET).json()
        assert set(answer) == {"access_token", "scope", "expires_in"} and answer["expires_in"] == 86_399
        assert answer["scope"] == "read_products,write_inventory,read_locations"

        def shop_name() -> requests.Response:
            url = f"{sim.url}/admin/api/2026-01/graphql.json"
            headers = {"X-Shopify-Access-Token": answer["access_token"]}
            return requests.post(url, json={"query": "{ shop { name } }"}, headers=headers, timeout=5)

        assert shop_name().json()["data"]["shop"]["name"] == "cx-demo-shop"
        clock.now += 86_399
        assert (shop_name().status_code, shop_name().json()) == (401, {"errors": INVALID_TOKEN})
