"""Blocking data-contract checks on the raw feeds: nothing downstream runs on a feed that broke its contract."""

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import great_expectations as gx
import pandas as pd

from assets.resources import WarehouseResource
from checks.suites import Violation, build_suite, validate
from cx_pipeline.feeds import FEEDS, Feed
from cx_pipeline.transactions import transaction
from cx_pipeline.warehouse import one, row_key_sql

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


def landed_batch(con: duckdb.DuckDBPyConnection, feed: Feed) -> pd.DataFrame:
    """The latest landed batch, exact duplicates collapsed, with a `_known_*` flag per reference."""
    flags = "".join(
        f", {' OR '.join(f'l.{c} IS NULL' for c in ref.columns)} OR EXISTS (SELECT 1 FROM {ref.table} t WHERE "
        + " AND ".join(f"t.{tc} = l.{c}" for c, tc in zip(ref.columns, ref.table_columns, strict=True))
        + f") AS {ref.flag}"
        for ref in feed.references
    )
    return con.execute(f"""
        SELECT l.*, {row_key_sql(feed, "l")} AS _row_key {flags}
        FROM landing_{feed.name} l
        QUALIFY row_number() OVER (PARTITION BY l._raw::VARCHAR ORDER BY l._row) = 1
        ORDER BY l._row
    """).df()


def quarantine(con: duckdb.DuckDBPyConnection, feed: str, frame: pd.DataFrame, violations: list[Violation]) -> int:
    """Record every offending row of `feed`, verbatim, against the expectation it broke; returns rows recorded.

    Judging a batch again (a re-run of the check) replaces its earlier verdict instead of adding to it.
    """
    if frame.empty:
        return 0
    batch_id = frame["_batch_id"].iat[0]
    records = pd.DataFrame(
        [(v.expectation, frame.at[i, "_row_key"], frame.at[i, "_raw"]) for v in violations for i in v.row_index],
        columns=["expectation", "row_key", "row_data"],
    )
    con.register("offending", records)
    try:
        with transaction(con):
            con.execute("DELETE FROM quarantine WHERE feed = ? AND batch_id = ?", [feed, batch_id])
            con.execute(
                "INSERT INTO quarantine SELECT ?, ?, expectation, row_key, row_data::JSON, ?, NULL FROM offending",
                [feed, batch_id, datetime.now(UTC)],
            )
    finally:
        con.unregister("offending")
    return len(records)


def sample_markdown(frame: pd.DataFrame, violation: Violation) -> str:
    rows = frame.loc[violation.row_index[:SAMPLE_ROWS], ["_row", "_row_key", "_raw"]]
    rows = rows.rename(columns={"_row": "row", "_row_key": "key", "_raw": "as sent"})
    return rows.to_markdown(index=False)


def contract_check(feed: Feed) -> dg.AssetChecksDefinition:
    """Build the blocking contract check of `raw_<feed>`."""

    @dg.asset_check(
        asset=feed.table,
        name=CONTRACT_CHECK,
        blocking=True,
        additional_deps=sorted({ref.table for ref in feed.references}),
        description=f"The {feed.name} feed keeps its contract: keys, quantities, timestamps, enums, "
        "references and volume. Offending rows are quarantined and nothing downstream runs.",
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.connect() as con:
            frame = landed_batch(con, feed)
            as_of = one(
                con,
                "SELECT as_of FROM ingest_batches WHERE feed = ? ORDER BY fetched_at DESC LIMIT 1",
                [feed.name],
            )
            now = (as_of[0] if as_of and as_of[0] else None) or datetime.now(UTC)
            suite = build_suite(feed, now, min_rows(con, feed))
            violations = validate(frame, suite)
            quarantined = quarantine(con, feed.name, frame, violations)
        return verdict(context, feed.table, frame, suite, violations, quarantined)

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
        asset=asset, name=CONTRACT_CHECK, blocking=True, additional_deps=additional_deps, description=description
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.connect() as con:
            frame = latest_import(con)
            expectations = suite(datetime.now(UTC))  # entries carry the app's clock, not a source's
            violations = validate(frame, expectations)
            quarantined = quarantine(con, feed, frame, violations)
        return verdict(context, asset, frame, expectations, violations, quarantined)

    return _check


def verdict(
    context: dg.AssetCheckExecutionContext,
    table: str,
    frame: pd.DataFrame,
    suite: gx.ExpectationSuite,
    violations: list[Violation],
    quarantined: int,
) -> dg.AssetCheckResult:
    """The check's result: each broken expectation with its count and a sample of the offending rows."""
    metadata: dict[str, object] = {
        "rows_validated": len(frame),
        "expectations": len(suite.expectations),
        "broken_expectations": len(violations),
        "rows_quarantined": quarantined,
    }
    for v in violations:
        detail = f"**{v.unexpected_count} offending rows**" if v.row_index else f"observed: {v.observed}"
        sample = f"\n\n{sample_markdown(frame, v)}" if v.row_index else ""
        metadata[v.expectation] = dg.MetadataValue.md(f"{detail}{sample}")
        context.log.error(f"{table}: {v.expectation} broken: {v.unexpected_count or v.observed}")
    return dg.AssetCheckResult(passed=not violations, metadata=metadata)


contract_checks = [contract_check(feed) for feed in FEEDS.values()]
