"""The job over the whole graph and its schedule."""

from datetime import UTC, datetime

import dagster as dg

from cx_pipeline.assets import whats_new
from cx_pipeline.assets.resources import AppStoreResource, SourceResource, feed_source
from cx_pipeline.ingest.feeds import FEEDS

WAREHOUSE_TAG = "cx/warehouse"

# Dagster's multi_or_in_process_executor with the other default: one process unless a run's config asks for
# `execution: {config: {multiprocess: {max_concurrent: N}}}` (docs/scaling.md says why). A default in the
# job's own run config instead would also freeze its resources' config, so nothing could swap them.
in_process_unless_asked = dg.ExecutorDefinition(
    name="in_process_unless_asked",
    config_schema=dg.Field(
        dg.multi_or_in_process_executor.config_schema.as_field().config_type, default_value={"in_process": {}}
    ),
    requirements=lambda config: dg.multiple_process_executor_requirements() if "multiprocess" in config else [],
    executor_creation_fn=dg.multi_or_in_process_executor.executor_creation_fn,
    description="In one process by default; several processes when the run's config says `multiprocess`.",
)

pipeline_job = dg.define_asset_job(
    name="cx_pipeline_job",
    selection=dg.AssetSelection.all(),
    description="Pull every feed, check its contract, and run everything downstream of the feeds that pass.",
    # The run queue lets one run carrying this tag write the warehouse at a time (deploy/dagster.yaml).
    tags={WAREHOUSE_TAG: "write"},
    executor_def=in_process_unless_asked,
)

# The fast path: what an item that sold out needs, and nothing else. The same assets, contracts and guards as the
# full run (the shared run queue keeps the two from writing the warehouse at once), on the stock and order feeds'
# changes only, so a sale shows on the storefront within minutes instead of at the next 3-hourly run.
FAST_PATH_ASSETS = [
    "raw_on_hand",
    "raw_open_orders",
    "stock_position",
    "storefront_push_plan",
    "storefront_status_push",
]
fast_path_job = dg.define_asset_job(
    name="storefront_fast_path_job",
    selection=dg.AssetSelection.assets(*FAST_PATH_ASSETS),
    description="Pull the stock and order changes, check their contracts, and push the SKUs whose state flipped.",
    tags={WAREHOUSE_TAG: "write"},
    executor_def=in_process_unless_asked,
)


@dg.schedule(
    name="cx_pipeline_every_3_hours",
    job=pipeline_job,
    cron_schedule="0 */3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The regular run: every 3 hours, on the hour (UTC), when something is new (the tick says what).",
)
def every_three_hours(
    context: dg.ScheduleEvaluationContext,
    wms: dg.ResourceParam[SourceResource],
    catalog: dg.ResourceParam[SourceResource],
    oms: dg.ResourceParam[SourceResource],
    helpdesk: dg.ResourceParam[SourceResource],
    app_store: AppStoreResource,
) -> dg.RunRequest | dg.SkipReason:
    """Asks what changed since the last run (`whats_new`) and runs the pipeline for the first reason found."""
    roles = {"wms": wms, "catalog": catalog, "oms": oms, "helpdesk": helpdesk}
    sources = {name: feed_source(roles[feed.system], feed) for name, feed in FEEDS.items()}
    found = whats_new.outlook(
        context.instance,
        sources,
        app_store,
        context.scheduled_execution_time or datetime.now(UTC),
        job=pipeline_job.name,
        fast_path_job=fast_path_job.name,
    )
    if found.reason is None:
        return dg.SkipReason("nothing new since the last run; asked: " + "; ".join(found.asked))
    context.log.info(f"running: {found.reason}")
    return dg.RunRequest(tags={"cx/trigger": "schedule", "cx/why": found.reason[:200]})


defs = dg.Definitions(jobs=[pipeline_job, fast_path_job], schedules=[every_three_hours])
