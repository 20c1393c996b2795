"""Sensors: start a run as soon as new receipts land (polled from the WMS API, or dropped as export files), so
confirmation waits minutes, not the 3-hour schedule."""

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from cx_pipeline.assets.resources import FileDropResource, SourceResource, WmsResource, feed_source
from cx_pipeline.assets.schedules import pipeline_job
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.sources.files import arrivals, run_key, scan

RECEIPTS_POLL_SECONDS = 300
FILE_DROP_POLL_SECONDS = 60
WMS_FEEDS = [feed for feed in FEEDS.values() if feed.system == "wms"]
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
def new_receipts_sensor(
    context: dg.SensorEvaluationContext, wms: dg.ResourceParam[SourceResource]
) -> dg.SensorResult | dg.SkipReason:
    """Polls the WMS for receipts newer than the last trigger (one row, one request) and starts a run."""
    source = feed_source(wms, FEEDS["receipts"])
    if not isinstance(source, WmsResource):
        return dg.SkipReason(
            f"the receipts' source is {type(source).__name__}, not the WMS API this sensor polls (/wms/receipts); "
            "wms_file_drop_sensor watches a file drop"
        )
    running = context.instance.get_runs(filters=dg.RunsFilter(job_name=pipeline_job.name, statuses=ACTIVE), limit=1)
    if running:
        # The cursor stays put: the receipts are picked up by the next tick once the run is done.
        return dg.SkipReason(f"run {running[0].run_id} is still going; new receipts wait for the next tick")
    params: dict[str, object] = {"limit": 1}
    if context.cursor:
        # updated_since is inclusive: ask for what came after the receipts that triggered the last run
        params["updated_since"] = (datetime.fromisoformat(context.cursor) + timedelta(microseconds=1)).isoformat()
    page = source.client.get_json("/wms/receipts", params)
    if not page.get("data"):
        return dg.SkipReason(f"no new receipts since {context.cursor or 'ever'}")
    as_of = str(page.get("as_of"))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"new-receipts-{as_of}", tags={"cx/trigger": "new_receipts"})],
        cursor=as_of,
    )


@dg.sensor(
    job=pipeline_job,
    minimum_interval_seconds=FILE_DROP_POLL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def wms_file_drop_sensor(
    context: dg.SensorEvaluationContext, wms: dg.ResourceParam[SourceResource]
) -> dg.SensorResult | dg.SkipReason:
    """Watches the WMS drop folder and starts a run when a settled export file arrives (once per file and content)."""
    drops = {feed.name: feed_source(wms, feed) for feed in WMS_FEEDS}
    watched = [(feed, drop) for feed in WMS_FEEDS if isinstance(drop := drops[feed.name], FileDropResource)]
    if not watched:
        return dg.SkipReason("no WMS feed comes from a file drop (CX_WMS_SOURCE=files, or CX_<FEED>_SOURCE=files)")
    now = time.time()
    try:
        scans = [scan(Path(drop.folder), drop.pattern(feed), now, drop.settle_seconds) for feed, drop in watched]
    except FileNotFoundError as exc:
        return dg.SkipReason(str(exc))
    folders = ", ".join(sorted({drop.folder for _, drop in watched}))
    # The cursor remembers the files a run was started for; which of them landed is the run's business (its
    # files ledger), so a file is never asked for twice and the warehouse is not opened here.
    arrived, seen = arrivals([f for s in scans for f in s.settled], json.loads(context.cursor or "{}"))
    settling = [f.name for s in scans for f in s.settling]
    if not arrived:
        waiting = f"; still being written: {', '.join(settling)}" if settling else ""
        return dg.SensorResult(skip_reason=f"no new export file in {folders}{waiting}", cursor=json.dumps(seen))
    names = ", ".join(file.name for file, _ in arrived)
    context.log.info(f"new export files in {folders}: {names}")
    request = dg.RunRequest(run_key=f"wms-files-{run_key(arrived)}", tags={"cx/trigger": "wms_file_drop"})
    return dg.SensorResult(run_requests=[request], cursor=json.dumps(seen))


defs = dg.Definitions(sensors=[new_receipts_sensor, wms_file_drop_sensor])
