"""Raw feeds: pull each upstream feed incrementally and land it in the warehouse, idempotently."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb

from cx_pipeline.assets.metadata import Progress
from cx_pipeline.assets.resources import (
    WAREHOUSE_POOL,
    ContractsResource,
    SourceResource,
    WarehouseResource,
    feed_source,
)
from cx_pipeline.ingest.contracts import judge_pending
from cx_pipeline.ingest.feeds import FEEDS, Feed
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.ingest.landing import (
    Drift,
    full_read_due,
    land,
    last_cursor,
    next_full_read,
    note_changes,
    snapshot_drift,
)
from cx_pipeline.ingest.sources.helpdesk import unclassified

OWNERS = ["team:cx-data"]


def raw_asset(feed: Feed) -> dg.AssetsDefinition:
    """Build the asset that lands `feed` as table `raw_<feed>`."""
    mode = (
        ("by updated_since, and whole on the source's cadence" if feed.reconcile else "incrementally by updated_since")
        if feed.incremental
        else "as a full snapshot"
    )

    @dg.asset(
        name=feed.table,
        group_name="ingest",
        kinds={"duckdb", "python"},
        owners=OWNERS,
        pool=WAREHOUSE_POOL,
        required_resource_keys={feed.system, "warehouse", "contracts"},
        description=f"{feed.name.replace('_', ' ').capitalize()} from the {feed.system.upper()} API "
        f"(`{feed.path}`), pulled {mode} and upserted by {', '.join(feed.keys)}.",
        metadata={"table": feed.table, "natural_key": ", ".join(feed.keys)},
    )
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        # The upstream client is chosen per feed, so resources are looked up by key, not by parameter.
        api: SourceResource = feed_source(getattr(context.resources, feed.system), feed)
        warehouse: WarehouseResource = context.resources.warehouse
        contracts: ContractsResource = context.resources.contracts

        report_progress = Progress(context.log.info)

        def progress(pages: int, rows: int) -> None:
            report_progress(f"{feed.table}: {rows:,} rows in {pages} pages so far")

        metadata: dict[str, object] = {}
        with warehouse.connect() as con:
            # A run that stopped between landing and the contract left a batch unjudged (and hidden from
            # valid_*): judge it now, before this pull replaces the landing it sits in.
            if pending := judge_pending(con, feed, contracts.policy):
                context.log.warning(
                    f"{feed.table}: judged a batch an earlier run landed but never judged: {pending.outcome}, "
                    f"{pending.quarantined} rows quarantined"
                )
            # a source that reads snapshots and reconciled feeds by change says how often it reads them whole
            reads_changes = feed.full_read_on_cadence and hasattr(api, "full_read_every_hours")
            every = api.full_read_every_hours if reads_changes else 0.0
            source = api.source_name
            cursor = last_cursor(con, feed, source) if reads_changes or feed.incremental else None
            full = full_read_due(con, feed, every, source) if reads_changes else not feed.incremental
            listed = False
            if reads_changes and full and cursor:
                # what the source's change log lists since the last read is change, not drift
                try:
                    api.pull(con, feed, cursor)
                    note_changes(con, feed)
                    listed = True
                except UpstreamError as exc:  # the full read does not need it: only the drift stays unknown
                    context.log.warning(f"{feed.table}: the change log could not be read ({exc}); drift unknown")
            since = None if full else cursor
            context.log.info(f"{feed.table}: pulling from {source} " + (f"since {since}" if since else "in full"))
            batch = api.pull(con, feed, since, progress)
            if reads_changes:
                drift = snapshot_drift(con, feed) if full and listed else None
                metadata |= read_metadata(context, feed, full, drift, every)
                # when the cadence calls for the next full read: for the schedule's "anything to do?"
                due = datetime.now(UTC) + timedelta(hours=every) if full else next_full_read(con, feed, every, source)
                if every > 0 and due:
                    metadata["next_full_read_at"] = due.isoformat()
            stats = land(con, batch, run_id=context.run_id, source=source)
            reasons = unclassified_metadata(con) if feed.name == "inquiries" else {}
        context.log.info(
            f"{feed.table}: {stats.rows_fetched:,} fetched, {stats.rows_new:,} new, {stats.rows_updated:,} updated"
        )
        return dg.MaterializeResult(
            metadata={
                "rows_fetched": stats.rows_fetched,
                "rows_new": stats.rows_new,
                "rows_updated": stats.rows_updated,
                "rows_unchanged": stats.rows_unchanged,
                "rows_duplicate": stats.rows_duplicate,
                "pages": batch.pages,
                "updated_since": str(since) if since else "full load",
                "cursor": str(stats.cursor) if stats.cursor else "n/a (snapshot)",
                "batch_id": stats.batch_id,
                **reasons,
                "changed_preview": dg.MetadataValue.md(
                    "nothing changed" if stats.preview.empty else stats.preview.to_markdown(index=False)
                ),
                **metadata,
            }
        )

    return _asset


def read_metadata(
    context: dg.AssetExecutionContext, feed: Feed, full: bool, drift: Drift | None, every_hours: float
) -> dict[str, object]:
    """How a snapshot the source reads by change was read this run; for a full read after reads by change, the
    drift it found: keys whose figures differ from the state those reads built, new keys and keys gone, none of
    which the source's change log listed."""
    metadata: dict[str, object] = {"read": "full" if full else "changes", "full_read_every_hours": every_hours}
    if drift is None:
        return metadata
    if drift.rows:
        context.log.warning(
            f"{feed.table}: the full read found {drift.rows:,} rows the reads by change had missed "
            f"({drift.changed:,} changed, {drift.new:,} new, {drift.gone:,} gone)"
        )
    return metadata | {"drift_rows": drift.rows, "drift_changed": drift.changed, "drift_new": drift.new,
                       "drift_gone": drift.gone}  # fmt: skip


def unclassified_metadata(con: duckdb.DuckDBPyConnection) -> dict[str, object]:
    """How many inquiries of this pull no rule could give a reason (`other`), and their share: a KPI of its own,
    whatever the source (a growing share means the inquiry rules need work)."""
    other, judged = unclassified(con)
    return {"rows_unclassified": other, "unclassified_share": round(other / judged, 4) if judged else 0.0}


defs = dg.Definitions(assets=[raw_asset(feed) for feed in FEEDS.values()])
