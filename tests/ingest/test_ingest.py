"""Ingestion end to end: the raw assets against the simulator over real HTTP, into a real DuckDB file."""

import duckdb

from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.http import ApiClient
from tests.helpers import TOKEN, check_results, materializations


def table_counts(path) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {f.table: con.execute(f"SELECT count(*) FROM {f.table}").fetchall()[0][0] for f in FEEDS.values()}


def served_keys(sim, feed) -> set[tuple]:
    """Every natural key the source serves now, read page by page with the plain client."""
    client = ApiClient(sim.url, TOKEN)
    keys = set()
    for page in client.pages(feed.path, {"limit": 500}):
        for record in page["data"]:
            for line in record.get(feed.explode) or [{}] if feed.explode else [record]:
                row = {**record, **line}
                keys.add(tuple(row[k] for k in feed.keys))
    return keys


def test_full_ingest_lands_every_row_and_passes_every_contract(sim_readonly, run_pipeline_readonly, warehouse_path):
    result = run_pipeline_readonly()

    assert result.success
    checks = check_results(result)
    assert set(checks) == {f.table for f in FEEDS.values()}
    assert all(c.passed for c in checks.values()), {k: c.metadata for k, c in checks.items() if not c.passed}
    counts = table_counts(warehouse_path)
    for feed in FEEDS.values():
        assert counts[feed.table] == len(served_keys(sim_readonly, feed)) > 0, feed.name
    metadata = materializations(result)
    receipts = metadata["raw_receipts"]
    assert receipts["rows_new"] == counts["raw_receipts"]
    assert receipts["rows_updated"] == 0
    assert receipts["updated_since"] == "full load"


def test_rerun_of_the_same_window_changes_nothing(run_pipeline_readonly, warehouse_path):
    assert run_pipeline_readonly().success
    before = table_counts(warehouse_path)

    result = run_pipeline_readonly()

    assert result.success
    assert table_counts(warehouse_path) == before
    for name, meta in materializations(result).items():
        assert (meta["rows_new"], meta["rows_updated"]) == (0, 0), name


def test_incremental_run_fetches_only_what_changed(sim, run_pipeline, warehouse_path):
    assert run_pipeline().success
    total_receipts = table_counts(warehouse_path)["raw_receipts"]
    receipt_requests = sim.requests["/wms/receipts"]

    sim.advance(24)
    result = run_pipeline()

    assert result.success
    receipts = materializations(result)["raw_receipts"]
    assert receipts["rows_new"] + receipts["rows_updated"] > 0
    assert receipts["rows_fetched"] < total_receipts * 0.2  # only the new window, not the history
    assert receipts["updated_since"] != "full load"
    assert sim.requests["/wms/receipts"] - receipt_requests <= 2
    counts = table_counts(warehouse_path)
    for feed in FEEDS.values():
        assert counts[feed.table] == len(served_keys(sim, feed)), feed.name


def test_cursor_survives_a_restart(sim, run_pipeline, warehouse_path):
    """A new run (new process, new resources) continues from the cursor stored in the warehouse."""
    assert run_pipeline().success
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        (cursor,) = con.execute("SELECT max(cursor) FROM ingest_batches WHERE feed = 'receipts'").fetchall()[0]

    sim.advance(6)
    meta = materializations(run_pipeline())["raw_receipts"]

    assert meta["updated_since"] == str(cursor)
