"""The job over the whole graph and its schedule."""

import dagster as dg

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

every_three_hours = dg.ScheduleDefinition(
    name="cx_pipeline_every_3_hours",
    job=pipeline_job,
    cron_schedule="0 */3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The regular run: every 3 hours, on the hour (UTC).",
)


defs = dg.Definitions(jobs=[pipeline_job, fast_path_job], schedules=[every_three_hours])
