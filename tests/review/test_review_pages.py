"""The merchandisers' pages over real HTTP (#20): search, sorting, paging both ends, undo, the discontinue
confirmation, bulk decisions with their preview, and the bugs: SKUs with "/", double submits, a banner for a
decision never made, CSV cells starting with a tab or a carriage return."""

import csv
import io
import re
from concurrent.futures import ThreadPoolExecutor
from html import unescape
from pathlib import Path

import orjson
import pytest
import requests

from cx_pipeline.core import appstore
from cx_pipeline.review import decisions
from tests.helpers import csrf_token, login
from tests.review.test_review_app import PASSWORD, make_app_db, serve_app, skus

SLASHED = "AB/12 3?x"  # a SKU with a slash, a space and a question mark


def add_product(app_db: Path, sku: str, title: str) -> None:
    """One more product at the top of the published queue (the highest score)."""
    with appstore.connect(app_db) as store:
        store.execute(
            f"INSERT INTO review_queue VALUES ({', '.join('?' * 19)})",
            [sku, title, "home", "SUP-01", "active", "2022-11-01", 4.0, 11.0,
             orjson.dumps(["registered 4.0 years ago"]).decode(), ",registered,", "never_reviewed", 1,
             None, 50, 0, 0, 0, 1.0, "2024-11-01"],
        )  # fmt: skip


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = make_app_db(tmp_path / "app.sqlite")
    add_product(path, SLASHED, "\tTabbed =1+1")
    return path


@pytest.fixture
def url(app_db: Path):
    with serve_app(app_db) as served:
        yield served


@pytest.fixture
def maria(url: str) -> requests.Session:
    return login(url, "maria", PASSWORD)


def form(session: requests.Session, url: str, path: str, sku: str | None = None) -> dict[str, str]:
    """The hidden fields of the decision form of `sku` (or of the first form) on the page at `path`."""
    html = session.get(f"{url}{path}", timeout=10).text
    forms = re.findall(r'<form class="decide".*?</form>', html, re.S)
    chosen = next(f for f in forms if sku is None or f'name="sku" value="{sku}"' in unescape(f))
    return {unescape(n): unescape(v) for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', chosen)}


def post(session: requests.Session, url: str, path: str, **data: object) -> requests.Response:
    return session.post(f"{url}{path}", data=data, allow_redirects=False, timeout=30)


def stored(app_db: Path) -> list[tuple]:
    with appstore.connect(app_db) as store:
        rows = store.execute("SELECT sku, decision, reviewer, undoes FROM review_decisions ORDER BY id").fetchall()
    return [tuple(r) for r in rows]


def test_a_sku_with_a_slash_opens_and_deciding_it_lands_on_its_page(url, maria, app_db):
    queue = maria.get(f"{url}/reviews", timeout=10).text
    assert 'href="/products/AB%2F12%203%3Fx"' in queue
    page = maria.get(f"{url}/products/AB%2F12%203%3Fx", timeout=10)
    assert page.status_code == 200 and "AB/12 3?x" in page.text

    fields = form(maria, url, "/products/AB%2F12%203%3Fx")
    done = post(maria, url, "/reviews/decide", **fields, decision="keep")
    assert done.status_code == 303
    landed = maria.get(url + done.headers["location"], timeout=10)
    assert landed.status_code == 200 and "Recorded “keep” for AB/12 3?x" in landed.text
    assert stored(app_db) == [(SLASHED, "keep", "maria", None)]


def test_the_same_form_sent_eight_times_at_once_is_stored_once_and_answered_alike(url, maria, app_db):
    fields = {**form(maria, url, "/reviews", "SKU-000003"), "decision": "keep"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(maria, url, "/reviews/decide", **fields), range(8)))
    assert {a.status_code for a in answers} == {303}
    assert len({a.headers["location"] for a in answers}) == 1
    assert stored(app_db) == [("SKU-000003", "keep", "maria", None)]
    assert post(maria, url, "/reviews/decide", **fields).headers["location"] == answers[0].headers["location"]
    assert len(stored(app_db)) == 1  # a later replay too


