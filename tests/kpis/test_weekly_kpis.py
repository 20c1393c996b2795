"""The KPI page's weekly series, on a real warehouse file with the clock pinned: each KPI beside its measures,
complete weeks only, published whole to the app store with the change since the first week on record."""

from datetime import UTC, datetime, timedelta

import pytest

from cx_pipeline import warehouse
from cx_pipeline.core import appstore
from cx_pipeline.kpis import inquiries, weekly
from tests.kpis.test_inquiry_kpis import inquiry, order

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)  # ISO week 2026-W45; the history starts at its first second
NOW = MONDAY + timedelta(days=15, hours=9)  # W45 and W46 have ended, W47 is running


@pytest.fixture
def con(tmp_path):
    with warehouse.connect(tmp_path / "warehouse.duckdb") as con:
        yield con


def day(week: int, days: float = 1) -> datetime:
    return MONDAY + timedelta(days=7 * week + days)


def confirmation(con, receipt_id: str, received: datetime, hours: float, backfill: bool = False) -> None:
    con.execute(
        "INSERT INTO receipt_confirmations VALUES (?, 'WH-EAST', ?, ?, ?, 'run-1')",
        [receipt_id, received, received + timedelta(hours=hours), backfill],
    )


def notice(con, key: str, sent: datetime | None) -> None:
    con.execute(
        """INSERT INTO notice_ledger (notice_key, order_id, customer_id, cause, skus, message, status, planned_at,
                                      sent_at)
        VALUES (?, 'O1', 'C1', 'short', ['SKU-1'], 'm', ?, ?, ?)""",
        [key, "sent" if sent else "planned", sent or NOW, sent],
    )


def decision(con, decision_id: int, at: datetime, sku: str = "SKU-1", kind: str = "keep", undoes: int | None = None):
    con.execute(
        """INSERT INTO review_decisions (decision_id, sku, decision, note, reviewer, decided_at, _batch_id, _raw,
                                         _loaded_at, undoes) VALUES (?, ?, ?, '', 'maria', ?, 'b', '{}', ?, ?)""",
        [decision_id, sku, kind, at, NOW, undoes],
    )


def mismatch(con, plan_id: str, at: datetime, skus: int, stale: bool | None = True) -> None:
    con.execute(
        "INSERT INTO push_plans VALUES (?, ?, 'rest', 10, ?, ?, 0, 0, 0, 0, 0, 0.2, false, 'pushed')",
        [plan_id, at, skus, skus],
    )
    for n in range(skus):
        con.execute(
            "INSERT INTO push_changes VALUES (?, ?, 'to_out_of_stock', 'in_stock', 3, 'out_of_stock', 0, ?)",
            [plan_id, f"SKU-{n}", stale],
        )


def inspection(con, inspection_id: int, at: datetime, sample: int, defects: int, lot: int | None = None) -> None:
    """An inspection of lot `lot` (by default its own): a later one of the same lot amends the earlier."""
    con.execute(
        """INSERT INTO inspections VALUES (?, ?, 1, 'SKU-1', 'home', 'SUP-1', 100, ?, 'accept', 'qa', ?, ?, 'form',
                                           '', 'b', ?)""",
        [inspection_id, f"RCV-{lot or inspection_id}", sample, at, at, NOW],
    )
    con.execute("INSERT INTO inspection_defects VALUES (?, 'stitching', 'minor', ?)", [inspection_id, defects])


def world(con) -> None:
    """Two complete weeks and a running one, with something of every measure in each."""
    for week, orders in ((0, 4), (1, 5), (2, 2)):
        for n in range(orders):
            order(con, f"O{week}-{n}", day(week, 0) + timedelta(hours=n))
    inquiry(con, "I1", "delivery_delay", day(0))
    inquiry(con, "I2", "delivery_delay", day(0, 2))
    inquiry(con, "I3", "delivery_delay", day(1))
    inquiry(con, "I4", "cancellation", day(1))
    inquiry(con, "I5", "delivery_delay", day(2))  # the running week: never on the page
    confirmation(con, "R0", day(0), 10, backfill=True)  # the first full load: not part of the cycle
    for n, hours in enumerate((2, 4, 6)):
        confirmation(con, f"R1-{n}", day(1), hours)
    notice(con, "delay:O1:1", day(1))
    notice(con, "delay:O2:1", day(1, 3))
    notice(con, "delay:O3:1", None)  # planned, never sent
    decision(con, 1, day(0))
    decision(con, 2, day(0, 1), kind="refresh_listing")  # the same product decided again: one product reviewed
    decision(con, 3, day(1), sku="SKU-2")
    decision(con, 4, day(1, 1), sku="SKU-2", kind="undo", undoes=3)  # taken back: no review
    mismatch(con, "plan-1", day(0, 3), skus=2)
    mismatch(con, "plan-2", day(1, 3), skus=3, stale=False)  # flips the WMS caused in that run: not mismatches
    inspection(con, 1, day(0), sample=20, defects=3)
    inspection(con, 2, day(0, 2), sample=30, defects=2)
    inspection(con, 3, day(1), sample=50, defects=0)
    inquiries.build_kpis(con, NOW)


