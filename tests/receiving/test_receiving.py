"""Receipt reconciliation rules, the discrepancy lifecycle, the confirmation cycle and the new-receipts sensor."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import dagster as dg
import duckdb
import pytest

from cx_pipeline.assets.receiving import receipt_discrepancies
from cx_pipeline.assets.resources import WmsResource
from cx_pipeline.assets.sensors import new_receipts_sensor
from cx_pipeline.receiving import notices, reconciliation
from cx_pipeline.warehouse import connect
from tests.conftest import ingest
from tests.helpers import TOKEN, materializations

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
TODAY = NOW.date()


def add_po_line(con: duckdb.DuckDBPyConnection, line: int, qty: int, expected_days_ago: int, status: str = "open"):
    """Land a PO line (or a new version of it) in a batch of its own, as a pull would."""
    con.execute("DELETE FROM raw_purchase_orders WHERE po_id = 'PO-1' AND po_line = ?", [line])
    con.execute(
        """INSERT INTO raw_purchase_orders VALUES
        ('PO-1', ?, 'SUP-1', 'WH-EAST', ?, ?, ?, ?, ?, ?, ?, ?)""",
        [line, f"SKU-{line}", qty, TODAY - timedelta(days=expected_days_ago), status, NOW, NOW, uuid4().hex, NOW],
    )


def add_receipt(
    con: duckdb.DuckDBPyConnection,
    receipt: str,
    line: int,
    qty: int,
    damaged: int = 0,
    days_ago: int = 1,
    landed: datetime = NOW,
) -> str:
    """Land a receipt line (or a new version of it, which may name another PO line) in a batch of its own;
    return the batch's id."""
    con.execute("DELETE FROM raw_receipts WHERE receipt_id = ? AND line_no = 1", [receipt])
    batch = uuid4().hex
    con.execute(
        """INSERT INTO raw_receipts VALUES (?, 1, 'PO-1', ?, ?, 'WH-EAST', ?, ?, ?, ?, ?, ?, ?)""",
        [
            receipt,
            line,
            f"SKU-{line}",
            qty,
            damaged,
            "crushed" if damaged else None,
            NOW - timedelta(days=days_ago),
            NOW,
            batch,
            landed,
        ],
    )
    return batch


def record_batch(con: duckdb.DuckDBPyConnection, batch: str, replaced: int) -> None:
    """Record a receipts batch in `ingest_batches` as the landing does: judged, with the receipts it replaced."""
    con.execute(
        """INSERT INTO ingest_batches (batch_id, feed, fetched_at, pages, rows_fetched, rows_new, rows_updated,
                                       rows_unchanged, rows_duplicate, judged_at)
        VALUES (?, 'receipts', ?, 1, 1, ?, ?, 0, 0, ?)""",
        [batch, NOW, 1 - replaced, replaced, NOW],
    )


@pytest.fixture
def con(tmp_path: Path):
    with connect(tmp_path / "w.duckdb") as c:
        yield c


def found(con: duckdb.DuckDBPyConnection) -> dict[tuple[int, str], tuple[int, str]]:
    rows = con.execute("SELECT po_line, kind, qty_gap, status FROM receipt_discrepancies").fetchall()
    return {(line, kind): (gap, status) for line, kind, gap, status in rows}


def test_reconciliation_classifies_each_po_line(con):
    add_po_line(con, 1, 10, 2)  # full
    add_receipt(con, "R1", 1, 10)
    add_po_line(con, 2, 10, 2)  # short by 3
    add_receipt(con, "R2", 2, 7)
    add_po_line(con, 3, 10, 2)  # over by 2 (allowance 5 % = 10.5)
    add_receipt(con, "R3", 3, 12)
    add_po_line(con, 4, 10, 2)  # 2 damaged: short of good units
    add_receipt(con, "R4", 4, 10, damaged=2)
    add_po_line(con, 5, 10, 3)  # nothing arrived, due 3 days ago
    add_po_line(con, 6, 10, -5)  # not due yet
    add_po_line(con, 7, 10, 2, status="closed")  # short, but settled with the supplier
    add_receipt(con, "R7", 7, 5)

    moved = reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)

    assert found(con) == {
        (2, "short"): (3, "open"),
        (3, "over"): (2, "open"),
        (4, "damaged"): (2, "open"),
        (5, "late"): (0, "open"),
    }
    assert moved == {"opened": 4, "reopened": 0, "resolved": 0, "po_lines_redone": 7}
    (days_late,) = con.execute("SELECT days_late FROM receipt_discrepancies WHERE kind = 'late'").fetchall()[0]
    assert days_late == 3
    states = dict(con.execute("SELECT po_line, receipt_state FROM po_line_receipts").fetchall())
    assert states == {1: "full", 2: "partial", 3: "over", 4: "full", 5: "not_received", 6: "not_received", 7: "partial"}


