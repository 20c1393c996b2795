"""QA's pages after issue #20, over real HTTP and in headless Chromium, on one pipeline run over the demo world
with its QA history (the tests inspect, amend and upload lots of their own): the lot search kept across
pages, a lot's result on record and its amendment history, grouped upload problems, the filterable risk list,
the segments charts, phone width; and the bugs: bad CSV cells never a 500, lots with `/` in their receipt id,
double submissions stored once."""

import re
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from cx_pipeline.core import appstore
from cx_pipeline.demo import seed_qa_history
from cx_pipeline.quality.checklists import load_checklists
from tests.conftest import first_run
from tests.helpers import add_user, csrf_token, login, screenshot, serve_app

PASSWORD = "a long enough password"
CHECKLISTS = load_checklists()
SEVERITIES = ("critical", "major", "minor")


@pytest.fixture(scope="module")
def app_db(tmp_path_factory) -> Path:
    """One run of the whole graph over the demo world and its QA history; a lot with '/' in its receipt id."""
    run = first_run(
        tmp_path_factory.mktemp("qa_pages"), lambda world, path: seed_qa_history(world, path.with_name("app.sqlite"))
    )
    assert run.result.success
    path = run.warehouse_path.with_name("app.sqlite")
    add_user(path, "quinn", "qa", PASSWORD)
    with appstore.connect(path) as store:
        store.execute(
            """INSERT INTO inspection_lots SELECT 'PO/2026/11 #7', 1, sku, title, category, supplier_id,
               warehouse, lot_size, received_at FROM inspection_lots WHERE category = 'apparel'
               ORDER BY received_at DESC LIMIT 1"""
        )
    return path


@pytest.fixture(scope="module")
def url(app_db) -> Iterator[str]:
    with serve_app(app_db) as served:
        yield served


@pytest.fixture(scope="module")
def qa(url) -> requests.Session:
    return login(url, "quinn", PASSWORD)


def store_of(app_db: Path) -> sqlite3.Connection:
    return appstore.open_store(app_db)


def pending_lot(app_db: Path, category: str, skip: int = 0) -> tuple[str, int, str]:
    """A lot nobody inspected yet (each test takes its own through `skip`)."""
    with appstore.connect(app_db) as store:
        row = store.execute(
            """SELECT receipt_id, line_no, sku FROM inspection_lots l WHERE category = ? AND receipt_id NOT LIKE 'PO/%'
            AND NOT EXISTS (SELECT 1 FROM inspections i WHERE i.receipt_id = l.receipt_id AND i.line_no = l.line_no)
            ORDER BY received_at DESC, receipt_id, line_no LIMIT 1 OFFSET ?""",
            [category, skip],
        ).fetchone()
    return row[0], row[1], row[2]


def entries_of(app_db: Path, receipt_id: str, line_no: int) -> int:
    with appstore.connect(app_db) as store:
        return store.execute(
            "SELECT count(*) FROM inspections WHERE receipt_id = ? AND line_no = ?", [receipt_id, line_no]
        ).fetchone()[0]


def log_in(page: Page, url: str) -> None:
    page.goto(f"{url}/")
    page.get_by_label("User name").fill("quinn")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{url}/quality")


def form_fields(html: str, category: str, **counts: str) -> dict[str, str]:
    fields = {"csrf_token": csrf_token(html), "submission": re.search(r'name="submission" value="([^"]+)"', html)[1]}
    fields |= {f"d.{item}.{s}": "0" for item in CHECKLISTS.items(category) for s in SEVERITIES}
    return fields | counts


# --- browser: what QA sees ---


