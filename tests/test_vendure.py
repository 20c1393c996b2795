"""The Vendure adapter against a real Vendure 3 server (installed from npm, on 127.0.0.1): what the shop API
reports to customers after each push is the proof."""

from collections.abc import Iterator

import pytest

from cx_pipeline.storefront import StockUpdate, StorefrontConfigError
from cx_pipeline.storefront.vendure import VendureStorefront
from tests.vendure_server import VendureServer, free_port

STOCK = {f"VND-{i:03d}": (0 if i % 4 == 0 else 5 + i) for i in range(120)}


@pytest.fixture(scope="module")
def shop() -> Iterator[VendureServer]:
    with VendureServer() as server:
        server.create_products(STOCK)
        yield server


@pytest.fixture
def adapter(shop: VendureServer) -> Iterator[VendureStorefront]:
    vendure = VendureStorefront(shop.admin_url, shop.username, shop.password, page_size=50, backoff_factor=0.05)
    vendure.check()
    yield vendure
    vendure.close()


def update(sku: str, status: str, quantity: int, before: tuple[str, int]) -> StockUpdate:
    return StockUpdate(sku, status, quantity, *before)


def test_read_pages_through_every_variant(adapter):
    state = adapter.read().set_index("sku")
    assert len(state) == len(STOCK)
    assert state.loc["VND-000"].tolist() == ["out_of_stock", 0]
    assert state.loc["VND-001"].tolist() == ["in_stock", 6]


def test_writes_flip_what_customers_see_and_a_second_read_diffs_to_nothing(shop, adapter):
    before = {sku: (s, q) for sku, s, q in adapter.read().itertuples(index=False)}
    updates = [
        update("VND-001", "out_of_stock", 0, before["VND-001"]),
        update("VND-002", "out_of_stock", 0, before["VND-002"]),
        update("VND-004", "in_stock", 12, before["VND-004"]),  # back in stock
        update("VND-005", "in_stock", 3, before["VND-005"]),  # quantity only
    ]
    results = adapter.write(updates, "plan-1")
    assert [(r.sku, r.ok, r.status_after, r.quantity_after) for r in results] == [
        ("VND-001", True, "out_of_stock", 0),
        ("VND-002", True, "out_of_stock", 0),
        ("VND-004", True, "in_stock", 12),
        ("VND-005", True, "in_stock", 3),
    ]
    levels = shop.shop_stock_levels()
    assert levels["VND-001"] == levels["VND-002"] == "OUT_OF_STOCK"
    assert levels["VND-004"] != "OUT_OF_STOCK" and levels["VND-005"] != "OUT_OF_STOCK"

    reread = VendureStorefront(shop.admin_url, shop.username, shop.password)
    reread.check()
    after = {sku: (s, q) for sku, s, q in reread.read().itertuples(index=False)}
    assert {u.sku: after[u.sku] for u in updates} == {u.sku: (u.status, u.quantity) for u in updates}
    assert results == adapter.write(updates, "plan-1")  # repeating a batch is harmless


def test_an_unknown_sku_fails_alone(adapter):
    adapter.read()
    results = adapter.write(
        [update("VND-010", "in_stock", 7, ("in_stock", 15)), update("NOPE-1", "in_stock", 1, (None, None))], "k"
    )
    assert [(r.sku, r.ok) for r in results] == [("VND-010", True), ("NOPE-1", False)]
    assert results[1].response == "unknown sku in Vendure"


def test_graphql_errors_in_a_200_answer_fail_the_batch(adapter):
    adapter.read()
    adapter._variants["VND-011"] = {**adapter._variants["VND-011"], "id": "999999"}  # a variant deleted meanwhile
    results = adapter.write([update("VND-011", "out_of_stock", 0, ("in_stock", 16))], "k")
    assert not results[0].ok and results[0].response.startswith("vendure:")


@pytest.mark.parametrize(
    ("url", "password", "message"),
    [
        (None, "wrong-password", "rejected the username/password"),
        ("http://127.0.0.1:{free}/admin-api", None, "cannot reach Vendure"),
        ("{root}/health", None, "without a Vendure login result"),
    ],
)
def test_misconfiguration_fails_at_check_with_a_clear_message(shop, url, password, message):
    url = (url or shop.admin_url).format(free=free_port(), root=shop.admin_url.removesuffix("/admin-api"))
    vendure = VendureStorefront(url, shop.username, password or shop.password, retries=0)
    with pytest.raises(StorefrontConfigError) as error:
        vendure.check()
    assert message in str(error.value) and "wrong-password" not in str(error.value)