def test_the_banner_shows_only_a_decision_this_user_stored(url, maria, app_db):
    forged = maria.get(f"{url}/reviews?done=SKU-000001&decision=discontinue", timeout=10).text
    assert "Recorded" not in forged and 'role="status"' not in forged

    fields = form(maria, url, "/reviews", "SKU-000001")
    location = post(maria, url, "/reviews/decide", **fields, decision="keep").headers["location"]
    assert "Recorded “keep” for SKU-000001" in maria.get(url + location, timeout=10).text
    other = login(url, "quinn", PASSWORD)  # QA has no access; an admin that is not maria sees no banner
    assert other.get(url + location, timeout=10).status_code == 403
    with appstore.connect(app_db) as store:
        from cx_pipeline.web import accounts

        accounts.add_user(store, "ada", "admin", PASSWORD)
    ada = login(url, "ada", PASSWORD)
    assert "Recorded" not in ada.get(url + location, timeout=10).text


def test_csv_cells_starting_with_a_tab_or_carriage_return_are_not_formulas(url, maria):
    rows = list(csv.DictReader(io.StringIO(maria.get(f"{url}/reviews.csv?search=AB/12", timeout=10).text)))
    assert [r["title"] for r in rows] == ["'\tTabbed =1+1"]


def test_a_search_finds_a_decided_product_by_sku_or_title(url, maria, app_db):
    fields = form(maria, url, "/reviews", "SKU-000007")
    post(maria, url, "/reviews/decide", **fields, decision="keep")
    assert "SKU-000007" not in skus(maria.get(f"{url}/reviews", timeout=10).text)
    found = maria.get(f"{url}/reviews?search=sku-000007", timeout=10).text
    assert skus(found) == ["SKU-000007"] and "decided keep, for the next run" in found
    by_title = maria.get(f"{url}/reviews?search=Product 1234", timeout=10).text
    assert skus(by_title) == ["SKU-001234"]
    assert skus(maria.get(f"{url}/reviews?search=%25", timeout=10).text) == []  # % is a character, not a wildcard


def test_sorting_is_by_column_stable_and_keeps_filters_across_pages(url, maria):
    page = maria.get(f"{url}/reviews?category=home&sort=sku&dir=desc", timeout=10).text
    home = sorted((f"SKU-{i:06d}" for i in range(1, 2501) if i % 3 == 1), reverse=True)
    assert skus(page) == home[:50]
    assert page.count('aria-label="pages, ') == 2  # a pager above and below the table
    assert "category=home&amp;sort=sku&amp;dir=desc&amp;page=2" in page
    second = maria.get(f"{url}/reviews?category=home&sort=sku&dir=desc&page=2", timeout=10).text
    assert skus(second) == home[50:100]
    by_supplier = skus(maria.get(f"{url}/reviews?sort=supplier", timeout=10).text)
    assert by_supplier[:3] == ["SKU-000004", "SKU-000008", "SKU-000012"]  # SUP-00 first; among them, by rank
    sorted_page = maria.get(f"{url}/reviews?sort=supplier", timeout=10).text
    assert 'aria-sort="ascending"' in sorted_page
    assert '<option value="registered"' not in sorted_page  # every cohort product has it: no use as a filter
    assert '<option value="no_order"' in sorted_page


def test_an_undo_supersedes_the_decision_and_the_history_keeps_both(url, maria, app_db):
    fields = form(maria, url, "/reviews", "SKU-000001")
    location = post(maria, url, "/reviews/decide", **fields, decision="refresh_listing").headers["location"]
    banner = maria.get(url + location, timeout=10).text
    undo = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', banner.split('class="undo"')[1].split("</form>")[0]))
    back = post(maria, url, "/reviews/undo", **undo)
    assert back.status_code == 303
    assert "Undid “refresh listing” for SKU-000001" in maria.get(url + back.headers["location"], timeout=10).text
    assert "SKU-000001" in skus(maria.get(f"{url}/reviews", timeout=10).text)  # back in the queue
    assert stored(app_db) == [("SKU-000001", "refresh_listing", "maria", None), ("SKU-000001", "undo", "maria", 1)]
    history = maria.get(f"{url}/products/SKU-000001", timeout=10).text
    assert "undo of “refresh listing”" in history and "undone" in history
    assert post(maria, url, "/reviews/undo", **{**undo, "submission": "another-form-sent-later"}).status_code == 400


