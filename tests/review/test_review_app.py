"""The review web app over real HTTP (`cx-pipeline serve` in its own process): login, roles, sessions, CSRF,
escaping, paging, filters and the CSV export; and user management from the CLI."""

import csv
import http.client
import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from cx_pipeline.core import appstore
from cx_pipeline.web import accounts
from cx_pipeline.web.core import new_submission
from tests.helpers import add_user, cli, csrf_token, login, serve_app

PASSWORD = "a long enough password"
CATEGORIES = ("apparel", "home", "toys")
FORMULA = '=HYPERLINK("http://x")'  # a title a spreadsheet would run


def fill_queue(app_db: Path, n: int) -> None:
    """A published queue of `n` products, as the pipeline would leave it: every third product is home, every
    fifth has cancellation inquiries."""
    rows = []
    for i in range(1, n + 1):
        codes = ["registered", "no_order"] + (["cancellations"] if i % 5 == 0 else [])
        reasons = ["registered 4.0 years ago", "no order for 50 days"] + (
            ["2 cancellation inquiries in 30 days"] if i % 5 == 0 else []
        )
        title = FORMULA if i == 2 else f"Product {i}"
        rows.append(
            (f"SKU-{i:06d}", title, CATEGORIES[i % 3], f"SUP-{i % 4:02d}", "active", "2022-11-01", 4.0,
             10.0 - i / n, orjson.dumps(reasons).decode(), f",{','.join(codes)},", "never_reviewed", 1,
             5, 50, 0, 2 if i % 5 == 0 else 0, 0, 1.0, "2024-11-01")
        )  # fmt: skip
    with appstore.connect(app_db) as store, appstore.transaction(store):
        store.executemany(f"INSERT INTO review_queue VALUES ({', '.join('?' * 19)})", rows)
        appstore.note_publication(store, "review_queue", "run-1", appstore.utc_now(), n)


def make_app_db(path: Path) -> Path:
    fill_queue(path, 2_500)
    add_user(path, "maria", "merchandiser", PASSWORD)
    add_user(path, "quinn", "qa", PASSWORD)
    return path


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    """An app store of the test's own: for a test that records a decision, fails a login or changes a user."""
    return make_app_db(tmp_path / "app.sqlite")


@pytest.fixture
def url(app_db: Path) -> Iterator[str]:
    with serve_app(app_db) as served:
        yield served


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One app store and one server for the module's tests that only read (logging in is reading here)."""
    path = make_app_db(tmp_path_factory.mktemp("shared_app") / "app.sqlite")
    with serve_app(path) as served:
        yield path, served


def written(app_db: Path) -> tuple:
    """What a test could leave behind in the app store: decisions, failed logins, the users as they are."""
    with appstore.connect(app_db) as store:
        return (
            store.execute("SELECT count(*) FROM review_decisions").fetchone()[0],
            store.execute("SELECT count(*) FROM login_failures").fetchone()[0],
            [tuple(row) for row in store.execute("SELECT * FROM users ORDER BY username")],
        )


@pytest.fixture
def readonly_app_db(shared_app: tuple[Path, str]) -> Iterator[Path]:
    """The shared app store, checked after the test to be as it found it but for its sessions."""
    path, _ = shared_app
    before = written(path)
    yield path
    assert written(path) == before, "a test on the shared app wrote to it: use `url` and `app_db`"


@pytest.fixture
def readonly_url(shared_app: tuple[Path, str], readonly_app_db: Path) -> str:
    """The shared server, for a test that records nothing, fails no login and changes no user."""
    return shared_app[1]


def skus(html: str) -> list[str]:
    return [line.split('id="row-')[1].split('"')[0] for line in html.splitlines() if 'id="row-' in line]


def decide(session: requests.Session, url: str, sku: str, decision: str = "keep", note: str = "", **extra):
    token = csrf_token(session.get(f"{url}/reviews", timeout=10).text)
    data = {"csrf_token": token, "sku": sku, "decision": decision, "note": note, "from": "queue",
            "submission": new_submission(), **extra}  # fmt: skip
    return session.post(f"{url}/reviews/decide", data=data, allow_redirects=False, timeout=10)


def test_no_page_without_login(readonly_url):
    anonymous = requests.Session()
    for path in ("/", "/reviews", "/reviews?category=home", "/reviews.csv", "/products/SKU-000001"):
        response = anonymous.get(f"{readonly_url}{path}", allow_redirects=False, timeout=10)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next="), path
    for path in ("/reviews/decide", "/logout"):
        response = anonymous.post(
            f"{readonly_url}{path}", data={"sku": "SKU-000001"}, allow_redirects=False, timeout=10
        )
        assert response.status_code == 303 and response.headers["location"].startswith("/login"), path
    assert anonymous.get(f"{readonly_url}/static/app.css", timeout=10).status_code == 200  # the stylesheet is public


