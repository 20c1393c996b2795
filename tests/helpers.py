"""Helpers for tests: resources aimed at the simulator, reading a run's results, the CLI and the review app."""

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import requests

from cx_pipeline.assets.resources import (
    UPSTREAM,
    AppStoreResource,
    ContractsResource,
    NotificationResource,
    StorefrontResource,
    WarehouseResource,
)
from cx_pipeline.definitions import ROOMS
from cx_pipeline.simulator import Simulator

TOKEN = "test-token"
# The demo world's clock in tests: a Monday morning, so a few hours' advance always brings receipts in.
# (A world started at the wall clock made tests depend on the hour they ran at.)
WORLD_NOW = datetime(2026, 11, 16, 6, tzinfo=UTC)


def resources(sim: Simulator, warehouse_path: Path, **api: object) -> dict[str, object]:
    """Resources aimed at the simulator; `api` overrides client settings (retries, timeouts, page size)."""
    settings = {"base_url": sim.url, "token": TOKEN, "backoff_seconds": 0.05, **api}
    return {
        "warehouse": WarehouseResource(path=str(warehouse_path)),
        "app_store": AppStoreResource(path=str(warehouse_path.with_name("app.sqlite"))),
        "contracts": ContractsResource(),
        **{system: cls(**settings) for system, cls in UPSTREAM.items()},
        "notifications": NotificationResource(**settings),
        "storefront": StorefrontResource(url=sim.url, token=TOKEN, backoff_seconds=0.05),
    }


def nodes(*rooms: str) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The assets and checks of `rooms` (every room when none), taken from the definitions themselves."""
    return [
        node for room in rooms or ROOMS for node in (*(ROOMS[room].assets or ()), *(ROOMS[room].asset_checks or ()))
    ]


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    """Metadata values of each materialized asset, by asset name."""
    return {
        event.asset_key.path[-1]: {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """The contract check evaluation of each asset, by asset name."""
    return {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}


CLI = str(Path(sys.executable).with_name("cx-pipeline"))


def cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `cx-pipeline` command."""
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def add_user(app_db: Path, username: str, role: str, password: str) -> None:
    result = cli("users", "add", username, "--role", role, "--password-stdin", "--app-db", str(app_db), stdin=password)
    assert result.returncode == 0, result.stderr


@contextmanager
def listening(*args: str) -> Iterator[str]:
    """Run `cx-pipeline <args>` (a server that prints where it listens) in its own process; yield its URL."""
    process = subprocess.Popen([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        for line in process.stdout:
            if match := re.search(r"on (http://127\.0\.0\.1:\d+)", line):
                url = match.group(1)
                break
        assert url, f"cx-pipeline {args[0]} never said where it listens"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def serve_app(app_db: Path) -> AbstractContextManager[str]:
    """`cx-pipeline serve` on a free port of 127.0.0.1."""
    return listening("serve", "--port", "0", "--app-db", str(app_db))


def screenshot(page: object, name: str) -> Path:
    """A full-page PNG of a Playwright `page` for the docs, as `<name>.png` in $CX_SCREENSHOTS (set it to
    docs/img to refresh the docs' pictures) or else in a temporary folder; returns its path."""
    folder = Path(os.environ.get("CX_SCREENSHOTS") or Path(os.environ.get("TMPDIR", "/tmp")) / "cx-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 0
    return path


def login(url: str, username: str, password: str) -> requests.Session:
    """A requests session logged in to the review app, as a browser would do it (CSRF cookie and field)."""
    session = requests.Session()
    page = session.get(f"{url}/login", timeout=10)
    response = session.post(
        f"{url}/login",
        data={"username": username, "password": password, "csrf_token": csrf_token(page.text), "next": "/"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 303, response.text
    return session


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def in_thread(run: Callable[[], object]) -> object:
    """Run the pipeline off the main thread, whose event loop belongs to Playwright's sync API."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


# another process that opens the file, says so, and keeps it for argv[2] seconds
HOLD = """import duckdb, sys, time
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))"""


def held_by_another_process(path: Path, seconds: float) -> subprocess.Popen:
    """A DuckDB file opened by another process (another run's step, a person's shell) for `seconds`."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder
