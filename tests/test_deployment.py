"""The production deployment with real parts: PostgreSQL as the instance storage (deploy/dagster.yaml), a
code server, and a `dagster-daemon` that evaluates the sensor and starts runs from the queue."""

import contextlib
import itertools
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import requests
import yaml
from dagster_graphql import DagsterGraphQLClient

from cx_pipeline.assets import housekeeping
from cx_pipeline.assets.resources import WAREHOUSE_POOL
from cx_pipeline.assets.schedules import WAREHOUSE_TAG, pipeline_job
from cx_pipeline.demo import simulator_env
from cx_pipeline.simulator import Simulator, build_world
from tests.helpers import TOKEN, WORLD_NOW
from tests.postgres import Postgres, free_port, postgres_server

pytestmark = pytest.mark.slow  # a PostgreSQL cluster and the Dagster daemon

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUN_TIMEOUT = 600
# started in this order, as systemd would (the daemon and the webserver want the code server)
UNITS = ("cx-dagster-code.service", "cx-dagster-daemon.service", "cx-dagster-webserver.service")
QUEUED = dg.DagsterRunStatus.QUEUED
IN_PROGRESS = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
FINISHED = set(housekeeping.FINISHED)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # a session of its own, so that stopping it also stops what it started (the code server's gRPC child)
    return subprocess.Popen(
        args, env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def server_info(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=5).ok
    except requests.ConnectionError:
        return False


def wait_for(what: str, found: object, timeout: float, logs: list[Path]) -> object:
    """Poll `found()` until it returns something truthy; on timeout, fail with the processes' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := found():
            return value
        time.sleep(1)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    pytest.fail(f"timed out waiting for {what}\n{tails}")


def unit_command(unit: str, replacements: dict[str, str]) -> list[str]:
    """The ExecStart of a deploy/systemd unit, with this checkout's paths and free ports put in."""
    text = (REPO / "deploy" / "systemd" / unit).read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    command = exec_start.removeprefix("ExecStart=")
    for old, new in replacements.items():
        command = command.replace(old, new)
    return shlex.split(command)


def test_the_daemon_runs_the_pipeline_from_the_queue_one_warehouse_writer_at_a_time(
    tmp_path: Path, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    code_port, web_port = free_port(), free_port()
    workspace = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"]["port"] = code_port
    workspace_file = tmp_path / "workspace.yaml"
    workspace_file.write_text(yaml.safe_dump(workspace))
    paths = {
        "/opt/cx-pipeline/.venv/bin": str(BIN),
        "/opt/cx-pipeline/deploy/workspace.yaml": str(workspace_file),
        "/opt/cx-pipeline": str(REPO),
        "-p 4266": f"-p {code_port}",
        "-p 3000": f"-p {web_port}",
    }
    warehouse = tmp_path / "warehouse.duckdb"
    logs = [tmp_path / f"{name}.log" for name in ("code-server", "daemon", "webserver")]

    with Simulator(world=build_world(seed=7, n_skus=300, now=WORLD_NOW), token=TOKEN) as sim:
        # The first run's first storefront write takes 20 s: long enough to watch the other runs wait.
        sim.faults.add("/storefront/stock/batch", "latency", times=1, seconds=20)
        settings = {
            **postgres.env(),
            **simulator_env(sim.url, TOKEN, warehouse),
            "DAGSTER_HOME": str(home),
        }
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        # the install steps of docs/deployment.md: the instance's tables, and the warehouse pool's limit (set
        # before the first run, so the queue never sees the pool without one)
        for install in (["instance", "migrate"], ["instance", "concurrency", "set", WAREHOUSE_POOL, "1"]):
            done = subprocess.run([str(BIN / "dagster"), *install], cwd=REPO, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr
        processes = []
        try:
            for unit, log in zip(UNITS, logs, strict=True):
                processes.append(start(unit_command(unit, paths), dict(os.environ), log))
                if unit == "cx-dagster-code.service":
                    health = [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(code_port)]
                    wait_for(
                        "the code server",
                        lambda h=health: subprocess.run(h, capture_output=True).returncode == 0,
                        120,
                        logs,
                    )
            web = DagsterGraphQLClient("127.0.0.1", port_number=web_port, timeout=60)
            wait_for("the webserver", lambda: server_info(web_port), 120, logs)

            with dg.DagsterInstance.from_config(str(home)) as instance:
                # The sensor's first tick finds the demo world's receipts and requests a run through the queue.
                by_sensor = dg.RunsFilter(tags={"dagster/sensor_name": "new_receipts_sensor"})
                first = wait_for("the sensor's run", lambda: instance.get_runs(by_sensor), 120, logs)[0]
                assert first.tags[WAREHOUSE_TAG] == "write"
                wait_for("the first run to start", lambda: status(instance, first.run_id) != QUEUED, 120, logs)

                # Meanwhile an operator launches the job, and materializes one asset by hand, from the UI: both
                # wait in the queue (the job by its tag, the ad-hoc run by the warehouse pool).
                waiting = [
                    web.submit_job_execution(pipeline_job.name),
                    web.submit_job_execution("__ASSET_JOB", asset_selection=["raw_catalog"]),
                ]
                time.sleep(10)  # two turns of the queue
                assert [status(instance, run_id) for run_id in waiting] == [QUEUED, QUEUED]
                assert status(instance, first.run_id) not in FINISHED, "the first run ended before the check"

                runs = [first.run_id, *waiting]
                wait_for(
                    "every run to finish", lambda: all(status(instance, r) in FINISHED for r in runs), RUN_TIMEOUT, logs
                )
                records = sorted(instance.get_run_records(dg.RunsFilter(run_ids=runs)), key=lambda r: r.start_time)
                for record in records:
                    errors = [
                        e.message for e in instance.all_logs(record.dagster_run.run_id) if e.level >= logging.ERROR
                    ]
                    assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS, errors
                # one warehouse writer at a time: each run started after the one before it ended
                for before, after in itertools.pairwise(records):
                    assert after.start_time >= before.end_time
                # nothing left running (a later sensor tick, say) to hold the warehouse when the test reads it
                active = dg.RunsFilter(statuses=[QUEUED, *IN_PROGRESS])
                wait_for("no run in flight", lambda: not instance.get_runs(active), RUN_TIMEOUT, logs)
        finally:
            stop(*processes)

    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_receipts").fetchone()[0] > 0
        assert con.execute("SELECT count(*) FROM push_audit").fetchone()[0] > 0
