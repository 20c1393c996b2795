"""The app store's schema: a store in use is migrated in place, its rows kept, by whichever process opens it
first; another process opening it at the same time finds it up to date."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from cx_pipeline.core import appstore


def _v2_store(path) -> None:
    con = sqlite3.connect(path)
    con.executescript(appstore.SCHEMA + "; PRAGMA user_version = 2;")
    con.execute(
        "INSERT INTO review_decisions (sku, decision, reviewer, decided_at) VALUES ('A-1', 'keep', 'ann', '2026-12-01')"
    )
    con.commit()
    con.close()


def test_a_fresh_store_is_created_at_the_current_version(tmp_path):
    with appstore.connect(tmp_path / "app.sqlite") as store:
        assert store.execute("PRAGMA user_version").fetchone()[0] == appstore.SCHEMA_VERSION


def test_a_store_in_use_is_migrated_in_place_and_keeps_its_rows(tmp_path, monkeypatch):
    path = tmp_path / "app.sqlite"
    _v2_store(path)
    monkeypatch.setattr(appstore, "MIGRATIONS", {3: "ALTER TABLE review_decisions ADD COLUMN batch TEXT"})
    monkeypatch.setattr(appstore, "SCHEMA_VERSION", 3)
    with appstore.connect(path) as store:
        row = store.execute("SELECT sku, decision, batch FROM review_decisions").fetchone()
        assert dict(row) == {"sku": "A-1", "decision": "keep", "batch": None}
        assert store.execute("PRAGMA user_version").fetchone()[0] == 3
    with appstore.connect(path) as store:  # opened again: nothing left to do, nothing done twice
        assert store.execute("PRAGMA user_version").fetchone()[0] == 3


def test_processes_opening_an_old_store_at_once_all_find_it_migrated(tmp_path, monkeypatch):
    path = tmp_path / "app.sqlite"
    _v2_store(path)
    monkeypatch.setattr(appstore, "MIGRATIONS", {3: "ALTER TABLE review_decisions ADD COLUMN batch TEXT"})
    monkeypatch.setattr(appstore, "SCHEMA_VERSION", 3)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        start.wait()
        try:
            appstore.open_store(path).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with appstore.connect(path) as store:
        assert [c["name"] for c in store.execute("PRAGMA table_info(review_decisions)")][-1] == "batch"


def test_a_migration_that_fails_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "app.sqlite"
    _v2_store(path)
    monkeypatch.setattr(appstore, "MIGRATIONS", {3: "ALTER TABLE no_such_table ADD COLUMN batch TEXT"})
    monkeypatch.setattr(appstore, "SCHEMA_VERSION", 3)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        appstore.open_store(path)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM review_decisions").fetchone()[0] == 1


def test_migrating_the_decisions_never_gives_a_deleted_decisions_id_again(tmp_path):
    path = tmp_path / "app.sqlite"
    _v2_store(path)
    con = sqlite3.connect(path)
    con.execute(
        "INSERT INTO review_decisions (sku, decision, reviewer, decided_at) VALUES ('A-2', 'keep', 'ann', '2026-12-02')"
    )
    con.execute("DELETE FROM review_decisions WHERE sku = 'A-2'")  # id 2 was given once
    con.commit()
    con.close()
    with appstore.connect(path) as store:
        store.execute(
            "INSERT INTO review_decisions (sku, decision, reviewer, decided_at) "
            "VALUES ('A-3', 'keep', 'ann', '2026-12-03')"
        )
        assert [tuple(r) for r in store.execute("SELECT id, sku FROM review_decisions ORDER BY id")] == [
            (1, "A-1"),
            (3, "A-3"),
        ]


def test_a_published_queue_keeps_its_rows_when_its_stored_rank_goes(tmp_path):
    """Migration 7: the queue is ordered by its own columns (score, registration day, SKU), not a stored rank
    that moved for every product below one whose score changed."""
    path = tmp_path / "app.sqlite"
    con = sqlite3.connect(path)
    con.executescript(appstore.SCHEMA + "; PRAGMA user_version = 6;")  # as version 6 left it: with the rank
    con.execute("CREATE INDEX review_queue_rank ON review_queue (in_queue, rank)")
    con.execute(
        f"INSERT INTO review_queue VALUES ({', '.join('?' * 20)})",
        ["A-1", 1, "Lamp", "home", "SUP-01", "active", "2022-11-01", 4.1, 5.0, "[]", ",registered,", "due", 1,
         None, 50, 0, 0, 0, 1.0, "2024-11-01"],
    )  # fmt: skip
    con.execute("INSERT INTO publications VALUES ('review_queue', 'r1', '2026-12-01', '2026-12-01', 0, 1)")
    con.commit()
    con.close()
    with appstore.connect(path) as store:
        columns = [r["name"] for r in store.execute("SELECT name FROM pragma_table_info('review_queue')")]
        assert "rank" not in columns and len(columns) == 19
        assert [tuple(r) for r in store.execute("SELECT sku, score FROM review_queue")] == [("A-1", 5.0)]
        assert store.execute("SELECT token FROM publications").fetchone()[0] is None  # the next one sends all
        indexes = {r[0] for r in store.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'review_queue'")}
        assert "review_queue_order" in indexes and "review_queue_rank" not in indexes
