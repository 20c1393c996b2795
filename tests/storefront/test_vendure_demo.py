"""`cx-pipeline demo --storefront vendure` as a user runs it: a real Vendure shop (Node.js) seeded with the demo
world is the catalog, the order source and the shop; the simulator stays the WMS. Without Node.js it says what
to install."""

import os
import re
import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.helpers import CLI

SKUS = 30


@pytest.mark.slow  # a real Vendure server from npm and a whole pipeline run
def test_the_demo_runs_with_vendure_as_catalog_order_source_and_shop(tmp_path):
    result = subprocess.run(
        [CLI, "demo", "--storefront", "vendure", "--skus", str(SKUS), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )

    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "Vendure shop at http://127.0.0.1:" in out and f"{SKUS} products" in out
    assert re.search(r"raw_catalog\s+30\s+30\s+0\s+passed", out), out
    assert re.search(r"raw_open_orders\s+\d+\s+\d+\s+0\s+passed", out), out
    assert re.search(r"Storefront \(vendure\): [\d,]+ changes planned of 30 listed SKUs: .* 0 failed", out), out
    assert f"{SKUS} of {SKUS} SKUs show the status the pipeline planned" in out
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        batches = dict(con.execute("SELECT feed, source FROM ingest_batches").fetchall())
        orders = con.execute("SELECT count(DISTINCT order_id) FROM raw_open_orders").fetchall()
    assert batches["catalog"] == "vendure" and batches["open_orders"] == "vendure" and batches["receipts"] == "rest"
    assert orders == [(10,)]


def test_without_node_the_vendure_demo_says_what_to_install(tmp_path):
    bare = {"PATH": str(Path(CLI).parent), "HOME": str(tmp_path)}  # the project's venv, no Node.js
    result = subprocess.run(
        [CLI, "demo", "--storefront", "vendure", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=bare | {k: v for k, v in os.environ.items() if k == "SYSTEMROOT"},
    )

    assert result.returncode == 2
    assert "needs Node.js 20+ and npm" in result.stderr and "apt-get install nodejs npm" in result.stderr
    assert not (tmp_path / "warehouse.duckdb").exists()