def test_qa_searches_lots_by_sku_lot_supplier_and_day_and_the_search_stays_across_pages(browser, url, app_db):
    with appstore.connect(app_db) as store:
        sku, supplier, day = store.execute(
            "SELECT sku, supplier_id, substr(received_at, 1, 10) FROM inspection_lots ORDER BY received_at DESC"
        ).fetchone()
        (supplier_lots,) = store.execute(
            "SELECT count(*) FROM inspection_lots WHERE supplier_id = ?", [supplier]
        ).fetchone()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, url)
    page.get_by_label("SKU").fill(sku)
    page.get_by_label("include inspected lots").check()
    page.get_by_role("button", name="Show").click()
    rows = page.locator("table.lots tbody tr")
    expect(rows.first).to_be_visible()
    assert {t.split("\n")[0] for t in rows.locator("td[data-label=Product]").all_inner_texts()} == {sku}

    page.get_by_label("SKU").fill("")
    page.get_by_label("Supplier").fill(supplier)
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#lots-heading")).to_contain_text(f"{supplier_lots:,} in all matching")
    assert set(rows.locator("td[data-label=Supplier]").all_inner_texts()) == {supplier}
    if supplier_lots > 50:  # the search is kept on the next page, and the pager is above the list too
        page.get_by_role("navigation", name="lot pages, top").get_by_role("link", name="next").click()
        expect(page.get_by_label("Supplier")).to_have_value(supplier)
        expect(page.get_by_label("include inspected lots")).to_be_checked()
        assert set(rows.locator("td[data-label=Supplier]").all_inner_texts()) == {supplier}
    expect(page.get_by_role("navigation", name="lot pages, bottom")).to_be_visible()

    page.goto(f"{url}/quality")
    page.get_by_label("Received from").fill(day)
    page.get_by_label("Received to").fill(day)
    page.get_by_label("include inspected lots").check()
    page.get_by_role("button", name="Show").click()
    received = rows.locator("td[data-label=Received]").all_inner_texts()
    assert received and {r[:10] for r in received} == {day}
    receipt = rows.first.locator("th").inner_text().split(" / ")[0]
    page.goto(f"{url}/quality")
    page.get_by_label("Lot", exact=True).fill(receipt)
    page.get_by_label("include inspected lots").check()
    page.get_by_role("button", name="Show").click()
    assert {t.split(" / ")[0] for t in rows.locator("th").all_inner_texts()} == {receipt}
    page.goto(f"{url}/quality")
    page.get_by_label("SKU").fill(sku)
    page.get_by_label("include inspected lots").check()
    page.get_by_role("button", name="Show").click()
    expect(rows.first).to_be_visible()
    screenshot(page, "qa-lot-search")


def test_a_lot_shows_its_result_on_record_and_a_second_save_is_an_amendment_that_keeps_history(browser, url, app_db):
    receipt_id, line_no, _ = pending_lot(app_db, "apparel")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, url)
    page.goto(f"{url}/quality/lots/{receipt_id}/{line_no}")
    expect(page.get_by_role("heading", name="Result on record")).to_have_count(0)
    page.get_by_label("sizing major").fill("1")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/quality/inspections/\d+\?saved=1"))
    first = int(page.url.split("/")[-1].split("?")[0])

    page.goto(f"{url}/quality/lots/{receipt_id}/{line_no}")  # re-opened: the result is there, not a blank form
    on_record = page.locator("section.on-record")
    expect(on_record.get_by_role("heading", name="Result on record")).to_be_visible()
    expect(on_record).to_contain_text("Verdict: REJECT")
    expect(on_record).to_contain_text("by quinn")
    expect(on_record.locator("table.defects tr", has_text="sizing").locator("td")).to_have_text(["0", "1", "0"])
    expect(page.get_by_role("button", name="Save", exact=True)).to_have_count(0)  # only an explicit amendment

    expect(page.get_by_label("sizing major")).to_have_value("1")  # the amendment starts from the result on record
    page.get_by_label("sizing major").fill("0")
    page.get_by_role("button", name="Save amendment").click()  # without a reason: refused, nothing stored
    expect(page.get_by_role("alert")).to_contain_text("say why you amend the result on record")
    assert entries_of(app_db, receipt_id, line_no) == 1
    page.get_by_label("Why amend").fill("<b>recounted</b>: the sizing unit was fine")
    page.get_by_role("button", name="Save amendment").click()
    expect(page.get_by_role("status")).to_have_text(f"Saved as an amendment of inspection {first}.")
    expect(page.locator(".verdict-box")).to_contain_text("ACCEPT")

    page.goto(f"{url}/quality/lots/{receipt_id}/{line_no}")
    history = page.locator("table.lot-history tbody tr")
    expect(history).to_have_count(2)
    expect(history.nth(0)).to_contain_text("on record")
    expect(history.nth(0).locator("td").last).to_have_text("<b>recounted</b>: the sizing unit was fine")
    expect(history.nth(1)).to_contain_text("superseded")
    screenshot(page, "qa-lot-on-record")
    page.goto(f"{url}/quality/inspections/{first}")
    expect(page.locator(".notice")).to_contain_text("Superseded by inspection")
    page.goto(f"{url}/quality?{'lot=' + receipt_id}/{line_no}&show=all")
    expect(page.locator("table.lots tbody tr")).to_have_count(1)
    expect(page.locator("table.lots tbody tr")).to_contain_text("accept (amended)")