def test_discontinue_asks_for_confirmation_first(url, maria, app_db):
    fields = form(maria, url, "/reviews", "SKU-000002")
    asked = post(maria, url, "/reviews/decide", **fields, decision="discontinue", note="end of range")
    assert asked.status_code == 200 and "Discontinue SKU-000002?" in asked.text and stored(app_db) == []
    confirm = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', asked.text.split('class="confirm"')[1]))
    done = post(maria, url, "/reviews/decide", **{k: unescape(v) for k, v in confirm.items()})
    assert done.status_code == 303
    assert stored(app_db) == [("SKU-000002", "discontinue", "maria", None)]


def test_a_bulk_decision_is_previewed_with_its_count_recorded_once_and_undone_at_once(url, maria, app_db):
    page = maria.get(f"{url}/reviews?category=toys&reason=cancellations", timeout=10).text
    token = csrf_token(page)
    matching = decisions.QueueFilter(category="toys", reason="cancellations")
    with appstore.connect(app_db) as store:
        expected = decisions.count_matching(store, matching)
    back = "category=toys&reason=cancellations"
    preview = post(maria, url, "/reviews/bulk", csrf_token=token, scope="filter", decision="keep", note="seasonal",
                   back=back)  # fmt: skip
    assert preview.status_code == 200 and f"Record “keep” for {expected} products?" in preview.text
    assert stored(app_db) == []
    fields = re.findall(r'name="([^"]+)" value="([^"]*)"', preview.text.split('class="confirm"')[1])
    recorded = post(maria, url, "/reviews/bulk/record", **{k: unescape(v) for k, v in fields})
    assert recorded.status_code == 303
    assert len(stored(app_db)) == expected
    assert post(maria, url, "/reviews/bulk/record", **{k: unescape(v) for k, v in fields}).status_code == 303
    assert len(stored(app_db)) == expected  # the same confirmation twice: once
    banner = maria.get(url + recorded.headers["location"], timeout=10).text
    assert f"Recorded “keep” for {expected} products." in banner and f"Undo all {expected}" in banner
    assert skus(banner) == []

    undo = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', banner.split('class="undo"')[1].split("</form>")[0]))
    post(maria, url, "/reviews/undo", **undo)
    assert [d for *_, d in stored(app_db)].count(None) == expected and len(stored(app_db)) == 2 * expected
    assert len(skus(maria.get(f"{url}/reviews?{back}", timeout=10).text)) == min(expected, 50)


def test_a_bulk_decision_on_ticked_rows_and_a_changed_queue_is_refused(url, maria, app_db):
    token = csrf_token(maria.get(f"{url}/reviews", timeout=10).text)
    preview = maria.post(
        f"{url}/reviews/bulk",
        data={
            "csrf_token": token,
            "scope": "selected",
            "decision": "refresh_listing",
            "sku": ["SKU-000001", "SKU-000009"],
        },
        timeout=10,
    )
    assert "Record “refresh listing” for 2 products?" in preview.text
    fields = re.findall(r'name="([^"]+)" value="([^"]*)"', preview.text.split('class="confirm"')[1])
    assert post(maria, url, "/reviews/bulk/record", **_multi(fields)).status_code == 303
    assert sorted(s for s, *_ in stored(app_db)) == ["SKU-000001", "SKU-000009"]

    stale = post(maria, url, "/reviews/bulk/record", csrf_token=token, scope="filter", decision="keep", count=3,
                 back="category=home&reason=cancellations", submission="a-stale-bulk-form-1")  # fmt: skip
    assert stale.status_code == 400 and "the queue changed" in stale.text and len(stored(app_db)) == 2
    assert (
        post(maria, url, "/reviews/bulk/record", csrf_token="wrong", scope="filter", decision="keep").status_code == 403
    )


def _multi(pairs: list[tuple[str, str]]) -> dict[str, object]:
    """Form pairs with repeated names (the ticked SKUs) as requests wants them."""
    fields: dict[str, object] = {}
    for name, value in pairs:
        value = unescape(value)
        fields[name] = (
            [*fields[name], value]
            if isinstance(fields.get(name), list)
            else ([fields[name], value] if name in fields else value)
        )
    return fields
