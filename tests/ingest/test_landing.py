"""Landing and volume rules on a real DuckDB file, without HTTP."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from cx_pipeline.core.sql import row_exists_sql
from cx_pipeline.ingest.contracts import min_rows
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.landing import full_read_due, land, last_cursor, stage
from cx_pipeline.warehouse import connect

INQUIRIES = FEEDS["inquiries"]
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def inquiry(n: int, reason: str = "return", hours_ago: float = 1) -> dict:
    at = (NOW - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "inquiry_id": f"INQ-{n}",
        "order_id": None,
        "sku": None,
        "reason": reason,
        "created_at": at,
        "updated_at": at,
    }


def landed(con: duckdb.DuckDBPyConnection, records: list[dict], since: datetime | None = None, as_of: datetime = NOW):
    """Stage one page of inquiries and land it."""
    return land(con, stage(con, INQUIRIES, [records], since, as_of))


def test_landing_counts_new_updated_and_unchanged(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        first = landed(con, [inquiry(1), inquiry(2)])
        second = landed(con, [inquiry(1), inquiry(2, reason="other", hours_ago=0.5), inquiry(3)])

        assert (first.rows_new, first.rows_updated, first.rows_unchanged) == (2, 0, 0)
        assert (second.rows_new, second.rows_updated, second.rows_unchanged) == (1, 1, 1)
        assert con.execute("SELECT reason FROM raw_inquiries WHERE inquiry_id = 'INQ-2'").fetchall() == [("other",)]


def test_the_last_copy_of_a_key_in_a_batch_wins_and_exact_copies_are_counted(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        stats = landed(con, [inquiry(1), inquiry(1), inquiry(1, reason="other")])

        assert (stats.rows_fetched, stats.rows_new, stats.rows_duplicate) == (3, 1, 1)
        assert con.execute("SELECT reason FROM raw_inquiries").fetchall() == [("other",)]


def test_the_cursor_never_passes_the_source_clock(tmp_path):
    future = inquiry(2)
    future["updated_at"] = "2099-01-01T00:00:00Z"
    with connect(tmp_path / "w.duckdb") as con:
        landed(con, [inquiry(1, hours_ago=2), future])

        assert last_cursor(con, INQUIRIES) == NOW - timedelta(hours=2)


def test_a_feed_switched_to_another_source_starts_with_a_full_read_not_the_old_sources_cursor(tmp_path):
    on_hand = FEEDS["on_hand"]
    stock = [{"sku": f"S{n}", "warehouse": "WH-EAST", "on_hand": 1, "in_qc": 0, "damaged": 0} for n in range(3)]
    with connect(tmp_path / "w.duckdb") as con:
        land(con, stage(con, INQUIRIES, [[inquiry(1, hours_ago=2)]], None, NOW), source="zendesk")
        land(con, stage(con, on_hand, [stock], as_of=NOW))  # the bundled REST shape's, read whole
        con.execute("UPDATE ingest_batches SET judged_at = now(), verdict = 'passed'")

        assert last_cursor(con, INQUIRIES, "zendesk") == NOW - timedelta(hours=2)
        assert last_cursor(con, INQUIRIES, "gorgias") is None  # another helpdesk: read from the start
        assert last_cursor(con, INQUIRIES) is None
        assert not full_read_due(con, on_hand, 24, "rest")
        assert full_read_due(con, on_hand, 24, "files")  # the first read from a folder of exports is whole
        assert con.execute("SELECT feed, source FROM ingest_batches ORDER BY feed").fetchall() == [
            ("inquiries", "zendesk"),
            ("on_hand", "rest"),
        ]


def test_a_newer_version_releases_a_quarantined_row(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        landed(con, [inquiry(1)])
        con.execute("UPDATE ingest_batches SET judged_at = now()")  # as its contract would
        con.execute("INSERT INTO quarantine VALUES ('inquiries', 'b', 'x', 'INQ-1', '{}', now(), NULL)")
        assert con.execute("SELECT count(*) FROM valid_inquiries").fetchall() == [(0,)]

        landed(con, [inquiry(1, reason="other", hours_ago=0.5)])
        assert con.execute("SELECT count(*) FROM valid_inquiries").fetchall() == [(0,)]  # not judged yet
        con.execute("UPDATE ingest_batches SET judged_at = now()")

        assert con.execute("SELECT count(*) FROM valid_inquiries").fetchall() == [(1,)]


def test_a_failed_landing_leaves_nothing_behind(tmp_path):
    path = tmp_path / "w.duckdb"
    with connect(path) as con:
        first = landed(con, [inquiry(1)])
        # fails at its very end, logging the batch under an id already taken, after its rows went in
        broken = replace(stage(con, INQUIRIES, [[inquiry(2)]], as_of=NOW), batch_id=first.batch_id)
        with pytest.raises(duckdb.Error):
            land(con, broken)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_inquiries").fetchall() == [(1,)]
        assert con.execute("SELECT count(*) FROM ingest_batches").fetchall() == [(1,)]


def test_volume_rules(tmp_path):
    midnight = NOW.replace(hour=0)
    # Five weeks of history with inquiries only in working hours (08:00-17:00, one an hour).
    history = [
        inquiry(n, hours_ago=(NOW - (midnight - timedelta(days=d, hours=-h))).total_seconds() / 3600)
        for n, (d, h) in enumerate(((d, h) for d in range(1, 36) for h in range(8, 18)), start=1)
    ]
    with connect(tmp_path / "w.duckdb") as con:
        assert min_rows(con, INQUIRIES) == 1  # nothing landed yet: a first load must bring rows
        landed(con, history)
        # A night window held nothing in earlier weeks: an empty pull is normal, not a broken feed.
        landed(con, [], since=midnight - timedelta(hours=2), as_of=midnight + timedelta(hours=6))
        assert min_rows(con, INQUIRIES) == 0
        # A working-day window held 10 rows in each earlier week: at least 25 % of that must come.
        landed(con, [], since=midnight + timedelta(hours=8), as_of=midnight + timedelta(hours=18))
        assert min_rows(con, INQUIRIES) == 2
        # A snapshot must keep half of the previous snapshot.
        on_hand = FEEDS["on_hand"]
        rows = [{"sku": f"S{n}", "warehouse": "WH-EAST", "on_hand": 1, "in_qc": 0, "damaged": 0} for n in range(40)]
        land(con, stage(con, on_hand, [rows], as_of=NOW))
        land(con, stage(con, on_hand, [rows[:5]], as_of=NOW))
        assert min_rows(con, on_hand) == 20


@pytest.mark.parametrize("table_rows", [1, 1000], ids=["batch larger than the table", "batch smaller"])
def test_a_reference_is_known_by_its_whole_key_whichever_side_is_hashed(tmp_path, table_rows):
    with connect(tmp_path / "w.duckdb") as con:
        con.execute(  # order lines: an order's id repeats, once per line
            "CREATE TABLE lines AS SELECT 'O-' || (i % 500) AS order_id, i % 3 AS line_no FROM range(?) t(i)",
            [table_rows],
        )
        con.execute(
            """CREATE TABLE batch AS SELECT * FROM (VALUES ('O-0', 0), ('O-0', 1), ('O-1', 0), ('O-999', 0),
                   ('O-2', 2), ('O-2', 1), (NULL, 1)) v(order_id, line_no)"""
        )
        order = row_exists_sql(con, "b", ("order_id",), "lines", ("order_id",), "batch")
        line = row_exists_sql(con, "b", ("order_id", "line_no"), "lines", ("order_id", "line_no"), "batch")
        found = con.execute(f"SELECT order_id, line_no, {order}, {line} FROM batch b ORDER BY ALL").fetchall()
    in_table = {(f"O-{i % 500}", i % 3) for i in range(table_rows)}
    sent = [("O-0", 0), ("O-0", 1), ("O-1", 0), ("O-999", 0), ("O-2", 2), ("O-2", 1), (None, 1)]
    expected = [(o, n, o in {k for k, _ in in_table}, (o, n) in in_table) for o, n in sent]  # a null key: False
    assert found == sorted(expected, key=lambda row: (row[0] is None, row[0] or "", row[1]))