def test_upload_problems_are_grouped_by_reason_with_their_rows(browser, url, app_db, tmp_path):
    receipt_id, line_no, _ = pending_lot(app_db, "toys", skip=1)
    items = CHECKLISTS.items("toys")
    good = [f"{receipt_id},{line_no},{item},0,0,0" for item in items]
    bad = [f"{receipt_id},inf,{item},0,0,0" for item in items] * 8
    upload = tmp_path / "results.csv"
    upload.write_text("receipt_id,line_no,item,critical,major,minor\n" + "\n".join([*bad[:3], *good, *bad[3:]]))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, url)
    page.goto(f"{url}/quality/upload")
    page.get_by_label("CSV file").set_input_files(str(upload))
    page.get_by_role("button", name="Upload").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(f"({len(bad)} problems)")
    end = len(bad) + len(good) + 1
    expect(alert.locator("li")).to_have_text([f"line_no is not a whole number: rows 2-4, {len(good) + 5}-{end}"])
    screenshot(page, "qa-upload-grouped")
    assert entries_of(app_db, receipt_id, line_no) == 0


def test_the_risk_list_filters_and_leads_to_a_products_lots_in_one_wording(browser, url, app_db):
    with appstore.connect(app_db) as store:
        category, supplier = store.execute("SELECT category, supplier_id FROM return_risk ORDER BY rank").fetchone()
        words = [w for (d,) in store.execute("SELECT drivers FROM return_risk") for w in __import__("json").loads(d)]
    assert words and all(re.fullmatch(r"[a-z ]+ [+-]\d+(\.\d)? %", w) for w in words)  # never "x2.7"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, url)
    page.get_by_role("link", name="Return risk").click()
    page.get_by_label("Category").select_option(category)
    page.get_by_label("Supplier").fill(supplier)
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.risk tbody tr")
    expect(rows.first).to_be_visible()
    assert set(rows.locator("td[data-label=Category]").all_inner_texts()) == {category}
    assert set(rows.locator("td[data-label=Supplier]").all_inner_texts()) == {supplier}
    sku = rows.first.locator("th a").inner_text()
    page.get_by_label("SKU").fill(sku)
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    rows.first.get_by_role("link", name=sku).click()  # the product's lots, inspected ones included
    expect(page.get_by_label("SKU")).to_have_value(sku)
    expect(page.get_by_label("include inspected lots")).to_be_checked()


def test_the_segments_page_charts_dhu_and_return_drivers_per_category_with_tables(browser, url, app_db):
    with appstore.connect(app_db) as store:
        (published,) = store.execute("SELECT count(*) FROM dhu_segments").fetchone()
    assert published > 0
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, url)
    page.goto(f"{url}/quality/risk")
    page.get_by_role("link", name="segments", exact=True).click()
    apparel = page.locator("section.segment-category", has=page.get_by_role("heading", name="apparel", exact=True))
    charts = apparel.locator("svg[role=img]")
    expect(charts).to_have_count(2)
    dhu_rows = apparel.locator("table.dhu tbody tr")
    expect(dhu_rows).to_have_count(len(CHECKLISTS.items("apparel")))
    expect(apparel.locator("table.drivers tbody tr")).to_have_count(len(CHECKLISTS.items("apparel")))
    first_value = dhu_rows.first.locator("td").first.inner_text()
    assert charts.first.locator("title", has_text=first_value).count() >= 1  # the chart holds the table's values
    assert all(re.fullmatch(r"[+-]\d+(\.\d)? %", t) for t in apparel.locator("table.drivers td").all_inner_texts())
    screenshot(page, "qa-segments")