def by_week(rows) -> dict[str, dict[str, float | None]]:
    weeks: dict[str, dict[str, float | None]] = {}
    for week, metric, value in rows:
        weeks.setdefault(week, {})[metric] = value
    return weeks


def test_each_complete_week_has_every_kpi_beside_the_measures_meant_to_move_it(con):
    world(con)

    weeks = by_week(weekly.build_weekly(con))

    assert list(weeks) == ["2026-W45", "2026-W46"]  # the running week is not complete
    first, second = weeks["2026-W45"], weeks["2026-W46"]
    assert set(first) == set(weekly.METRICS)
    assert (first["delivery_delay_per_1000"], second["delivery_delay_per_1000"]) == (500.0, 200.0)
    assert (first["cancellation_per_1000"], second["cancellation_per_1000"]) == (0.0, 200.0)
    assert (first["cycle_p50_hours"], first["cycle_p90_hours"]) == (None, None)  # only a backfilled receipt
    assert (second["cycle_p50_hours"], second["cycle_p90_hours"]) == (4.0, 5.6)
    assert (first["notices_sent"], second["notices_sent"]) == (0.0, 2.0)
    assert (first["products_reviewed"], second["products_reviewed"]) == (1.0, 0.0)
    assert (first["stock_mismatches"], second["stock_mismatches"]) == (2.0, 0.0)
    assert (first["inspections_logged"], second["inspections_logged"]) == (2.0, 1.0)
    assert (first["dhu"], second["dhu"]) == (10.0, 0.0)  # 5 defects in 50 units, then none in 50


def test_the_inspection_weeks_are_kept_until_the_inspections_change_and_then_match_a_rebuild(con):
    world(con)
    first = weekly.build_weekly(con)
    assert not weekly.refresh_inspected_weeks(con)  # nothing changed: kept
    assert weekly.build_weekly(con) == first

    inspection(con, 4, day(0), sample=20, defects=1, lot=1)  # amends lot 1: 1 defect instead of 3
    con.execute(  # a contract re-run quarantines inspection 2
        "INSERT INTO quarantine VALUES ('inspections', 'b', 'expect', '2', '{}', ?, NULL)", [NOW]
    )
    later = weekly.build_weekly(con)
    assert (by_week(later)["2026-W45"]["inspections_logged"], by_week(later)["2026-W45"]["dhu"]) == (1.0, 5.0)
    con.execute("DELETE FROM kpi_inspected_from")  # forget what it was built from: built from scratch
    assert weekly.refresh_inspected_weeks(con)
    assert weekly.build_weekly(con) == later
    con.execute("DELETE FROM kpi_inspected_weeks")  # as a table dropped and created again would be
    assert weekly.refresh_inspected_weeks(con)
    assert weekly.build_weekly(con) == later


def test_a_first_week_the_history_starts_inside_is_left_out(con):
    order(con, "O-late", MONDAY + timedelta(days=3))  # the history starts on Thursday of W45
    order(con, "O-next", day(1))
    inquiries.build_kpis(con, NOW)

    assert {week for week, _, _ in weekly.build_weekly(con)} == {"2026-W46"}


def test_the_publication_replaces_the_weeks_and_gives_the_change_since_the_first_week(con, tmp_path):
    world(con)
    with appstore.connect(tmp_path / "app.sqlite") as store:
        store.execute("INSERT INTO kpi_weeks VALUES ('2020-W01', 'dhu', 1.0)")  # an older publication's

        assert weekly.publish(store, weekly.build_weekly(con), "run-7", NOW) == 2
        shown = weekly.published(store)
        published = dict(store.execute("SELECT run_id, rows FROM publications WHERE name = 'kpi_weeks'").fetchone())

    assert shown.weeks == ["2026-W45", "2026-W46"] and published == {"run_id": "run-7", "rows": 2}
    assert shown.values["delivery_delay_per_1000"] == [500.0, 200.0]
    assert shown.values["cycle_p50_hours"] == [None, 4.0]
    delay = shown.changes["delivery_delay_per_1000"]
    assert (delay["first_week"], delay["last_week"], delay["change_pct"]) == ("2026-W45", "2026-W46", -60.0)
    assert shown.changes["cancellation_per_1000"]["change_pct"] is None  # from 0: no percentage
    assert shown.changes["cycle_p50_hours"]["change_pct"] is None  # one week on record: nothing to compare
