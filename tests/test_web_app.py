"""What every page of the web app shares, over real HTTP and in a real Chromium: uploads over the size limit
refused with 413 however they are sent, the per-client login throttle, an owner-only app store, and the
global layout's contrast, skip link and phone width."""

import logging
import os
import re
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from cx_pipeline.core import appstore
from cx_pipeline.web import accounts
from cx_pipeline.web.app import MAX_BODY_BYTES
from tests.helpers import WORLD_NOW, add_user, listening, login, screenshot, serve_app

PASSWORD = "a long enough password"
BOUNDARY = "cx-test-boundary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
CSV_HEADER = b"receipt_id,line_no,item,critical,major,minor\n"


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    """An app store with one QA user and no published data: the pages every role shares need none."""
    path = tmp_path / "app.sqlite"
    add_user(path, "quinn", "qa", PASSWORD)
    return path


@pytest.fixture
def url(app_db: Path) -> Iterator[str]:
    with serve_app(app_db) as served:
        yield served


# --- request bodies over the limit ---


def csv_upload(fields: dict[str, str], csv_bytes: int, piece: int = 2**20) -> Iterator[bytes]:
    """A multipart upload of the form's `fields` and a CSV of about `csv_bytes`, made piece by piece: sent as a
    generator, requests sends it chunked, with no Content-Length."""
    for name, value in fields.items():
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="lots.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    yield CSV_HEADER
    row = b"RCPT-1,1,stitching,0,0,1\n"
    for _ in range(csv_bytes // piece):
        yield row * (piece // len(row))
    yield row + f"\r\n--{BOUNDARY}--\r\n".encode()


def upload_form(session: requests.Session, url: str) -> dict[str, str]:
    """The hidden fields of a fresh upload form (its CSRF token, and whatever else it carries)."""
    html = session.get(f"{url}/quality/upload", timeout=10).text
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


def test_a_chunked_upload_over_the_limit_is_refused_with_413_not_500(url):
    qa = login(url, "quinn", PASSWORD)
    body = csv_upload(upload_form(qa, url), MAX_BODY_BYTES + 4 * 2**20)
    response = qa.post(f"{url}/quality/upload", data=body, headers=MULTIPART, timeout=60)
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "The request is too large: the most this app takes is 25 MiB." in response.text
    assert "content-security-policy" in response.headers  # the refusal is a page of the app like any other

    # anonymous, to a form that reads its body without a session: the same
    anonymous = requests.post(
        f"{url}/login", data=csv_upload({}, MAX_BODY_BYTES + 2**20), headers=MULTIPART, timeout=60
    )
    assert anonymous.status_code == 413

    assert qa.get(f"{url}/quality/upload", timeout=10).status_code == 200  # and the app goes on serving


def test_a_declared_body_over_the_limit_is_refused_with_413(url):
    qa = login(url, "quinn", PASSWORD)
    body = b"".join(csv_upload(upload_form(qa, url), MAX_BODY_BYTES + 2**20))
    response = qa.post(f"{url}/quality/upload", data=body, headers=MULTIPART, timeout=60)
    assert int(response.request.headers["content-length"]) > MAX_BODY_BYTES
    assert response.status_code == 413 and "the most this app takes is 25 MiB" in response.text


def test_an_upload_below_the_limit_is_read_whole_sent_either_way(url):
    qa = login(url, "quinn", PASSWORD)
    files = {"file": ("lots.csv", CSV_HEADER + b"RCPT-1,1,stitching,0,0,1\n", "text/csv")}
    declared = qa.post(f"{url}/quality/upload", data=upload_form(qa, url), files=files, timeout=30)
    body = csv_upload(upload_form(qa, url), 3 * 2**20)
    chunked = qa.post(f"{url}/quality/upload", data=body, headers=MULTIPART, timeout=60)
    for response in (declared, chunked):
        # read and checked (the lot is not one the pipeline published, so the page lists that problem)
        assert response.status_code in (200, 400) and "Nothing was imported from lots.csv" in response.text


# --- the per-client login throttle ---


def attempt(session: requests.Session, url: str, username: str, password: str = "not the password", **headers):
    """One login attempt, with the CSRF token the login page gave this session."""
    if "cx_login_csrf" not in session.cookies:
        session.get(f"{url}/login", timeout=10)
    data = {"username": username, "password": password, "csrf_token": session.cookies["cx_login_csrf"], "next": "/"}
    return session.post(f"{url}/login", data=data, headers=headers, allow_redirects=False, timeout=30)


def test_one_client_trying_many_user_names_is_refused_after_the_limit(url):
    client = requests.Session()
    for i in range(accounts.MAX_CLIENT_FAILURES):
        response = attempt(client, url, f"guess{i:02d}")
        assert response.status_code == 401 and "unknown user or wrong password" in response.text
    refused = attempt(client, url, "guess99")
    assert refused.status_code == 429
    assert "too many failed logins from your network address; try again in 15 minutes" in refused.text
    assert 14 * 60 < int(refused.headers["retry-after"]) <= 15 * 60
    # a real user with the right password is refused alike: the answer says nothing about the name
    rightful = attempt(client, url, "quinn", PASSWORD)
    assert rightful.status_code == 429 and "too many failed logins" in rightful.text
    # nor does a forwarded address get round it: no proxy is trusted unless configured
    spoofed = attempt(requests.Session(), url, "quinn", PASSWORD, **{"X-Forwarded-For": "203.0.113.9"})
    assert spoofed.status_code == 429


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(app_db):
    with listening("serve", "--port", "0", "--app-db", str(app_db), "--trusted-proxies", "127.0.0.1") as url:
        guesser, colleague = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.20"}
        session = requests.Session()
        for i in range(accounts.MAX_CLIENT_FAILURES):
            assert attempt(session, url, f"guess{i:02d}", **guesser).status_code == 401
        assert attempt(session, url, "quinn", PASSWORD, **guesser).status_code == 429
        assert attempt(requests.Session(), url, "quinn", PASSWORD, **colleague).status_code == 303


def test_the_client_limit_counts_failures_in_the_window_only_and_then_lets_the_client_in(tmp_path):
    with appstore.connect(tmp_path / "app.sqlite") as store:
        accounts.add_user(store, "quinn", "qa", PASSWORD)
        guesser = "203.0.113.7"
        accounts.login(store, "quinn", PASSWORD, client=guesser, now=WORLD_NOW)  # a success does not count
        for i in range(accounts.MAX_CLIENT_FAILURES):
            name = f"guess{i:02d}" if i % 2 else "not a valid name!"  # malformed names count too
            with pytest.raises(accounts.AccountError, match="unknown user or wrong password"):
                accounts.login(store, name, "wrong", client=guesser, now=WORLD_NOW + timedelta(seconds=i))
        for name in ("quinn", "nobody-at-all"):  # the same refusal whatever the name, before any check
            with pytest.raises(accounts.ClientThrottled, match="try again in 14 minutes") as refused:
                accounts.login(store, name, PASSWORD, client=guesser, now=WORLD_NOW + timedelta(minutes=1))
            assert refused.value.retry_after == 14 * 60
        # another client is not held back by this one's guesses
        accounts.login(store, "quinn", PASSWORD, client="198.51.100.20", now=WORLD_NOW + timedelta(minutes=1))
        # once the first failures are older than the window, the client is let in again
        later = WORLD_NOW + timedelta(minutes=accounts.LOCKOUT_MINUTES, seconds=1)
        assert accounts.login(store, "quinn", PASSWORD, client=guesser, now=later)
        # the two failures of the first two seconds are gone; the success neither counts nor wipes the rest
        counted = "SELECT count(*) FROM login_client_failures WHERE client = ?"
        assert store.execute(counted, [guesser]).fetchone()[0] == accounts.MAX_CLIENT_FAILURES - 2


# --- the store file: owner-only ---


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def store_files(path: Path) -> list[Path]:
    return [path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")]


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away, so that the modes seen are the ones the code asked for."""
    before = os.umask(0)
    yield
    os.umask(before)


def test_a_new_store_and_its_wal_files_are_readable_by_their_owner_only(tmp_path, open_umask):
    path = tmp_path / "app.sqlite"
    with appstore.connect(path) as store:
        accounts.add_user(store, "quinn", "qa", PASSWORD)  # a write: the -wal and -shm files exist now
        assert [mode(file) for file in store_files(path)] == [0o600, 0o600, 0o600]


def test_an_existing_store_readable_by_others_is_made_owner_only_with_a_warning(tmp_path, open_umask, caplog):
    path = tmp_path / "app.sqlite"
    keeper = appstore.open_store(path)  # held open, so that its -wal and -shm files stay
    accounts.add_user(keeper, "quinn", "qa", PASSWORD)
    for file in store_files(path):
        file.chmod(0o644)  # as a store made before this fix, under umask 022
    with caplog.at_level(logging.WARNING, logger="cx_pipeline.core.appstore"), appstore.connect(path) as store:
        assert store.execute("SELECT username FROM users").fetchone()[0] == "quinn"
    keeper.close()
    assert mode(path) == 0o600
    warned = [r.getMessage() for r in caplog.records if "readable by other users" in r.getMessage()]
    assert len(warned) == 3 and all("(mode 644); now 600" in message for message in warned)


# --- the global layout in Chromium: contrast, skip link, phone width ---

BACKGROUND = """el => {  // the colour behind an element: its own or the nearest ancestor's that is not transparent
  for (let e = el; e; e = e.parentElement) {
    const c = getComputedStyle(e).backgroundColor;
    if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c;
  }
  return 'rgb(255, 255, 255)';
}"""


def rgb(css: str) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in re.findall(r"\d+", css)[:3])
    return red, green, blue


def contrast(one: str, other: str) -> float:
    """The WCAG 2.1 contrast ratio of two CSS colours."""

    def luminance(color: str) -> float:
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (v / 255 for v in rgb(color))]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def log_in(page: Page, url: str, path: str = "/quality/upload") -> None:
    page.goto(f"{url}{path}")
    page.get_by_label("User name").fill("quinn")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def test_links_reach_4_5_to_1_and_field_borders_3_to_1_against_their_background(browser: Browser, url):
    page = browser.new_page()
    page.goto(f"{url}/login")
    for field in (page.get_by_label("User name"), page.get_by_label("Password")):
        border = field.evaluate("el => getComputedStyle(el).borderTopColor")
        assert contrast(border, field.evaluate(BACKGROUND)) >= 3
        assert contrast(border, page.locator("body").evaluate(BACKGROUND)) >= 3  # and the page around the box

    log_in(page, url)
    links = page.locator("header nav a, main a")
    assert links.count() >= 4
    for link in links.all():
        ratio = contrast(link.evaluate("el => getComputedStyle(el).color"), link.evaluate(BACKGROUND))
        assert ratio >= 4.5, f"{link.inner_text()}: {ratio:.2f}:1"
    page.close()


def test_the_skip_link_is_the_first_stop_and_leads_to_the_content(browser: Browser, url):
    page = browser.new_page()
    log_in(page, url)
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).not_to_be_in_viewport()  # out of sight until it has the focus
    page.keyboard.press("Tab")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#content$"))  # waits: the browser applies the fragment a moment later
    assert page.locator("main").get_attribute("id") == "content"
    page.keyboard.press("Tab")  # the next stop is inside the page's content, past the header
    assert page.evaluate("document.activeElement.closest('main') !== null")
    page.close()


def scrolls_sideways(page: Page, selector: str = "html") -> bool:
    return page.locator(selector).evaluate("el => el.scrollWidth > el.clientWidth")


def test_at_phone_width_nothing_scrolls_sideways_and_log_out_is_on_screen(browser: Browser, url):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{url}/login")
    assert not scrolls_sideways(page)
    screenshot(page, "login-phone")

    log_in(page, url)
    for path in ("/quality/upload", "/reviews"):  # a QA page, and the error page of one QA may not open
        page.goto(f"{url}{path}")
        expect(page.get_by_role("button", name="Log out")).to_be_in_viewport(ratio=1)
        assert not scrolls_sideways(page, "header")
    expect(page.get_by_role("alert")).to_contain_text("Your role does not give access")
    assert not scrolls_sideways(page)  # the whole error page

    page.goto(f"{url}/quality/upload")
    screenshot(page, "header-phone")
    context.close()
