"""The Dagster definitions load as `dg check defs` and `dg dev` load them, and every asset is documented."""

import subprocess
import sys
import tomllib
from pathlib import Path

import dagster as dg
import yaml

from cx_pipeline.assets.resources import WAREHOUSE_POOL
from cx_pipeline.assets.schedules import WAREHOUSE_TAG
from cx_pipeline.checks.ingest import CONTRACT_CHECK
from cx_pipeline.definitions import defs
from cx_pipeline.ingest.feeds import FEEDS

ROOT = Path(__file__).resolve().parents[1]


def test_workspace_validates():
    """`dg check defs` (Dagster 1.13's name for `dagster definitions validate`) loads the code location that
    [tool.dg] in pyproject.toml names, with no supersession warning."""
    dg_cli = Path(sys.executable).with_name("dg")
    result = subprocess.run([str(dg_cli), "check", "defs"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "All definitions loaded successfully." in result.stdout, output[-3000:]
    assert "superseded" not in output.lower(), output[-3000:]


def test_dg_and_the_workspace_files_name_the_same_code_location():
    """`dg dev` and `dg check defs` read [tool.dg]; `dg dev -w workspace.yaml` and production read the workspace
    files: one module, one location name (run history is kept per location)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    (local,) = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    assert local["python_module"]["module_name"] == project["code_location_target_module"]
    assert local["python_module"]["location_name"] == project["code_location_name"]
    (production,) = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())["load_from"]
    assert production["grpc_server"]["location_name"] == project["code_location_name"]


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
