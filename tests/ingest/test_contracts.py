"""Data contracts: every kind of bad row fails its check, is named and quarantined as sent, and holds only what
it touches; a structural failure (volume, coverage, too many bad rows) keeps everything downstream from running."""

from datetime import UTC, datetime

import dagster as dg
import duckdb
import pandas as pd
import pytest

from cx_pipeline.assets.resources import ContractsResource
from cx_pipeline.ingest.contracts import landed_batch, quarantine
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.landing import stage
from cx_pipeline.ingest.suites import build_suite, validate
from cx_pipeline.warehouse import connect
from tests.helpers import check_results, materializations, nodes, resources

NOW = datetime(2026, 11, 20, tzinfo=UTC)


@dg.asset(deps=[f.table for f in FEEDS.values()])
def downstream_probe() -> None:
    """Stands in for everything that consumes the raw feeds."""


def quarantined(path, feed: str) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(
            "SELECT expectation, row_key, row_data::VARCHAR AS row_data FROM quarantine "
            "WHERE feed = ? AND released_at IS NULL",
            [feed],
        ).df()


def run_contracts(sim, warehouse_path, contracts: ContractsResource, *extra) -> dg.ExecuteInProcessResult:
    """Every raw feed and its contract (plus `extra`), under the given contract policy."""
    return dg.materialize(
        [*nodes("ingest"), *extra],
        resources={**resources(sim, warehouse_path), "contracts": contracts},
        raise_on_error=False,
    )


BAD_FEEDS = [
    # (endpoint, corrupted field, bad value, asset, expectation named in the failure)
    ("/wms/receipts", "qty_received", -5, "receipts", "expect_column_values_to_be_between(qty_received"),
    (
        "/wms/receipts",
        "received_at",
        "2099-01-01T00:00:00Z",
        "receipts",
        "expect_column_values_to_be_between(received_at",
    ),
    ("/wms/receipts", "receipt_id", None, "receipts", "expect_column_values_to_not_be_null(receipt_id"),
    ("/wms/receipts", "sku", "SKU-999999", "receipts", "expect_column_values_to_be_in_set(_known_sku"),
    ("/wms/receipts", "po_line", 999, "receipts", "expect_column_values_to_be_in_set(_known_po_id_po_line"),
    (
        "/wms/receipts",
        "damage_reason",
        "eaten_by_dog",
        "receipts",
        "expect_column_values_to_be_in_set(damage_reason",
    ),
    ("/catalog/products", "status", "zombie", "catalog", "expect_column_values_to_be_in_set(status"),
    ("/oms/orders", "lines.qty", -1, "open_orders", "expect_column_values_to_be_between(qty"),
    ("/helpdesk/inquiries", "reason", "angry", "inquiries", "expect_column_values_to_be_in_set(reason"),
    ("/wms/on_hand", "on_hand", "lots", "on_hand", "expect_column_values_to_not_be_null(on_hand"),
]


