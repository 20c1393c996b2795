"""The KPI page and the operator's work list in a real headless Chromium (Debian's, driven by Playwright), after
the pipeline ran on the demo world with QA's history and one planted problem of every kind the world can
plant: a catalog SKU the shop does not list, corrupt on-hand rows (quarantined, so their SKUs are held), a
storefront batch half refused, and a notification API that refuses every notice."""

import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Page, expect

from cx_pipeline.assets.kpis import operator_worklist
from cx_pipeline.demo import seed_qa_history
from cx_pipeline.kpis import worklist
from cx_pipeline.simulator import Simulator
from tests.conftest import run_everything, small_world
from tests.helpers import TOKEN, add_user, in_thread, resources, screenshot, serve_app

PASSWORD = "a long enough password"
RUNS = re.compile(r"^http://localhost:3000/runs/[0-9a-f-]{36}$")  # CX_DAGSTER_URL unset: the default


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """The app on the app store of one run with every plantable problem; yields its URL and the unlisted SKU."""
    warehouse_path: Path = tmp_path_factory.mktemp("kpi-pages") / "warehouse.duckdb"
    app_db = warehouse_path.with_name("app.sqlite")
    world = small_world()
    unlisted = sorted(world.storefront)[-1]  # not one of the first rows, which the corrupt on-hand rows hold
    del world.storefront[unlisted]  # the shop never listed it
    seed_qa_history(world, app_db)
    with Simulator(world=world, token=TOKEN) as sim:
        sim.faults.add("/wms/on_hand", "corrupt", times=None, field="on_hand", value=-3, rows=2)
        sim.faults.add("/storefront/stock/batch", "partial", times=1)
        sim.faults.add("/notifications/batch", "error", times=None, status=503)
        failed = in_thread(lambda: run_everything(sim, warehouse_path))
        assert not failed.success  # the refused notices and writes fail the run before the work list's step ...
        # ... so worklist_after_failed_run starts cx_worklist_job, which publishes it
        alone = in_thread(lambda: dg.materialize([operator_worklist], resources=resources(sim, warehouse_path)))
        assert alone.success
    add_user(app_db, "ops", "admin", PASSWORD)
    with serve_app(app_db) as url:
        yield url, unlisted


def logged_in(browser, url: str, width: int = 1280) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{url}/kpis")
    page.get_by_label("User name").fill("ops")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{url}/kpis")
    return page


def test_the_ops_lead_sees_each_kpi_as_a_chart_and_a_table_with_its_change_since_the_first_week(browser, planted):
    url, _ = planted
    page = logged_in(browser, url)

    expect(page.get_by_role("heading", name=re.compile("^KPIs"))).to_be_visible()
    for title in ("Delivery-delay inquiries", "Cancellation inquiries", "Return inquiries"):
        section = page.get_by_role("region", name=re.compile(f"^{title}"))
        # a percentage, or both figures when the first week's was 0
        change = re.compile(r"[+−]\d+ % since week \d{4}-W\d{2}|, from 0\.0 in week \d{4}-W\d{2}")
        expect(section.locator(".kpi-change")).to_contain_text(change)
        points = section.locator("svg title").all_text_contents()
        assert any(re.fullmatch(rf"\d{{4}}-W\d{{2}}, {title}: [\d.,]+ per 1,000 orders", t) for t in points), points
        table = section.get_by_role("table", name=f"{title} and what should move it, per week")
        weeks = table.locator("tbody tr")
        assert weeks.count() >= 8  # about 12 complete weeks in 90 days of history
        expect(weeks.first.locator("th[scope=row]")).to_have_text(re.compile(r"^\d{4}-W\d{2}$"))
    inspected = page.get_by_role("region", name=re.compile("^Return inquiries")).locator("svg title")
    assert any("Inspections logged" in t for t in inspected.all_text_contents())
    screenshot(page, "kpis")


def test_the_operator_sees_every_planted_problem_with_its_age_and_run(browser, planted):
    url, unlisted = planted
    page = logged_in(browser, url)
    page.get_by_role("link", name="Work list").click()

    expect(page.get_by_role("heading", name=re.compile("^Work list"))).to_be_visible()
    rows = page.locator("table.worklist tbody tr")
    for kind in worklist.KINDS:
        expect(page.locator(f"tr.problem-{kind}").first).to_be_visible()
    expect(page.locator("tr.problem-not_listed th[scope=row]")).to_have_text(unlisted)
    expect(page.locator("tr.problem-quarantine th[scope=row]").first).to_contain_text("on_hand: ")
    expect(page.locator("tr.problem-customer_view td.detail").first).to_contain_text("refused: storefront busy")
    expect(page.locator("tr.problem-notice_failed td.detail").first).to_contain_text("503")
    for row in rows.all()[:20]:
        expect(row.locator("td.age")).to_have_text(re.compile(r"^\d+ (min|h|days)$"))
        assert RUNS.match(row.locator("td.run a").get_attribute("href"))
    since = rows.locator("td.since").all_inner_texts()
    assert since == sorted(since, reverse=True)  # newest problems first
    screenshot(page, "worklist")

    page.get_by_role("link", name=re.compile(r"^Delay notice not sent \(\d+\)")).click()
    assert {c.split(" ")[-1] for c in rows.evaluate_all("rows => rows.map(r => r.className)")} == {
        "problem-notice_failed"
    }


def test_both_pages_fit_a_phone(browser, planted):
    url, _ = planted
    page = logged_in(browser, url, width=390)
    for path in ("/kpis", "/worklist"):
        page.goto(f"{url}{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, f"{path} scrolls sideways"
        expect(page.get_by_role("button", name="Log out")).to_be_in_viewport()