def test_the_lot_list_fits_a_phone_and_its_tables_have_captions_and_scopes(browser, url):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    log_in(page, url)
    lots = page.locator("table.lots")
    expect(lots.locator("caption")).to_contain_text("Received lots")
    assert lots.locator("thead th[scope=col]").count() == 7
    box = lots.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert lots.evaluate("t => t.scrollWidth <= t.clientWidth")
    first = lots.locator("tbody tr").first
    link = first.get_by_role("link", name="inspect").bounding_box()
    assert link["x"] >= 0 and link["x"] + link["width"] <= 390
    form = page.locator("form.lot-search").bounding_box()
    assert form["x"] + form["width"] <= 390


# --- HTTP: the bugs ---


@pytest.mark.parametrize("cell", ["inf", "-inf", "nan", "1e400", "1.5", "", "123456789012345678901234567890", "x"])
@pytest.mark.parametrize("column", ["line_no", "critical", "major", "minor"])
def test_a_bad_number_in_an_upload_is_a_row_problem_never_a_500(url, qa, app_db, column, cell):
    receipt_id, line_no, _ = pending_lot(app_db, "home")
    values = {"receipt_id": receipt_id, "line_no": str(line_no), "critical": "0", "major": "0", "minor": "0"}
    columns = ("receipt_id", "line_no", "item", "critical", "major", "minor")
    rows = [values | {"item": item} for item in CHECKLISTS.items("home")]
    rows[1][column] = cell  # row 3
    lines = [",".join(row[c] for c in columns) for row in rows]
    text = "receipt_id,line_no,item,critical,major,minor\n" + "\n".join(lines) + "\n"
    if cell == "" and column != "line_no":
        text = text.replace(receipt_id, "NO-SUCH-LOT")  # an empty count is 0: make the file fail otherwise
    form = qa.get(f"{url}/quality/upload", timeout=10).text
    answer = qa.post(
        f"{url}/quality/upload",
        data={"csrf_token": csrf_token(form), "submission": re.search(r'name="submission" value="([^"]+)"', form)[1]},
        files={"file": ("bad.csv", text, "text/csv")},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text[:300]
    if not (cell == "" and column != "line_no"):
        reason = "line_no is not a whole number" if column == "line_no" else f"{column} is not a whole number &gt;= 0"
        assert f"{reason}: row 3" in answer.text


def test_a_lot_whose_receipt_id_holds_a_slash_opens_and_saves(url, qa, app_db):
    path = f"{url}/quality/lots/{requests.utils.quote('PO/2026/11 #7', safe='/')}/1"
    page = qa.get(path, timeout=10)
    assert page.status_code == 200 and "Inspect lot PO/2026/11 #7 / 1" in page.text
    listed = qa.get(f"{url}/quality", params={"lot": "PO/2026/11 #7/1"}, timeout=10).text
    assert 'href="/quality/lots/PO/2026/11%20%237/1"' in listed  # the link the list gives leads there
    saved = qa.post(path, data=form_fields(page.text, "apparel", action="save"), allow_redirects=False, timeout=10)
    assert saved.status_code == 303
    assert qa.get(f"{url}{saved.headers['location']}", timeout=10).status_code == 200
    assert entries_of(app_db, "PO/2026/11 #7", 1) == 1


def test_a_result_sent_for_a_lot_that_left_the_list_is_refused_clearly_and_stores_nothing(url, qa, app_db):
    receipt_id, line_no, _ = pending_lot(app_db, "home")
    path = f"{url}/quality/lots/{receipt_id}/{line_no}"
    fields = form_fields(qa.get(path, timeout=10).text, "home", action="save")
    with appstore.connect(app_db) as store:  # as a publication withdraws a lot that left the window meanwhile
        store.execute("DELETE FROM inspection_lots WHERE receipt_id = ? AND line_no = ?", [receipt_id, line_no])
    answer = qa.post(path, data=fields, allow_redirects=False, timeout=10)
    assert answer.status_code == 404
    assert f"Lot {receipt_id}/{line_no} is not a lot QA can inspect: lots are offered while received" in answer.text
    assert entries_of(app_db, receipt_id, line_no) == 0


def test_five_parallel_saves_of_one_form_store_one_inspection_and_answer_alike(url, qa, app_db):
    receipt_id, line_no, _ = pending_lot(app_db, "electronics", skip=2)
    path = f"{url}/quality/lots/{receipt_id}/{line_no}"
    fields = form_fields(qa.get(path, timeout=10).text, "electronics", action="save")
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: qa.post(path, data=fields, allow_redirects=False, timeout=30), range(5)))
    assert {a.status_code for a in answers} == {303}
    assert len({a.headers["location"] for a in answers}) == 1
    assert entries_of(app_db, receipt_id, line_no) == 1
    # a second form for the lot (another tab) must amend: a plain save is refused
    other = qa.post(path, data=form_fields(qa.get(path, timeout=10).text, "electronics", action="save"), timeout=10)
    assert other.status_code == 400 and "already has a result on record" in other.text
    assert entries_of(app_db, receipt_id, line_no) == 1


