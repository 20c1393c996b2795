"""The whole graph under Dagster's multiprocess executor (each step in its own process, two at a time) leaves
the same warehouse as the default in-process run: steps wait for each other's hold on the DuckDB file."""

import time
from pathlib import Path

import duckdb
import pytest

from cx_pipeline import warehouse
from cx_pipeline.benchmarks.harness import TOKEN, ExecutorRun, run_production_job
from cx_pipeline.core.database import WarehouseBusyError
from cx_pipeline.simulator import Simulator, build_world
from tests.helpers import WORLD_NOW, held_by_another_process

pytestmark = pytest.mark.slow  # the multiprocess executor

MULTIPROCESS = {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}
# Stamped when a step ran (run, batch and plan ids; the wall clock; the simulator's clock, which moves with
# it): these differ between any two runs, whatever the executor. Everything else must be equal.
STAMPED_EVERYWHERE = {"_batch_id", "_loaded_at"}
STAMPED = {
    "ingest_batches": {"batch_id", "run_id", "fetched_at", "as_of", "judged_at"},
    "notice_ledger": {"run_id", "planned_at", "sent_at", "notification_id"},
    "push_audit": {"plan_id", "idempotency_key", "pushed_at"},
    "push_changes": {"plan_id"},
    "push_plans": {"plan_id", "planned_at"},
    "shop_reads": {"plan_id", "shop", "read_at", "since", "as_of"},  # the shop is the simulator's own port
    "quarantine": {"batch_id", "quarantined_at", "released_at"},
    "receipt_confirmations": {"run_id", "confirmed_at"},
    "reconciled": {"batch_id"},
    "reconciled_with": {"quarantine", "landed_through"},  # the quarantine's latest times, the landings' clock
    "confirmed_through": {"loaded_at"},  # the landings' clock
    "kpi_inspected_from": {"inputs"},  # holds the inspections' latest judgement time
    "inspection_verdicts": {"inputs"},  # the same
    "stale_queue_export": {"path"},  # the CSV beside each run's own warehouse
    "receipt_discrepancies": {"opened_at", "updated_at", "notified_at", "resolved_at"},
    "snapshot_absent": {"batch_id", "absent_since"},
    "stock_holds": {"since", "last_run"},
    "return_risk": {"scored_at"},
    "return_risk_metrics": {"run_id", "scored_at", "train_cutoff", "test_cutoff"},
    "stale_products": {"out_of_stock_since", "last_mismatch_at", "assessed_at", "assessment"},  # a random id
    "stale_assessment": {"assessed_at", "basis"},
    "stale_assessed_inputs": {"id"},  # batch and plan ids: their count is compared
    "review_queue_sent_token": {"token"},
    "review_queue_sent": {"assessment"},
    "stock_positioned": {"basis"},
    "stock_positioned_inputs": {"id"},  # batch ids: their count is compared
    "stock_status_since": {"since", "changed_run"},
}


def run_graph(workdir: Path, run_config: dict) -> ExecutorRun:
    """The deployed job against a fresh demo world, as `cx-pipeline bench --only executors` runs it."""
    workdir.mkdir()
    with Simulator(world=build_world(seed=7, n_skus=300, now=WORLD_NOW), token=TOKEN) as sim:
        run = run_production_job(sim.url, workdir / "warehouse.duckdb", run_config)
    assert not run.failures
    return run


def differences(left: Path, right: Path) -> dict[str, int]:
    """Rows of each table found in one warehouse and not the other, stamped columns left out."""
    con = duckdb.connect()
    con.execute(f"ATTACH '{left}' AS l (READ_ONLY)")
    con.execute(f"ATTACH '{right}' AS r (READ_ONLY)")
    tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'l'").fetchall()]
    assert {
        t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'r'").fetchall()
    } == set(tables)
    found = {}
    for table in tables:
        columns = [
            f'"{c}"'
            for (c,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = 'l' AND table_name = ? "
                "ORDER BY column_index",
                [table],
            ).fetchall()
            if c not in STAMPED_EVERYWHERE | STAMPED.get(table, set())
        ]
        select = ", ".join(columns) or "count(*)"  # every column stamped: the row counts are compared
        (count,) = con.execute(
            f"""SELECT count(*) FROM (
                (SELECT {select} FROM l."{table}" EXCEPT ALL SELECT {select} FROM r."{table}")
                UNION ALL
                (SELECT {select} FROM r."{table}" EXCEPT ALL SELECT {select} FROM l."{table}"))"""
        ).fetchone()
        if count:
            found[table] = count
    con.close()
    return found


def test_the_multiprocess_executor_gives_the_same_warehouse_as_one_process(tmp_path: Path) -> None:
    in_process = run_graph(tmp_path / "in_process", {})
    multiprocess = run_graph(tmp_path / "multiprocess", MULTIPROCESS)

    # the default stays one process; the multiprocess run gave every step its own, two at a time
    assert len(in_process.pids) == 1
    assert in_process.most_at_once == 1
    assert len(multiprocess.pids) == len(multiprocess.spans) > 20
    assert multiprocess.most_at_once == 2

    warehouses = [tmp_path / run / "warehouse.duckdb" for run in ("in_process", "multiprocess")]
    assert differences(*warehouses) == {}
    with duckdb.connect(str(warehouses[1]), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM push_audit").fetchone()[0] > 0  # not two empty warehouses


def test_a_step_waits_for_the_warehouse_another_process_holds(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    holder = held_by_another_process(path, 1.5)
    started = time.monotonic()
    with warehouse.connect(path) as con:
        assert con.execute("SELECT count(*) FROM ingest_batches").fetchone() == (0,)
    assert time.monotonic() - started >= 1.0  # opened only once the other process had let go
    assert holder.wait(timeout=10) == 0


def test_a_warehouse_held_too_long_fails_with_the_file_and_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    holder = held_by_another_process(path, 30)
    try:
        busy = rf"{path.name} is still in use .* after 1 s.*PID {holder.pid}"
        with pytest.raises(WarehouseBusyError, match=busy), warehouse.connect(path, wait_seconds=1):
            pass
    finally:
        holder.kill()
        holder.wait()