@pytest.mark.parametrize(("path", "field", "value", "feed", "expectation"), BAD_FEEDS)
def test_a_bad_row_is_named_and_quarantined_and_holds_only_what_it_touches(
    sim, run_pipeline, warehouse_path, path, field, value, feed, expectation
):
    sim.faults.add(path, "corrupt", times=1, field=field, value=value, rows=3)

    # a share above the first loads' (the small world's inquiries are ~100 rows): this is about rows, not share
    result = run_contracts(sim, warehouse_path, ContractsResource(max_bad_row_share=0.2), downstream_probe)

    check = check_results(result)[f"raw_{feed}"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # a warning: it blocks nothing
    broken = [k for k in check.metadata if k.startswith(expectation)]
    assert broken, list(check.metadata)
    assert "offending rows" in check.metadata[broken[0]].value  # count and sample of rows as sent
    assert check.metadata["outcome"].value == "rows_held"
    assert "downstream_probe" in materializations(result)
    rows = quarantined(warehouse_path, feed)
    assert len(rows[rows.expectation.str.startswith(expectation)]) == 3
    if value is not None:
        assert rows.row_data.str.contains(str(value)).all()
    other_checks = {k: c.passed for k, c in check_results(result).items() if k != f"raw_{feed}"}
    assert all(other_checks.values()), other_checks


def test_more_bad_rows_than_the_allowed_share_block_everything_downstream(sim, warehouse_path):
    sim.faults.add("/wms/receipts", "corrupt", times=1, field="qty_received", value=-5, rows=3)
    result = run_contracts(sim, warehouse_path, ContractsResource(max_bad_row_share=0.0), downstream_probe)

    check = check_results(result)["raw_receipts"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "max_bad_row_share" in check.metadata["blocked_because"].value
    assert "downstream_probe" not in materializations(result)
    assert len(quarantined(warehouse_path, "receipts")) == 3


def test_quarantined_rows_stay_visible_but_out_of_the_valid_view(sim, run_pipeline, warehouse_path):
    sim.faults.add("/wms/receipts", "corrupt", times=1, field="qty_received", value=-5, rows=3)
    run_pipeline()

    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        raw, valid, bad = (
            con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
            for t in ("raw_receipts", "valid_receipts", "raw_receipts WHERE qty_received < 0")
        )
    assert bad == 3
    assert valid == raw - 3


def test_judging_a_batch_again_replaces_its_verdict(sim, run_pipeline, warehouse_path):
    sim.faults.add("/wms/receipts", "corrupt", times=1, field="qty_received", value=-5, rows=3)
    run_pipeline()
    feed = FEEDS["receipts"]

    with connect(warehouse_path) as con:  # what a re-run of the check does
        judged = landed_batch(con, feed)
        suite = build_suite(feed, NOW, min_rows=0)
        quarantine(con, feed.name, judged, validate(con, judged.table, suite))

    assert len(quarantined(warehouse_path, "receipts")) == 3


def test_an_empty_snapshot_fails_the_volume_check(sim, run_pipeline):
    assert run_pipeline().success
    # the full read (due every run here) and the read by change it starts with both come back empty
    sim.faults.add("/wms/on_hand", "empty", times=2)

    result = run_pipeline(extra=(downstream_probe,), full_read_every_hours=0)

    check = check_results(result)["raw_on_hand"]
    assert not check.passed
    assert any(k.startswith("expect_table_row_count_to_be_between") for k in check.metadata)
    assert "downstream_probe" not in materializations(result)


def test_an_empty_first_load_fails(sim, run_pipeline):
    sim.faults.add("/catalog/products", "empty", times=1)

    assert not check_results(run_pipeline())["raw_catalog"].passed


def test_an_incremental_feed_far_below_its_usual_rate_fails(sim, run_pipeline):
    assert run_pipeline().success
    sim.advance(48)
    sim.faults.add("/oms/orders", "empty", times=1)

    check = check_results(run_pipeline())["raw_open_orders"]

    assert not check.passed
    assert any(k.startswith("expect_table_row_count_to_be_between") for k in check.metadata)


def test_conflicting_copies_of_a_key_break_uniqueness(tmp_path):
    feed = FEEDS["inquiries"]
    frame = pd.DataFrame(
        {
            "_row": [0, 1, 2],
            "_row_key": ["INQ-1", "INQ-1", "INQ-2"],
            "inquiry_id": ["INQ-1", "INQ-1", "INQ-2"],
            "order_id": [None, None, None],
            "sku": [None, None, None],
            "reason": ["return", "other", "return"],
            "created_at": pd.to_datetime(["2026-11-01T00:00:00Z"] * 3, utc=True),
            "updated_at": pd.to_datetime(["2026-11-01T00:00:00Z"] * 3, utc=True),
            "_known_sku": [True] * 3,
            "_known_order_id": [True] * 3,
            "_key_format": [True] * 3,
            "_unparsed": [None] * 3,
        }
    )

    with connect(tmp_path / "w.duckdb") as con:
        con.register("frame", frame)
        con.execute("CREATE TABLE batch AS SELECT * FROM frame")
        violations = validate(con, "batch", build_suite(feed, NOW, min_rows=1))

    assert [(v.expectation.split("(")[0], v.row_index) for v in violations] == [
        ("expect_column_values_to_be_unique", [0, 1])
    ]


def test_every_offending_row_is_named_and_conflicting_copies_of_a_compound_key_too(tmp_path):
    feed = FEEDS["receipts"]
    at = "2026-11-01T00:00:00Z"
    rows = [
        {"receipt_id": f"R{n // 2}", "line_no": 1, "po_id": "PO-1", "po_line": 1, "sku": "S", "warehouse": "WH-EAST",
         "qty_received": -1 - n, "qty_damaged": 0, "damage_reason": None, "received_at": at, "updated_at": at}
        for n in range(40)
    ]  # fmt: skip
    with connect(tmp_path / "w.duckdb") as con:
        stage(con, feed, [rows])
        judged = landed_batch(con, feed)
        violations = {v.expectation.split(",")[0]: v for v in validate(con, judged.table, build_suite(feed, NOW, 0))}

    assert sorted(violations["expect_column_values_to_be_between(qty_received"].row_index) == list(range(40))
    assert sorted(violations["expect_column_values_to_be_unique(_row_key)"].row_index) == list(range(40))


def test_a_batch_is_judged_in_place_and_a_key_without_duplicates_or_an_empty_batch_passes_uniqueness(tmp_path):
    feed = FEEDS["receipts"]
    at = "2026-11-01T00:00:00Z"
    rows = [
        {"receipt_id": f"R{n}", "line_no": 1, "po_id": "PO-1", "po_line": 1, "sku": "S", "warehouse": "WH-EAST",
         "qty_received": 1, "qty_damaged": 0, "damage_reason": None, "received_at": at, "updated_at": at}
        for n in range(3)
    ]  # fmt: skip
    with connect(tmp_path / "w.duckdb") as con:
        con.execute("CREATE TABLE contract_receipts AS SELECT 1 AS x")  # the copy an earlier version staged
        stage(con, feed, [rows])
        judged = landed_batch(con, feed)
        (kind,) = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = ?",
                              [judged.table]).fetchone()  # fmt: skip
        # no catalog nor purchase orders here: every row is flagged for both references, and only for those
        broken = {v.expectation.split("(")[0] + "(" + v.expectation.split("(")[1].split(",")[0]: v.row_index
                  for v in validate(con, judged.table, build_suite(feed, NOW, 0))}  # fmt: skip
        stage(con, feed, [[]])
        empty = validate(con, landed_batch(con, feed).table, build_suite(feed, NOW, 0))

    assert kind == "VIEW" and judged.rows == 3
    assert broken == {
        "expect_column_values_to_be_in_set(_known_sku": [0, 1, 2],
        "expect_column_values_to_be_in_set(_known_po_id_po_line": [0, 1, 2],
    }
    assert empty == []


def test_each_broken_expectation_is_reported_as_itself_in_the_suites_order(tmp_path):
    """GX answers a suite column by column; each result is matched to its own expectation (a fraction sent for
    `qty_received` breaks its not-null and `_unparsed`, which GX answers far apart)."""
    feed = FEEDS["receipts"]
    at, later = "2026-11-01T00:00:00Z", "2026-12-24T00:00:00Z"
    rows = [
        {"receipt_id": f"R{n}", "line_no": 1, "po_id": "PO-1", "po_line": 1, "sku": "S", "warehouse": "WH-EAST",
         "qty_received": 1, "qty_damaged": 0, "damage_reason": None, "received_at": at, "updated_at": at}
        for n in range(4)
    ]  # fmt: skip
    rows[1]["sku"], rows[2]["qty_received"], rows[3]["received_at"] = None, 5.7, later
    with connect(tmp_path / "w.duckdb") as con:
        stage(con, feed, [rows])
        judged = landed_batch(con, feed)
        broken = [(v.expectation.split(",")[0], v.row_index) for v in validate(con, judged.table,
                                                                             build_suite(feed, NOW, 0))]  # fmt: skip

    assert broken == [
        ("expect_column_values_to_not_be_null(sku)", [1]),
        ("expect_column_values_to_not_be_null(qty_received)", [2]),
        ("expect_column_values_to_be_null(_unparsed)", [2]),
        ("expect_column_values_to_be_between(received_at", [3]),
        ("expect_column_values_to_be_in_set(_known_sku", [0, 2, 3]),
        ("expect_column_values_to_be_in_set(_known_po_id_po_line", [0, 1, 2, 3]),
    ]
