"""ShopifyStorefront against the local Shopify Admin GraphQL simulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pandas as pd
import pytest
import requests

from cx_pipeline.http import UpstreamError
from cx_pipeline.simulator.shopify import INVALID_TOKEN, ShopifySimulator
from cx_pipeline.storefront.base import StockUpdate, StorefrontConfigError
from cx_pipeline.storefront.shopify import STALE, ShopifyStorefront

TOKEN = "shpat_test_0123456789abcdef"
SKUS = {f"SKU-{n:03d}": n % 4 for n in range(1, 251)}  # a quarter of them out of stock

Factory = Callable[..., ShopifyStorefront]


@pytest.fixture
def shop() -> Iterator[ShopifySimulator]:
    with ShopifySimulator({**SKUS, "": 7}, token=TOKEN) as sim:  # "": a variant without SKU
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
    state = storefront(page_size=100).read()
    assert shop.requests["productVariants"] == 3  # 251 variants, 100 a page
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


def test_the_same_key_twice_applies_once(shop: ShopifySimulator, storefront: Factory) -> None:
    updates = plan(storefront().read(), {"SKU-005": ("out_of_stock", 0), "SKU-008": ("in_stock", 6)})
    first = storefront().write(updates, "run-1/0")
    replay = storefront().write(updates, "run-1/0")  # e.g. the run retried by the orchestrator
    assert all(r.ok for r in first + replay) and [r.quantity_after for r in replay] == [0, 6]
    assert shop.requests["inventorySetQuantities"] == 2 and len(shop.adjustment_groups) == 1
    # Under another key the same batch is a new operation, and its compare quantities are stale now.
    assert {r.response for r in storefront().write(updates, "run-2/0")} == {STALE}


def test_a_small_bucket_is_paced_without_being_throttled(storefront: Factory) -> None:
    with ShopifySimulator({f"S{n}": 1 for n in range(30)}, token=TOKEN, bucket_size=40, restore_rate=400) as sim:
        adapter = storefront(sim, batch_size=5, page_size=5)
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
    (result,) = adapter.write([StockUpdate("SKU-001", "out_of_stock", 0, "in_stock", 1)], "run-1/0")
    assert result.ok and shop.throttled == 2 and len(adapter.waits) == 2
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
