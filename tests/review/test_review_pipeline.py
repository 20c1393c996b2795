"""The review loop through the pipeline: the queue published to the app store and exported, decisions
imported under their contract and honoured by the next run."""

import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cx_pipeline.core import appstore
from cx_pipeline.review import decisions
from cx_pipeline.review.decisions import QueueFilter
from tests.conftest import SharedRun, first_run
from tests.helpers import check_results, materializations


def app_db(warehouse_path: Path) -> Path:
    return warehouse_path.with_name("app.sqlite")


def decision_count(warehouse_path: Path) -> int:
    with appstore.connect(app_db(warehouse_path)) as store:
        return store.execute("SELECT count(*) FROM review_decisions").fetchone()[0]


@pytest.fixture(scope="module")
def shared_first_run(tmp_path_factory: pytest.TempPathFactory) -> SharedRun:
    """One first run on a fresh world, for the module's tests that only read what it left."""
    return first_run(tmp_path_factory.mktemp("first_run"))


@pytest.fixture
def read_first_run(shared_first_run: SharedRun) -> Iterator[SharedRun]:
    """The shared first run, checked after the test to hold no decision (a test that records one runs its own)."""
    yield shared_first_run
    assert decision_count(shared_first_run.warehouse_path) == 0, "a test on the shared first run recorded a decision"


def test_the_queue_is_published_to_the_app_and_exported_as_csv(read_first_run):
    result, warehouse_path, _ = read_first_run

    assert result.success
    meta = materializations(result)["stale_products"]
    assert 0 < meta["queue"] <= meta["flagged_long_registered"] <= meta["long_registered"] < meta["products"]
    assert "| registered" in meta["queue_by_reason"] and "| category" in meta["queue_by_category"]
    exported = pd.read_csv(meta["queue_csv"])
    assert len(exported) == meta["queue"]
    assert exported["reasons"].str.startswith("registered ").all()  # every queued product is long-registered
    with appstore.connect(app_db(warehouse_path)) as store:
        page = decisions.queue_page(store, QueueFilter())
        assert page.total == meta["queue"]
        assert [r["sku"] for r in page.rows] == exported["sku"].head(decisions.PAGE_SIZE).tolist()
        assert decisions.publication(store)["rows"] == meta["published_to_app"]


def test_a_decision_leaves_the_queue_at_once_and_the_next_run_honours_it(run_all, warehouse_path):
    run_all()
    with appstore.connect(app_db(warehouse_path)) as store:
        sku = decisions.queue_page(store, QueueFilter()).rows[0]["sku"]
        decisions.record_decision(store, sku, "keep", "seasonal: sells again in spring", "maria")
        assert sku not in {r["sku"] for r in decisions.queue_rows(store, QueueFilter())}

    result = run_all()

    assert materializations(result)["review_decisions"]["imported"] == 1
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        state = con.execute(
            "SELECT review_state, in_queue, last_decision, last_reviewer FROM stale_products WHERE sku = ?", [sku]
        ).fetchall()
    assert state == [("not_due", False, "keep", "maria")]
    with appstore.connect(app_db(warehouse_path)) as store:
        assert decisions.product(store, sku)["review_state"] == "not_due"
        assert sku not in {r["sku"] for r in decisions.queue_rows(store, QueueFilter())}
    assert materializations(run_all())["review_decisions"]["imported"] == 0  # imported once only


def test_a_decision_that_breaks_its_contract_is_quarantined_and_the_queue_is_not_republished(run_all, warehouse_path):
    run_all()
    with appstore.connect(app_db(warehouse_path)) as store:  # written around the app, which would refuse it
        published = decisions.publication(store)
        store.execute(
            """INSERT INTO review_decisions (sku, decision, note, reviewer, decided_at)
            VALUES ('SKU-999999', 'keep', '', 'maria', '2026-11-16T05:00:00+00:00'),
                   ('SKU-000001', 'keep', '', 'maria', 'yesterday'),
                   ('SKU-000002', 'keep', '', 'maria', '2099-01-01T00:00:00+00:00')"""
        )

    result = run_all()

    check = check_results(result)["review_decisions"]
    assert not check.passed
    broken = {re.match(r"(\w+)\((\w+)", k).groups() for k in check.metadata if k.startswith("expect_")}
    assert broken == {
        ("expect_column_values_to_be_in_set", "_known_sku"),  # SKU-999999
        ("expect_column_values_to_not_be_null", "decided_at"),  # "yesterday" does not parse
        ("expect_column_values_to_be_between", "decided_at"),  # 2099
    }
    assert "stale_products" not in materializations(result)
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        keys = con.execute("SELECT DISTINCT row_key FROM quarantine WHERE feed = 'review_decisions'").fetchall()
        assert sorted(keys) == [("1",), ("2",), ("3",)]
        assert con.execute("SELECT count(*) FROM valid_review_decisions").fetchall() == [(0,)]
    with appstore.connect(app_db(warehouse_path)) as store:
        assert decisions.publication(store)["run_id"] == published["run_id"]  # the app keeps the last good queue


def test_the_app_store_refuses_a_decision_it_cannot_stand_behind(read_first_run):
    warehouse_path = read_first_run.warehouse_path
    with appstore.connect(app_db(warehouse_path)) as store:
        sku = decisions.queue_page(store, QueueFilter()).rows[0]["sku"]
        with pytest.raises(decisions.DecisionError, match="choose a decision"):
            decisions.record_decision(store, sku, "archive", "", "maria")
        with pytest.raises(decisions.DecisionError, match="not in the review cohort"):
            decisions.record_decision(store, "SKU-999999", "keep", "", "maria")
        with pytest.raises(decisions.DecisionError, match="at most 1000"):
            decisions.record_decision(store, sku, "keep", "x" * 1001, "maria")
        assert decisions.history(store, sku) == []
