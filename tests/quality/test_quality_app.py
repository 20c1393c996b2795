"""QA in the web app: the entry form with its sample size and verdict, the CSV upload, the risk list, in real
headless Chromium; and entries made while a pipeline run is going, never lost."""

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import requests
from playwright.sync_api import Page, expect

from cx_pipeline.core import appstore
from cx_pipeline.demo import seed_qa_history
from cx_pipeline.quality.checklists import load_checklists
from tests.helpers import add_user, csrf_token, in_thread, login, serve_app

PASSWORD = "a long enough password"


@pytest.fixture
def app_db(sim, warehouse_path: Path) -> Path:
    path = warehouse_path.with_name("app.sqlite")
    seed_qa_history(sim.world, path)
    add_user(path, "quinn", "qa", PASSWORD)
    return path


@pytest.fixture
def served(run_all, app_db) -> Iterator[str]:
    assert in_thread(run_all).success  # publishes this world's lots and risk list
    with serve_app(app_db) as url:
        yield url


def log_in(page: Page, url: str) -> None:
    page.goto(f"{url}/")
    page.get_by_label("User name").fill("quinn")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{url}/quality")


def entries(app_db: Path) -> int:
    with appstore.connect(app_db) as store:
        return store.execute("SELECT count(*) FROM inspections").fetchone()[0]


def test_qa_inspects_a_lot_sees_the_verdict_and_saves_it(browser, served, app_db):
    page = browser.new_page()
    log_in(page, served)
    page.get_by_label("Category").select_option("apparel")
    page.get_by_role("button", name="Show").click()
    lot = page.locator("table.lots tbody tr").first
    lot_id = lot.locator("th").first.inner_text()
    lot.get_by_role("link", name="inspect").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Inspect lot {lot_id}")
    sample = int(page.locator("#sample-size").inner_text().split()[0])
    assert sample >= 1
    for item in load_checklists().items("apparel"):
        expect(page.get_by_label(f"{item.replace('_', ' ')} major")).to_have_value("0")
    page.get_by_label("sizing major").fill("1")
    page.get_by_role("button", name="Check verdict").click()
    expect(page.get_by_role("status")).to_contain_text("Verdict: REJECT")  # a small lot accepts no major defect
    expect(page.get_by_label("sizing major")).to_have_value("1")  # what was typed is kept
    before = entries(app_db)

    page.get_by_label("sizing major").fill("x")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("sizing major: 'x' is not a whole number")
    assert entries(app_db) == before

    page.get_by_label("sizing major").fill("1")
    page.get_by_label("Note").fill("<i>seam</i> torn on 1 unit")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/quality/inspections/\d+\?saved=1"))
    expect(page.get_by_text("Verdict: REJECT")).to_be_visible()
    expect(page.locator("dd", has_text="seam")).to_have_text("<i>seam</i> torn on 1 unit")
    assert entries(app_db) == before + 1
    page.goto(f"{served}/quality")
    expect(page.locator("table.recent tbody tr").first).to_contain_text(lot_id)


def test_qa_uploads_a_csv_sees_every_bad_row_and_then_imports_it(browser, served, app_db, tmp_path):
    with appstore.connect(app_db) as store:
        lots = store.execute(
            """SELECT receipt_id, line_no FROM inspection_lots l WHERE category = 'toys' AND NOT EXISTS
            (SELECT 1 FROM inspections i WHERE i.receipt_id = l.receipt_id AND i.line_no = l.line_no) LIMIT 2"""
        ).fetchall()
    items = load_checklists().items("toys")
    rows = [f"{r},{n},{item},0,0,1" for r, n in lots for item in items]
    bad = tmp_path / "bad.csv"
    bad.write_text("receipt_id,line_no,item,critical,major,minor\n" + "\n".join([*rows[:-1], "RCV-0,1,safety,0,0,0"]))
    good = tmp_path / "good.csv"
    good.write_text("receipt_id,line_no,item,critical,major,minor\n" + "\n".join(rows))
    before = entries(app_db)

    page = browser.new_page()
    log_in(page, served)
    page.get_by_role("link", name="Upload CSV").click()
    page.get_by_label("CSV file").set_input_files(str(bad))
    page.get_by_role("button", name="Upload").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Nothing was imported from bad.csv (2 problems)")
    expect(alert).to_contain_text(f"lot RCV-0/1 is not a received lot QA can inspect: row {len(rows) + 1}")
    expect(alert).to_contain_text(f"lot {lots[1][0]}/{lots[1][1]} has no row for {items[-1]}: rows")
    assert entries(app_db) == before

    page.get_by_label("CSV file").set_input_files(str(good))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("status")).to_have_text("2 lots imported from good.csv.")
    assert entries(app_db) == before + 2


def test_qa_sees_the_ranked_risks_and_the_segments_that_drive_them(browser, served):
    page = browser.new_page()
    log_in(page, served)
    page.get_by_role("link", name="Return risk").click()
    rows = page.locator("table.risk tbody tr")
    expect(rows.first.locator("td").first).to_have_text("1")
    page.get_by_role("link", name="segments", exact=True).click()
    expect(page.locator("table.drivers tbody tr")).to_have_count(
        len([i for c in load_checklists().categories.values() for i in c])
    )


def test_entries_made_while_a_run_is_going_are_never_lost(run_all, app_db, warehouse_path):
    assert in_thread(run_all).success
    with appstore.connect(app_db) as store:
        lots = store.execute(
            """SELECT receipt_id, line_no, category FROM inspection_lots l WHERE NOT EXISTS (SELECT 1 FROM inspections i
            WHERE i.receipt_id = l.receipt_id AND i.line_no = l.line_no) ORDER BY received_at DESC LIMIT 60"""
        ).fetchall()
    checklists = load_checklists()
    saved: list[int] = []
    running = threading.Event()

    with serve_app(app_db) as url:
        session = login(url, "quinn", PASSWORD)

        def inspector() -> None:
            for receipt_id, line_no, category in lots:
                if not running.is_set():
                    return
                form_url = f"{url}/quality/lots/{receipt_id}/{line_no}"
                form = session.get(form_url, timeout=30).text
                submission = re.search(r'name="submission" value="([^"]+)"', form)[1]
                data = {"csrf_token": csrf_token(form), "submission": submission, "action": "save"}
                data |= {
                    f"d.{item}.{s}": "0" for item in checklists.items(category) for s in ("critical", "major", "minor")
                }
                answer = session.post(form_url, data=data, allow_redirects=False, timeout=30)
                saved.append(answer.status_code)
                time.sleep(0.05)

        running.set()
        thread = threading.Thread(target=inspector)
        thread.start()
        second = in_thread(run_all)
        running.clear()
        thread.join()

    assert second.success and saved and set(saved) == {303}
    third = in_thread(run_all)
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        (in_warehouse,) = con.execute("SELECT count(*) FROM inspections").fetchall()[0]
    assert third.success and in_warehouse == entries(app_db)  # every entry, imported once


def test_a_qa_user_cannot_reach_the_review_pages_nor_a_merchandiser_the_qa_pages(served, app_db):
    add_user(app_db, "maria", "merchandiser", PASSWORD)
    qa, merchandiser = login(served, "quinn", PASSWORD), login(served, "maria", PASSWORD)
    assert qa.get(f"{served}/reviews", timeout=10).status_code == 403
    for path in ("/quality", "/quality/upload", "/quality/risk"):
        assert merchandiser.get(f"{served}{path}", timeout=10).status_code == 403
    assert requests.get(f"{served}/quality", allow_redirects=False, timeout=10).status_code == 303
