"""The Dagster definitions load as `dagster dev -w workspace.yaml` would, and every asset is documented."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from cx_pipeline.assets.resources import WAREHOUSE_POOL
from cx_pipeline.assets.schedules import WAREHOUSE_TAG
from cx_pipeline.checks.ingest import CONTRACT_CHECK
from cx_pipeline.definitions import defs
from cx_pipeline.ingest.feeds import FEEDS

ROOT = Path(__file__).resolve().parents[1]


def test_workspace_validates():
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_asset_has_group_kinds_owners_and_a_description():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name != "default", key
        assert node.kinds, key
        assert node.owners, key
        assert node.description, key


def test_every_raw_feed_has_a_blocking_contract():
    graph = defs.resolve_asset_graph()
    for feed in FEEDS.values():
        spec = graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey(feed.table), CONTRACT_CHECK))
        assert spec.blocking, feed.table


def test_the_whole_graph_runs_every_three_hours():
    schedule = defs.resolve_schedule_def("cx_pipeline_every_3_hours")
    assert schedule.cron_schedule == "0 */3 * * *"
    assert schedule.job_name == "cx_pipeline_job"
    job = defs.resolve_job_def("cx_pipeline_job")
    assert {k.path[-1] for k in job.asset_layer.executable_asset_keys} >= {f.table for f in FEEDS.values()}


def test_every_step_that_opens_the_warehouse_is_in_its_pool():
    """The run queue holds back any second run that contains one of these (deploy/dagster.yaml)."""
    ops = [d.op for d in [*defs.assets, *defs.asset_checks]]
    ops += defs.resolve_job_def("cx_housekeeping_job").graph.node_defs
    opening = [op for op in ops if "warehouse" in op.required_resource_keys]
    assert len(opening) >= 30  # 19 assets, 10 checks, the backup
    assert [op.name for op in opening if op.pool != WAREHOUSE_POOL] == []
    assert defs.resolve_job_def("cx_pipeline_job").tags[WAREHOUSE_TAG] == "write"