def test_login_opens_a_session_and_logout_ends_it(url):
    session = requests.Session()
    page = session.get(f"{url}/reviews", timeout=10)  # redirected to the login page
    assert page.url.startswith(f"{url}/login")
    response = session.post(
        f"{url}/login",
        data={"username": "maria", "password": PASSWORD, "csrf_token": csrf_token(page.text), "next": "/reviews"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 303 and response.headers["location"] == "/reviews"
    cookie = response.headers["set-cookie"]
    assert "cx_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Review queue" in session.get(f"{url}/reviews", timeout=10).text

    token = csrf_token(session.get(f"{url}/reviews", timeout=10).text)
    session.post(f"{url}/logout", data={"csrf_token": token}, timeout=10)
    stolen = requests.Session()
    stolen.cookies.set("cx_session", cookie.split("cx_session=")[1].split(";")[0])
    assert stolen.get(f"{url}/reviews", allow_redirects=False, timeout=10).status_code == 303  # the session is gone


def test_a_wrong_password_is_refused_and_repeated_failures_lock_the_user_out(url):
    session = requests.Session()

    def attempt(password: str) -> requests.Response:
        token = csrf_token(session.get(f"{url}/login", timeout=10).text)
        data = {"username": "maria", "password": password, "csrf_token": token, "next": "/"}
        return session.post(f"{url}/login", data=data, allow_redirects=False, timeout=10)

    wrong = attempt("not the password")
    assert wrong.status_code == 401 and "unknown user or wrong password" in wrong.text
    unknown = session.post(
        f"{url}/login",
        data={"username": "nobody", "password": "x", "csrf_token": csrf_token(wrong.text), "next": "/"},
        timeout=10,
    )
    assert "unknown user or wrong password" in unknown.text  # no hint whether the user exists
    for _ in range(4):
        attempt("still wrong")
    locked = attempt(PASSWORD)
    assert locked.status_code == 401 and "too many failed attempts" in locked.text


def test_a_login_or_a_decision_without_its_csrf_token_is_refused(readonly_url, readonly_app_db):
    forged = requests.post(
        f"{readonly_url}/login", data={"username": "maria", "password": PASSWORD, "csrf_token": "guess"}, timeout=10
    )
    assert forged.status_code == 403 and "cx_session" not in forged.headers.get("set-cookie", "")

    session = login(readonly_url, "maria", PASSWORD)
    response = session.post(
        f"{readonly_url}/reviews/decide",
        data={"csrf_token": "guess", "sku": "SKU-000001", "decision": "keep"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 403
    with appstore.connect(readonly_app_db) as store:
        assert store.execute("SELECT count(*) FROM review_decisions").fetchone()[0] == 0


def test_each_role_sees_only_its_pages(readonly_url):
    qa = login(readonly_url, "quinn", PASSWORD)
    assert qa.get(f"{readonly_url}/reviews", timeout=10).status_code == 403
    assert qa.get(f"{readonly_url}/reviews.csv", timeout=10).status_code == 403
    home = qa.get(f"{readonly_url}/", timeout=10)
    assert home.status_code == 200 and "Review queue" not in home.text
    data = {"csrf_token": csrf_token(home.text), "sku": "SKU-000001", "decision": "keep"}
    assert qa.post(f"{readonly_url}/reviews/decide", data=data, allow_redirects=False, timeout=10).status_code == 403


def test_the_queue_is_paged_and_filtered(readonly_url):
    session = login(readonly_url, "maria", PASSWORD)

    first = session.get(f"{readonly_url}/reviews", timeout=10).text
    assert "2,500 products" in first and "page 1 of 50" in first
    assert skus(first)[:3] == ["SKU-000001", "SKU-000002", "SKU-000003"]
    last = session.get(f"{readonly_url}/reviews?page=50", timeout=10).text
    assert skus(last)[-1] == "SKU-002500" and "next →" not in last

    home = session.get(f"{readonly_url}/reviews?category=home&reason=cancellations", timeout=10).text
    expected = [f"SKU-{i:06d}" for i in range(1, 2501) if i % 3 == 1 and i % 5 == 0]
    assert f"{len(expected)} products" in home
    assert skus(home) == expected[:50]
    second = session.get(f"{readonly_url}/reviews?category=home&reason=cancellations&page=2", timeout=10).text
    assert skus(second) == expected[50:100]
    assert "category=home&amp;reason=cancellations&amp;page=1" in second  # paging keeps the filters

    supplier = session.get(f"{readonly_url}/reviews?supplier=SUP-02", timeout=10).text
    assert skus(supplier)[:2] == ["SKU-000002", "SKU-000006"]


def test_the_csv_export_holds_the_whole_filtered_queue(readonly_url):
    session = login(readonly_url, "maria", PASSWORD)
    response = session.get(f"{readonly_url}/reviews.csv?category=toys", timeout=10)
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len([i for i in range(1, 2501) if i % 3 == 0])
    assert rows[0]["reasons"] == "registered 4.0 years ago; no order for 50 days"
    formula = next(r for r in rows if r["sku"] == "SKU-000002")
    assert formula["title"] == "'" + FORMULA  # written so that a spreadsheet shows it, not runs it


def test_a_decision_is_recorded_leaves_the_queue_and_shows_in_the_history(url, app_db):
    session = login(url, "maria", PASSWORD)
    note = '<script>alert("x")</script> & check the photos'
    response = decide(session, url, "SKU-000001", "refresh_listing", note, back="category=home&page=1")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/reviews?category=home&page=1&done=")  # the submission's token
    assert "Recorded “refresh listing” for SKU-000001" in session.get(url + response.headers["location"]).text

    assert "SKU-000001" not in skus(session.get(f"{url}/reviews", timeout=10).text)
    product = session.get(f"{url}/products/SKU-000001", timeout=10).text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; check the photos" in product
    assert "<script>" not in product
    assert "the pipeline's next run takes the" in product
    with appstore.connect(app_db) as store:
        row = store.execute("SELECT sku, decision, note, reviewer FROM review_decisions").fetchone()
    assert tuple(row) == ("SKU-000001", "refresh_listing", note, "maria")


def test_a_decision_the_app_cannot_record_says_why(readonly_url):
    session = login(readonly_url, "maria", PASSWORD)
    unknown = decide(session, readonly_url, "SKU-999999")
    assert unknown.status_code == 400 and "not in the review cohort" in unknown.text
    no_choice = decide(session, readonly_url, "SKU-000001", decision="")
    assert no_choice.status_code == 400 and "choose a decision" in no_choice.text


def test_login_never_redirects_off_site(readonly_url):
    session = requests.Session()
    token = csrf_token(session.get(f"{readonly_url}/login", timeout=10).text)
    response = session.post(
        f"{readonly_url}/login",
        data={"username": "maria", "password": PASSWORD, "csrf_token": token, "next": "//evil.example/"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.headers["location"] == "/"


def test_an_oversized_request_is_refused_before_its_body_is_read(readonly_url):
    host, port = readonly_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/logout")
    connection.putheader("Content-Length", str(100 * 2**20))
    connection.endheaders()  # and no body at all: the answer must not wait for it
    assert connection.getresponse().status == 413


def test_a_malformed_user_name_costs_a_check_but_is_never_stored(app_db):
    with appstore.connect(app_db) as store:
        with pytest.raises(accounts.AccountError, match="unknown user or wrong password"):
            accounts.login(store, "x" * 5000, "whatever")
        assert store.execute("SELECT count(*) FROM login_failures").fetchone()[0] == 0


def test_pages_carry_security_headers(readonly_url):
    response = requests.get(f"{readonly_url}/login", timeout=10)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_users_are_managed_from_the_cli(tmp_path, url, app_db):
    db = ["--app-db", str(app_db)]
    duplicate = cli("users", "add", "maria", "--role", "admin", "--password-stdin", *db, stdin=PASSWORD)
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr
    short = cli("users", "add", "sam", "--role", "admin", "--password-stdin", *db, stdin="short")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    listed = cli("users", "list", *db).stdout
    assert "maria" in listed and "merchandiser" in listed and "quinn" in listed

    session = login(url, "maria", PASSWORD)
    assert cli("users", "disable", "maria", *db).returncode == 0
    assert session.get(f"{url}/reviews", allow_redirects=False, timeout=10).status_code == 303  # logged out
    assert cli("users", "enable", "maria", *db).returncode == 0
    assert cli("users", "passwd", "maria", "--password-stdin", *db, stdin="another long password").returncode == 0
    login(url, "maria", "another long password")
    assert cli("users", "role", "maria", "qa", *db).returncode == 0
    assert login(url, "maria", "another long password").get(f"{url}/reviews", timeout=10).status_code == 403
    with appstore.connect(app_db) as store:
        (stored,) = store.execute("SELECT password_hash FROM users WHERE username = 'maria'").fetchone()
    assert stored.startswith("$argon2id$") and "another" not in stored
