"""Housekeeping: nightly backups of the warehouse and the app's store, old runs deleted, failed runs announced."""

import os
import re
import shutil
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import requests

from cx_pipeline.assets.resources import WAREHOUSE_POOL, AppStoreResource, WarehouseResource
from cx_pipeline.ingest.http import retrying_session

DEFAULT_KEEP_RUNS_DAYS = 30
DEFAULT_KEEP_BACKUPS = 7
BACKUP_NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
PURGE_PAGE = 500


class PurgeConfig(dg.Config):
    """How many days of finished runs (with their logs and events) the instance keeps."""

    keep_days: int = DEFAULT_KEEP_RUNS_DAYS


@dg.op
def purge_old_runs(context: dg.OpExecutionContext, config: PurgeConfig) -> int:
    """Deletes finished runs created more than `keep_days` ago, with their logs and files; queued and running
    ones are never touched."""
    if config.keep_days < 0:
        raise dg.Failure(f"keep_days must be 0 or more, got {config.keep_days}")
    cutoff = datetime.now(UTC) - timedelta(days=config.keep_days)
    old = dg.RunsFilter(statuses=FINISHED, created_before=cutoff)
    deleted = 0
    while records := context.instance.get_run_records(filters=old, limit=PURGE_PAGE):
        for record in records:
            run_id = record.dagster_run.run_id
            context.instance.delete_run(run_id)  # the run and its event log, in the instance's database
            # and its files: step logs wherever they are kept, outputs in the instance's storage folder
            context.instance.compute_log_manager.delete_logs(prefix=[run_id])
            shutil.rmtree(Path(context.instance.storage_directory()) / run_id, ignore_errors=True)
        deleted += len(records)
        context.log.info(f"{deleted:,} runs created before {cutoff:%Y-%m-%d %H:%M} UTC deleted so far")
    context.add_output_metadata({"runs_deleted": deleted, "created_before": cutoff.isoformat()})
    return deleted


class BackupConfig(dg.Config):
    """Where backups go (default: `backups/` beside the warehouse file) and how many are kept."""

    backup_dir: str = ""
    keep: int = DEFAULT_KEEP_BACKUPS


# In the warehouse pool: the run queue starts this only when no run is writing the warehouse.
@dg.op(pool=WAREHOUSE_POOL)
def back_up_stores(
    context: dg.OpExecutionContext, config: BackupConfig, warehouse: WarehouseResource, app_store: AppStoreResource
) -> str:
    """Copies the warehouse and the review app's store into a folder named by the time, keeping the newest `keep`."""
    if config.keep < 1:
        raise dg.Failure(f"keep must be 1 or more, got {config.keep}")
    root = Path(config.backup_dir) if config.backup_dir else Path(warehouse.path).parent / "backups"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)  # the app store holds password hashes
    target = root / f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}"  # names sort by time
    partial = target.with_name(target.name + ".partial")  # never counted as a backup if the copy fails
    partial.mkdir(mode=0o700)
    try:
        with warehouse.connect() as con:
            # Checkpointed and held open, the file is complete and nobody else can write it while it is copied.
            con.execute("CHECKPOINT")
            shutil.copy2(warehouse.path, partial / Path(warehouse.path).name)
        with app_store.connect() as store, closing(sqlite3.connect(partial / Path(app_store.path).name)) as copy:
            store.backup(copy)  # SQLite's online backup: consistent while the web app keeps writing
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # a disk that filled up gets its space back
        raise
    partial.rename(target)
    # only our own, complete backups are rotated: anything else in the folder is left alone
    for old in sorted(p for p in root.iterdir() if BACKUP_NAME.fullmatch(p.name))[: -config.keep]:
        shutil.rmtree(old)
        context.log.info(f"removed the old backup {old}")
    sizes = {p.name: p.stat().st_size for p in target.iterdir()}
    context.add_output_metadata({"backup": str(target), **{f"bytes_{name}": size for name, size in sizes.items()}})
    return str(target)


