"""Sensors: start a run as soon as new receipts land (polled from the WMS API, or dropped as export files), so
confirmation waits minutes, not the 3-hour schedule; and the storefront's fast path as soon as stock or orders
change, so an item that sold out is shown out of stock within minutes."""

import json
import time
from pathlib import Path

import dagster as dg

from cx_pipeline.assets.resources import ChangeProbe, FileDropResource, SourceResource, feed_source
from cx_pipeline.assets.schedules import WAREHOUSE_TAG, fast_path_job, pipeline_job
from cx_pipeline.assets.whats_new import IN_FLIGHT
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.sources.files import arrivals, run_key, scan

RECEIPTS_POLL_SECONDS = 300
STOCK_POLL_SECONDS = 60  # sold out to shown out: this, plus a fast-path run
FILE_DROP_POLL_SECONDS = 60
WMS_FEEDS = [feed for feed in FEEDS.values() if feed.system == "wms"]


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
    if not isinstance(source, ChangeProbe):
        return dg.SkipReason(
            f"the receipts' source is {type(source).__name__}, not the WMS API this sensor polls (/wms/receipts); "
            "wms_file_drop_sensor watches a file drop"
        )
    running = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=pipeline_job.name, statuses=list(IN_FLIGHT)), limit=1
    )
    if running:
        # The cursor stays put: the receipts are picked up by the next tick once the run is done.
        return dg.SkipReason(f"run {running[0].run_id} is still going; new receipts wait for the next tick")
    as_of = source.changed_since(FEEDS["receipts"], context.cursor)
    if as_of is None:
        return dg.SkipReason(f"no new receipts since {context.cursor or 'ever'}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"new-receipts-{as_of}", tags={"cx/trigger": "new_receipts"})],
        cursor=as_of,
    )


@dg.sensor(
    job=fast_path_job,
    minimum_interval_seconds=STOCK_POLL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def stock_changes_sensor(
    context: dg.SensorEvaluationContext, wms: dg.ResourceParam[SourceResource], oms: dg.ResourceParam[SourceResource]
) -> dg.SensorResult | dg.SkipReason:
    """Asks the on-hand and order sources for one row changed since the last trigger, and starts the storefront's
    fast path when either has one. The cursor holds each feed's source clock (`as_of`) at its last trigger."""
    sources = {"on_hand": feed_source(wms, FEEDS["on_hand"]), "open_orders": feed_source(oms, FEEDS["open_orders"])}
    probed = {name: source for name, source in sources.items() if isinstance(source, ChangeProbe)}
    unasked = [f"{name} ({type(source).__name__})" for name, source in sources.items() if name not in probed]
    waiting = f"; not asked, as their sources cannot be: {', '.join(unasked)}" if unasked else ""
    if not probed:
        return dg.SkipReason(f"no stock or order source can be asked for changes{waiting}: the 3-hourly run pushes")
    if context.instance.get_latest_materialization_event(dg.AssetKey("stock_position")) is None:
        # a first load is the full run's: the fast path only keeps an existing position current
        return dg.SkipReason("no stock position yet: the fast path starts after the first full run")
    busy = context.instance.get_runs(
        filters=dg.RunsFilter(tags={WAREHOUSE_TAG: "write"}, statuses=list(IN_FLIGHT)), limit=1
    )
    if busy:
        # The cursor stays put: the changes are asked for again once that run is done (it may push them itself).
        return dg.SkipReason(f"run {busy[0].run_id} writes the warehouse; stock changes wait for the next tick")
    seen = json.loads(context.cursor or "{}")
    changed = {
        name: as_of for name, source in probed.items() if (as_of := source.changed_since(FEEDS[name], seen.get(name)))
    }
    if not changed:
        since = ", ".join(f"{name} since {seen.get(name) or 'ever'}" for name in probed)
        return dg.SkipReason(f"no changes ({since}){waiting}")
    key = ",".join(f"{name}@{as_of}" for name, as_of in sorted(changed.items()))
    context.log.info(f"stock or orders changed: {key}{waiting}")
    request = dg.RunRequest(run_key=f"stock-changes-{key}", tags={"cx/trigger": "stock_changes"})
    return dg.SensorResult(run_requests=[request], cursor=json.dumps({**seen, **changed}))


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


defs = dg.Definitions(sensors=[new_receipts_sensor, stock_changes_sensor, wms_file_drop_sensor])