def test_an_upload_sent_twice_imports_once_and_a_form_without_its_token_stores_nothing(url, qa, app_db):
    receipt_id, line_no, _ = pending_lot(app_db, "beauty")
    text = "receipt_id,line_no,item,critical,major,minor\n" + "\n".join(
        f"{receipt_id},{line_no},{item},0,0,0" for item in CHECKLISTS.items("beauty")
    )
    form = qa.get(f"{url}/quality/upload", timeout=10).text
    data = {"csrf_token": csrf_token(form), "submission": re.search(r'name="submission" value="([^"]+)"', form)[1]}
    for _ in range(2):
        answer = qa.post(f"{url}/quality/upload", data=data, files={"file": ("r.csv", text, "text/csv")}, timeout=30)
        assert answer.status_code == 200, answer.text[-1500:]
        assert "1 lots imported from r.csv" in answer.text
    assert entries_of(app_db, receipt_id, line_no) == 1

    receipt_id, line_no, _ = pending_lot(app_db, "beauty")
    path = f"{url}/quality/lots/{receipt_id}/{line_no}"
    fields = form_fields(qa.get(path, timeout=10).text, "beauty", action="save")
    del fields["submission"]
    answer = qa.post(path, data=fields, timeout=10)
    assert answer.status_code == 400 and "this form is out of date" in answer.text
    assert entries_of(app_db, receipt_id, line_no) == 0
    assert requests.post(path, data=fields, allow_redirects=False, timeout=10).status_code == 303  # to log in


def test_a_19_mib_upload_of_bad_rows_is_answered_with_a_short_counted_list(url, qa):
    line = "RCV-000001,inf,stitching,0,0,0\n"
    rows = 19 * 2**20 // len(line)
    text = "receipt_id,line_no,item,critical,major,minor\n" + line * rows
    form = qa.get(f"{url}/quality/upload", timeout=10).text
    data = {"csrf_token": csrf_token(form), "submission": re.search(r'name="submission" value="([^"]+)"', form)[1]}
    answer = qa.post(f"{url}/quality/upload", data=data, files={"file": ("big.csv", text, "text/csv")}, timeout=120)
    assert answer.status_code == 400
    assert f"({rows:,} problems)" in answer.text
    assert "line_no is not a whole number: rows 2-" in answer.text
    assert f"and {rows - 10_000:,} more problems not shown" in answer.text
    assert len(answer.content) < 50_000  # a short page, not a line per row
    assert qa.get(f"{url}/quality", timeout=10).status_code == 200  # and the app answers others as before
