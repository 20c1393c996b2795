"""The `cx-pipeline` command as a user runs it: a real process, real HTTP, a real warehouse file."""

import json
import re
import subprocess

import duckdb
import requests

from tests.helpers import CLI, WORLD_NOW, listening


def test_demo_runs_the_whole_pipeline_and_summarises_it(tmp_path):
    # the demo world's clock, pinned: a new data directory's world is built at the current hour
    marker = {"seed": 42, "skus": 300, "storefront": "rest", "now": WORLD_NOW.isoformat()}
    (tmp_path / "app-world.json").write_text(json.dumps(marker))
    result = subprocess.run(
        [CLI, "demo", "--skus", "300", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Run succeeded" in result.stdout
    assert re.search(r"raw_receipts\s+[\d,]+\s+[\d,]+\s+0\s+passed", result.stdout), result.stdout
    assert "Quarantined rows (broke a contract, kept for review): 0" in result.stdout
    queue = re.search(r"Stale-product review: .* ([\d,]+) in the review queue", result.stdout)
    assert queue and int(queue.group(1).replace(",", "")) > 0, result.stdout
    assert (tmp_path / "reports" / "stale_products_queue.csv").exists()
    assert f"cx-pipeline serve --app-db {tmp_path / 'app.sqlite'}" in result.stdout
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_catalog").fetchall() == [(300,)]


def test_simulate_serves_the_world_until_stopped():
    with listening("simulate", "--port", "0", "--skus", "100", "--token", "t0ken") as url:
        page = requests.get(f"{url}/catalog/products", headers={"Authorization": "Bearer t0ken"}, timeout=10)
        assert page.status_code == 200
        assert len(page.json()["data"]) > 0
        assert requests.get(f"{url}/catalog/products", timeout=10).status_code == 401


def test_simulate_says_how_to_point_every_system_the_job_talks_to_at_it():
    process = subprocess.Popen(
        [CLI, "simulate", "--port", "0", "--skus", "100", "--token", "t0ken"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line.strip())
            if line.startswith("Ctrl-C"):
                break
    finally:
        process.terminate()
        process.wait(timeout=10)
    url = re.search(r"on (http://127\.0\.0\.1:\d+)", lines[0]).group(1)
    exports = " ".join(line for line in lines if line.startswith("export "))
    for system in ("WMS", "CATALOG", "OMS", "HELPDESK", "NOTIFY", "STOREFRONT"):
        assert f"CX_{system}_URL={url} CX_{system}_TOKEN=t0ken" in exports
    assert "CX_STOREFRONT_ADAPTER=rest" in exports
