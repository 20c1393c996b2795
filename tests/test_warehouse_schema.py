"""The warehouse's schema on connect: created whole in a new file, skipped when the file has this code's schema,
brought up to date when it was made by other code (its tables that are missing created, nothing else touched)."""

from pathlib import Path

from cx_pipeline import warehouse
from cx_pipeline.core.sql import exists


def tables(con) -> set[str]:
    return {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def test_a_new_file_gets_every_table_and_this_codes_fingerprint(tmp_path: Path):
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        assert {"ingest_batches", "raw_receipts", "stale_queue_export", "notice_ledger", "inspection_verdicts"} <= (
            tables(con)
        )
        assert con.execute("SELECT fingerprint FROM warehouse_schema").fetchall() == [(warehouse.SCHEMA,)]


def test_a_file_made_by_other_code_gets_what_it_lacks_and_keeps_its_rows(tmp_path: Path):
    path = tmp_path / "w.duckdb"
    with warehouse.connect(path) as con:
        con.execute("INSERT INTO stale_queue_export VALUES ('q.csv', '1/2')")
        con.execute("DROP TABLE inspection_verdicts")  # a table this code added
        con.execute("UPDATE warehouse_schema SET fingerprint = 'older code'")

    with warehouse.connect(path) as con:
        assert "inspection_verdicts" in tables(con)
        assert con.execute("SELECT * FROM stale_queue_export").fetchall() == [("q.csv", "1/2")]
        assert con.execute("SELECT fingerprint FROM warehouse_schema").fetchall() == [(warehouse.SCHEMA,)]


def test_a_file_from_before_the_fingerprint_gets_what_it_lacks(tmp_path: Path):
    path = tmp_path / "w.duckdb"
    with warehouse.connect(path) as con:
        con.execute("DROP TABLE warehouse_schema")
        con.execute("DROP TABLE inspection_verdicts")

    with warehouse.connect(path) as con:
        assert {"inspection_verdicts", "warehouse_schema"} <= tables(con)


def test_exists_names_tables_and_their_columns_not_views(tmp_path: Path):
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        con.execute("CREATE TEMP TABLE scratch (a INTEGER)")
        assert exists(con, "ingest_batches") and exists(con, "ingest_batches", "judged_at") and exists(con, "scratch")
        assert not exists(con, "ingest_batches", "no_such_column") and not exists(con, "no_such_table")
        assert not exists(con, "valid_receipts")  # a view
