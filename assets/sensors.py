"""Sensors: start a run as soon as new receipts land, so confirmation waits minutes, not the 3-hour schedule."""

from datetime import datetime, timedelta

import dagster as dg

from cx_pipeline.assets.resources import WmsResource
from cx_pipeline.assets.schedules import pipeline_job

RECEIPTS_POLL_SECONDS = 300
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    job=pipeline_job,
    minimum_interval_seconds=RECEIPTS_POLL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def new_receipts_sensor(context: dg.SensorEvaluationContext, wms: WmsResource) -> dg.SensorResult | dg.SkipReason:
    """Polls the WMS for receipts newer than the last trigger (one row, one request) and starts a run."""
    running = context.instance.get_runs(filters=dg.RunsFilter(job_name=pipeline_job.name, statuses=ACTIVE), limit=1)
    if running:
        # The cursor stays put: the receipts are picked up by the next tick once the run is done.
        return dg.SkipReason(f"run {running[0].run_id} is still going; new receipts wait for the next tick")
    params: dict[str, object] = {"limit": 1}
    if context.cursor:
        # updated_since is inclusive: ask for what came after the receipts that triggered the last run
        params["updated_since"] = (datetime.fromisoformat(context.cursor) + timedelta(microseconds=1)).isoformat()
    page = wms.client.get_json("/wms/receipts", params)
    if not page.get("data"):
        return dg.SkipReason(f"no new receipts since {context.cursor or 'ever'}")
    as_of = str(page.get("as_of"))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"new-receipts-{as_of}", tags={"cx/trigger": "new_receipts"})],
        cursor=as_of,
    )


defs = dg.Definitions(sensors=[new_receipts_sensor])
