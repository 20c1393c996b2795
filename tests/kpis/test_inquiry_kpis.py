"""Inquiries per 1,000 orders by reason and week, from the valid orders and inquiries (the pipeline run is
covered in tests/quality/test_quality_pipeline.py)."""

from datetime import UTC, datetime, timedelta

import pytest

from cx_pipeline import warehouse
from cx_pipeline.kpis import inquiries

MONDAY = datetime(2026, 11, 2, 9, tzinfo=UTC)  # weeks start on Monday, UTC
NOW = MONDAY + timedelta(days=15)  # the third week is still running


@pytest.fixture
def con(tmp_path):
    with warehouse.connect(tmp_path / "warehouse.duckdb") as con:
        yield con


def order(con, order_id: str, at: datetime, lines: int = 1) -> None:
    for line in range(1, lines + 1):  # an order counts once, whatever its lines
        con.execute(
            "INSERT INTO raw_open_orders VALUES (?, ?, 'C1', 'SKU-1', 'WH-EAST', 1, 'open', ?, ?, ?, 'b', ?)",
            [order_id, line, at, at + timedelta(days=3), at, NOW],
        )


def inquiry(con, inquiry_id: str, reason: str, at: datetime) -> None:
    con.execute(
        "INSERT INTO raw_inquiries VALUES (?, NULL, NULL, ?, ?, ?, NULL, 'b', ?)", [inquiry_id, reason, at, at, NOW]
    )


def test_each_weeks_inquiries_are_per_1000_of_its_orders_by_reason(con):
    for n in range(4):
        order(con, f"O{n}", MONDAY + timedelta(hours=n), lines=2)
    for n in range(2):
        order(con, f"P{n}", MONDAY + timedelta(days=7, hours=n))
    order(con, "Q0", MONDAY + timedelta(days=14))
    inquiry(con, "I1", "delivery_delay", MONDAY + timedelta(days=1))
    inquiry(con, "I2", "return", MONDAY + timedelta(days=8))
    inquiry(con, "I3", "return", MONDAY + timedelta(days=9))
    inquiry(con, "I4", "other", MONDAY + timedelta(days=9))  # not one of the three reasons this product moves

    weekly = inquiries.build_kpis(con, NOW).set_index("week")

    first, second, _running = weekly.index
    assert weekly.loc[first, ["orders", "delivery_delay_per_1000", "return_per_1000"]].tolist() == [4, 250.0, 0.0]
    assert weekly.loc[second, ["orders", "return_inquiries", "return_per_1000"]].tolist() == [2, 2, 1000.0]
    assert weekly["complete"].tolist() == [True, True, False]


def test_the_latest_complete_week_skips_the_partial_first_week_of_the_history(con):
    order(con, "O1", MONDAY)
    only_first = inquiries.build_kpis(con, NOW)
    assert inquiries.latest_complete_week(only_first) is None  # the first week of history may be partial

    order(con, "P1", MONDAY + timedelta(days=7))
    latest = inquiries.latest_complete_week(inquiries.build_kpis(con, NOW))
    assert str(latest["week"].date()) == "2026-11-09"
