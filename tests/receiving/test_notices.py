"""Delay notices: FCFS allocation, one notice per order and cause, never twice (re-runs, retries, crashes)."""

from collections import Counter
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from uuid import uuid4

import duckdb
import pandas as pd
import pytest

from cx_pipeline.assets.resources import NotificationResource
from cx_pipeline.receiving import allocation, notices, reconciliation
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
    # O1 takes 3 of the 5 on the shelf; O2's last unit comes with the PO in 3 days (+8 h QC, +2 days transit),
    # after its promise; O3 is beyond all supply; O4 is served from the other warehouse.
    expected_eta = datetime.combine((NOW + timedelta(days=3)).date(), datetime.min.time(), UTC) + timedelta(
        hours=8, days=2
    )
    assert late == {"O2": ("awaiting_stock", expected_eta), "O3": ("out_of_stock", None)}


def sent_keys(sim) -> Counter:
    return Counter(n["idempotency_key"] for n in sim.world.notifications)


def test_each_late_order_gets_one_notice_and_a_rerun_sends_nothing(sim, run_all, warehouse_path):
    first = run_all()
    assert first.success
    meta = materializations(first)["delay_notices"]
    assert meta["sent"] > 0 and meta["first_notices"] == meta["sent"] and meta["updates"] == 0
    keys = sent_keys(sim)
    assert len(keys) == meta["sent"] and max(keys.values()) == 1
    assert all(k.count(":") == 2 and k.endswith(":1") for k in keys)  # delay:<order>:<revision>
    assert max(Counter(n["order_id"] for n in sim.world.notifications).values()) == 1
    notice = sim.world.notifications[0]
    assert notice["kind"] == "delivery_delay" and notice["customer_id"] and notice["message"]
    assert all(sku in n["message"] for n in sim.world.notifications for sku in n["skus"])  # names what is late

    again = run_all()
    assert materializations(again)["delay_notices"]["sent"] == 0
    assert sent_keys(sim) == keys
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM notice_ledger WHERE status = 'sent'").fetchall()[0][0] == len(keys)
        # A discrepancy is customers-notified only through a notice line of its own warehouse that named it.
        unexplained = con.execute(
            """SELECT count(*) FROM receipt_discrepancies d WHERE status = 'customers_notified' AND NOT EXISTS (
                   SELECT 1 FROM notice_lines l WHERE l.po_id = d.po_id AND l.po_line = d.po_line
                   AND l.warehouse = d.warehouse AND l.cause IN ('short_delivery', 'supplier_late'))"""
        ).fetchall()[0][0]
        assert unexplained == 0


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
    sim.faults.add("/notifications/batch", "error", times=None, status=503)
    failed = run_all()
    assert not failed.success
    assert sim.world.notifications == []
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        planned, errors = con.execute(
            "SELECT count(*), count(last_error) FROM notice_ledger WHERE status = 'planned'"
        ).fetchall()[0]
    assert planned > 0 and errors == planned

    sim.faults.clear()
    sim.faults.add("/notifications/batch", "error", times=2)  # transient: retried within the run
    sim.faults.add("/notifications/batch", "latency", times=1, seconds=1.5)  # answer lost to a timeout, then retried
    recovered = run_all(notifications=notification_resource(sim, read_timeout_seconds=0.5))
    assert recovered.success
    keys = sent_keys(sim)
    assert len(keys) == planned and max(keys.values()) == 1


def notification_resource(sim, **settings):
    return NotificationResource(base_url=sim.url, token=TOKEN, backoff_seconds=0.05, **settings)


# --- causes, dates and updates, on a hand-built warehouse (the simulator only receives the notices) ---------

POLICY = allocation.AllocationPolicy(qc_hours=8, transit_days=2)
PROMISE = NOW + timedelta(days=1)


def add_stock(con: duckdb.DuckDBPyConnection, sku: str, warehouse: str, on_hand: int, in_qc: int = 0, damaged: int = 0):
    con.execute("DELETE FROM raw_on_hand WHERE sku = ? AND warehouse = ?", [sku, warehouse])
    row = [sku, warehouse, on_hand, in_qc, damaged, NOW]
    con.execute("INSERT INTO raw_on_hand VALUES (?, ?, ?, ?, ?, 'b', ?)", row)