def test_tolerances_are_configurable(con):
    add_po_line(con, 2, 10, 2)
    add_receipt(con, "R2", 2, 7)
    add_po_line(con, 3, 10, 2)
    add_receipt(con, "R3", 3, 12)
    add_po_line(con, 5, 10, 3)
    policy = reconciliation.ReceivingPolicy(short_tolerance_pct=40, over_allowance_pct=25, late_grace_days=5)
    reconciliation.reconcile(con, policy, NOW)
    assert found(con) == {}


def test_a_discrepancy_goes_open_then_customers_notified_then_resolved_by_a_later_receipt(con):
    add_po_line(con, 2, 10, 2)
    add_receipt(con, "R2", 2, 7)
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)
    assert found(con) == {(2, "short"): (3, "open")}

    con.execute(
        """INSERT INTO notice_ledger (notice_key, order_id, customer_id, cause, skus, message, status, planned_at)
        VALUES ('delay:O1:1', 'O1', 'C1', 'short_delivery', ['SKU-2'], 'late', 'sent', ?)""",
        [NOW],
    )
    con.execute(  # the order line the notice named waits for the short PO line
        """INSERT INTO notice_lines (notice_key, order_id, line_no, sku, warehouse, cause, po_id, po_line)
        VALUES ('delay:O1:1', 'O1', 1, 'SKU-2', 'WH-EAST', 'short_delivery', 'PO-1', 2)"""
    )
    assert notices.mark_discrepancies_notified(con, NOW) == 1
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW + timedelta(hours=3))
    assert found(con) == {(2, "short"): (3, "customers_notified")}  # a re-run keeps the status

    add_receipt(con, "R2b", 2, 3, days_ago=0)
    moved = reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW + timedelta(hours=6))
    assert moved["resolved"] == 1
    row = con.execute("SELECT status, resolution, resolved_at, notified_at FROM receipt_discrepancies").fetchall()[0]
    assert row[:2] == ("resolved", "later_receipt") and row[2] > row[3]


def state(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple], list[tuple]]:
    """Every PO line's receipt state and every discrepancy's figures, to compare a redo with a rebuild."""
    lines = con.execute("SELECT * EXCLUDE (receipts_hash) FROM po_line_receipts ORDER BY ALL").fetchall()
    found = con.execute(
        """SELECT po_line, kind, qty_received, qty_damaged, qty_gap, damage_reasons, days_late, status, resolution
        FROM receipt_discrepancies ORDER BY ALL"""
    ).fetchall()
    return lines, found


def rebuilt(con: duckdb.DuckDBPyConnection, now: datetime) -> tuple[list[tuple], list[tuple]]:
    """The state a reconciliation from scratch gives, in a copy of the warehouse (the original is untouched)."""
    con.execute("CHECKPOINT")
    (path,) = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()[0]
    path = Path(path)
    copy = path.with_name("rebuilt.duckdb")
    copy.write_bytes(path.read_bytes())
    with connect(copy) as other:
        other.execute("DELETE FROM reconciled_with")  # forget what was reconciled: every line is redone
        reconciliation.reconcile(other, reconciliation.ReceivingPolicy(), now)
        return state(other)


def test_a_run_redoes_only_the_po_lines_that_changed_and_ends_as_a_rebuild_would(con):
    for line in range(1, 6):
        add_po_line(con, line, 10, 2)
        add_receipt(con, f"R{line}", line, 10)
    add_po_line(con, 6, 10, -1)  # due tomorrow: not late yet
    assert reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)["po_lines_redone"] == 6

    add_receipt(con, "R2", 2, 7)  # a corrected count: short by 3
    add_receipt(con, "R3b", 3, 1, damaged=1)  # a second delivery, one unit too many and it damaged
    later = NOW + timedelta(days=2)  # line 6 is now a day late, with no new batch
    moved = reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), later)
    assert moved["po_lines_redone"] == 3  # lines 2 and 3, and line 6, which has received nothing yet
    assert found(con) == {(2, "short"): (3, "open"), (3, "over"): (1, "open"), (6, "late"): (0, "open")}
    assert state(con) == rebuilt(con, later)

    assert reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), later)["po_lines_redone"] == 1  # line 6 only


