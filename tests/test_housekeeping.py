"""Housekeeping of the Dagster instance: old runs purged, failed runs announced to a real webhook."""

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import pytest

from cx_pipeline.assets.housekeeping import AlertResource, cx_housekeeping_job, run_failure_alert
from cx_pipeline.assets.resources import AppStoreResource, WarehouseResource
from cx_pipeline.core import appstore
from cx_pipeline.web import accounts
from tests.helpers import held_by_another_process
from tests.postgres import free_port


def stores(warehouse: Path) -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": WarehouseResource(path=str(warehouse)),
        "app_store": AppStoreResource(path=str(warehouse.with_name("app.sqlite"))),
    }


def purge(instance: dg.DagsterInstance, keep_days: int) -> dg.ExecuteInProcessResult:
    # the purge alone: the stores' resources are named by the job but never opened
    return cx_housekeeping_job.execute_in_process(
        instance=instance,
        run_config={"ops": {"purge_old_runs": {"config": {"keep_days": keep_days}}}},
        op_selection=["purge_old_runs"],
        resources=stores(Path("never-opened") / "warehouse.duckdb"),
        raise_on_error=False,
    )


def back_up(warehouse: Path, keep: int) -> dg.ExecuteInProcessResult:
    return cx_housekeeping_job.execute_in_process(
        run_config={"ops": {"back_up_stores": {"config": {"keep": keep}}}},
        op_selection=["back_up_stores"],
        resources=stores(warehouse),
    )


def test_a_backup_holds_both_stores_whole_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE stock AS SELECT range AS sku, range % 7 AS qty FROM range(100000)")
        original = con.execute("SELECT count(*), sum(qty) FROM stock").fetchone()
    with appstore.connect(warehouse.with_name("app.sqlite")) as store:
        accounts.add_user(store, "maria", "merchandiser", "a long enough password")

    (tmp_path / "backups" / "0-not-ours").mkdir(parents=True)  # sorts first, must survive the rotation
    (tmp_path / "backups" / "20261101T043000.000000Z.partial").mkdir()  # a failed copy: not a backup

    folders = [Path(back_up(warehouse, keep=2).output_for_node("back_up_stores")) for _ in range(3)]

    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == [
        "0-not-ours", "20261101T043000.000000Z.partial", *(f.name for f in folders[1:])
    ]  # fmt: skip
    assert (folders[-1]).stat().st_mode & 0o077 == 0  # password hashes inside: the owner's only
    with duckdb.connect(str(folders[-1] / "warehouse.duckdb"), read_only=True) as copy:
        assert copy.execute("SELECT count(*), sum(qty) FROM stock").fetchone() == original
    with closing(sqlite3.connect(folders[-1] / "app.sqlite")) as copy:
        assert copy.execute("SELECT username FROM users").fetchall() == [("maria",)]


def test_a_backup_that_cannot_be_made_leaves_nothing_behind(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    holder = held_by_another_process(warehouse, 30)  # someone's DuckDB shell, say
    try:
        result = cx_housekeeping_job.execute_in_process(
            run_config={"ops": {"back_up_stores": {"config": {}}}},
            op_selection=["back_up_stores"],
            resources={**stores(warehouse), "warehouse": WarehouseResource(path=str(warehouse), wait_seconds=0.5)},
            raise_on_error=False,
        )
    finally:
        holder.kill()
        holder.wait()
    assert not result.success
    assert list((tmp_path / "backups").iterdir()) == []


def test_finished_runs_older_than_the_cutoff_are_deleted_and_unfinished_ones_kept() -> None:
    with dg.instance_for_test() as instance:
        finished = [purge(instance, keep_days=365).run_id for _ in range(3)]
        failed = purge(instance, keep_days=-1)
        assert not failed.success
        going = instance.create_run_for_job(cx_housekeeping_job, status=dg.DagsterRunStatus.STARTED)
        files = Path(instance.storage_directory()) / finished[0]
        assert files.is_dir()  # its output and step logs

        result = purge(instance, keep_days=0)

        assert result.success
        assert result.output_for_node("purge_old_runs") == 4  # three successes and the failure
        remaining = {run.run_id for run in instance.get_runs()}
        assert remaining == {going.run_id, result.run_id}
        assert not set(finished) & remaining
        assert not instance.all_logs(finished[0])  # the event log goes with the run
        assert not files.exists()  # and so do its files


def test_recent_runs_are_kept() -> None:
    with dg.instance_for_test() as instance:
        earlier = purge(instance, keep_days=30)
        assert purge(instance, keep_days=30).output_for_node("purge_old_runs") == 0
        assert instance.has_run(earlier.run_id)


class Webhook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    statuses: ClassVar[list[int]] = []  # the answers to give, in turn; 200 once they run out

    def do_POST(self) -> None:
        Webhook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(Webhook.statuses.pop(0) if Webhook.statuses else 200)
        self.end_headers()
        self.wfile.write(b"ok")  # Slack answers plain text, not JSON

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Webhook.received, Webhook.statuses = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/secret-token"
    server.shutdown()
    server.server_close()


def failure_context(instance: dg.DagsterInstance) -> dg.RunFailureSensorContext:
    failed = purge(instance, keep_days=-1)
    run = instance.get_run_by_id(failed.run_id)
    event = next(e for e in instance.all_logs(failed.run_id) if e.dagster_event and e.dagster_event.is_run_failure)
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert", dagster_instance=instance, dagster_run=run, dagster_event=event.dagster_event
    ).for_run_failure()


def test_a_failed_run_is_announced_with_its_step_and_a_link(webhook: str) -> None:
    with dg.instance_for_test() as instance:
        context = failure_context(instance)
        run_failure_alert(context, alerts=AlertResource(webhook_url=webhook, ui_url="http://dagster.internal:3000/"))

    [message] = Webhook.received
    text = message["text"]
    assert f"run {context.dagster_run.run_id[:8]} of cx_housekeeping_job failed at purge_old_runs: " in text
    assert "keep_days must be 0 or more, got -1" in text  # the step's own error, not just "steps failed"
    assert text.endswith(f"http://dagster.internal:3000/runs/{context.dagster_run.run_id}")


def test_a_refused_alert_is_posted_again(webhook: str) -> None:
    Webhook.statuses = [503]
    with dg.instance_for_test() as instance:
        run_failure_alert(failure_context(instance), alerts=AlertResource(webhook_url=webhook, retries=1))

    assert len(Webhook.received) == 2
    assert Webhook.received[0] == Webhook.received[1]


def test_an_alert_refused_to_the_end_fails_the_tick(webhook: str) -> None:
    Webhook.statuses = [500, 500]
    with dg.instance_for_test() as instance:
        context = failure_context(instance)
        with pytest.raises(RuntimeError, match="alert webhook answered 500"):
            run_failure_alert(context, alerts=AlertResource(webhook_url=webhook, retries=1))


def test_an_unreachable_webhook_is_reported_without_its_secret_path() -> None:
    closed = f"http://127.0.0.1:{free_port()}/hooks/secret-token"
    with dg.instance_for_test() as instance:
        context = failure_context(instance)
        with pytest.raises(RuntimeError, match=r"alert webhook at 127\.0\.0\.1 unreachable") as raised:
            run_failure_alert(context, alerts=AlertResource(webhook_url=closed, retries=0))
    assert "secret-token" not in str(raised.value)
    assert raised.value.__suppress_context__


def test_without_a_webhook_the_failure_is_only_logged() -> None:
    with dg.instance_for_test() as instance:
        run_failure_alert(failure_context(instance), alerts=AlertResource())
