"""The merchandiser's review in a real headless Chromium (Debian's, driven by Playwright): log in, filter,
record a decision, see it persist, and see the product leave the queue after the next pipeline run."""

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.helpers import add_user, in_thread, serve_app

PASSWORD = "a long enough password"


@pytest.fixture
def served(run_all, warehouse_path) -> Iterator[str]:
    """The review app on the app store of a pipeline run against the demo world, with one merchandiser."""
    assert in_thread(run_all).success
    app_db = warehouse_path.with_name("app.sqlite")
    add_user(app_db, "maria", "merchandiser", PASSWORD)
    with serve_app(app_db) as url:
        yield url


def log_in(page: Page, url: str, password: str = PASSWORD) -> None:
    page.goto(f"{url}/reviews")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("User name").fill("maria")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_a_merchandiser_filters_decides_and_sees_the_product_leave_the_queue(browser, served, run_all):
    url = served
    page = browser.new_page()
    log_in(page, url)
    expect(page.get_by_role("heading", name=re.compile("Review queue"))).to_be_visible()

    page.get_by_label("Category").select_option("apparel")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.queue tbody tr")
    expect(rows.first).to_be_visible()
    assert set(rows.locator("td[data-label=Category]").all_inner_texts()) == {"apparel"}
    before = rows.count()
    sku = rows.first.get_attribute("id").removeprefix("row-")

    row = page.locator(f"#row-{sku}")
    row.get_by_label(f"Decision for {sku}").select_option("discontinue")
    row.get_by_label(f"Note for {sku}").fill("<b>replaced</b> by the 2027 range")
    row.get_by_role("button", name="Record").click()
    page.get_by_role("button", name=f"Yes, discontinue {sku}").click()  # a discontinue is confirmed first

    expect(page.get_by_role("status")).to_contain_text(f"Recorded “discontinue” for {sku}")
    expect(page.get_by_label("Category")).to_have_value("apparel")  # back on the same filtered page
    expect(page.locator(f"#row-{sku}")).to_have_count(0)
    expect(rows).to_have_count(before - 1 if before < 50 else 50)

    page.get_by_role("link", name="History").click()  # the decision persisted, with its note as typed
    history = page.locator("table.history tbody tr")
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text("discontinue")
    expect(history.first).to_contain_text("maria")
    expect(history.first.locator("td").nth(3)).to_have_text("<b>replaced</b> by the 2027 range")
    expect(page.locator("dd", has_text="the pipeline's next run takes the")).to_be_visible()

    assert in_thread(run_all).success  # the next run imports the decision

    page.goto(f"{url}/reviews?category=apparel")
    expect(page.locator(f"#row-{sku}")).to_have_count(0)
    page.goto(f"{url}/products/{sku}")
    expect(page.locator(".state")).to_have_text("not due")
    expect(page.locator("dd", has_text="next review due")).to_be_visible()


def test_a_wrong_password_is_shown_and_logging_out_closes_the_pages(browser, served):
    url = served
    page = browser.new_page()
    log_in(page, url, password="not the password")
    expect(page.get_by_role("alert")).to_have_text("unknown user or wrong password")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{url}/reviews")  # where the user was going before logging in
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(f"{url}/reviews")
    expect(page).to_have_url(re.compile(r"/login\?next="))