def add_po_line(con, po: str, sku: str, warehouse: str, qty: int, expected_in_days: int, status: str = "open"):
    """Land a PO line (or a new version of it) in a batch of its own, as a pull would."""
    con.execute("DELETE FROM raw_purchase_orders WHERE po_id = ? AND po_line = 1", [po])
    con.execute(
        "INSERT INTO raw_purchase_orders VALUES (?, 1, 'SUP-1', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [po, warehouse, sku, qty, (NOW + timedelta(days=expected_in_days)).date(), status, NOW, NOW, uuid4().hex, NOW],
    )


def add_receipt(con, receipt: str, po: str, sku: str, warehouse: str, qty: int, damaged: int = 0, at=NOW):
    con.execute(
        "INSERT INTO raw_receipts VALUES (?, 1, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [receipt, po, sku, warehouse, qty, damaged, "crushed" if damaged else None, at - timedelta(hours=1), at,
         uuid4().hex, at],
    )  # fmt: skip


def add_order(con, order: str, sku: str, warehouse: str, qty: int, line: int = 1, minute: int = 0, customer="C"):
    con.execute(
        "INSERT INTO raw_open_orders VALUES (?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, 'b', ?)",
        [order, line, f"{customer}-{order}", sku, warehouse, qty, NOW - timedelta(days=2, minutes=-minute), PROMISE,
         NOW, NOW],
    )  # fmt: skip


def notify(con: duckdb.DuckDBPyConnection, sim, now: datetime) -> pd.DataFrame:
    """One delay_notices run at `now`, as the asset does it (after reconciling); returns the notices planned."""
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), now)
    allocation.allocate(con, POLICY, now)
    due = notices.due_notices(con, allocation.delayed_lines(con))
    notices.plan(con, due, now, None)
    report = notices.send(con, notification_resource(sim).client, notices.pending(con), now)
    assert report.failed == 0, report.errors
    notices.mark_discrepancies_notified(con, now)
    return due.set_index("order_id")


def discrepancy_status(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str]:
    rows = con.execute("SELECT po_id, kind, status FROM receipt_discrepancies").fetchall()
    return {(po, kind): status for po, kind, status in rows}


@pytest.fixture
def con(tmp_path: Path):
    with connect(tmp_path / "w.duckdb") as c:
        yield c


def test_a_damaged_delivery_at_one_warehouse_is_never_the_cause_for_lines_another_warehouse_fulfils(sim, con):
    # West: 2 units for 7 ordered by four customers, and no purchase order.
    add_stock(con, "A", "WH-WEST", 2)
    for i, qty in enumerate((2, 2, 2, 1)):
        add_order(con, f"W{i}", "A", "WH-WEST", qty, minute=i)
    # East: 10 arrived, 4 of them damaged (the PO is received: nothing more will come); 6 sellable, 6 ordered.
    add_po_line(con, "PO-E", "A", "WH-EAST", 10, -3, status="received")
    add_receipt(con, "R-E", "PO-E", "A", "WH-EAST", 10, damaged=4)
    add_stock(con, "A", "WH-EAST", 10, damaged=4)
    add_order(con, "E0", "A", "WH-EAST", 6)

    first = notify(con, sim, NOW)
    assert dict(first["cause"]) == {"W1": "out_of_stock", "W2": "out_of_stock", "W3": "out_of_stock"}
    assert first["new_eta"].isna().all()
    assert all("no delivery to our warehouse is scheduled yet" in n["message"] for n in sim.world.notifications)
    assert not any("short or damaged" in n["message"] for n in sim.world.notifications)
    # Nobody the damaged delivery delays has been told: it stays open.
    assert discrepancy_status(con) == {("PO-E", "damaged"): "open"}

    # An east customer whose units the damage took: that one is its customer, and it is marked.
    add_order(con, "E1", "A", "WH-EAST", 2, minute=5)
    second = notify(con, sim, NOW + timedelta(hours=3))
    assert list(second.index) == ["E1"] and second.loc["E1", "cause"] == "short_delivery"
    assert "arrived short or damaged" in sim.world.notifications[-1]["message"]
    assert discrepancy_status(con) == {("PO-E", "damaged"): "customers_notified"}
    (lines,) = con.execute("SELECT list(DISTINCT warehouse) FROM notice_lines WHERE po_id = 'PO-E'").fetchall()[0]
    assert lines == ["WH-EAST"]


