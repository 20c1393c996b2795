"""Every pull ends and secrets stay secret (issue #15), over real HTTP on 127.0.0.1.

The simulator's fault switches make the upstream loop, stall, trickle, redirect or echo credentials; a
tiny server in this module stands for another origin a redirect points to.
"""

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import requests

from cx_pipeline import warehouse
from cx_pipeline.assets.resources import CatalogResource
from cx_pipeline.definitions import ROOMS
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.http import (
    FIRST_LOAD_ROWS,
    MIN_PAGE_CAP,
    ApiClient,
    UpstreamError,
    page_cap,
    redact,
    register_secret,
)
from tests.helpers import TOKEN, materializations, resources

PATH = "/catalog/products"


def client(sim, **settings) -> ApiClient:
    return ApiClient(sim.url, TOKEN, backoff_factor=0.05, **settings)


def read_all(api: ApiClient, limit: int = 50) -> list[dict]:
    return [row for page in api.pages(PATH, {"limit": limit}) for row in page["data"]]


class Elsewhere:
    """Another origin on 127.0.0.1: answers every GET with a one-row page and records the headers it got."""

    def __init__(self) -> None:
        seen = self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                body = json.dumps({"data": [{"sku": "ELSEWHERE"}], "next_cursor": None, "as_of": None}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def elsewhere() -> Iterator[Elsewhere]:
    server = Elsewhere()
    yield server
    server.close()


# --- cursors and page caps ------------------------------------------------------------------------------


def test_a_cursor_that_repeats_is_an_error_naming_the_feed_and_the_cursor(sim):
    sim.faults.add(PATH, "cursor_loop", times=None, to="self")

    with pytest.raises(UpstreamError, match=r"next_cursor .* again after 2 pages") as error:
        read_all(client(sim))

    assert PATH in str(error.value)
    assert sim.requests[PATH] == 2  # stopped at the repeat, not after some large number of pages


def test_a_cursor_back_to_the_first_page_is_an_error(sim):
    sim.faults.add(PATH, "cursor_loop", times=None, to="start")

    with pytest.raises(UpstreamError, match="loops back to a page already read"):
        read_all(client(sim))

    assert sim.requests[PATH] == 2  # page 1, then page 1 again through the cursor back to it, which it repeats


def test_a_pull_stops_at_max_pages_and_names_the_setting(sim):
    with pytest.raises(UpstreamError, match=r"more than max_pages=3 pages in one pull.*raise the max_pages setting"):
        read_all(client(sim, max_pages=3), limit=10)

    assert sim.requests[PATH] == 3
    assert len(read_all(client(sim).with_max_pages(100), limit=10)) == 300  # the same feed within its cap


def test_the_page_cap_is_derived_from_the_feeds_largest_earlier_pull(tmp_path):
    assert page_cap(None, 1000) == max(MIN_PAGE_CAP, FIRST_LOAD_ROWS // 1000)  # a first load of 100 M rows fits
    assert page_cap(None, 5000) == max(MIN_PAGE_CAP, FIRST_LOAD_ROWS // 5000)
    assert page_cap(30_000, 1000) == 300_000  # ten times the largest pull so far

    feed = FEEDS["catalog"]
    resource = CatalogResource(base_url="http://127.0.0.1:9", token=TOKEN, page_size=1000)
    with warehouse.connect(str(tmp_path / "w.duckdb")) as con:
        assert resource.page_cap(con, feed) == page_cap(None, 1000)
        for batch_id, pages in [("b1", 12_000), ("b2", 25_000)]:
            con.execute(
                "INSERT INTO ingest_batches (batch_id, feed, fetched_at, pages, rows_fetched, rows_new, rows_updated,"
                " rows_unchanged, rows_duplicate) VALUES (?, 'catalog', TIMESTAMPTZ '2026-11-16 06:00:00Z', ?, 0, 0,"
                " 0, 0, 0)",
                [batch_id, pages],
            )
        assert resource.page_cap(con, feed) == 250_000
        assert resource.model_copy(update={"max_pages": 7}).max_pages == 7  # a setting overrides the derivation


# --- waits ----------------------------------------------------------------------------------------------


def test_a_retry_after_longer_than_the_cap_fails_at_once_saying_what_was_asked(sim):
    sim.faults.add(PATH, "throttle", times=1, retry_after=3600)
    started = time.monotonic()

    with pytest.raises(UpstreamError, match="asked to wait 3600 s, more than max_retry_after_seconds=120") as error:
        client(sim).get_json(PATH, {"limit": 10})

    assert time.monotonic() - started < 2  # no sleep at all
    assert "429" in str(error.value)
    assert sim.requests[PATH] == 1


def test_a_retry_after_within_the_cap_is_still_honoured(sim):
    sim.faults.add(PATH, "throttle", times=1, retry_after=1)

    assert len(client(sim, max_retry_after=1).get_json(PATH, {"limit": 10})["data"]) == 10


def test_a_retry_that_would_pass_the_request_deadline_fails_at_once(sim):
    sim.faults.add(PATH, "throttle", times=1, retry_after=5)
    started = time.monotonic()

    with pytest.raises(UpstreamError, match=r"retry \(in 5.0 s\) would pass request_deadline_seconds=2"):
        client(sim, request_deadline=2).get_json(PATH, {"limit": 10})

    assert time.monotonic() - started < 1.5


def test_a_trickled_body_fails_at_the_request_deadline(sim):
    sim.faults.add(PATH, "trickle", times=None, bytes=16, interval=0.1)
    started = time.monotonic()

    with pytest.raises(UpstreamError, match=r"request_deadline_seconds=1 passed with the body still arriving"):
        client(sim, request_deadline=1).get_json(PATH, {"limit": 10})

    assert time.monotonic() - started < 2.5  # a read timeout (30 s) never fires: each read gets a few bytes


def test_a_slow_feed_fails_at_the_pull_deadline(sim):
    sim.faults.add(PATH, "trickle", times=None, bytes=400, interval=0.1)  # every page, slowly but each in time
    started = time.monotonic()

    with pytest.raises(UpstreamError, match=r"pull_deadline_seconds=1.5 passed"):
        read_all(client(sim, pull_deadline=1.5), limit=5)

    assert time.monotonic() - started < 3
    assert sim.requests[PATH] >= 2  # it got pages in, then ran out of time


def test_a_slow_feed_fails_its_own_asset_and_the_others_land(sim, run_pipeline):
    sim.faults.add("/wms/receipts", "trickle", times=None, bytes=64, interval=0.2)

    result = run_pipeline(request_deadline_seconds=2)

    failures = [str(e.step_failure_data.error) for e in result.get_step_failure_events()]
    assert any("raw_receipts" in e.step_key for e in result.get_step_failure_events())
    assert any("request_deadline_seconds=2 passed" in f for f in failures)
    landed = materializations(result)
    assert "raw_receipts" not in landed
    assert {"raw_catalog", "raw_purchase_orders", "raw_on_hand", "raw_open_orders", "raw_inquiries"} <= set(landed)


# --- redirects ------------------------------------------------------------------------------------------


def test_a_same_origin_redirect_is_followed(sim):
    expected = client(sim).get_json(PATH, {"limit": 10})
    sim.faults.add(PATH, "redirect", times=1)

    assert client(sim).get_json(PATH, {"limit": 10}) == expected
    assert sim.requests[PATH] == 3


def test_a_cross_origin_redirect_is_refused_naming_both_origins(sim, elsewhere):
    sim.faults.add(PATH, "redirect", times=1, to=elsewhere.url)

    with pytest.raises(UpstreamError, match=r"redirected from .* to .*: refused") as error:
        client(sim).get_json(PATH, {"limit": 10})

    assert sim.url in str(error.value)
    assert elsewhere.url in str(error.value)
    assert "follow_cross_origin_redirects" in str(error.value)
    assert elsewhere.requests == []  # nothing was asked of the other origin, so nothing could land


def test_a_cross_origin_redirect_when_allowed_is_followed_without_credentials(sim, elsewhere, caplog):
    sim.faults.add(PATH, "redirect", times=1, to=elsewhere.url)
    api = client(sim, follow_cross_origin_redirects=True)
    api.session.headers["X-Api-Key"] = "key-for-the-simulator-only"
    api.session.cookies.set("session", "cookie-for-the-simulator")

    with caplog.at_level(logging.WARNING, logger="cx_pipeline"):
        page = api.get_json(PATH, {"limit": 10})

    assert page["data"] == [{"sku": "ELSEWHERE"}]
    (sent,) = elsewhere.requests
    assert not {"authorization", "x-api-key", "cookie"} & set(sent)
    assert any("following a redirect" in r.getMessage() and elsewhere.url in r.getMessage() for r in caplog.records)


# --- the environment ------------------------------------------------------------------------------------


@pytest.fixture
def environment(monkeypatch):
    """No proxy variables but those a test sets (the session reads them once per origin, so each test makes its
    own client)."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_requests_go_through_the_proxy_the_environment_names(sim, elsewhere, environment):
    environment.setenv("http_proxy", elsewhere.url)  # a forward proxy answering for every origin
    api = client(sim)

    pages = [api.get_json(PATH, {"limit": 10}) for _ in range(2)]

    assert [p["data"] for p in pages] == [[{"sku": "ELSEWHERE"}]] * 2  # every request, not only the first
    assert len(elsewhere.requests) == 2
    assert sim.requests[PATH] == 0


def test_an_origin_the_environment_exempts_from_the_proxy_is_asked_directly(sim, elsewhere, environment):
    environment.setenv("http_proxy", elsewhere.url)
    environment.setenv("no_proxy", "127.0.0.1")

    page = client(sim).get_json(PATH, {"limit": 10})

    assert len(page["data"]) == 10
    assert elsewhere.requests == []


def test_a_netrc_entry_never_replaces_the_configured_token(sim, tmp_path, environment):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password something-else\n")
    netrc.chmod(0o600)
    environment.setenv("NETRC", str(netrc))

    page = client(sim).get_json(PATH, {"limit": 10})  # the simulator refuses anything but the bearer token

    assert len(page["data"]) == 10


# --- secrets --------------------------------------------------------------------------------------------

CREDENTIALS = {
    "X-Shopify-Access-Token": "shpat_0123456789abcdef",
    "vendure-auth-token": "vendure-session-0123456789",
    "X-Api-Key": "api-key-0123456789",
    "Cookie": "session=cookie-value-0123456789",
}


def test_an_error_page_echoing_the_request_never_shows_a_credential(sim):
    sim.faults.add(PATH, "echo", times=None, status=500)
    api = client(sim, retries=0)
    api.session.headers.update(CREDENTIALS)

    with pytest.raises(UpstreamError, match="answered 500") as error:
        api.get_json(PATH)

    message = str(error.value)
    assert "Internal error while serving" in message  # the body is quoted...
    assert "Authorization: ***" in message  # ...with each credential blanked out
    for secret in [TOKEN, "0123456789", "shpat_"]:
        assert secret not in message


@pytest.mark.parametrize(
    "text",
    [
        'GraphQL error: {"headers": {"Authorization": "Bearer tok-0123456789"}}',
        "{'authorization': 'Basic dXNlcjpwYXNzd29yZA==', 'host': 'shop'}",
        "Set-Cookie: sid=tok-0123456789; Path=/; HttpOnly",
        "x-shopify-access-token: tok-0123456789\r\nhost: shop",
        "login failed for https://admin:tok-0123456789@shop.example.com/admin-api",
        '{"query": "mutation login", "variables": {"username": "admin", "password": "tok-0123456789"}}',
        "GET /x?access_token=tok-0123456789&limit=10",
    ],
)
def test_credentials_are_redacted_wherever_a_message_quotes_them(text):
    clean = redact(text)

    assert "tok-0123456789" not in clean
    assert "dXNlcjpwYXNzd29yZA" not in clean
    assert "***" in clean


def test_a_registered_secret_is_redacted_from_every_upstream_error_and_log_line(caplog):
    register_secret("adapter-password-0123")  # as a storefront adapter registers what it logs in with
    logger = logging.getLogger("cx_pipeline.storefront.adapters.example")
    ApiClient("http://127.0.0.1:9", TOKEN)  # a client built after the logger guards it too

    error = UpstreamError("vendure: Invalid credentials for adapter-password-0123")
    with caplog.at_level(logging.INFO, logger="cx_pipeline"):
        logger.info("logging in with %s and token %s", "adapter-password-0123", TOKEN)

    assert "adapter-password-0123" not in str(error)
    assert "adapter-password-0123" not in caplog.text
    assert TOKEN not in caplog.text
    assert "logging in with ***" in caplog.text


def test_a_secret_echoed_by_an_upstream_never_reaches_the_run(sim, warehouse_path):
    sim.faults.add(PATH, "echo", times=None, status=500)
    instance = dg.DagsterInstance.ephemeral()
    raw_catalog = next(a for a in ROOMS["ingest"].assets if a.key.path[-1] == "raw_catalog")

    result = dg.materialize(
        [raw_catalog],
        resources=resources(sim, warehouse_path, retries=0),
        instance=instance,
        raise_on_error=False,
    )

    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "answered 500" in str(failure.step_failure_data.error)
    run_log = "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))
    assert "Internal error while serving" in run_log  # the echoed page is in the log...
    assert TOKEN not in run_log  # ...without the token


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("trickle", {"bytes": 0}, "bytes >= 1"),
        ("cursor_loop", {"to": "elsewhere"}, "to='self'"),
        ("redirect", {"status": 200}, "redirect status"),
        ("redirect", {"to": "127.0.0.1:8766"}, "origin"),
    ],
)
def test_the_fault_switches_refuse_parameters_they_cannot_work_with(sim, kind, params, message):
    with pytest.raises(ValueError, match=message):
        sim.faults.add(PATH, kind, **params)
    answer = requests.post(
        f"{sim.url}/_sim/faults",
        json={"path": PATH, "kind": kind, **params},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert answer.status_code == 400
    assert sim.faults.active() == []


def test_a_client_without_a_token_sends_none_and_registers_no_placeholder_as_a_secret():
    from cx_pipeline.storefront.adapters.vendure import VendureStorefront

    vendure = VendureStorefront("http://127.0.0.1:9/admin-api", "admin", "s3cret-password")  # builds, no request
    assert "Authorization" not in vendure.client.session.headers  # the login brings the token
    assert "Authorization" not in vendure.shop_client.session.headers  # customers browse anonymously
    message = str(UpstreamError("shop API: anonymous access forbidden; login pending; s3cret-password"))
    assert message == "shop API: anonymous access forbidden; login pending; ***"
