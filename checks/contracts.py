"""Blocking data-contract checks on the raw feeds: nothing downstream runs on a feed that broke its contract."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import great_expectations as gx
import pandas as pd

from assets.resources import WAREHOUSE_POOL, WarehouseResource
from checks.suites import Violation, build_suite, validate
from cx_pipeline.feeds import FEEDS, Feed
from cx_pipeline.ingest import copies_sql
from cx_pipeline.transactions import transaction
from cx_pipeline.warehouse import names_a_row_of, one, row_key_sql

CONTRACT_CHECK = "data_contract"
SAMPLE_ROWS = 10
# Volume: a snapshot must keep at least this share of the previous snapshot's rows; an incremental pull at
# least this share of the quietest of the same windows in the previous weeks (feeds are diurnal, weekly and
# lumpy: receipts arrive in working hours and in waves, so an average would cry wolf). Below
# MIN_EXPECTED_ROWS there is too little to tell an empty window from a broken feed.
SNAPSHOT_MIN_RATIO = 0.5
INCREMENTAL_MIN_RATIO = 0.25
MIN_EXPECTED_ROWS = 8
BASELINE_WEEKS = 4


def min_rows(con: duckdb.DuckDBPyConnection, feed: Feed) -> int:
    """The fewest rows the latest batch may hold without failing the volume expectation."""
    batches = con.execute(
        "SELECT rows_fetched, as_of, updated_since FROM ingest_batches WHERE feed = ? ORDER BY fetched_at DESC LIMIT 2",
        [feed.name],
    ).fetchall()
    if len(batches) < 2:
        return 1  # a first load must bring something
    (_, as_of, since), (previous_rows, _, _) = batches
    if not feed.incremental:
        expected, ratio = previous_rows, SNAPSHOT_MIN_RATIO
    else:
        (first,) = one(con, f"SELECT min(updated_at) FROM {feed.table}")
        weeks = [k for k in range(1, BASELINE_WEEKS + 1) if as_of and since and since - timedelta(weeks=k) >= first]
        per_week = (
            con.execute(
                f"""SELECT k, count(*) FROM {feed.table} CROSS JOIN unnest(?::INTEGER[]) AS w(k)
                WHERE updated_at >= ?::TIMESTAMPTZ - to_weeks(k) AND updated_at < ?::TIMESTAMPTZ - to_weeks(k)
                GROUP BY k""",
                [weeks, since, as_of],
            ).fetchall()
            if weeks
            else []
        )
        # the quietest of those windows: deliveries are lumpy, so only a drop below what has happened is news
        counts = dict(per_week)
        expected, ratio = min((counts.get(k, 0) for k in weeks), default=0), INCREMENTAL_MIN_RATIO
    return max(1, math.floor(expected * ratio)) if expected >= MIN_EXPECTED_ROWS else 0


@dataclass(frozen=True)
class Judged:
    """A batch staged for its contract: `table` holds the typed rows with `_row`, `_row_key`, `_batch_id`
    and the reference flags; `sent` holds each row as sent (`_raw`), found by `_row`."""

    table: str
    sent: str
    rows: int


def landed_batch(con: duckdb.DuckDBPyConnection, feed: Feed) -> Judged:
    """Stage the latest landed batch as `contract_<feed>`: exact duplicates collapsed, a `_known_*` flag per
    reference. The rows as sent stay in `landing_<feed>`."""
    flags = "".join(
        f", {' OR '.join(f'l.{c} IS NULL' for c in ref.columns)} OR "
        f"{names_a_row_of(con, 'l', ref.columns, ref.table, ref.table_columns, f'landing_{feed.name}')} AS {ref.flag}"
        for ref in feed.references
    )
    # The landing counted the batch's exact copies; most batches have none, and looking costs a pass.
    copies = one(con, "SELECT rows_duplicate FROM ingest_batches WHERE feed = ? ORDER BY fetched_at DESC LIMIT 1",
                 [feed.name])  # fmt: skip
    distinct = f"WHERE l._row NOT IN ({copies_sql(feed)})" if copies is None or copies[0] else ""
    con.execute(f"""
        CREATE OR REPLACE TABLE contract_{feed.name} AS
        SELECT l.* EXCLUDE (_raw), {row_key_sql(feed, "l")} AS _row_key {flags}
        FROM landing_{feed.name} l {distinct}
    """)
    (rows,) = one(con, f"SELECT count(*) FROM contract_{feed.name}")
    return Judged(f"contract_{feed.name}", f"landing_{feed.name}", rows)


def imported_batch(con: duckdb.DuckDBPyConnection, feed: str, frame: pd.DataFrame) -> Judged:
    """Stage an import from the app store (a frame with `_row`, `_row_key`, `_raw`, `_batch_id`) as
    `contract_<feed>`."""
    con.register("imported", frame)
    try:
        con.execute(f"CREATE OR REPLACE TABLE contract_{feed} AS SELECT * FROM imported")
    finally:
        con.unregister("imported")
    return Judged(f"contract_{feed}", f"contract_{feed}", len(frame))


def quarantine(con: duckdb.DuckDBPyConnection, feed: str, judged: Judged, violations: list[Violation]) -> int:
    """Record every offending row of `feed`, verbatim, against the expectation it broke; returns rows recorded.

    Judging a batch again (a re-run of the check) replaces its earlier verdict instead of adding to it.
    """
    if not judged.rows:
        return 0
    offending = pd.DataFrame(
        [(v.expectation, row) for v in violations for row in v.row_index], columns=["expectation", "_row"]
    ).astype({"expectation": object, "_row": "int64"})
    con.register("offending", offending)
    try:
        with transaction(con):
            con.execute(
                f"DELETE FROM quarantine WHERE feed = ? AND batch_id IN (SELECT _batch_id FROM {judged.table})", [feed]
            )
            con.execute(
                f"""INSERT INTO quarantine
                SELECT ?, j._batch_id, o.expectation, j._row_key, s._raw::JSON, ?, NULL
                FROM offending o JOIN {judged.table} j USING (_row) JOIN {judged.sent} s USING (_row)""",
                [feed, datetime.now(UTC)],
            )
    finally:
        con.unregister("offending")
    return len(offending)


def sample_markdown(con: duckdb.DuckDBPyConnection, judged: Judged, violation: Violation) -> str:
    rows = con.execute(
        f"""SELECT j._row AS row, j._row_key AS key, s._raw::VARCHAR AS "as sent"
        FROM {judged.table} j JOIN {judged.sent} s USING (_row) WHERE j._row IN (SELECT unnest(?::BIGINT[]))
        ORDER BY j._row""",
        [violation.row_index[:SAMPLE_ROWS]],
    ).df()
    return rows.to_markdown(index=False)


def contract_check(feed: Feed) -> dg.AssetChecksDefinition:
    """Build the blocking contract check of `raw_<feed>`."""

    @dg.asset_check(
        asset=feed.table,
        name=CONTRACT_CHECK,
        blocking=True,
        pool=WAREHOUSE_POOL,
        additional_deps=sorted({ref.table for ref in feed.references}),
        description=f"The {feed.name} feed keeps its contract: keys, quantities, timestamps, enums, "
        "references and volume. Offending rows are quarantined and nothing downstream runs.",
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.connect() as con:
            judged = landed_batch(con, feed)
            as_of = one(
                con,
                "SELECT as_of FROM ingest_batches WHERE feed = ? ORDER BY fetched_at DESC LIMIT 1",
                [feed.name],
            )
            now = (as_of[0] if as_of and as_of[0] else None) or datetime.now(UTC)
            suite = build_suite(feed, now, min_rows(con, feed))
            violations = validate(con, judged.table, suite)
            quarantined = quarantine(con, feed.name, judged, violations)
            return verdict(context, con, feed.table, judged, suite, violations, quarantined)

    return _check


def app_store_contract(
    asset: str,
    feed: str,
    latest_import: Callable[[duckdb.DuckDBPyConnection], pd.DataFrame],
    suite: Callable[[datetime], gx.ExpectationSuite],
    additional_deps: list[str],
    description: str,
) -> dg.AssetChecksDefinition:
    """The blocking contract of what an asset imported from the web app's store (decisions, inspections):
    the latest import is validated, its offending rows are quarantined under `feed`."""

    @dg.asset_check(
        asset=asset,
        name=CONTRACT_CHECK,
        blocking=True,
        pool=WAREHOUSE_POOL,
        additional_deps=additional_deps,
        description=description,
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.connect() as con:
            judged = imported_batch(con, feed, latest_import(con))
            expectations = suite(datetime.now(UTC))  # entries carry the app's clock, not a source's
            violations = validate(con, judged.table, expectations)
            quarantined = quarantine(con, feed, judged, violations)
            return verdict(context, con, asset, judged, expectations, violations, quarantined)

    return _check


def verdict(
    context: dg.AssetCheckExecutionContext,
    con: duckdb.DuckDBPyConnection,
    table: str,
    judged: Judged,
    suite: gx.ExpectationSuite,
    violations: list[Violation],
    quarantined: int,
) -> dg.AssetCheckResult:
    """The check's result: each broken expectation with its count and a sample of the offending rows."""
    metadata: dict[str, object] = {
        "rows_validated": judged.rows,
        "expectations": len(suite.expectations),
        "broken_expectations": len(violations),
        "rows_quarantined": quarantined,
    }
    for v in violations:
        detail = f"**{v.unexpected_count} offending rows**" if v.row_index else f"observed: {v.observed}"
        sample = f"\n\n{sample_markdown(con, judged, v)}" if v.row_index else ""
        metadata[v.expectation] = dg.MetadataValue.md(f"{detail}{sample}")
        context.log.error(f"{table}: {v.expectation} broken: {v.unexpected_count or v.observed}")
    return dg.AssetCheckResult(passed=not violations, metadata=metadata)


contract_checks = [contract_check(feed) for feed in FEEDS.values()]