def test_a_receipt_moved_to_another_po_line_is_counted_once(con):
    add_po_line(con, 1, 10, 2)
    add_po_line(con, 2, 10, 2)
    add_receipt(con, "R1", 1, 10)
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)
    assert found(con) == {(2, "late"): (0, "open")}

    add_receipt(con, "R1", 2, 10)  # the WMS corrects the receipt: it was for line 2
    moved = reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)
    assert moved["po_lines_redone"] == 2  # the line it left was not touched: caught, and everything redone
    received = dict(con.execute("SELECT po_line, qty_received FROM po_line_receipts").fetchall())
    assert received == {1: 0, 2: 10}
    assert found(con) == {(1, "late"): (0, "open"), (2, "late"): (0, "resolved")}


def test_a_batch_of_new_receipts_is_redone_alone_and_ends_as_a_rebuild_would(con):
    for line in range(1, 4):
        add_po_line(con, line, 10, 2)
        record_batch(con, add_receipt(con, f"R{line}", line, 4), replaced=0)
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)

    record_batch(con, add_receipt(con, "R2b", 2, 6), replaced=0)  # the rest of line 2: full now
    record_batch(con, add_receipt(con, "R3b", 3, 9, damaged=2), replaced=0)  # line 3: over, two damaged
    later = NOW + timedelta(hours=3)
    assert reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), later)["po_lines_redone"] == 2
    assert found(con) == {
        (1, "short"): (6, "open"),
        (2, "short"): (6, "resolved"),
        (3, "short"): (6, "resolved"),
        (3, "over"): (3, "open"),
    }
    assert state(con) == rebuilt(con, later)


def test_a_receipt_moved_by_a_batch_that_replaced_receipts_is_counted_once(con):
    add_po_line(con, 1, 10, 2)
    add_po_line(con, 2, 10, 2)
    record_batch(con, add_receipt(con, "R1", 1, 10), replaced=0)
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)

    record_batch(con, add_receipt(con, "R1", 2, 10), replaced=1)  # the WMS corrects the receipt: line 2
    assert reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)["po_lines_redone"] == 2
    received = dict(con.execute("SELECT po_line, qty_received FROM po_line_receipts").fetchall())
    assert received == {1: 0, 2: 10}


def test_a_batch_is_reconciled_once_its_contract_judged_it(con):
    add_po_line(con, 1, 10, 2)
    record_batch(con, add_receipt(con, "R1", 1, 4, landed=NOW - timedelta(hours=2)), replaced=0)
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)
    batch = add_receipt(con, "R1b", 1, 6, landed=NOW - timedelta(hours=1))
    record_batch(con, batch, replaced=0)
    con.execute("UPDATE ingest_batches SET judged_at = NULL WHERE batch_id = ?", [batch])  # a run stopped here
    record_batch(con, add_receipt(con, "R9", 1, 0), replaced=0)  # and a later run landed another batch
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)
    assert found(con) == {(1, "short"): (6, "open")}  # R1b is not in valid_receipts yet

    con.execute("UPDATE ingest_batches SET judged_at = ? WHERE batch_id = ?", [NOW, batch])
    assert reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)["po_lines_redone"] == 1
    assert found(con) == {(1, "short"): (6, "resolved")}


def test_a_run_after_the_worlds_new_batches_ends_as_a_reconciliation_from_scratch(sim, warehouse_path):
    assert ingest(sim, warehouse_path, extra=(receipt_discrepancies,)).success
    sim.advance(9)  # through a working morning: new receipts, PO lines awaiting stock a little later
    later = ingest(sim, warehouse_path, extra=(receipt_discrepancies,))
    meta = materializations(later)["receipt_discrepancies"]
    with connect(warehouse_path) as con:
        (lines,) = con.execute("SELECT count(*) FROM po_line_receipts").fetchall()[0]
        assert 0 < meta["po_lines_redone"] < lines  # the run redid only some lines
        assert state(con) == rebuilt(con, datetime.fromisoformat(meta["wms_clock"]))


def test_a_po_line_missing_from_the_reconciled_state_is_found_and_everything_redone(con):
    add_po_line(con, 1, 10, -1)  # due tomorrow, nothing received: no receipt names it
    add_po_line(con, 2, 10, 2)
    add_receipt(con, "R2", 2, 10)
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)
    con.execute("DELETE FROM po_line_receipts WHERE po_line = 1")  # as a redo that stopped half-way once left it

    later = NOW + timedelta(days=3)
    assert reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), later)["po_lines_redone"] == 2
    assert found(con) == {(1, "late"): (0, "open")}


def reconcile_one_short_one_full(con) -> None:
    """Two PO lines of 10, line 1 received 7 (short by 3), line 2 received whole, reconciled once."""
    add_po_line(con, 1, 10, 2)
    add_receipt(con, "R1", 1, 7)
    add_po_line(con, 2, 10, 2)
    add_receipt(con, "R2", 2, 10)
    reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)


