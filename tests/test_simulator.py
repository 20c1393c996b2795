"""The demo world and its HTTP server, over real HTTP on 127.0.0.1 (no mocks)."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import requests

from cx_pipeline.simulator import REQUIRED_ATTRIBUTES, Simulator, World, build_world

NOW = datetime(2026, 11, 20, 8, tzinfo=UTC)
TOKEN = "sim-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(seed=3, n_skus=600, now=NOW)


@pytest.fixture(scope="module")
def sim(world: World) -> Iterator[Simulator]:
    with Simulator(world=world, token=TOKEN) as server:
        yield server


@pytest.fixture
def fresh() -> Iterator[Simulator]:
    """A small server of its own, for tests that move the clock or change state."""
    with Simulator(world=build_world(seed=5, n_skus=300, now=NOW), token=TOKEN) as server:
        yield server


def get(sim: Simulator, path: str, **params: object) -> requests.Response:
    return requests.get(sim.url + path, params=params, headers=AUTH, timeout=10)


def read_all(sim: Simulator, path: str, **params: object) -> list[dict]:
    rows: list[dict] = []
    while True:
        page = get(sim, path, **params).json()
        rows += page["data"]
        if not page["next_cursor"]:
            return rows
        params["cursor"] = page["next_cursor"]


# --- the world ---


def test_same_seed_and_now_give_identical_worlds(world):
    again = build_world(seed=3, n_skus=600, now=NOW)
    for table in (
        "products",
        "purchase_orders",
        "po_lines",
        "receipts",
        "orders",
        "order_lines",
        "inquiries",
    ):
        pd.testing.assert_frame_equal(getattr(world, table), getattr(again, table))
    assert world.storefront == again.storefront
    assert not build_world(seed=4, n_skus=600, now=NOW).receipts.equals(world.receipts)


def test_world_shape(world):
    products = world.current("products")
    assert len(products) == 600 and products["sku"].is_unique
    assert products["category"].nunique() >= 6 and set(REQUIRED_ATTRIBUTES) <= set(products["category"])
    assert products["supplier_id"].nunique() >= 8
    assert (products["status"] == "active").mean() > 0.75
    assert (NOW - products["registered_at"].min()).days >= 4 * 365
    incomplete = [
        any(a.get(k) is None for k in REQUIRED_ATTRIBUTES[c])
        for c, a in zip(products["category"], products["attributes"], strict=True)
    ]
    assert 0.03 < sum(incomplete) / len(incomplete) < 0.15
    assert (world.products["updated_at"] > pd.Timestamp(NOW)).any()  # catalog changes still to come

    on_hand = world.on_hand()
    assert set(on_hand["warehouse"]) == {"WH-EAST", "WH-WEST"}
    assert (on_hand["on_hand"] >= 0).all() and (on_hand["on_hand"] == 0).any()

    orders = world.current("orders")
    assert 60 < len(orders) / 90 < 90  # 250 a day per 2,000 SKUs
    assert set(orders["status"]) == {"open", "shipped", "cancelled"}
    assert 0.03 < len(world.current("inquiries")) / len(orders) < 0.10  # ~3 % general, ~3 % returns (quality.py)


def test_receipts_hold_every_kind_of_discrepancy(world):
    receipts = world.receipts[world.receipts["valid_to"].isna()]  # final versions
    lines = receipts.merge(world.po_lines, on=["po_id", "po_line"])
    per_line = lines.groupby(["po_id", "po_line"]).agg(
        received=("qty_received", "sum"), ordered=("qty_ordered", "first"), deliveries=("receipt_id", "size")
    )
    assert (per_line["received"] < per_line["ordered"]).any()  # short
    assert (per_line["received"] > per_line["ordered"]).any()  # over
    assert (per_line["deliveries"] > 1).any()  # split
    assert (receipts["qty_damaged"] > 0).mean() > 0.03
    assert receipts.loc[receipts["qty_damaged"] > 0, "damage_reason"].notna().all()
    assert (lines["received_at"].dt.normalize() > lines["expected_at"]).any()  # late
    assert len(world.po_lines) > len(per_line)  # lines not yet due stay unreceived


# --- HTTP ---


def test_every_endpoint_wants_the_token(sim):
    for path in ("/wms/receipts", "/_sim/clock", "/nope"):
        answer = requests.get(sim.url + path, timeout=10)
        assert answer.status_code == 401 and "error" in answer.json()
    wrong = requests.get(sim.url + "/wms/receipts", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    assert get(sim, "/nope").status_code == 404
    assert TOKEN not in repr(sim)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/wms/receipts", ("receipt_id", "line_no")),
        ("/wms/purchase_orders", ("po_id",)),
        ("/wms/on_hand", ("sku", "warehouse")),
        ("/catalog/products", ("sku",)),
        ("/oms/orders", ("order_id",)),
        ("/helpdesk/inquiries", ("inquiry_id",)),
        ("/storefront/stock", ("sku",)),
    ],
)
def test_paging_returns_every_row_exactly_once(sim, world, path, key):
    assert get(sim, path).json()["as_of"] == "2026-11-20T08:00:00Z"
    whole = read_all(sim, path, limit=5000)
    paged = read_all(sim, path, limit=97)
    keys = [tuple(r[k] for k in key) for r in paged]
    assert len(keys) == len(set(keys)) == len(whole) > 0
    assert paged == whole
    if "updated_at" in paged[0] and path != "/storefront/stock":
        assert [r["updated_at"] for r in paged] == sorted(r["updated_at"] for r in paged)
        assert max(r["updated_at"] for r in paged) <= "2026-11-20T08:00:00Z"


def test_updated_since_is_inclusive(sim):
    rows = read_all(sim, "/wms/receipts", limit=5000)
    since = rows[len(rows) // 2]["updated_at"]
    newer = read_all(sim, "/wms/receipts", limit=1000, updated_since=since)
    assert newer == [r for r in rows if r["updated_at"] >= since]
    fractional = since.replace("Z", ".000000Z")  # as the pipeline sends it
    assert read_all(sim, "/wms/receipts", updated_since=fractional) == newer


def test_bad_parameters_are_400(sim):
    assert get(sim, "/wms/receipts", limit=5001).status_code == 400
    assert get(sim, "/wms/receipts", limit="x").status_code == 400
    assert get(sim, "/wms/receipts", cursor="garbage").status_code == 400
    assert get(sim, "/wms/receipts", updated_since="yesterday").status_code == 400
    assert get(sim, "/wms/on_hand", updated_since="yesterday").status_code == 400
    assert get(sim, "/storefront/stock", updated_since="yesterday").status_code == 400
    assert get(sim, "/notifications", updated_since="2026-01-01T00:00:00Z").status_code == 400  # no change log


def test_on_hand_by_change_lists_exactly_the_stock_that_moved(fresh):
    start = get(fresh, "/wms/on_hand", limit=5000).json()
    fresh.advance(6)
    whole = {(r["sku"], r["warehouse"]): r for r in read_all(fresh, "/wms/on_hand", limit=5000)}
    moved = read_all(fresh, "/wms/on_hand", limit=7, updated_since=start["as_of"])  # paged: 7 rows a page

    before = {(r["sku"], r["warehouse"]): r for r in start["data"]}
    figures = ("on_hand", "in_qc", "damaged")
    expected = {k for k, r in whole.items() if any(r[f] != before[k][f] for f in figures)}
    assert expected and {(r["sku"], r["warehouse"]) for r in moved} == expected
    assert all(r == whole[(r["sku"], r["warehouse"])] for r in moved)


def test_advancing_the_clock_reveals_new_rows_and_qc_updates(fresh):
    receipts = fresh.world.receipts
    damaged = receipts[(receipts["qty_damaged"] > 0) & (receipts["received_at"] > pd.Timestamp(NOW))]
    arrival = damaged["received_at"].min()  # stop the clock where a damaged delivery is in, not yet QC'd
    fresh.advance((arrival - pd.Timestamp(NOW)).total_seconds() / 3600)
    before = {p: read_all(fresh, p, limit=5000) for p in ("/wms/receipts", "/oms/orders", "/helpdesk/inquiries")}
    now = get(fresh, "/_sim/clock").json()["now"]
    assert now == arrival.strftime("%Y-%m-%dT%H:%M:%SZ")

    clock = requests.post(fresh.url + "/_sim/clock", json={"advance_hours": 96}, headers=AUTH, timeout=10)
    later = (arrival + pd.Timedelta(hours=96)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert clock.json() == get(fresh, "/_sim/clock").json() == {"now": later}

    for path, rows in before.items():
        since = max(r["updated_at"] for r in rows)
        changed = read_all(fresh, path, updated_since=since)
        assert all(since <= r["updated_at"] <= later for r in changed)
        assert len(changed) > 1, path

    old = {(r["receipt_id"], r["line_no"]): r for r in before["/wms/receipts"]}
    receipts = read_all(fresh, "/wms/receipts", limit=5000)
    assert any((r["receipt_id"], r["line_no"]) not in old for r in receipts)
    qc_updates = [
        r
        for r in receipts
        if (k := (r["receipt_id"], r["line_no"])) in old and r["qty_damaged"] > old[k]["qty_damaged"]
    ]
    assert qc_updates and all(r["damage_reason"] and r["updated_at"] > r["received_at"] for r in qc_updates)
    orders = {r["order_id"]: r["status"] for r in read_all(fresh, "/oms/orders", limit=5000)}
    assert any(orders[r["order_id"]] != "open" for r in before["/oms/orders"] if r["status"] == "open")


def test_a_cursor_keeps_its_snapshot_while_the_clock_moves(fresh):
    first = get(fresh, "/oms/orders", limit=100).json()
    fresh.advance(48)
    rest = read_all(fresh, "/oms/orders", limit=5000, cursor=first["next_cursor"])
    assert max(r["updated_at"] for r in rest) <= first["as_of"]


# --- faults ---


def raw(sim: Simulator, path: str) -> bytes:
    return requests.get(sim.url + path, params={"limit": 20}, headers=AUTH, timeout=10, stream=True).raw.read(
        decode_content=False
    )


def test_answer_faults(fresh):
    path = "/catalog/products"
    fresh.faults.add(path, "error", times=2, status=500)
    assert [get(fresh, path).status_code for _ in range(3)] == [500, 500, 200]

    fresh.faults.add(path, "throttle", retry_after=7)
    throttled = get(fresh, path)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"

    fresh.faults.add("*", "drop")
    with pytest.raises(requests.ConnectionError):
        get(fresh, "/oms/orders")

    fresh.faults.add(path, "latency", seconds=0.3)
    assert get(fresh, path).elapsed.total_seconds() >= 0.3


def test_body_faults(fresh):
    path = "/wms/receipts"
    fresh.faults.add(path, "truncate")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(fresh, path, limit=20).content  # noqa: B018 - reading the body is the point

    fresh.faults.add(path, "malformed")
    answer = get(fresh, path, limit=20)
    assert answer.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        answer.json()
    assert get(fresh, path, limit=20).json()["data"]


def test_data_faults(fresh):
    clean = get(fresh, "/oms/orders", limit=20).json()
    fresh.faults.add("/oms/orders", "duplicate", rows=5)
    assert get(fresh, "/oms/orders", limit=20).json()["data"] == clean["data"] + clean["data"][:5]

    fresh.faults.add("/oms/orders", "empty")
    assert get(fresh, "/oms/orders", limit=20).json() == {
        "data": [],
        "next_cursor": None,
        "as_of": clean["as_of"],
    }

    fresh.faults.add("/oms/orders", "corrupt", field="lines.qty", value=-1, rows=3)
    fresh.faults.add("/oms/orders", "corrupt", field="status", value="zombie", rows=2)
    corrupted = get(fresh, "/oms/orders", limit=20).json()["data"]
    assert [r["lines"][0]["qty"] for r in corrupted[:4]] == [-1, -1, -1, clean["data"][3]["lines"][0]["qty"]]
    assert [r["status"] for r in corrupted[:3]] == ["zombie", "zombie", clean["data"][2]["status"]]
    assert get(fresh, "/oms/orders", limit=20).json() == clean


def test_faults_over_http_until_cleared(fresh):
    added = requests.post(
        fresh.url + "/_sim/faults",
        json={"path": "*", "kind": "error", "times": None, "status": 502},
        headers=AUTH,
        timeout=10,
    )
    assert added.status_code == 201
    assert [get(fresh, p).status_code for p in ("/wms/on_hand", "/helpdesk/inquiries")] == [502, 502]
    assert get(fresh, "/_sim/clock").status_code == 200  # admin endpoints are never faulted
    assert requests.delete(fresh.url + "/_sim/faults", headers=AUTH, timeout=10).json() == {"cleared": 1}
    assert get(fresh, "/wms/on_hand").status_code == 200
    bad = requests.post(fresh.url + "/_sim/faults", json={"path": "*", "kind": "gremlins"}, headers=AUTH, timeout=10)
    assert bad.status_code == 400


# --- writes ---


def test_storefront_batch_and_idempotency(fresh):
    def batch(updates: list[dict], key: str | None = None) -> requests.Response:
        headers = AUTH | ({"Idempotency-Key": key} if key else {})
        return requests.post(
            fresh.url + "/storefront/stock/batch", json={"updates": updates}, headers=headers, timeout=10
        )

    sku = get(fresh, "/storefront/stock", limit=1).json()["data"][0]
    update = {"sku": sku["sku"], "status": "out_of_stock", "quantity": 0}
    first = batch([update, {"sku": "SKU-999999", "status": "in_stock", "quantity": 1}], key="k1").json()
    ok, unknown = first["results"]
    assert ok == {
        "sku": sku["sku"],
        "ok": True,
        "error": None,
        "before": {"status": sku["status"], "quantity": sku["quantity"]},
        "after": {"status": "out_of_stock", "quantity": 0},
    }
    assert unknown["ok"] is False and unknown["error"]
    assert get(fresh, "/storefront/stock", limit=1).json()["data"][0]["quantity"] == 0

    again = batch([{**update, "status": "in_stock", "quantity": 9}], key="k1")
    assert again.json() == first  # replayed, not applied
    assert get(fresh, "/storefront/stock", limit=1).json()["data"][0]["quantity"] == 0
    assert batch([update] * 101).status_code == 413


def test_notifications_are_recorded_once_per_key(fresh):
    notice = {
        "idempotency_key": "n-1",
        "customer_id": "CUS-000001",
        "order_id": "ORD-0000001",
        "kind": "delay",
        "message": "Your order is delayed",
        "channel": "email",
    }
    first = requests.post(fresh.url + "/notifications", json=notice, headers=AUTH, timeout=10)
    second = requests.post(fresh.url + "/notifications", json=notice, headers=AUTH, timeout=10)
    assert first.status_code == 201 and first.json()["duplicate"] is False
    assert second.status_code == 200 and second.json() == {"id": first.json()["id"], "duplicate": True}
    stored = read_all(fresh, "/notifications")
    assert len(stored) == 1 and stored[0]["channel"] == "email" and stored[0]["id"] == first.json()["id"]
    missing_key = requests.post(fresh.url + "/notifications", json={"kind": "x"}, headers=AUTH, timeout=10)
    assert missing_key.status_code == 400
    assert fresh.requests["/notifications"] == 4


def test_a_batch_of_notifications_is_answered_notice_by_notice(fresh):
    def notice(key: str | None) -> dict[str, str]:
        return {"idempotency_key": key, "customer_id": "CUS-000001", "kind": "delay", "message": "Delayed"}

    def post(notices: list) -> requests.Response:
        return requests.post(fresh.url + "/notifications/batch", json={"notifications": notices}, headers=AUTH,
                             timeout=10)  # fmt: skip

    first = post([notice("b-1"), notice(None), notice("b-2")])
    assert first.status_code == 200
    ok, refused, second = first.json()["results"]
    assert ok["idempotency_key"] == "b-1" and ok["duplicate"] is False and ok["id"].startswith("NTF-")
    assert refused == {"idempotency_key": None, "error": "idempotency_key (a non-empty string) is required"}
    again = post([notice("b-2")]).json()["results"]
    assert again == [{"idempotency_key": "b-2", "id": second["id"], "duplicate": True}]
    assert [n["idempotency_key"] for n in read_all(fresh, "/notifications")] == ["b-1", "b-2"]
    assert post([notice(f"c-{i}") for i in range(101)]).status_code == 413
    assert post({"not": "a list"}).status_code == 400


@pytest.mark.parametrize("hour", [2, 20])
def test_the_readmes_one_day_step_brings_receipts_whenever_the_demo_world_starts(hour: int):
    """The README's UI walk-through advances the demo world a day for the confirmation cycle's second run:
    deliveries arrive in working hours, so a 3-hour step at night would bring none."""
    now = datetime(2026, 12, 5, hour, tzinfo=UTC)
    world = build_world(seed=42, n_skus=2000, now=now)  # `cx-pipeline simulate`'s defaults
    received = pd.to_datetime(world.receipts["received_at"], utc=True)
    assert ((received > now) & (received <= now + timedelta(hours=24))).sum() > 0
    if hour == 2:
        assert ((received > now) & (received <= now + timedelta(hours=3))).sum() == 0
