"""Blocking data-contract checks on the raw feeds: structural failures block everything downstream; bad rows
are quarantined and hold only what they touch (the rules: `cx_pipeline.ingest.contracts`)."""

from collections.abc import Callable
from datetime import datetime

import dagster as dg
import duckdb
import great_expectations as gx
import pandas as pd

from cx_pipeline.assets.resources import WAREHOUSE_POOL, ContractsResource, WarehouseResource
from cx_pipeline.ingest.contracts import Verdict, judge_and_release, judge_import, rules_markdown, sample_markdown
from cx_pipeline.ingest.feeds import FEEDS, Feed

CONTRACT_CHECK = "data_contract"


def contract_check(feed: Feed) -> dg.AssetChecksDefinition:
    """Build the blocking contract check of `raw_<feed>`."""

    @dg.asset_check(
        asset=feed.table,
        name=CONTRACT_CHECK,
        blocking=True,
        pool=WAREHOUSE_POOL,
        additional_deps=sorted({ref.table for ref in feed.references}),
        description=f"The {feed.name} feed keeps its contract: keys, types, quantities, timestamps, enums, "
        "references and volume. Bad rows are quarantined and hold what they touch; a structural failure "
        "(volume, coverage, too many bad rows) blocks everything downstream.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, contracts: ContractsResource
    ) -> dg.AssetCheckResult:
        with warehouse.connect() as con:
            verdict = judge_and_release(con, feed, contracts.policy)
            if verdict.released:
                context.log.info(f"{feed.table}: {verdict.released} quarantined rows now pass and were released")
            rules = dg.MetadataValue.md(rules_markdown(feed, contracts.policy))
            return report(context, con, feed.table, verdict, {"rows_released": verdict.released, "rules": rules})

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
            return report(context, con, asset, judge_import(con, feed, latest_import(con), suite))

    return _check


def report(
    context: dg.AssetCheckExecutionContext,
    con: duckdb.DuckDBPyConnection,
    table: str,
    verdict: Verdict,
    extra: dict[str, object] | None = None,
) -> dg.AssetCheckResult:
    """The check's result: each broken expectation with its count and a sample of the offending rows; an
    error (blocking) for a structural failure, a warning when bad rows only hold what they touch."""
    judged = verdict.judged
    metadata: dict[str, object] = {
        "rows_validated": judged.rows,
        "expectations": len(verdict.suite.expectations),
        "broken_expectations": len(verdict.violations),
        "rows_quarantined": verdict.quarantined,
        "outcome": verdict.outcome,
        **(extra or {}),
    }
    log = context.log.error if verdict.blocking else context.log.warning
    for v in verdict.violations:
        detail = f"**{v.unexpected_count} offending rows**" if v.row_index else f"observed: {v.observed}"
        sample = f"\n\n{sample_markdown(con, judged, v)}" if v.row_index else ""
        metadata[v.expectation] = dg.MetadataValue.md(f"{detail}{sample}")
        log(f"{table}: {v.expectation} broken: {v.unexpected_count or v.observed}")
    if verdict.blocking:
        metadata["blocked_because"] = dg.MetadataValue.md("\n".join(f"- {r}" for r in verdict.blocking))
        description = "structural failure, nothing downstream runs: " + "; ".join(verdict.blocking)
    elif verdict.violations:
        description = f"{verdict.quarantined} rows quarantined; what they touch is held, everything else flows"
    else:
        description = "every row kept the contract"
    return dg.AssetCheckResult(
        passed=not verdict.violations,
        severity=dg.AssetCheckSeverity.ERROR if verdict.blocking else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


defs = dg.Definitions(asset_checks=[contract_check(feed) for feed in FEEDS.values()])
