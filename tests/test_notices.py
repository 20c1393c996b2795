"""Delay notices: FCFS allocation, one notice per order and cause, never twice (re-runs, retries, crashes)."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from assets.resources import NotificationResource
from cx_pipeline import allocation
from cx_pipeline.simulator import Simulator, build_world
from cx_pipeline.warehouse import connect
from tests.conftest import SMALL_WORLD_SKUS
from tests.helpers import TOKEN, WORLD_NOW, materializations

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def sim():
    """A small world whose clock finds a few orders that can no longer ship on time (seed 4: five notices)."""
    with Simulator(world=build_world(seed=4, n_skus=SMALL_WORLD_SKUS, now=WORLD_NOW), token=TOKEN) as server:
        yield server


def test_allocation_serves_open_lines_first_come_first_served(tmp_path: Path):
    with connect(tmp_path / "w.duckdb") as con:
        con.execute("INSERT INTO raw_on_hand VALUES ('A', 'WH-EAST', 7, 0, 2, 'b', ?)", [NOW])  # 5 sellable
        con.execute("INSERT INTO raw_on_hand VALUES ('A', 'WH-WEST', 50, 0, 0, 'b', ?)", [NOW])
        con.execute(
            """CREATE TABLE po_line_receipts AS SELECT 'PO-1' AS po_id, 1 AS po_line, 'A' AS sku,
               'WH-EAST' AS warehouse, 'open' AS po_status, 10 AS qty_ordered, 0 AS qty_received,
               (?::TIMESTAMPTZ + INTERVAL 3 DAY)::DATE AS expected_at""",
            [NOW],
        )
        promise = NOW + timedelta(days=2)
        for order, qty, minutes in (("O1", 3, 1), ("O2", 4, 2), ("O3", 10, 3), ("O4", 1, 4)):
            warehouse = "WH-WEST" if order == "O4" else "WH-EAST"
            con.execute(
                "INSERT INTO raw_open_orders VALUES (?, 1, 'C', 'A', ?, ?, 'open', ?, ?, ?, 'b', ?)",
                [order, warehouse, qty, NOW + timedelta(minutes=minutes), promise, NOW, NOW],
            )
        allocation.allocate(con, allocation.AllocationPolicy(transit_days=2), NOW)
        late = {
            order: (cause, eta)
            for order, cause, eta in con.execute(
                f"SELECT order_id, cause, eta FROM {allocation.delayed_lines(con)}"
            ).fetchall()
        }
    # O1 takes 3 of the 5 on the shelf; O2's last unit comes with the PO in 3 days (+2 transit), after its
    # promise; O3 is beyond all supply; O4 is served from the other warehouse.
    expected_eta = datetime.combine((NOW + timedelta(days=3)).date(), datetime.min.time(), UTC) + timedelta(days=2)
    assert late == {"O2": ("awaiting_stock", expected_eta), "O3": ("out_of_stock", None)}


def sent_keys(sim) -> Counter:
    return Counter(n["idempotency_key"] for n in sim.world.notifications)


def test_each_late_order_gets_one_notice_per_cause_and_a_rerun_sends_nothing(sim, run_all, warehouse_path):
    first = run_all()
    assert first.success
    meta = materializations(first)["delay_notices"]
    assert meta["sent"] > 0
    keys = sent_keys(sim)
    assert len(keys) == meta["sent"] and max(keys.values()) == 1
    assert all(k.count(":") == 2 for k in keys)  # delay:<order>:<cause>
    notice = sim.world.notifications[0]
    assert notice["kind"] == "delivery_delay" and notice["customer_id"] and notice["message"]

    again = run_all()
    assert materializations(again)["delay_notices"]["sent"] == 0
    assert sent_keys(sim) == keys
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM notice_ledger WHERE status = 'sent'").fetchall()[0][0] == len(keys)


def test_dry_run_lists_notices_and_sends_nothing(sim, run_all, warehouse_path):
    result = run_all(config={"delay_notices": {"dry_run": True}})
    meta = materializations(result)["delay_notices"]
    assert meta["dry_run"] and meta["would_send"] > 0 and "delay:" in meta["would_send_preview"]
    assert sim.world.notifications == []
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM notice_ledger").fetchall()[0][0] == 0


def test_a_crash_between_sending_and_marking_does_not_notify_twice(sim, run_all, warehouse_path):
    assert run_all().success
    keys = sent_keys(sim)
    # What a crash after the API accepted the notices but before the ledger marked them leaves behind:
    with duckdb.connect(str(warehouse_path)) as con:
        con.execute("UPDATE notice_ledger SET status = 'planned', notification_id = NULL, sent_at = NULL")
    rerun = materializations(run_all())["delay_notices"]
    assert rerun["already_sent"] == len(keys) and rerun["sent"] == 0
    assert sent_keys(sim) == keys


def test_a_failing_notification_api_keeps_notices_planned_until_a_later_run_sends_them(sim, run_all, warehouse_path):
    sim.faults.add("/notifications", "error", times=None, status=503)
    failed = run_all()
    assert not failed.success
    assert sim.world.notifications == []
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        planned, errors = con.execute(
            "SELECT count(*), count(last_error) FROM notice_ledger WHERE status = 'planned'"
        ).fetchall()[0]
    assert planned > 0 and errors == planned

    sim.faults.clear()
    sim.faults.add("/notifications", "error", times=2)  # transient: retried within the run
    sim.faults.add("/notifications", "latency", times=1, seconds=1.5)  # answer lost to a timeout, then retried
    recovered = run_all(notifications=notification_resource(sim, read_timeout_seconds=0.5))
    assert recovered.success
    keys = sent_keys(sim)
    assert len(keys) == planned and max(keys.values()) == 1


def notification_resource(sim, **settings):
    return NotificationResource(base_url=sim.url, token=TOKEN, backoff_seconds=0.05, **settings)
