"""A non-editable install from the checkout's tracked files works on its own (issue #17): the copy it was built from
is gone and the commands run from a directory outside any checkout, so nothing can be read from a source tree."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cx_pipeline.benchmarks import report
from tests.helpers import WORLD_NOW

pytestmark = pytest.mark.slow  # a fresh virtualenv, a full install, the demo and the bench

ROOT = Path(__file__).resolve().parents[1]
# Where each tracked source folder lands in site-packages ([tool.setuptools.package-dir] in pyproject.toml).
INSTALLED_AS = {"cx_pipeline": "cx_pipeline", "assets": "cx_pipeline/assets", "checks": "cx_pipeline/checks",
                "benchmarks": "cx_pipeline/benchmarks"}  # fmt: skip
NEVER_COPIED = (".venv", "data", "node_modules")


@dataclass(frozen=True)
class Install:
    bin: Path
    site_packages: Path
    workdir: Path  # outside any checkout
    env: dict[str, str]

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            print(result.stdout[-5000:])
            print(result.stderr[-5000:], file=sys.stderr)
        return result


def run(args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def tracked_files() -> list[str]:
    listed = run(["git", "ls-files", "-z"], timeout=60, cwd=ROOT).stdout.split("\0")
    return [f for f in listed if f and Path(f).parts[0] not in NEVER_COPIED and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("packaging")
    copy = base / "checkout"
    for name in tracked_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", str(copy)], timeout=1800, cwd=base)
    shutil.rmtree(copy)
    site_packages = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout=60, cwd=base
    ).stdout.strip()
    workdir = base / "elsewhere"
    workdir.mkdir()
    # Only the new environment: no path into a checkout, no settings of the environment running this test.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CX_", "DAGSTER_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return Install(venv / "bin", Path(site_packages), workdir, env)


def test_the_install_holds_cx_pipeline_with_its_data_and_no_generic_top_level_names(installed: Install):
    sp = installed.site_packages
    for generic in ("assets", "checks", "benchmarks", "definitions"):
        assert not (sp / generic).exists() and not (sp / f"{generic}.py").exists(), generic
    for pattern in ("quality/*.yaml", "quality/*.csv", "review/*.yaml", "web/templates/*.html", "web/static/*"):
        assert list((sp / "cx_pipeline").glob(pattern)), pattern
    # every tracked file of the installed folders, data as well as code, where the package-dir mapping puts it
    missing = []
    for name in tracked_files():
        folder, *rest = Path(name).parts
        if folder in INSTALLED_AS and not (sp / INSTALLED_AS[folder] / Path(*rest)).is_file():
            missing.append(name)
    assert missing == []
    where = installed.run(
        "python", "-c", "import cx_pipeline.definitions as d; print(d.__file__); print(len(d.defs.assets))", timeout=300
    )
    assert where.returncode == 0, where.stderr[-3000:]
    module, assets = where.stdout.split()
    assert Path(module).is_relative_to(sp) and int(assets) > 0


def test_the_installed_demo_runs_outside_a_checkout(installed: Install):
    # the demo world's clock, pinned: a new data directory's world is built at the current hour
    (installed.workdir / "demo").mkdir(exist_ok=True)
    marker = {"seed": 42, "skus": 300, "storefront": "rest", "now": WORLD_NOW.isoformat()}
    (installed.workdir / "demo" / "app-world.json").write_text(json.dumps(marker))
    demo = installed.run("cx-pipeline", "demo", "--skus", "300", "--data-dir", "demo", timeout=900)
    assert demo.returncode == 0, demo.stderr[-5000:]
    assert "Run succeeded" in demo.stdout
    assert "Stale-product review:" in demo.stdout and "Inspections:" in demo.stdout
    assert (installed.workdir / "demo" / "warehouse.duckdb").is_file()


def test_the_installed_bench_runs_outside_a_checkout(installed: Install):
    bench = installed.run("cx-pipeline", "bench", "--skus", "2000", "--only", "scale", "--out", "bench", timeout=1800)
    # at 2,000 SKUs the time, memory and floor targets (set for 1 M SKUs) are reported, not judged
    assert bench.returncode == 0, f"{bench.stdout[-3000:]}\n{bench.stderr[-5000:]}"
    assert "| target | goal | measured | met |" in bench.stdout
    lines = (installed.workdir / "bench" / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    totals = {r["bench"]: r["ok"] for r in records if r.get("step") == "TOTAL"}
    assert totals == dict.fromkeys(
        ["full_run", "incremental", "nothing_new", "steady_state", "fast_path", "daily_full_read"], True
    )
    judged = {target: met for target, _, _, met in report.targets(records) if met is not None}
    assert judged and all(judged.values()), judged  # the storefront writes: right at any size
    assert "not judged below 1,000,000 SKUs" in bench.stdout
