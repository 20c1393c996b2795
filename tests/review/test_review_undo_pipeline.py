"""An undo through the pipeline (#20): the next run imports it with the decision it takes back and assesses the
product as before that decision; the history keeps both."""

import duckdb

from cx_pipeline.core import appstore
from cx_pipeline.review import decisions
from cx_pipeline.review.decisions import QueueFilter
from tests.helpers import materializations


def state(warehouse_path, sku: str) -> list[tuple]:
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        return con.execute(
            "SELECT review_state, in_queue, last_decision FROM stale_products WHERE sku = ?", [sku]
        ).fetchall()


def test_an_undone_decision_puts_the_product_back_as_it_was(run_all, warehouse_path):
    app_db = warehouse_path.with_name("app.sqlite")
    run_all()
    with appstore.connect(app_db) as store:
        sku = decisions.queue_page(store, QueueFilter()).rows[0]["sku"]
    before = state(warehouse_path, sku)
    assert before == [("never_reviewed", True, None)]

    with appstore.connect(app_db) as store:
        kept = decisions.record_decision(store, sku, "keep", "", "maria")
    run_all()
    assert state(warehouse_path, sku) == [("not_due", False, "keep")]

    with appstore.connect(app_db) as store, appstore.transaction(store):
        decisions.undo(store, "maria", "undo-1", decision_id=kept)
    result = run_all()

    assert result.success and materializations(result)["review_decisions"]["imported"] == 1
    assert state(warehouse_path, sku) == before
    with appstore.connect(app_db) as store:
        assert sku in {r["sku"] for r in decisions.queue_rows(store, QueueFilter())}  # published back in the queue
        assert [(d["decision"], d["undone"]) for d in decisions.history(store, sku)] == [("undo", 0), ("keep", 1)]