def test_an_order_gets_one_notice_per_run_naming_each_late_item_and_why(sim, con):
    con.execute(
        "INSERT INTO raw_catalog VALUES ('B', 'Nordic Lamp', 'home', 'SUP-1', 10, 'EUR', 'active', ?, ?, NULL, 'b', ?)",
        [NOW, NOW, NOW],
    )
    add_po_line(con, "PO-B", "B", "WH-EAST", 10, 4)  # B waits for a dated PO at the east
    add_order(con, "O1", "B", "WH-EAST", 1, line=1)
    add_order(con, "O1", "C", "WH-WEST", 1, line=2)  # C has no supply at all at the west
    add_stock(con, "C", "WH-EAST", 50)  # ... though the east has plenty

    due = notify(con, sim, NOW)
    assert len(due) == 1 and len(sim.world.notifications) == 1
    notice = sim.world.notifications[0]
    assert notice["idempotency_key"] == "delay:O1:1" and notice["update"] is False
    assert notice["skus"] == ["B", "C"] and notice["new_eta"] is None  # the order comes with its last line
    assert "Nordic Lamp (B): new stock is on its way to our warehouse." in notice["message"]
    assert "C: out of stock." in notice["message"]
    assert "We cannot give you a new delivery date yet" in notice["message"]
    causes = con.execute("SELECT line_no, cause FROM notice_lines ORDER BY line_no").fetchall()
    assert causes == [(1, "awaiting_stock"), (2, "out_of_stock")]

    assert notify(con, sim, NOW + timedelta(hours=3)).empty  # nothing new: nothing sent
    assert len(sim.world.notifications) == 1


def test_a_relabelled_cause_with_the_same_date_sends_nothing(sim, con):
    add_po_line(con, "PO-1", "A", "WH-EAST", 10, 4)
    add_order(con, "O1", "A", "WH-EAST", 8)
    first = notify(con, sim, NOW)
    assert first.loc["O1", "cause"] == "awaiting_stock"

    # 4 of the 10 arrive early (short, the rest still owed on the same date): the line now waits for the
    # remainder of a short delivery, but its date has not moved.
    add_receipt(con, "R1", "PO-1", "A", "WH-EAST", 4)
    add_stock(con, "A", "WH-EAST", 4, in_qc=4)
    later = NOW + timedelta(hours=3)
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), later)
    allocation.allocate(con, POLICY, later)
    (cause,) = con.execute(f"SELECT cause FROM {allocation.delayed_lines(con)}").fetchall()[0]
    assert cause == "short_delivery"
    assert notify(con, sim, later).empty
    assert len(sim.world.notifications) == 1


def test_a_later_date_sends_an_update_and_an_earlier_one_does_not(sim, con):
    add_po_line(con, "PO-1", "A", "WH-EAST", 10, 3)
    add_order(con, "O1", "A", "WH-EAST", 2)
    first = notify(con, sim, NOW).loc["O1"]
    assert first["new_eta"] == pd.Timestamp(datetime.combine((NOW + timedelta(days=5)).date(), time(8), UTC))

    add_po_line(con, "PO-1", "A", "WH-EAST", 10, 6)  # the supplier moves the delivery three days later
    update = notify(con, sim, NOW + timedelta(hours=3)).loc["O1"]
    assert update["notice_key"] == "delay:O1:2" and update["new_eta"] - first["new_eta"] == timedelta(days=3)
    sent = sim.world.notifications[-1]
    assert sent["update"] is True and sent["idempotency_key"] == "delay:O1:2"
    assert f"later than we last told you ({first['new_eta']:%A} {first['new_eta'].day}" in sent["message"]

    add_po_line(con, "PO-1", "A", "WH-EAST", 10, 4)  # earlier again: good news is not a delay notice
    assert notify(con, sim, NOW + timedelta(hours=6)).empty
    add_po_line(con, "PO-1", "A", "WH-EAST", 10, 6)  # back to the date the customer has: nothing either
    assert notify(con, sim, NOW + timedelta(hours=9)).empty
    assert [n["idempotency_key"] for n in sim.world.notifications] == ["delay:O1:1", "delay:O1:2"]


