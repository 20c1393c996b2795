"""The KPI page and the operator's work list over real HTTP (`cx-pipeline serve` on 127.0.0.1), on an app store
the library published into: who may open which, and what a non-admin gets instead of the work list."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cx_pipeline import warehouse
from cx_pipeline.core import appstore
from cx_pipeline.kpis import weekly, worklist
from tests.helpers import add_user, login, serve_app
from tests.kpis import test_weekly_kpis, test_worklist

PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("kpi-pages")
    with warehouse.connect(folder / "warehouse.duckdb") as con, appstore.connect(folder / "app.sqlite") as store:
        test_weekly_kpis.world(con)
        test_worklist.plant_every_kind(con)
        weekly.publish(store, weekly.build_weekly(con), "run-kpis", test_weekly_kpis.NOW)
        worklist.publish(store, worklist.problems(con), "run-worklist", test_worklist.NOW)
    for username, role in (("ops", "admin"), ("maria", "merchandiser"), ("quinn", "qa")):
        add_user(folder / "app.sqlite", username, role, PASSWORD)
    with serve_app(folder / "app.sqlite") as url:
        yield url


@pytest.mark.parametrize("username", ["maria", "quinn"])
def test_a_user_who_is_not_an_admin_cannot_open_the_work_list(served, username):
    session = login(served, username, PASSWORD)

    refused = session.get(f"{served}/worklist", timeout=10)
    filtered = session.get(f"{served}/worklist?kind=quarantine", timeout=10)

    assert (refused.status_code, filtered.status_code) == (403, 403)
    assert "Your role does not give access to this page." in refused.text
    assert "SKU-H" not in refused.text + filtered.text
    assert 'href="/worklist"' not in session.get(f"{served}/kpis", timeout=10).text  # nor is it offered


def test_every_signed_in_role_sees_the_kpis_and_only_an_admin_the_work_list(served):
    for username in ("ops", "maria", "quinn"):
        page = login(served, username, PASSWORD).get(f"{served}/kpis", timeout=10)
        assert page.status_code == 200 and "−60 %</strong> since week 2026-W45" in page.text
    admin = login(served, "ops", PASSWORD).get(f"{served}/worklist", timeout=10)
    assert admin.status_code == 200 and "delay:O-1:1" in admin.text
    assert 'href="http://localhost:3000/runs/run-2"' in admin.text  # CX_DAGSTER_URL unset: the default


def test_without_a_session_both_pages_send_to_the_login(served):
    for path in ("/kpis", "/worklist"):
        response = requests.get(f"{served}{path}", allow_redirects=False, timeout=10)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")


def test_before_the_first_publication_both_pages_say_so(tmp_path):
    add_user(tmp_path / "app.sqlite", "ops", "admin", PASSWORD)
    with serve_app(tmp_path / "app.sqlite") as url:
        session = login(url, "ops", PASSWORD)
        kpis, work = session.get(f"{url}/kpis", timeout=10), session.get(f"{url}/worklist", timeout=10)

    assert kpis.status_code == 200 and "No complete week on record yet" in kpis.text
    assert work.status_code == 200 and "has not published a work list yet" in work.text
