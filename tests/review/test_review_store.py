"""The merchandisers' part of the app store's migration (#20): a store in use keeps its decisions and ids when
review_decisions is rebuilt to admit undo rows, and a second run of the step changes nothing."""

import sqlite3

import pytest

from cx_pipeline.core import appstore
from cx_pipeline.review import decisions

UNDO = "INSERT INTO review_decisions (sku, decision, reviewer, decided_at, undoes) VALUES ('A', 'undo', ?, 'x', 1)"


def test_a_store_in_use_keeps_its_decisions_through_the_rebuild(tmp_path):
    path = tmp_path / "app.sqlite"
    old = sqlite3.connect(path)
    old.executescript(appstore.SCHEMA + "; PRAGMA user_version = 2;")
    old.executemany(
        "INSERT INTO review_decisions (sku, decision, note, reviewer, decided_at) VALUES (?, ?, '', 'maria', ?)",
        [("A", "keep", "2026-11-01T00:00:00+00:00"), ("B/1", "discontinue", "2026-11-02T00:00:00+00:00")],
    )
    old.commit()
    old.close()

    with appstore.connect(path) as store:
        rows = [tuple(r) for r in store.execute("SELECT id, sku, decision, undoes FROM review_decisions ORDER BY id")]
        assert rows == [(1, "A", "keep", None), (2, "B/1", "discontinue", None)]
        store.execute(UNDO, ["maria"])
        assert [r[0] for r in store.execute("SELECT sku FROM effective_review_decisions")] == ["B/1"]
        with pytest.raises(sqlite3.IntegrityError):  # a decision is undone once
            store.execute(UNDO, ["ada"])
        with pytest.raises(sqlite3.IntegrityError):  # an undo names what it undoes, a decision does not
            store.execute(
                "INSERT INTO review_decisions (sku, decision, reviewer, decided_at) VALUES ('A', 'undo', 'm', 'x')"
            )
        with pytest.raises(sqlite3.Error):  # the step run again (a second process) fails before it rebuilds
            store.executescript(appstore.MIGRATIONS[3])
        assert store.execute("SELECT count(*) FROM review_decisions").fetchone()[0] == 3
        (sequence,) = store.execute("SELECT seq FROM sqlite_sequence WHERE name = 'review_decisions'").fetchone()
        assert sequence == 3  # ids keep counting up: the pipeline imports by id


def test_a_products_history_is_filled_day_by_day_from_its_published_days(tmp_path):
    with appstore.connect(tmp_path / "app.sqlite") as store:
        assert decisions.stock_history(store, "A") == []  # nothing published yet
        appstore.note_publication(store, "review_queue", "run", "2026-11-16T06:00:00+00:00", 1)
        store.executemany(
            "INSERT INTO review_history VALUES ('A', ?, ?, ?, ?, ?)",
            [("2026-08-19", 0, 0, 7, "in_stock"), ("2026-11-01", 5, 0, 7, "in_stock"),
             ("2026-11-10", 0, 2, 0, "out_of_stock")],
        )  # fmt: skip
        days = {d["day"]: d for d in decisions.stock_history(store, "A")}
    assert len(days) == decisions.HISTORY_DAYS and min(days) == "2026-08-19" and max(days) == "2026-11-16"
    assert (days["2026-11-01"]["received"], days["2026-11-02"]["received"]) == (5, 0)
    assert [days[d]["shop_quantity"] for d in ("2026-08-20", "2026-11-09", "2026-11-10", "2026-11-16")] == [7, 7, 0, 0]
    assert days["2026-11-16"]["shop_status"] == "out_of_stock" and days["2026-11-10"]["ordered"] == 2
