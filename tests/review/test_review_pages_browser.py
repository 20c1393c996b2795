"""The merchandisers' pages in a real headless Chromium (#20): recording in place with the focus on the next
row, search, sorting and pagers, bulk decisions with their preview and undo, and the queue at phone width."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from cx_pipeline.core import appstore
from cx_pipeline.review import decisions
from tests.helpers import screenshot, serve_app
from tests.review.test_review_app import make_app_db
from tests.review.test_review_browser import log_in, served  # noqa: F401


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """The app on a published queue of 2,500 products, with the merchandiser maria."""
    with serve_app(make_app_db(tmp_path / "app.sqlite")) as app_url:
        yield app_url


@pytest.fixture
def page(browser, url) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log_in(page, url)
    expect(page.get_by_role("heading", name=re.compile("Review queue"))).to_be_visible()
    yield page
    context.close()


def row_skus(page: Page) -> list[str]:
    return [
        i.removeprefix("row-") for i in page.locator("table.queue tbody tr").evaluate_all("rs => rs.map(r => r.id)")
    ]


def test_recording_a_row_stays_in_place_and_focuses_the_next_row(page, url):
    page.goto(f"{url}/reviews?category=home&page=2")
    skus = row_skus(page)
    decided, following = skus[9], skus[10]
    row = page.locator(f"#row-{decided}")
    row.scroll_into_view_if_needed()
    row.get_by_label(f"Decision for {decided}").select_option("keep")
    row.get_by_role("button", name="Record").click()

    expect(page).to_have_url(re.compile(rf"category=home&page=2&.*focus={following}$"))
    expect(page.get_by_label(f"Decision for {following}")).to_be_focused()
    assert page.evaluate("window.scrollY") > 0  # not back at the top
    expect(page.get_by_role("status")).to_contain_text(f"Recorded “keep” for {decided}")  # sticky: in view
    expect(page.get_by_role("status")).to_be_in_viewport()
    assert decided not in row_skus(page) and row_skus(page)[9] == following


def test_search_sorting_and_a_pager_above_and_below(page, url):
    page.get_by_label("Search").fill("SKU-0001")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("h1")).to_contain_text("100 products found")
    page.get_by_role("link", name="Supplier").click()
    skus = row_skus(page)
    suppliers = page.locator("td[data-label=Supplier]").all_inner_texts()
    assert suppliers == sorted(suppliers) and skus[:2] == ["SKU-000100", "SKU-000104"]  # ties in queue order
    expect(page.get_by_role("columnheader", name=re.compile("Supplier"))).to_have_attribute("aria-sort", "ascending")
    expect(page.get_by_label("Search")).to_have_value("SKU-0001")  # the search is kept by the sort

    for pager in ("pages, top", "pages, bottom"):
        expect(page.get_by_role("navigation", name=pager)).to_contain_text("page 1 of 2")
    page.get_by_role("navigation", name="pages, top").get_by_role("link", name="next →").click()
    expect(page).to_have_url(re.compile(r"search=SKU-0001&sort=supplier&page=2"))
    assert len(row_skus(page)) == 50 and not set(row_skus(page)) & set(skus)
    page.goto(f"{url}/reviews?search=SKU-00012&sort=supplier")  # ten rows: a picture for the docs
    expect(page.locator("h1")).to_contain_text("10 products found")
    screenshot(page, "review-queue")


def test_a_bulk_decision_is_previewed_recorded_and_undone_at_once(page, url):
    page.goto(f"{url}/reviews?category=toys")
    chosen = row_skus(page)[:3]
    for sku in chosen:
        page.get_by_label(f"Choose {sku}").check()
    page.get_by_label("Decision for the chosen products").select_option("refresh_listing")
    page.get_by_label("Note for the chosen products").fill("new photos for the winter range")
    page.get_by_role("button", name="Preview").click()

    expect(page.get_by_role("heading")).to_have_text("Record “refresh listing” for 3 products?")
    expect(page.locator("table.preview tbody tr")).to_have_count(3)
    screenshot(page, "review-bulk-preview")
    page.get_by_role("button", name="Record refresh listing for 3 products").click()

    expect(page.get_by_role("status")).to_contain_text("Recorded “refresh listing” for 3 products.")
    expect(page.get_by_label("Category")).to_have_value("toys")
    assert not set(chosen) & set(row_skus(page))
    page.get_by_role("button", name="Undo all 3").click()
    expect(page.get_by_role("status")).to_contain_text("Undid “refresh listing” for 3 products")
    assert row_skus(page)[:3] == chosen

    page.get_by_label("all 833 matching").check()  # every toy in the queue: previewed, not recorded
    page.get_by_label("Decision for the chosen products").select_option("keep")
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_role("heading")).to_have_text("Record “keep” for 833 products?")
    expect(page.locator("table.preview caption")).to_have_text("The first 20 of 833")
    page.get_by_role("link", name="Cancel").click()
    expect(page.locator("h1")).to_contain_text("833 products")


def test_the_queue_fits_a_phone_without_sideways_scrolling(browser, url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    log_in(page, url)
    expect(page.locator("table.queue")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    first = page.locator("table.queue tbody tr").first
    box = first.get_by_role("button", name="Record").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.goto(f"{url}/products/SKU-000001")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    context.close()


def test_the_product_page_charts_its_published_stock_and_storefront_history(browser, served, warehouse_path):  # noqa: F811
    with appstore.connect(warehouse_path.with_name("app.sqlite")) as store:
        cohort, days, rows = store.execute(
            "SELECT (SELECT count(*) FROM review_queue), count(DISTINCT day), count(*) FROM review_history"
        ).fetchone()
        sku = store.execute(
            """SELECT h.sku FROM review_history h JOIN review_queue q USING (sku) WHERE q.in_queue = 1
            GROUP BY h.sku, q.score, q.registered_at HAVING sum(received) > 0 AND count(shop_quantity) > 0
            ORDER BY q.score DESC, q.registered_at, h.sku LIMIT 1"""
        ).fetchone()[0]
        stock = decisions.stock_history(store, sku)
    assert days <= decisions.HISTORY_DAYS and rows < cohort * days  # only the days something happened
    assert len(stock) == decisions.HISTORY_DAYS and stock[-1]["day"] == "2026-11-16"  # the WMS clock's day
    received = sum(d["received"] for d in stock)
    assert received > 0 and stock[-1]["shop_quantity"] is not None

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log_in(page, served)
    page.get_by_label("Search").fill(sku)
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name=sku, exact=True).click()
    expect(page.get_by_role("heading", name="Stock and storefront, last 90 days")).to_be_visible()
    chart = page.locator("figure svg[role=img]")
    expect(chart).to_be_visible()
    table = page.locator("table.stock tbody tr")
    expect(table).to_have_count(90)
    shown = sum(int(t) for t in table.locator("td:nth-child(2)").all_inner_texts())
    assert shown == received  # the table holds the chart's figures
    expect(chart.locator("title", has_text="received")).to_have_count(90)
    screenshot(page, "review-product")
    context.close()
