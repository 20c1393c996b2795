"""Every route of the web app against every role, over real HTTP on an empty store: a role the page is not for
gets 403 (GET and POST alike), every form needs its CSRF token, and no odd path answers 500."""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cx_pipeline.web.app import create_app
from tests.helpers import add_user, csrf_token, login, serve_app

PASSWORD = "a long enough password"
ANY = ("merchandiser", "qa", "admin")
REVIEWERS, INSPECTORS, ADMINS = ("merchandiser", "admin"), ("qa", "admin"), ("admin",)
# Each route of the app: an example path and who may use it. A route missing here fails the first test.
ROUTES = {
    "/reviews": ("/reviews", REVIEWERS),
    "/reviews.csv": ("/reviews.csv", REVIEWERS),
    "/reviews/decide": ("/reviews/decide", REVIEWERS),
    "/reviews/undo": ("/reviews/undo", REVIEWERS),
    "/reviews/bulk": ("/reviews/bulk", REVIEWERS),
    "/reviews/bulk/record": ("/reviews/bulk/record", REVIEWERS),
    "/products/{sku:path}": ("/products/SKU-1", REVIEWERS),
    "/quality": ("/quality", INSPECTORS),
    "/quality/lots/{receipt_id:path}/{line_no:id}": ("/quality/lots/RCV-1/1", INSPECTORS),
    "/quality/inspections/{inspection_id:id}": ("/quality/inspections/1", INSPECTORS),
    "/quality/upload": ("/quality/upload", INSPECTORS),
    "/quality/risk": ("/quality/risk", INSPECTORS),
    "/quality/segments": ("/quality/segments", INSPECTORS),
    "/kpis": ("/kpis", ANY),
    "/worklist": ("/worklist", ADMINS),
}
OPEN = {"/login", "/logout", "/", "/static"}  # the login itself, and pages every session has


def pages() -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, example path, roles) for every page route of the app."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(Path(folder) / "app.sqlite")
    while not hasattr(app, "routes"):  # unwrap the middleware around the Starlette app
        app = app.app
    found = []
    for route in app.routes:
        if route.path in OPEN:
            continue
        path, roles = ROUTES[route.path]
        found += [(method, path, roles) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, requests.Session]]]:
    app_db: Path = tmp_path_factory.mktemp("routes") / "app.sqlite"
    for role in ANY:
        add_user(app_db, role.replace("merchandiser", "maria"), role, PASSWORD)
    with serve_app(app_db) as url:
        yield url, {role: login(url, role.replace("merchandiser", "maria"), PASSWORD) for role in ANY}


def send(session: requests.Session, url: str, method: str, path: str, with_token: bool = True) -> requests.Response:
    if method == "GET":
        return session.get(url + path, allow_redirects=False, timeout=10)
    token = csrf_token(session.get(f"{url}/kpis", timeout=10).text) if with_token else ""
    return session.post(url + path, data={"csrf_token": token}, allow_redirects=False, timeout=10)


def test_every_route_is_listed_with_its_roles():
    assert {path for _, path, _ in pages()} == {path for path, _ in ROUTES.values()}


@pytest.mark.parametrize(("method", "path", "roles"), pages())
def test_a_role_the_page_is_not_for_gets_403_and_the_others_no_error(sessions, method, path, roles):
    url, by_role = sessions
    for role, session in by_role.items():
        answer = send(session, url, method, path)
        if role in roles:
            assert answer.status_code < 500 and answer.status_code != 403, (role, answer.status_code, answer.text[:300])
        else:
            assert answer.status_code == 403 and "does not give access" in answer.text, (role, answer.status_code)


@pytest.mark.parametrize(("method", "path", "roles"), [p for p in pages() if p[0] == "POST"])
def test_every_form_needs_its_csrf_token(sessions, method, path, roles):
    url, by_role = sessions
    answer = send(by_role[roles[0]], url, method, path, with_token=False)
    assert answer.status_code == 403 and "This form has expired" in answer.text


@pytest.mark.parametrize("path", ["/quality/lots/RCV-1/" + "9" * 5000, "/quality/inspections/" + "9" * 5000])
def test_an_id_too_long_for_a_number_is_not_found_not_an_error(sessions, path):
    url, by_role = sessions
    assert by_role["qa"].get(url + path, timeout=10).status_code == 404
