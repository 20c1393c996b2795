"""The job over the whole graph and its schedule."""

import dagster as dg

pipeline_job = dg.define_asset_job(
    name="cx_pipeline_job",
    selection=dg.AssetSelection.all(),
    description="Pull every feed, check its contract, and run everything downstream of the feeds that pass.",
)

every_three_hours = dg.ScheduleDefinition(
    name="cx_pipeline_every_3_hours",
    job=pipeline_job,
    cron_schedule="0 */3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The regular run: every 3 hours, on the hour (UTC).",
)
