"""The return model's defect rates read each entry's defects summed per item at import (`inspection_items`), kept
up to date with the entries, and count each lot's latest entry at each cutoff: on a real warehouse file, the clock
pinned."""

from datetime import UTC, datetime, timedelta

import pytest

from cx_pipeline import warehouse
from cx_pipeline.quality import inspections, returns
from cx_pipeline.quality.checklists import Checklists

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


def lot_entry(con, inspection_id: int, lot: str, sku: str, supplier: str, units: int, days_ago: int, **defects: int):
    """An apparel entry for receipt line `lot`/1, inspected `days_ago` days before NOW, with its defects per item."""
    con.execute(
        "INSERT INTO inspections VALUES (?, ?, 1, ?, 'apparel', ?, 100, ?, 'accept', 'qa', ?, ?, 'form', '', 'b', ?)",
        [inspection_id, lot, sku, supplier, units, NOW - timedelta(days=days_ago), NOW, NOW],
    )
    for item, count in defects.items():
        con.execute("INSERT INTO inspection_items VALUES (?, ?, ?)", [inspection_id, item, count])


def test_the_defect_rates_count_each_lots_latest_entry_at_each_cutoff_shrunk_towards_the_suppliers(con):
    for sku, category, supplier in [("A", "apparel", "S1"), ("B", "apparel", "S1"), ("C", "apparel", "S2"),
                                    ("T", "toys", "S1")]:  # fmt: skip
        con.execute(
            "INSERT INTO raw_catalog VALUES (?, ?, ?, ?, 10, 'EUR', 'active', ?, ?, NULL, 'b', ?)",
            [sku, f"{sku} title", category, supplier, NOW, NOW, NOW],
        )
    lot_entry(con, 1, "R1", "A", "S1", 20, 40, sizing=2)
    lot_entry(con, 2, "R1", "A", "S1", 20, 35, sizing=4)  # amends lot R1 before the first cutoff: counted instead
    lot_entry(con, 3, "R2", "A", "S1", 10, 5, sizing=1, stitching=0)
    lot_entry(con, 4, "R3", "GONE", "S1", 30, 5, sizing=6)  # a SKU no longer listed: counts for its supplier
    lot_entry(con, 5, "R4", "C", "S2", 10, 10, stitching=3)
    lot_entry(con, 6, "R5", "B", "S1", 10, 40, sizing=5)
    lot_entry(con, 7, "R5", "B", "S1", 10, 20, sizing=0)  # amends lot R5 after the first cutoff: only at the second
    checklists = Checklists(
        aql={}, categories={"apparel": {"sizing": "", "stitching": ""}, "toys": {"completeness": ""}}
    )
    first, second = returns.features(con, [NOW - timedelta(days=30), NOW], checklists, window=30)
    segments = ["apparel.sizing", "apparel.stitching", "toys.completeness"]
    dhu = [frame.set_index("sku")[segments] for frame in (first, second)]
    prior = returns.PRIOR_UNITS
    # first cutoff: entries 2 and 6, supplier S1's sizing 9 in 30 units
    assert dhu[0].loc["A", "apparel.sizing"] == pytest.approx(100 * (4 + prior * 9 / 30) / (20 + prior))
    assert dhu[0].loc["B", "apparel.sizing"] == pytest.approx(100 * (5 + prior * 9 / 30) / (10 + prior))
    # second cutoff: entries 3, 4, 5 and 7, S1's sizing 7 in 50 units; S2 has no sizing: the category's (the same)
    assert dhu[1].loc["A", "apparel.sizing"] == pytest.approx(100 * (1 + prior * 7 / 50) / (10 + prior))
    assert dhu[1].loc["B", "apparel.sizing"] == pytest.approx(100 * (0 + prior * 7 / 50) / (10 + prior))
    assert dhu[1].loc["C", "apparel.sizing"] == pytest.approx(100 * prior * 7 / 50 / prior)
    assert dhu[1].loc["C", "apparel.stitching"] == pytest.approx(100 * (3 + prior * 3 / 10) / (10 + prior))
    assert dhu[1].loc["A", "apparel.stitching"] == 0  # S1's stitching: 0 in 10 units
    assert (dhu[1].loc["T"] == 0).all() and (dhu[1].loc[["A", "B", "C"], "toys.completeness"] == 0).all()
