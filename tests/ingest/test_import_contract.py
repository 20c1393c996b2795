"""What a contract check asks of the library in one call, on a real DuckDB file: an import from the app store
judged, quarantined and recorded (`judge_import`), and a feed judged with its open quarantine judged again
(`judge_and_release`)."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
import pytest

from cx_pipeline.ingest.contracts import BLOCKED, PASSED, ROWS_HELD, judge_and_release, judge_import
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.schema import log_import
from cx_pipeline.warehouse import connect
from tests.ingest.test_contract_rules import POLICY, judged, landed, product, purchase_order, receipt

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
FEED = "test_entries"  # an app-store import of the test's own: the contract only needs its name


def entries_suite(now: datetime) -> gx.ExpectationSuite:
    """Non-negative units, entered no later than `now`."""
    return gx.ExpectationSuite(
        name="test_entries_contract",
        expectations=[
            gxe.ExpectColumnValuesToBeBetween(column="units", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="entered_at", max_value=now),
        ],
    )


def imported(con: duckdb.DuckDBPyConnection, batch_id: str, entries: list[tuple[str, int, datetime]]) -> pd.DataFrame:
    """One import of `entries` (key, units, entered at), logged in `ingest_batches` and shaped as the app-store
    imports shape theirs (`_row`, `_row_key`, `_raw`, `_batch_id`)."""
    log_import(con, batch_id, FEED, "run-1", NOW, len(entries))
    return pd.DataFrame(
        {
            "_row": range(len(entries)),
            "_row_key": [key for key, _, _ in entries],
            "_raw": [json.dumps({"key": key, "units": units, "at": at.isoformat()}) for key, units, at in entries],
            "_batch_id": batch_id,
            "units": [units for _, units, _ in entries],
            "entered_at": pd.to_datetime([at for _, _, at in entries], utc=True),
        }
    )


def quarantined(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    return con.execute(
        "SELECT row_key, split_part(expectation, '(', 1), row_data->>'units' FROM quarantine WHERE feed = ? "
        "ORDER BY ALL",
        [FEED],
    ).fetchall()


def batch_verdict(con: duckdb.DuckDBPyConnection, batch_id: str) -> tuple[str, bool]:
    return con.execute(
        "SELECT verdict, judged_at IS NOT NULL FROM ingest_batches WHERE batch_id = ?", [batch_id]
    ).fetchone()


@pytest.fixture
def con(tmp_path: Path):
    with connect(tmp_path / "w.duckdb") as c:
        yield c


def test_a_good_import_passes_and_its_batch_is_recorded_as_judged(con):
    frame = imported(con, "B1", [("E1", 3, NOW - timedelta(hours=1)), ("E2", 0, NOW)])

    verdict = judge_import(con, FEED, frame, entries_suite, now=NOW)

    assert (verdict.outcome, verdict.quarantined, verdict.judged.rows) == (PASSED, 0, 2)
    assert batch_verdict(con, "B1") == (PASSED, True)
    assert quarantined(con) == []


def test_any_bad_row_of_an_import_blocks_it_and_is_quarantined_as_sent(con):
    frame = imported(con, "B1", [("E1", 3, NOW), ("E2", -1, NOW), ("E3", 2, NOW + timedelta(days=1))])

    verdict = judge_import(con, FEED, frame, entries_suite, now=NOW)

    # an import is a person's work at once: one bad row blocks it, whatever the share of bad rows
    assert (verdict.outcome, verdict.quarantined) == (BLOCKED, 2)
    assert len(verdict.blocking) == len(verdict.violations) == 2
    assert all(reason.endswith(" broken") for reason in verdict.blocking)
    assert quarantined(con) == [
        ("E2", "expect_column_values_to_be_between", "-1"),
        ("E3", "expect_column_values_to_be_between", "2"),
    ]
    assert batch_verdict(con, "B1") == (BLOCKED, True)


def test_the_suite_is_built_on_the_clock_it_is_given(con):
    frame = imported(con, "B1", [("E1", 1, NOW + timedelta(hours=2))])

    assert judge_import(con, FEED, frame, entries_suite, now=NOW).outcome == BLOCKED
    assert judge_import(con, FEED, frame, entries_suite, now=NOW + timedelta(hours=3)).outcome == PASSED
    assert quarantined(con) == []  # judging the batch again replaced its verdict
    assert batch_verdict(con, "B1") == (PASSED, True)


def test_the_feed_check_counts_what_judging_released_and_what_judging_again_released(tmp_path: Path):
    with connect(tmp_path / "w.duckdb") as con:
        judged(con, "catalog", [product("SKU-1")])
        judged(con, "purchase_orders", [purchase_order("PO-1")])
        held = judged(con, "receipts", [receipt(1), receipt(2, po="PO-2")])
        assert held.outcome == ROWS_HELD and held.quarantined == 1
        judged(con, "purchase_orders", [purchase_order("PO-2")], as_of=NOW + timedelta(hours=1))
        landed(con, "receipts", [], as_of=NOW + timedelta(hours=1))  # the next pull, which brought nothing new

        verdict = judge_and_release(con, FEEDS["receipts"], POLICY)

        # the receipt that came before its purchase order is judged again and released
        assert (verdict.outcome, verdict.released) == (PASSED, 1)
        assert con.execute("SELECT count(*) FROM quarantine WHERE released_at IS NULL").fetchone() == (0,)
        assert con.execute("SELECT receipt_id FROM valid_receipts ORDER BY ALL").fetchall() == [("RCV-1",), ("RCV-2",)]
