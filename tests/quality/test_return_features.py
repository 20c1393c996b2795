"""The return model's defect rates read each entry's defects summed per item at import (`inspection_items`), kept
up to date with the entries: on a real warehouse file, the clock pinned."""

from datetime import UTC, datetime, timedelta

import pytest

from cx_pipeline import warehouse
from cx_pipeline.quality import inspections

NOW = datetime(2026, 11, 16, 6, tzinfo=UTC)


@pytest.fixture
def con(tmp_path):
    with warehouse.connect(tmp_path / "warehouse.duckdb") as con:
        yield con


def entry(con, inspection_id: int, defects: dict[tuple[str, str], int]) -> None:
    """An inspection as the warehouse holds it (as the bench loads a history: no import), with its defect rows."""
    con.execute(
        """INSERT INTO inspections VALUES (?, ?, 1, 'SKU-1', 'apparel', 'SUP-1', 100, 13, 'accept', 'qa', ?, ?, 'form',
                                           '', 'b', ?)""",
        [inspection_id, f"RCV-{inspection_id}", NOW - timedelta(days=1), NOW, NOW],
    )
    for (item, severity), count in defects.items():
        con.execute("INSERT INTO inspection_defects VALUES (?, ?, ?, ?)", [inspection_id, item, severity, count])


def item_sums(con) -> list[tuple]:
    return con.execute("SELECT * FROM inspection_items ORDER BY ALL").fetchall()


def test_each_entrys_defects_are_summed_per_item_over_its_severities(con):
    entry(con, 1, {("sizing", "minor"): 2, ("sizing", "major"): 1, ("stitching", "minor"): 0})
    entry(con, 2, {("sizing", "critical"): 1})
    inspections.add_item_sums(con)
    assert item_sums(con) == [(1, "sizing", 3), (1, "stitching", 0), (2, "sizing", 1)]


def test_only_entries_newer_than_the_sums_are_added_and_a_history_loaded_without_an_import_is_caught_up(con):
    entry(con, 7, {("sizing", "minor"): 4})  # a history from before the table, summed the first time
    inspections.add_item_sums(con)
    inspections.add_item_sums(con)  # nothing new: nothing added twice
    entry(con, 8, {("sizing", "minor"): 1, ("labelling", "major"): 2})
    inspections.add_item_sums(con)
    assert item_sums(con) == [(7, "sizing", 4), (8, "labelling", 2), (8, "sizing", 1)]