def test_a_date_wherever_supply_is_known_and_plainly_none_otherwise(sim, con):
    add_stock(con, "Q", "WH-EAST", 3, in_qc=3)  # in QC: sellable after QC
    add_order(con, "QC", "Q", "WH-EAST", 3)
    add_po_line(con, "PO-P", "P", "WH-EAST", 10, 2)  # an open PO line, due in two days
    add_order(con, "PO", "P", "WH-EAST", 3)
    add_po_line(con, "PO-L", "L", "WH-EAST", 10, -2)  # an open PO line two days overdue, nothing received
    add_order(con, "LATE", "L", "WH-EAST", 3)
    add_order(con, "NONE", "N", "WH-EAST", 3)  # no supply at all

    due = notify(con, sim, NOW)
    midnight = datetime.combine(NOW.date(), time(), UTC)
    assert due.loc["QC", "new_eta"] == NOW + timedelta(hours=8, days=2)
    assert due.loc["PO", "new_eta"] == midnight + timedelta(days=2, hours=8) + timedelta(days=2)
    undated = {order: (due.loc[order, "cause"], list(due.loc[order, "no_date"])) for order in ("LATE", "NONE")}
    assert undated == {"LATE": ("supplier_late", ["overdue"]), "NONE": ("out_of_stock", ["none_scheduled"])}
    assert due.loc[["LATE", "NONE"], "new_eta"].isna().all()
    messages = {n["order_id"]: n["message"] for n in sim.world.notifications}
    assert "We now expect to deliver it by Sunday 22 November." in messages["QC"]
    assert "We now expect to deliver it by Tuesday 24 November." in messages["PO"]
    assert "our supplier's delivery is overdue and has no new date" in messages["LATE"]
    assert "no delivery to our warehouse is scheduled yet" in messages["NONE"]
    assert discrepancy_status(con) == {("PO-L", "late"): "customers_notified"}


def test_a_date_that_no_longer_holds_and_a_date_that_becomes_known_send_updates(sim, con):
    add_po_line(con, "PO-1", "A", "WH-EAST", 10, 3)
    add_order(con, "O1", "A", "WH-EAST", 2)
    told = notify(con, sim, NOW).loc["O1", "new_eta"]

    overdue = NOW + timedelta(days=4)  # the PO line's day passes and nothing arrives
    update = notify(con, sim, overdue).loc["O1"]
    assert (update["notice_key"], update["cause"]) == ("delay:O1:2", "supplier_late") and pd.isna(update["new_eta"])
    assert (
        f"it will not arrive by {told:%A} {told.day} {told:%B} as we last told you"
        in sim.world.notifications[-1]["message"]
    )
    assert discrepancy_status(con) == {("PO-1", "late"): "customers_notified"}
    assert notify(con, sim, overdue + timedelta(hours=3)).empty  # still no date: nothing new

    arrived = overdue + timedelta(hours=6)  # the delivery comes in and goes to QC: a date again
    add_receipt(con, "R1", "PO-1", "A", "WH-EAST", 10, at=arrived)
    add_stock(con, "A", "WH-EAST", 10, in_qc=10)
    known = notify(con, sim, arrived).loc["O1"]
    assert known["notice_key"] == "delay:O1:3" and known["new_eta"] == arrived + timedelta(hours=8, days=2)
    assert "we now have a delivery date" in sim.world.notifications[-1]["message"]
    assert [n["update"] for n in sim.world.notifications] == [False, True, True]
