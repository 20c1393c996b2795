"""Injected upstream faults: each is recovered, or reported clearly, over real HTTP on 127.0.0.1."""

import time

import pytest

from cx_pipeline.ingest.http import ApiClient, UpstreamError
from tests.helpers import TOKEN, check_results, materializations

PATH = "/catalog/products"


def client(sim, **settings) -> ApiClient:
    return ApiClient(sim.url, TOKEN, backoff_factor=0.05, **settings)


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("error", {"status": 500}),
        ("error", {"status": 503}),
        ("throttle", {"retry_after": 1}),
        ("drop", {}),
        ("truncate", {}),
        ("malformed", {}),
    ],
)
def test_transient_fault_is_recovered(sim, kind, params):
    expected = client(sim).get_json(PATH, {"limit": 50})
    sim.faults.add(PATH, kind, times=2, **params)

    assert client(sim).get_json(PATH, {"limit": 50}) == expected


def test_throttling_waits_as_long_as_retry_after_says(sim):
    sim.faults.add(PATH, "throttle", times=1, retry_after=2)
    started = time.monotonic()

    client(sim).get_json(PATH, {"limit": 10})

    assert time.monotonic() - started >= 1.9


def test_a_slow_answer_past_the_read_timeout_is_retried(sim):
    sim.faults.add(PATH, "latency", times=1, seconds=1.5)

    page = client(sim, read_timeout=0.5).get_json(PATH, {"limit": 10})

    assert len(page["data"]) == 10


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("error", {"status": 503}, "answered 503"),
        ("malformed", {}, "not valid JSON"),
        ("truncate", {}, "cut off"),
        ("drop", {}, "failed"),
    ],
)
def test_a_fault_that_persists_is_reported_clearly(sim, kind, params, message):
    sim.faults.add(PATH, kind, times=None, **params)

    with pytest.raises(UpstreamError, match=message) as error:
        client(sim, retries=2, page_attempts=2).get_json(PATH, {"limit": 10})

    assert PATH in str(error.value)


def test_a_wrong_token_is_reported_without_quoting_it(sim):
    with pytest.raises(UpstreamError, match=r"401.*token was rejected") as error:
        ApiClient(sim.url, "s3cret-wrong-token").get_json(PATH)

    assert "s3cret-wrong-token" not in str(error.value)


def test_misconfiguration_fails_before_any_request():
    with pytest.raises(ValueError, match="http"):
        ApiClient("127.0.0.1:8765", TOKEN)
    with pytest.raises(ValueError, match="token"):
        ApiClient("http://127.0.0.1:8765", "")


def test_an_unreachable_upstream_is_reported():
    with pytest.raises(UpstreamError, match="failed"):
        ApiClient("http://127.0.0.1:9", TOKEN, retries=1, backoff_factor=0.01).get_json(PATH)


def test_faults_during_a_run_are_recovered(sim, run_pipeline):
    sim.faults.add("/wms/receipts", "error", times=2, status=503)
    sim.faults.add("/catalog/products", "drop", times=1)
    sim.faults.add("/oms/orders", "truncate", times=1)
    sim.faults.add("/helpdesk/inquiries", "throttle", times=1, retry_after=1)
    sim.faults.add("/wms/on_hand", "malformed", times=1)

    result = run_pipeline(page_size=200)

    assert result.success
    assert all(c.passed for c in check_results(result).values())


def test_duplicated_rows_are_landed_once_and_counted(sim, run_pipeline, warehouse_path):
    sim.faults.add("/wms/receipts", "duplicate", times=1, rows=5)

    result = run_pipeline()

    assert result.success
    receipts = materializations(result)["raw_receipts"]
    assert receipts["rows_duplicate"] == 5
    assert receipts["rows_new"] == receipts["rows_fetched"] - 5
    assert check_results(result)["raw_receipts"].passed


def test_a_feed_that_stays_down_fails_its_asset_with_the_reason(sim, run_pipeline):
    sim.faults.add("/wms/receipts", "error", times=None, status=503)

    result = run_pipeline(retries=1)

    assert not result.success
    failures = [e.step_failure_data.error for e in result.get_step_failure_events()]
    assert any("503" in str(error) for error in failures)
    assert "raw_receipts" not in materializations(result)
    assert "raw_catalog" in materializations(result)  # the other feeds still land
