"""The contract rules on a real DuckDB file: what is quarantined, what is held, what blocks, what releases.

Each test is one defect found by trying the pipeline with bad input (issue 15); the end-to-end ones run the
Dagster graph against the simulator on 127.0.0.1.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest

from cx_pipeline.assets.resources import WmsResource
from cx_pipeline.definitions import ROOMS
from cx_pipeline.ingest.contracts import (
    BLOCKED,
    PASSED,
    ROWS_HELD,
    ContractPolicy,
    judge,
    judge_pending,
    rejudge_quarantine,
)
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.landing import land, stage
from cx_pipeline.storefront import stock
from cx_pipeline.warehouse import connect
from tests.helpers import TOKEN, check_results, materializations, nodes, resources

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
POLICY = ContractPolicy()
KNOWN_PO = "expect_column_values_to_be_in_set(_known_po_id_po_line, value_set [True])"


def at(hours_ago: float = 1, moment: datetime = NOW) -> str:
    return (moment - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def product(sku: str) -> dict:
    return {"sku": sku, "title": sku, "category": "home", "supplier_id": "SUP-01", "price": "19.99",
            "currency": "EUR", "status": "active", "registered_at": at(1000), "updated_at": at(2),
            "attributes": None}  # fmt: skip


def receipt(n: int, qty: object = 5, po: str = "PO-1", received_at: str | None = None) -> dict:
    return {"receipt_id": f"RCV-{n}", "line_no": 1, "po_id": po, "po_line": 1, "sku": "SKU-1",
            "warehouse": "WH-EAST", "qty_received": qty, "qty_damaged": 0, "damage_reason": None,
            "received_at": received_at or at(3), "updated_at": received_at or at(2)}  # fmt: skip


def purchase_order(po: str) -> dict:
    line = {"po_line": 1, "sku": "SKU-1", "qty_ordered": 10, "expected_at": "2026-11-21"}
    return {"po_id": po, "supplier_id": "SUP-01", "warehouse": "WH-EAST", "status": "open", "created_at": at(100),
            "updated_at": at(1), "lines": [line]}  # fmt: skip


def stock_row(sku: str, on_hand: object = 20, warehouse: str = "WH-EAST") -> dict:
    return {"sku": sku, "warehouse": warehouse, "on_hand": on_hand, "in_qc": 0, "damaged": 0}


def landed(con: duckdb.DuckDBPyConnection, feed: str, records: list[dict], as_of: datetime = NOW, **kw: object):
    """One pull of `feed`, staged and landed (not judged: a run could stop here)."""
    return land(con, stage(con, FEEDS[feed], [records], as_of=as_of, **kw))


def judged(con: duckdb.DuckDBPyConnection, feed: str, records: list[dict], as_of: datetime = NOW, **kw: object):
    landed(con, feed, records, as_of, **kw)
    return judge(con, FEEDS[feed], POLICY)


def quarantined(con: duckdb.DuckDBPyConnection, feed: str) -> list[tuple[str, str]]:
    return con.execute(
        "SELECT row_key, expectation FROM quarantine WHERE feed = ? AND released_at IS NULL ORDER BY ALL", [feed]
    ).fetchall()


def valid(con: duckdb.DuckDBPyConnection, feed: str, columns: str = "*") -> list[tuple]:
    return con.execute(f"SELECT {columns} FROM valid_{feed} ORDER BY ALL").fetchall()


@pytest.fixture
def con(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        judged(con, "catalog", [product("SKU-1"), product("SKU-2")])
        yield con


def test_a_fraction_in_an_integer_column_is_quarantined_as_sent_never_rounded(con):
    verdict = judged(con, "purchase_orders", [purchase_order("PO-1")])
    assert verdict.outcome == PASSED
    verdict = judged(con, "receipts", [receipt(1, qty=5.7), receipt(2, qty=6), receipt(3, qty="6.0")])

    assert verdict.outcome == ROWS_HELD
    assert quarantined(con, "receipts") == [
        ("RCV-1|1", "expect_column_values_to_be_null(_unparsed)"),
        ("RCV-1|1", "expect_column_values_to_not_be_null(qty_received)"),
    ]
    (sent,) = con.execute("SELECT DISTINCT row_data->>'qty_received' FROM quarantine").fetchone()
    assert sent == "5.7"  # the row as sent
    assert valid(con, "receipts", "receipt_id, qty_received") == [("RCV-2", 6), ("RCV-3", 6)]
    assert con.execute("SELECT qty_received FROM raw_receipts WHERE receipt_id = 'RCV-1'").fetchall() == [(None,)]


def test_a_price_finer_than_its_scale_is_not_rounded(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        verdict = judged(con, "catalog", [product("SKU-1") | {"price": 9.999}, product("SKU-2")])

        assert verdict.outcome == ROWS_HELD
        assert "expect_column_values_to_be_null(_unparsed)" in {v.expectation for v in verdict.violations}
        assert con.execute("SELECT price FROM raw_catalog WHERE sku = 'SKU-1'").fetchall() == [(None,)]


def test_a_timestamp_without_a_zone_breaks_the_contract_unless_the_source_zone_is_configured(tmp_path):
    naive = receipt(1, received_at="2026-11-20 08:00:00")
    with connect(tmp_path / "a.duckdb") as con:
        judged(con, "catalog", [product("SKU-1")])
        judged(con, "purchase_orders", [purchase_order("PO-1")])
        verdict = judged(con, "receipts", [naive, receipt(2)])
        assert verdict.outcome == ROWS_HELD
        assert ("RCV-1|1", "expect_column_values_to_be_null(_unparsed)") in quarantined(con, "receipts")

    with connect(tmp_path / "b.duckdb") as con:
        judged(con, "catalog", [product("SKU-1")])
        judged(con, "purchase_orders", [purchase_order("PO-1")])
        verdict = judged(con, "receipts", [naive, receipt(2)], time_zone="Europe/Berlin")
        assert verdict.outcome == PASSED
        (received,) = con.execute("SELECT received_at FROM valid_receipts WHERE receipt_id = 'RCV-1'").fetchone()
        assert received == datetime(2026, 11, 20, 7, tzinfo=UTC)  # 08:00 in Berlin (CET)


def test_keys_have_a_length_and_character_rule(tmp_path):
    huge = "S" * 1_000_000
    with connect(tmp_path / "w.duckdb") as con:
        verdict = judged(con, "catalog", [product("SKU-1"), product(huge), product("SKU 2"), product("A|B")])

        keys = {row_key for row_key, rule in quarantined(con, "catalog") if "_key_format" in rule}
        assert keys == {huge, "SKU 2", "A|B"}
        assert valid(con, "catalog", "sku") == [("SKU-1",)]
        assert verdict.outcome == BLOCKED  # three bad rows of four: far above the share that only holds


def test_a_batch_landed_but_never_judged_is_hidden_and_judged_before_the_next_pull(con):
    judged(con, "purchase_orders", [purchase_order("PO-1")])
    judged(con, "receipts", [receipt(1)])
    # a run stops after landing, before the contract: two rows with qty -9
    landed(con, "receipts", [receipt(2, qty=-9), receipt(3, qty=-9), receipt(4)], as_of=NOW + timedelta(hours=1))

    assert valid(con, "receipts", "receipt_id") == [("RCV-1",)]  # nothing of the unjudged batch shows

    verdict = judge_pending(con, FEEDS["receipts"], POLICY)  # what the next pull does first
    assert verdict is not None and verdict.quarantined == 2
    assert judge_pending(con, FEEDS["receipts"], POLICY) is None  # judged exactly once
    assert valid(con, "receipts", "receipt_id, qty_received") == [("RCV-1", 5), ("RCV-4", 5)]


def test_a_receipt_that_came_before_its_purchase_order_is_released_when_the_order_lands(con):
    judged(con, "purchase_orders", [purchase_order("PO-1")])
    verdict = judged(con, "receipts", [receipt(1), receipt(2, po="PO-2")])
    assert quarantined(con, "receipts") == [("RCV-2|1", KNOWN_PO)]
    assert verdict.outcome == ROWS_HELD

    judged(con, "purchase_orders", [purchase_order("PO-2")], as_of=NOW + timedelta(hours=1))
    judged(con, "receipts", [], as_of=NOW + timedelta(hours=1))  # the next pull, which brought nothing new

    assert rejudge_quarantine(con, FEEDS["receipts"]) == 1  # what the contract check does after judging it
    assert quarantined(con, "receipts") == []
    assert valid(con, "receipts", "receipt_id") == [("RCV-1",), ("RCV-2",)]


def test_rows_quarantined_under_a_wrong_source_clock_are_released_when_sent_again(con):
    judged(con, "purchase_orders", [purchase_order("PO-1")])
    wrong_clock = NOW - timedelta(days=365)  # the source's as_of went back a year: every row is "in the future"
    judged(con, "receipts", [receipt(1), receipt(2)], as_of=wrong_clock)
    assert len(quarantined(con, "receipts")) == 4  # received_at and updated_at, for each

    verdict = judged(con, "receipts", [receipt(1), receipt(2)], as_of=NOW + timedelta(minutes=5))  # unchanged

    assert verdict.outcome == PASSED and verdict.released == 4
    assert valid(con, "receipts", "receipt_id") == [("RCV-1",), ("RCV-2",)]


def test_open_quarantine_is_judged_again_against_the_current_clock(con):
    judged(con, "purchase_orders", [purchase_order("PO-1")])
    judged(con, "receipts", [receipt(1)], as_of=NOW - timedelta(days=365))
    judged(con, "receipts", [receipt(2, received_at=at(1))], as_of=NOW)  # a good clock again, RCV-1 not re-sent

    assert rejudge_quarantine(con, FEEDS["receipts"]) == 2  # its two expectations
    assert valid(con, "receipts", "receipt_id") == [("RCV-1",), ("RCV-2",)]


def snapshot(n: int, missing: int = 0, **changed: object) -> list[dict]:
    rows = [stock_row(f"SKU-{i}") for i in range(1, n + 1 - missing)]
    return [r | ({"on_hand": changed[r["sku"]]} if r["sku"] in changed else {}) for r in rows]


def test_a_snapshot_missing_keys_holds_them_and_a_big_gap_breaks_coverage(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        judged(con, "catalog", [product(f"SKU-{i}") for i in range(1, 21)])
        assert judged(con, "on_hand", snapshot(20)).outcome == PASSED

        small_gap = judged(con, "on_hand", snapshot(20, missing=1), as_of=NOW + timedelta(hours=1))
        assert small_gap.outcome == PASSED  # 95 % of the keys: within the coverage rule
        assert ("SKU-20",) not in valid(con, "on_hand", "sku")  # no longer current: not its old value...
        stock.build_stock_position(con, stock.StockPolicy(), stock.read_overrides(None, set()), NOW, "run-1")
        held = con.execute("SELECT sku, held_by FROM stock_position WHERE held").fetchall()
        assert held == [("SKU-20", "on_hand (absent from the latest snapshot)")]  # ...nor zero: held

        big_gap = judged(con, "on_hand", snapshot(20, missing=9), as_of=NOW + timedelta(hours=2))
        assert big_gap.outcome == BLOCKED
        assert any(v.expectation.startswith("snapshot_covers_previous_keys") for v in big_gap.violations)

        back = judged(con, "on_hand", snapshot(20, **{"SKU-20": 7}), as_of=NOW + timedelta(hours=3))
        assert back.outcome == PASSED and ("SKU-20", 7) in valid(con, "on_hand", "sku, on_hand")


def test_a_sku_held_run_after_run_is_counted(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        judged(con, "catalog", [product("SKU-1"), product("SKU-2")])
        judged(con, "on_hand", [stock_row("SKU-1"), stock_row("SKU-2", on_hand=2.5)])
        policy, overrides = stock.StockPolicy(), stock.read_overrides(None, set())
        for run in ("run-1", "run-1", "run-2"):  # a run that rebuilds the position twice counts once
            stock.build_stock_position(con, policy, overrides, NOW, run)

        assert stock.long_holds(con, 2)[["sku", "runs"]].values.tolist() == [["SKU-2", 2]]
        assert stock.long_holds(con, 3).empty


def test_a_run_stopped_between_landing_and_contract_lets_no_bad_row_through(sim, run_pipeline, warehouse_path):
    sim.faults.add("/wms/receipts", "corrupt", times=1, field="qty_received", value=-9, rows=2)
    # the first run lands every feed, then stops before any contract ran (its checks never started)
    stopped = dg.materialize(ROOMS["ingest"].assets, resources=resources(sim, warehouse_path), raise_on_error=False)
    assert stopped.success and not check_results(stopped)

    result = run_pipeline()  # the next run

    assert "raw_receipts" in materializations(result)
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM valid_receipts WHERE qty_received < 0").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM raw_receipts WHERE qty_received = -9").fetchone() == (2,)
        (rows,) = con.execute("SELECT count(DISTINCT row_key) FROM quarantine WHERE feed = 'receipts'").fetchone()
        assert rows == 2
        unjudged = con.execute("SELECT count(*) FROM ingest_batches WHERE judged_at IS NULL").fetchone()
        assert unjudged == (0,)


def test_one_bad_stock_row_holds_its_sku_and_every_other_sku_is_pushed(sim, run_all, warehouse_path):
    sim.faults.add("/wms/on_hand", "corrupt", times=None, field="on_hand", value=20.6, rows=1)

    first = run_all()

    check = check_results(first)["raw_on_hand"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "storefront_status_push" in materializations(first)  # everything else flowed
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        (sku,) = con.execute("SELECT DISTINCT row_data->>'sku' FROM quarantine WHERE feed = 'on_hand'").fetchone()
        assert con.execute("SELECT sku FROM stock_position WHERE held").fetchall() == [(sku,)]
        assert con.execute("SELECT count(*) FROM push_changes WHERE sku = ?", [sku]).fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM push_audit").fetchone()[0] > 0

    second = run_all()  # the same SKU is held a second run in a row: the rest is pushed, then the run fails

    assert not second.success
    failure = next(e for e in second.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "storefront_status_push"
    assert f"{sku} (on_hand, 2 runs)" in str(failure.event_specific_data.error)


def test_the_sources_zone_is_a_setting_of_its_resource_and_a_wrong_name_fails_at_start(sim, warehouse_path):
    sim.faults.add("/wms/receipts", "corrupt", times=1, field="received_at", value="2026-11-15 08:00:00", rows=3)

    def wms(zone: str) -> WmsResource:
        return WmsResource(base_url=sim.url, token=TOKEN, backoff_seconds=0.05, source_time_zone=zone)

    berlin = {**resources(sim, warehouse_path), "wms": wms("Europe/Berlin")}

    result = dg.materialize(nodes("ingest"), resources=berlin, raise_on_error=False)

    assert check_results(result)["raw_receipts"].passed, check_results(result)["raw_receipts"].metadata
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        moved = con.execute("SELECT count(*) FROM valid_receipts WHERE received_at = '2026-11-15 07:00:00+00'")
        assert moved.fetchone() == (3,)  # 08:00 in Berlin
    wrong = {"wms": wms("Europe/Atlantis")}
    with (
        pytest.raises(dg.DagsterInvalidConfigError, match="'Europe/Atlantis' is not a time zone name"),
        dg.build_resources(wrong),
    ):
        pass


def test_a_product_whose_catalog_row_is_quarantined_or_unjudged_is_held_not_dropped(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        judged(con, "catalog", [product("SKU-1") | {"price": -1}, product("SKU-2")])
        judged(con, "on_hand", [stock_row("SKU-1"), stock_row("SKU-2")])
        # a read by change (a whole read would retire the products it leaves out), and a run stopped here
        landed(con, "catalog", [product("SKU-3")], as_of=NOW + timedelta(hours=1), updated_since=NOW)
        stock.build_stock_position(con, stock.StockPolicy(), stock.read_overrides(None, set()), NOW, "run-1")

        rows = con.execute("SELECT sku, held, held_by FROM stock_position ORDER BY sku").fetchall()

    assert rows == [
        ("SKU-1", True, "catalog"),
        ("SKU-2", False, None),
        ("SKU-3", True, "catalog (batch not judged yet)"),
    ]


def test_conflicting_copies_of_a_key_stay_quarantined_when_judged_again(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        judged(con, "catalog", [product("SKU-1")])
        verdict = judged(con, "on_hand", [stock_row("SKU-1", on_hand=20), stock_row("SKU-1", on_hand=999)])
        assert verdict.quarantined == 2
        judged(con, "on_hand", [], as_of=NOW + timedelta(hours=1))  # the next snapshot (empty: it only moves on)

        assert rejudge_quarantine(con, FEEDS["on_hand"]) == 0
        assert len(quarantined(con, "on_hand")) == 2


def test_a_row_released_after_its_zone_is_configured_lands_as_now_typed(tmp_path):
    naive = product("SKU-2") | {"updated_at": "2026-11-20 09:00:00"}
    with connect(tmp_path / "w.duckdb") as con:
        judged(con, "catalog", [product("SKU-1"), naive])
        assert valid(con, "catalog", "sku") == [("SKU-1",)]
        # the operator sets the source's zone; the next pull brings nothing new
        judged(con, "catalog", [], as_of=NOW + timedelta(hours=1), time_zone="Europe/Berlin", updated_since=NOW)

        assert rejudge_quarantine(con, FEEDS["catalog"]) == 2  # its _unparsed and not-null entries
        (updated,) = con.execute("SELECT updated_at FROM valid_catalog WHERE sku = 'SKU-2'").fetchone()
        assert updated == datetime(2026, 11, 20, 8, tzinfo=UTC)
