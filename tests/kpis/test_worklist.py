"""The operator's work list, on a real warehouse file with the clock pinned: each kind of problem found where
the pipeline records it, a settled one gone, published whole newest first, a problem keeping its first age."""

from datetime import UTC, datetime, timedelta

import pytest

from cx_pipeline import warehouse
from cx_pipeline.core import appstore
from cx_pipeline.kpis import worklist

NOW = datetime(2026, 11, 16, 6, tzinfo=UTC)  # the sources' clock
HOST_CLOCK = datetime(2026, 12, 5, 5, tzinfo=UTC)  # the pipeline host's, which stamps quarantined_at


def ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


@pytest.fixture
def con(tmp_path):
    with warehouse.connect(tmp_path / "warehouse.duckdb") as con:
        yield con


@pytest.fixture
def store(tmp_path):
    with appstore.connect(tmp_path / "app.sqlite") as store:
        yield store


def audit(con, plan_id: str, sku: str, state: str, at: datetime, response: str = "ok") -> None:
    con.execute(
        """INSERT INTO push_audit (plan_id, batch_no, idempotency_key, sku, adapter, ok, response, pushed_at, state)
        VALUES (?, 1, ?, ?, 'rest', ?, ?, ?, ?)""",
        [plan_id, f"{plan_id}:1", sku, state == "ok", response, at, state],
    )


def plant_every_kind(con) -> None:
    con.execute("INSERT INTO stock_holds VALUES ('SKU-H', 'on_hand', ?, 3, 'run-3')", [ago(9)])
    audit(con, "run-2", "SKU-M", "mismatch", ago(5), "the shop accepted the write but shows customers in_stock")
    audit(con, "run-2", "SKU-OK", "refused", ago(5), "storefront busy")
    audit(con, "run-3", "SKU-OK", "ok", ago(2))  # a later write got through: settled
    con.execute(
        """INSERT INTO ingest_batches (batch_id, feed, run_id, fetched_at, as_of, pages, rows_fetched, rows_new,
                                       rows_updated, rows_unchanged, rows_duplicate)
        VALUES ('b1', 'on_hand', 'run-1', ?, ?, 1, 3, 3, 0, 0, 0),
               ('b2', 'on_hand', 'run-3', ?, ?, 1, 3, 3, 0, 0, 0)""",
        [HOST_CLOCK, ago(30), HOST_CLOCK, ago(2)],  # the host's clock is not the sources': ages use as_of
    )
    for batch, key, released in (
        ("b1", "SKU-H|WH-EAST", None),
        ("b2", "SKU-X|WH-EAST", None),
        ("b1", "SKU-Y|WH-EAST", ago(3)),  # released: no longer a problem
    ):
        con.execute(
            "INSERT INTO quarantine VALUES ('on_hand', ?, 'on_hand is an integer >= 0', ?, '{}', ?, ?)",
            [batch, key, HOST_CLOCK, released],
        )
    con.execute(
        "INSERT INTO push_plans VALUES ('run-3', ?, 'rest', 2, 0, 0, 0, 0, 1, 1, 0, 0.2, false, 'pushed')", [ago(2)]
    )
    con.execute("CREATE TABLE stock_position AS SELECT unnest(['SKU-H', 'SKU-OK', 'SKU-N']) AS sku")
    con.execute("INSERT INTO shop_state VALUES ('SKU-H', 'in_stock', 4), ('SKU-OK', 'in_stock', 2)")
    con.execute(
        """INSERT INTO notice_ledger (notice_key, order_id, customer_id, cause, skus, message, status, planned_at,
                                      attempts, last_error, run_id)
        VALUES ('delay:O-1:1', 'O-1', 'C-1', 'short', ['SKU-1'], 'm', 'planned', ?, 2, '503 Service Unavailable',
                'run-2'),
               ('delay:O-2:1', 'O-2', 'C-2', 'short', ['SKU-1'], 'm', 'planned', ?, 0, NULL, 'run-3')""",
        [ago(7), ago(1)],  # the second is only planned: not a failure
    )


def test_every_kind_of_problem_is_found_with_when_it_began_and_the_run_that_saw_it(con):
    plant_every_kind(con)

    found = {(kind, key): (detail, since, run) for kind, key, detail, since, run in worklist.problems(con)}

    assert sorted(found) == [
        ("customer_view", "SKU-M"),
        ("held", "SKU-H"),
        ("not_listed", "SKU-N"),
        ("notice_failed", "delay:O-1:1"),
        ("quarantine", "on_hand: on_hand is an integer >= 0"),
    ]
    assert found["held", "SKU-H"] == ("held by bad or unjudged input rows: on_hand (3 runs in a row)",
                                      "2026-11-15T21:00:00+00:00", "run-3")  # fmt: skip
    assert found["customer_view", "SKU-M"][0].startswith("mismatch: the shop accepted the write")
    assert found["quarantine", "on_hand: on_hand is an integer >= 0"] == (
        "2 rows: SKU-H|WH-EAST, SKU-X|WH-EAST",
        "2026-11-15T00:00:00+00:00",
        "run-3",
    )
    assert found["not_listed", "SKU-N"][1:] == ("2026-11-16T04:00:00+00:00", "run-3")
    assert found["notice_failed", "delay:O-1:1"] == (
        "order O-1, 2 attempts: 503 Service Unavailable",
        "2026-11-15T23:00:00+00:00",
        "run-2",
    )


def test_without_a_stock_position_yet_the_rest_is_still_listed(con):
    con.execute("INSERT INTO stock_holds VALUES ('SKU-H', 'catalog', ?, 1, 'run-1')", [ago(1)])
    assert [row[:2] for row in worklist.problems(con)] == [("held", "SKU-H")]


def test_the_list_is_replaced_whole_newest_first_and_a_problem_keeps_its_first_age(con, store):
    plant_every_kind(con)
    worklist.publish(store, worklist.problems(con), "run-3", NOW)
    con.execute("DELETE FROM stock_holds")  # settled by the next run
    con.execute("UPDATE push_plans SET planned_at = ?", [NOW])  # SKU-N found unlisted again, two hours later
    later = NOW + timedelta(hours=2)

    assert worklist.publish(store, worklist.problems(con), "run-4", later) == 4

    listed = worklist.page(store, worklist.Filter()).rows
    assert [(r["kind"], r["age_hours"]) for r in listed] == [
        ("not_listed", 4.0),  # first seen at 04:00, published at 08:00
        ("customer_view", 7.0),
        ("notice_failed", 9.0),
        ("quarantine", 32.0),
    ]
    assert worklist.counts(store) == {"held": 0, "customer_view": 1, "quarantine": 1, "not_listed": 1,
                                      "notice_failed": 1}  # fmt: skip
    only = worklist.page(store, worklist.Filter("quarantine")).rows
    assert [r["key"] for r in only] == ["on_hand: on_hand is an integer >= 0"]
    assert worklist.publication(store)["run_id"] == "run-4"
