"""The job over the whole graph and its schedule."""

import dagster as dg

WAREHOUSE_TAG = "cx/warehouse"

pipeline_job = dg.define_asset_job(
    name="cx_pipeline_job",
    selection=dg.AssetSelection.all(),
    description="Pull every feed, check its contract, and run everything downstream of the feeds that pass.",
    # The run queue lets one run carrying this tag write the warehouse at a time (deploy/dagster.yaml).
    tags={WAREHOUSE_TAG: "write"},
    # In one process by default; `execution: {config: {multiprocess: {max_concurrent: N}}}` in the run config
    # runs independent steps side by side (docs/scaling.md).
    executor_def=dg.multi_or_in_process_executor,
    config={"execution": {"config": {"in_process": {}}}},
)

every_three_hours = dg.ScheduleDefinition(
    name="cx_pipeline_every_3_hours",
    job=pipeline_job,
    cron_schedule="0 */3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The regular run: every 3 hours, on the hour (UTC).",
)