def test_a_discrepancies_table_emptied_since_redoes_every_line(con):
    reconcile_one_short_one_full(con)
    con.execute("DELETE FROM receipt_discrepancies")  # as a table dropped and created again would be

    assert reconciliation.reconcile(con, reconciliation.ReceivingPolicy(), NOW)["po_lines_redone"] == 2
    assert found(con) == {(1, "short"): (3, "open")}


def test_a_new_policy_or_a_quarantined_receipt_redoes_every_line(con):
    reconcile_one_short_one_full(con)
    assert found(con) == {(1, "short"): (3, "open")}

    lenient = reconciliation.ReceivingPolicy(short_tolerance_pct=40)
    assert reconciliation.reconcile(con, lenient, NOW)["po_lines_redone"] == 2
    assert found(con) == {(1, "short"): (3, "resolved")}

    con.execute(
        "INSERT INTO quarantine VALUES ('receipts', 'b', 'expect_column_values_to_be_between', 'R2|1', '{}', ?, NULL)",
        [NOW],
    )  # a contract re-run found receipt R2 wrong: it leaves valid_receipts, with no new batch
    assert reconciliation.reconcile(con, lenient, NOW)["po_lines_redone"] == 2
    assert found(con) == {(1, "short"): (3, "resolved"), (2, "late"): (0, "open")}


def test_each_receipt_is_confirmed_once_when_it_first_counts_also_after_a_quarantine(con):
    add_po_line(con, 1, 10, 2)
    record_batch(con, add_receipt(con, "R2", 1, 2, landed=NOW - timedelta(hours=1)), replaced=0)
    record_batch(con, add_receipt(con, "R1", 1, 4), replaced=0)
    con.execute("INSERT INTO quarantine VALUES ('receipts', 'b', 'expect', 'R2|1', '{}', ?, NULL)", [NOW])
    assert reconciliation.confirm_receipts(con, NOW, "run-1") == 1  # R2 is held back

    later = NOW + timedelta(hours=3)
    record_batch(con, add_receipt(con, "R3", 1, 1, landed=later), replaced=0)
    con.execute("UPDATE quarantine SET released_at = ?", [later])  # a contract re-run lets R2 through, unlanded
    assert reconciliation.confirm_receipts(con, later, "run-2") == 2

    last = later + timedelta(hours=3)
    record_batch(con, add_receipt(con, "R4", 1, 1, landed=last), replaced=0)
    record_batch(con, add_receipt(con, "R1", 1, 5, landed=last), replaced=1)  # a corrected count: confirmed already
    assert reconciliation.confirm_receipts(con, last, "run-3") == 1
    confirmed = con.execute("SELECT receipt_id, confirmed_at FROM receipt_confirmations ORDER BY ALL").fetchall()
    assert confirmed == [("R1", NOW), ("R2", later), ("R3", later), ("R4", last)]


def test_the_confirmation_cycle_is_bounded_by_the_run_interval(sim, run_all, warehouse_path):
    first = run_all()
    assert first.success
    assert materializations(first)["receipt_confirmation_cycle"]["receipts_confirmed_now"] > 0
    sim.advance(9)  # through a working morning: new receipts arrive
    second = run_all()
    meta = materializations(second)["receipt_confirmation_cycle"]
    assert meta["receipts_confirmed_now"] > 0
    assert 0 <= meta["p50_hours"] <= meta["p90_hours"] <= 9
    assert Path(meta["chart"]).read_text().startswith("<?xml")
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        backfill, fresh, worst = con.execute(
            """SELECT count(*) FILTER (backfill), count(*) FILTER (NOT backfill),
                      max(epoch(confirmed_at - received_at) / 3600) FILTER (NOT backfill)
            FROM receipt_confirmations"""
        ).fetchall()[0]
    assert backfill == first_count(first) and fresh == meta["receipts_confirmed_now"] and worst <= 9


def first_count(result: dg.ExecuteInProcessResult) -> int:
    return materializations(result)["receipt_confirmation_cycle"]["receipts_confirmed_now"]


def test_the_sensor_starts_a_run_only_when_new_receipts_land(sim):
    instance = dg.DagsterInstance.ephemeral()
    wms = WmsResource(base_url=sim.url, token=TOKEN)

    def tick(cursor: str | None):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"wms": wms}) as context:
            return new_receipts_sensor(context)

    first = tick(None)
    assert len(first.run_requests) == 1 and first.cursor
    quiet = tick(first.cursor)
    assert isinstance(quiet, dg.SkipReason)
    before = sim.requests["/wms/receipts"]
    sim.advance(24)
    woke = tick(first.cursor)
    assert len(woke.run_requests) == 1 and woke.cursor > first.cursor
    assert woke.run_requests[0].run_key != first.run_requests[0].run_key
    assert sim.requests["/wms/receipts"] - before == 1  # one cheap request per tick
