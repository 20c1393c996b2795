"""The review app's copy of the queue is sent by difference, and the product history it charts is rebuilt whole at a
day's first run and later that day only where it can have changed: the result is the same as a whole rebuild."""

import pytest

from cx_pipeline.core import appstore
from cx_pipeline.review import decisions
from cx_pipeline.warehouse import connect

pytestmark = pytest.mark.slow  # pipeline runs


def history(store) -> list[tuple]:
    return [tuple(r) for r in store.execute("SELECT * FROM review_history ORDER BY sku, day")]


def queue(store) -> list[tuple]:
    return [tuple(r) for r in store.execute("SELECT * FROM review_queue ORDER BY sku")]


def test_a_later_run_the_same_day_publishes_what_a_whole_rebuild_would(run_all, sim, warehouse_path):
    app_db = warehouse_path.with_name("app.sqlite")
    assert run_all().success
    with appstore.connect(app_db) as store:  # a row only an earlier day's publication could have left
        (sku,) = store.execute("SELECT sku FROM review_queue ORDER BY score DESC, sku LIMIT 1").fetchone()
        store.execute("INSERT OR REPLACE INTO review_history VALUES (?, '2000-01-01', 0, 0, NULL, NULL)", [sku])
        first_queue = queue(store)
    sim.advance(5)  # the same day: orders, receipts and pushes since
    assert run_all().success
    with appstore.connect(app_db) as store:
        published, published_queue = history(store), queue(store)
        assert published_queue != first_queue  # the run changed some of it
        assert (sku, "2000-01-01", 0, 0, None, None) in published  # earlier days kept: not rebuilt whole
        published.remove((sku, "2000-01-01", 0, 0, None, None))
        (assessed,) = store.execute("SELECT assessed_at FROM publications WHERE name = 'review_queue'").fetchone()
        today = assessed[:10]
        store.execute("DELETE FROM publications WHERE name = 'review_queue'")  # as if the day's first run
        with connect(warehouse_path) as con:
            whole = decisions.publish_queue(store, con, "whole")  # the app's publication is not the warehouse's copy
        rebuilt = history(store)
        assert queue(store) == published_queue and whole.sent == whole.cohort == len(published_queue)
        with connect(warehouse_path) as con:  # the copy is the app's again: nothing to send
            again = decisions.publish_queue(store, con, "again")
        assert (again.sent, again.withdrawn) == (0, 0) and queue(store) == published_queue
    assert published == rebuilt
    assert any(day == today for _, day, *_ in published)  # today's rows were rebuilt, not only kept
    assert len({sku for sku, *_ in published}) > 10