@dg.job(tags={"cx/housekeeping": "nightly"})
def cx_housekeeping_job() -> None:
    """Keeps the deployment recoverable and small: backs up both stores and deletes old runs with their logs."""
    back_up_stores()
    purge_old_runs()


@dg.schedule(
    job=cx_housekeeping_job,
    cron_schedule="30 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def cx_housekeeping_daily() -> dg.RunRequest:
    """Every day at 04:30 UTC: back up to CX_BACKUP_DIR (keeping CX_KEEP_BACKUPS, 7) and delete finished runs
    older than CX_KEEP_RUNS_DAYS (30)."""
    env = os.environ
    return dg.RunRequest(
        run_config={
            "ops": {
                "back_up_stores": {
                    "config": {
                        "backup_dir": env.get("CX_BACKUP_DIR", ""),
                        "keep": int(env.get("CX_KEEP_BACKUPS", DEFAULT_KEEP_BACKUPS)),
                    }
                },
                "purge_old_runs": {"config": {"keep_days": int(env.get("CX_KEEP_RUNS_DAYS", DEFAULT_KEEP_RUNS_DAYS))}},
            }
        }
    )


class AlertResource(dg.ConfigurableResource):
    """Where failed runs are announced: a webhook taking `{"text": ...}` (Slack, Teams and Mattermost
    incoming webhooks all do). Empty: failures are only logged by the sensor and shown in the UI."""

    webhook_url: str = ""  # a secret: whoever has it can post to the channel
    ui_url: str = ""  # the webserver's address, for a link to the failed run
    timeout_seconds: float = 5.0
    retries: int = 3  # with backoff 2, 4, 8 s: all within the sensor's 60 s evaluation limit

    def announce(self, text: str) -> bool:
        """Post `text`, retrying refused and failed posts; False when no webhook is configured.

        Dagster moves a failure sensor past a run even when the post fails, so the retries happen here; a
        post that still fails raises, which shows the tick as failed, without the URL (it is the secret).
        """
        if not self.webhook_url:
            return False
        with retrying_session(self.retries, backoff_factor=2) as session:
            try:
                response = session.post(self.webhook_url, json={"text": text}, timeout=self.timeout_seconds)
            except requests.RequestException as exc:
                where = urlsplit(self.webhook_url).hostname
                raise RuntimeError(f"alert webhook at {where} unreachable: {type(exc).__name__}") from None
        if not response.ok:
            raise RuntimeError(f"alert webhook answered {response.status_code}: {response.text[:200]}")
        return True


def alerts_from_env() -> AlertResource:
    """CX_ALERT_WEBHOOK_URL (read at run time, like every secret) and CX_DAGSTER_URL, both optional."""
    webhook = dg.EnvVar("CX_ALERT_WEBHOOK_URL") if os.environ.get("CX_ALERT_WEBHOOK_URL") else ""
    return AlertResource(webhook_url=webhook, ui_url=os.environ.get("CX_DAGSTER_URL", ""))


# Every job of the code location: the pipeline, housekeeping, and materializations started from the UI.
@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertResource) -> None:
    """Announces every failed run: which job, which step and why, with a link to the run."""
    run = context.dagster_run
    failures = context.get_step_failure_events()
    steps = sorted({event.step_key for event in failures if event.step_key})
    errors = [event.step_failure_data.error for event in failures if event.step_failure_data.error]
    # the step's own error says why; the run's failure message only lists the steps that failed
    message = errors[0].message.strip().splitlines()[0] if errors else context.failure_event.message or "failed"
    link = f"\n{alerts.ui_url.rstrip('/')}/runs/{run.run_id}" if alerts.ui_url else ""
    text = (
        f"cx-pipeline: run {run.run_id[:8]} of {run.job_name} failed"
        + (f" at {', '.join(steps)}" if steps else "")
        + f": {message}{link}"
    )
    context.log.error(text)
    alerts.announce(text)


defs = dg.Definitions(jobs=[cx_housekeeping_job], schedules=[cx_housekeeping_daily], sensors=[run_failure_alert])
