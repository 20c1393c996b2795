"""The review app and a pipeline run live at the same time: neither fails, and no decision is lost.

The app runs in its own process (`cx-pipeline serve`), the pipeline in this one, as in production."""

import threading
import time

import duckdb
import pytest
import requests

from cx_pipeline.core import appstore
from cx_pipeline.review import decisions
from cx_pipeline.review.decisions import QueueFilter
from cx_pipeline.web.core import new_submission
from tests.helpers import add_user, csrf_token, login, serve_app

pytestmark = pytest.mark.slow  # pipeline runs racing the review app

PASSWORD = "a long enough password"


def decide(session: requests.Session, url: str, sku: str) -> requests.Response:
    token = csrf_token(session.get(f"{url}/reviews", timeout=30).text)
    data = {"csrf_token": token, "sku": sku, "decision": "keep", "note": "decided during a run"}
    data["submission"] = new_submission()  # each call a new form
    return session.post(f"{url}/reviews/decide", data=data, allow_redirects=False, timeout=30)


def queued(app_db) -> list[str]:
    with appstore.connect(app_db) as store:
        return [row["sku"] for row in decisions.queue_rows(store, QueueFilter())]


def test_decisions_made_while_a_run_is_going_are_never_lost(run_all, warehouse_path):
    app_db = warehouse_path.with_name("app.sqlite")
    assert run_all().success
    add_user(app_db, "maria", "merchandiser", PASSWORD)
    queue = queued(app_db)
    outcomes: list[tuple[str, int, float]] = []
    running = threading.Event()

    with serve_app(app_db) as url:
        session = login(url, "maria", PASSWORD)

        def reviewer() -> None:  # works down the queue through the app for as long as the run goes on
            for sku in queue:
                if not running.is_set():
                    return
                outcomes.append((sku, decide(session, url, sku).status_code, time.monotonic()))
                time.sleep(0.05)

        running.set()
        thread = threading.Thread(target=reviewer)
        started = time.monotonic()
        thread.start()
        second = run_all()  # imports decisions, assesses and republishes the queue meanwhile
        ended = time.monotonic()
        running.clear()
        thread.join()

    assert second.success
    decided = [sku for sku, status, _ in outcomes if status == 303]
    assert len(decided) == len(outcomes)  # every decision was accepted by the app
    assert sum(started < at < ended for _, _, at in outcomes) >= 10  # ... and they really overlapped the run
    with appstore.connect(app_db) as store:
        stored = [sku for (sku,) in store.execute("SELECT sku FROM review_decisions ORDER BY id").fetchall()]
    assert stored == decided
    assert not set(decided) & set(queued(app_db))  # the republished queue did not bring any of them back

    third = run_all()

    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        imported = con.execute("SELECT sku FROM valid_review_decisions ORDER BY decision_id").fetchall()
        back = con.execute(
            "SELECT count(*) FROM stale_products WHERE in_queue AND list_contains(?, sku)", [decided]
        ).fetchall()
    assert third.success and [sku for (sku,) in imported] == decided and back == [(0,)]
    assert queued(app_db) == [sku for sku in queue if sku not in decided]


def test_the_app_keeps_working_while_a_run_holds_the_warehouse(run_all, warehouse_path):
    app_db = warehouse_path.with_name("app.sqlite")
    run_all()
    add_user(app_db, "maria", "merchandiser", PASSWORD)
    sku = queued(app_db)[0]
    with serve_app(app_db) as url, duckdb.connect(str(warehouse_path)) as writer:
        writer.execute("BEGIN")  # a pipeline step in the middle of its write transaction
        writer.execute("DELETE FROM stale_products")
        session = login(url, "maria", PASSWORD)
        assert session.get(f"{url}/reviews", timeout=30).status_code == 200
        assert decide(session, url, sku).status_code == 303
        writer.execute("ROLLBACK")
    assert sku not in queued(app_db)


def test_a_decision_waits_for_a_publication_in_progress_instead_of_failing(run_all, warehouse_path):
    app_db = warehouse_path.with_name("app.sqlite")
    run_all()
    add_user(app_db, "maria", "merchandiser", PASSWORD)
    sku = queued(app_db)[0]
    with serve_app(app_db) as url, appstore.connect(app_db) as pipeline:
        session = login(url, "maria", PASSWORD)
        token = csrf_token(session.get(f"{url}/reviews", timeout=30).text)
        pipeline.execute("BEGIN IMMEDIATE")  # the pipeline replacing the queue holds the write lock
        release = threading.Timer(2.0, lambda: pipeline.execute("COMMIT"))
        release.start()
        started = time.monotonic()
        response = session.post(
            f"{url}/reviews/decide",
            data={
                "csrf_token": token,
                "sku": sku,
                "decision": "discontinue",
                "confirmed": "yes",
                "submission": new_submission(),
            },
            allow_redirects=False,
            timeout=30,
        )
        waited = time.monotonic() - started
        release.join()
    assert response.status_code == 303 and waited >= 1.5
    with appstore.connect(app_db) as store:
        assert [d["decision"] for d in decisions.history(store, sku)] == ["discontinue"]
