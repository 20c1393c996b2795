"""The delay-notice workflow in one call (`notices.notify_delays`), on a hand-built warehouse in a DuckDB file:
what a run finds, writes and sends, what a dry run leaves alone, and what a refusing API leaves planned."""

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from cx_pipeline.receiving import notices, reconciliation
from cx_pipeline.simulator.api import MAX_BATCH_NOTICES
from cx_pipeline.warehouse import connect
from tests.receiving.test_notices import (
    NOW,
    POLICY,
    add_order,
    add_po_line,
    add_stock,
    discrepancy_status,
    notification_resource,
)


@pytest.fixture
def con(tmp_path: Path):
    """Three late orders: one waiting for a dated PO line, one for an overdue PO line, one with no supply."""
    with connect(tmp_path / "w.duckdb") as c:
        add_stock(c, "A", "WH-EAST", 1)
        add_po_line(c, "PO-A", "A", "WH-EAST", 10, 3)
        add_order(c, "O1", "A", "WH-EAST", 2)
        add_po_line(c, "PO-L", "L", "WH-EAST", 10, -2)
        add_order(c, "O2", "L", "WH-EAST", 1)
        add_order(c, "O3", "N", "WH-EAST", 1)
        reconciliation.reconcile(c, reconciliation.ReceivingPolicy(), NOW)  # what the run does before notices
        yield c


def ledger(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return con.execute("SELECT notice_key, status FROM notice_ledger ORDER BY notice_key").fetchall()


def test_a_run_plans_sends_and_marks_the_notices_it_finds_due(sim, con):
    run = notices.notify_delays(con, POLICY, NOW, "run-1", notification_resource(sim).client)

    assert run.late_order_lines == 3 and sorted(run.due["order_id"]) == ["O1", "O2", "O3"]
    assert run.counts == {"first_notices": 3, "updates": 0, "with_new_date": 1, "without_date_yet": 2}
    assert (run.planned, run.pending, run.report.sent, run.report.already_sent, run.report.failed) == (3, 3, 3, 0, 0)
    assert list(run.preview.columns) == [
        "notice_key", "customer_id", "cause", "skus", "promised_at", "previous_eta", "new_eta"
    ]  # fmt: skip
    assert ledger(con) == [("delay:O1:1", "sent"), ("delay:O2:1", "sent"), ("delay:O3:1", "sent")]
    assert sorted(n["idempotency_key"] for n in sim.world.notifications) == [k for k, _ in ledger(con)]
    assert run.notified == 1 and discrepancy_status(con) == {("PO-L", "late"): "customers_notified"}
    assert run.ledger_by_cause["notices"].sum() == 3 and set(run.ledger_by_cause["status"]) == {"sent"}

    again = notices.notify_delays(con, POLICY, NOW + timedelta(hours=3), "run-2", notification_resource(sim).client)
    assert again.due.empty and (again.planned, again.pending, again.report.sent, again.notified) == (0, 0, 0, 0)
    assert len(sim.world.notifications) == 3


def test_a_dry_run_finds_what_is_due_and_writes_and_sends_nothing(sim, con):
    run = notices.notify_delays(con, POLICY, NOW, "run-1", client=None)

    assert run.report is None and run.late_order_lines == 3 and len(run.due) == 3
    assert (run.planned, run.pending, run.notified) == (0, 0, 0) and run.ledger_by_cause.empty
    assert ledger(con) == [] and sim.world.notifications == []
    assert discrepancy_status(con) == {("PO-L", "late"): "open"}


def test_notices_the_api_refuses_stay_planned_and_the_next_run_sends_them(sim, con):
    sim.faults.add("/notifications/batch", "error", times=None, status=503)
    refused = notices.notify_delays(con, POLICY, NOW, "run-1", notification_resource(sim, retries=0).client)

    assert (refused.planned, refused.pending, refused.report.sent, refused.report.failed) == (3, 3, 0, 3)
    assert len(refused.report.errors) == 3 and refused.notified == 0
    assert {status for _, status in ledger(con)} == {"planned"}

    sim.faults.clear()
    later = NOW + timedelta(hours=3)
    sent = notices.notify_delays(con, POLICY, later, "run-2", notification_resource(sim).client)
    assert sent.due.empty and sent.planned == 0  # nothing new is due: the planned notices wait for themselves
    assert (sent.pending, sent.report.sent, sent.report.failed) == (3, 3, 0)
    assert {status for _, status in ledger(con)} == {"sent"}


def test_notices_go_out_in_batches_each_acknowledged_by_its_key(sim, con, monkeypatch):
    monkeypatch.setattr(notices, "BATCH_NOTICES", 2)  # three notices: a batch of two and one of one
    run = notices.notify_delays(con, POLICY, NOW, "run-1", notification_resource(sim).client)

    assert (run.report.sent, run.report.failed) == (3, 0) and {status for _, status in ledger(con)} == {"sent"}
    assert sim.requests["/notifications/batch"] == 2 and sim.requests["/notifications"] == 0
    assert notices.BATCH_NOTICES <= MAX_BATCH_NOTICES  # the real batches fit the API's limit
    ids = dict(con.execute("SELECT notice_key, notification_id FROM notice_ledger").fetchall())
    assert ids == {n["idempotency_key"]: n["id"] for n in sim.world.notifications}


@pytest.mark.parametrize("status", [400, 404, 405, 413, 422])  # no batch endpoint, or none taking ours
def test_a_service_without_the_batch_endpoint_gets_one_post_per_notice(sim, con, monkeypatch, status):
    monkeypatch.setattr(notices, "BATCH_NOTICES", 2)
    sim.faults.add("/notifications/batch", "error", times=None, status=status)
    run = notices.notify_delays(con, POLICY, NOW, "run-1", notification_resource(sim).client)

    assert (run.report.sent, run.report.failed) == (3, 0) and {status for _, status in ledger(con)} == {"sent"}
    assert sim.requests["/notifications"] == 3 and 1 <= sim.requests["/notifications/batch"] <= 2
    assert sorted(n["idempotency_key"] for n in sim.world.notifications) == [k for k, _ in ledger(con)]


def test_the_notices_a_batch_leaves_unrecorded_stay_planned_with_the_services_error(sim, con):
    sim.faults.add("/notifications/batch", "partial", times=1)  # the service records the first half only
    half = notices.notify_delays(con, POLICY, NOW, "run-1", notification_resource(sim).client)

    assert (half.report.sent, half.report.failed) == (1, 2) and len(sim.world.notifications) == 1
    assert all("injected fault: partial" in error for error in half.report.errors)
    assert [status for _, status in ledger(con)].count("planned") == 2

    later = notices.notify_delays(con, POLICY, NOW + timedelta(hours=3), "run-2", notification_resource(sim).client)
    assert (later.pending, later.report.sent, later.report.failed) == (2, 2, 0)
    assert sorted(n["idempotency_key"] for n in sim.world.notifications) == [k for k, _ in ledger(con)]
