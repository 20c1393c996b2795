"""On-hand stock and the catalog read by change: each run reads only what moved, a full read on its own cadence
catches drift and deletions, and says what it found."""

from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from cx_pipeline.definitions import ROOMS
from cx_pipeline.simulator import Simulator
from tests.helpers import check_results, materializations, resources

ON_HAND = [n for n in ROOMS["ingest"].assets or () if n.key.path[-1] in ("raw_catalog", "raw_on_hand")]
CHECKS = [c for c in ROOMS["ingest"].asset_checks or () if {k.asset_key.path[-1] for k in c.check_keys} & {
    "raw_catalog", "raw_on_hand"}]  # fmt: skip


def pull(sim: Simulator, warehouse_path: Path, every_hours: float) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [*ON_HAND, *CHECKS],
        resources=resources(sim, warehouse_path, full_read_every_hours=every_hours),
        raise_on_error=False,
    )
    assert result.success
    return result


def stock(warehouse_path: Path) -> pd.DataFrame:
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        return con.sql("SELECT sku, warehouse, on_hand, in_qc, damaged FROM valid_on_hand ORDER BY ALL").df()


def world_stock(sim: Simulator) -> pd.DataFrame:
    frame = sim.world.on_hand()[["sku", "warehouse", "on_hand", "in_qc", "damaged"]]
    return frame.sort_values(["sku", "warehouse"]).reset_index(drop=True).astype(stock_dtypes())


def stock_dtypes() -> dict[str, str]:
    return {"on_hand": "int32", "in_qc": "int32", "damaged": "int32"}


def test_runs_read_only_the_stock_that_moved_and_keep_the_whole_position(sim, warehouse_path):
    first = materializations(pull(sim, warehouse_path, every_hours=24))["raw_on_hand"]
    assert first["read"] == "full" and first["rows_fetched"] == len(sim.world.on_hand())

    sim.advance(6)  # a working morning: receipts pass QC, orders ship
    moved = sim.world.on_hand()
    second = pull(sim, warehouse_path, every_hours=24)
    meta = materializations(second)["raw_on_hand"]

    assert meta["read"] == "changes"
    assert 0 < meta["rows_fetched"] < len(moved) / 5  # only what moved
    assert meta["rows_fetched"] == meta["rows_updated"]
    assert check_results(second)["raw_on_hand"].passed
    pd.testing.assert_frame_equal(stock(warehouse_path).astype(stock_dtypes()), world_stock(sim))


def test_a_quiet_window_reads_nothing_and_keeps_its_contract(sim, warehouse_path):
    pull(sim, warehouse_path, every_hours=24)
    quiet = pull(sim, warehouse_path, every_hours=24)  # the clock did not move: nothing changed

    meta = materializations(quiet)["raw_on_hand"]
    assert meta["read"] == "changes" and meta["rows_fetched"] == 0
    assert check_results(quiet)["raw_on_hand"].passed  # an empty change set is not a broken feed
    assert len(stock(warehouse_path)) == len(sim.world.on_hand())


def test_the_full_read_reports_the_drift_the_reads_by_change_missed(sim, warehouse_path):
    pull(sim, warehouse_path, every_hours=24)
    before = sim.world.on_hand()
    sim.advance(6)  # real movements too, which the change log lists: they are no drift
    after = sim.world.on_hand()
    figures = ["on_hand", "in_qc", "damaged"]
    still = after[(after[figures].to_numpy() == before[figures].to_numpy()).all(axis=1)].head(3)
    with duckdb.connect(str(warehouse_path)) as con:  # what lost change messages would leave behind
        for sku, warehouse in still[["sku", "warehouse"]].itertuples(index=False):
            con.execute(
                "UPDATE raw_on_hand SET on_hand = on_hand + 7 WHERE sku = ? AND warehouse = ?", [sku, warehouse]
            )
        (sku,) = con.execute("SELECT min(sku) FROM raw_catalog").fetchone()
        con.execute(
            "INSERT INTO raw_on_hand SELECT ?, 'WH-CLOSED', 3, 0, 0, _batch_id, _loaded_at FROM raw_on_hand LIMIT 1",
            [sku],
        )  # a location the WMS no longer has

    full = pull(sim, warehouse_path, every_hours=0)  # a full read every run
    meta = materializations(full)["raw_on_hand"]

    assert meta["read"] == "full"
    assert (meta["drift_changed"], meta["drift_new"], meta["drift_gone"]) == (3, 0, 1)
    assert meta["drift_rows"] == 4
    assert check_results(full)["raw_on_hand"].passed
    pd.testing.assert_frame_equal(stock(warehouse_path).astype(stock_dtypes()), world_stock(sim))
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert con.execute("SELECT row_key FROM snapshot_absent").fetchall() == [(f"{sku}|WH-CLOSED",)]


def test_a_blocked_full_snapshot_is_read_whole_again_not_built_on_by_change(sim, warehouse_path):
    pull(sim, warehouse_path, every_hours=24)
    sim.faults.add("/wms/on_hand", "empty", times=2)  # the change log the full read starts with, and the full read
    blocked = dg.materialize(
        [*ON_HAND, *CHECKS], resources=resources(sim, warehouse_path, full_read_every_hours=0), raise_on_error=False
    )
    assert not check_results(blocked)["raw_on_hand"].passed

    again = materializations(pull(sim, warehouse_path, every_hours=24))["raw_on_hand"]

    assert again["read"] == "full"  # the blocked snapshot is no full read to build on
    assert again["rows_fetched"] == len(sim.world.on_hand())


def catalog(warehouse_path: Path) -> list[str]:
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        return [sku for (sku,) in con.execute("SELECT sku FROM valid_catalog ORDER BY sku").fetchall()]


def test_the_catalog_is_read_by_change_and_reconciled_whole_on_its_cadence(sim, warehouse_path):
    first = materializations(pull(sim, warehouse_path, every_hours=24))["raw_catalog"]
    assert first["read"] == "full" and first["rows_fetched"] == len(sim.world.current("products"))
    products = sorted(sim.world.current("products")["sku"])
    with duckdb.connect(str(warehouse_path)) as con:  # what lost change messages would leave behind
        con.execute(  # a product deleted at the source after the first read: no read by change lists a deletion
            "INSERT INTO raw_catalog SELECT 'GONE-1', * EXCLUDE (sku) FROM raw_catalog ORDER BY sku LIMIT 1"
        )
        con.execute(
            "UPDATE raw_catalog SET title = 'stale title' "
            "WHERE sku IN (SELECT sku FROM raw_catalog ORDER BY updated_at LIMIT 2)"  # not re-read at the cursor
        )

    by_change = materializations(pull(sim, warehouse_path, every_hours=24))["raw_catalog"]
    assert by_change["read"] == "changes" and "drift_rows" not in by_change
    assert catalog(warehouse_path) == sorted([*products, "GONE-1"])  # a read by change cannot see either

    full = pull(sim, warehouse_path, every_hours=0)
    meta = materializations(full)["raw_catalog"]

    assert meta["read"] == "full"
    assert (meta["drift_changed"], meta["drift_new"], meta["drift_gone"]) == (2, 0, 1)
    assert check_results(full)["raw_catalog"].passed
    assert catalog(warehouse_path) == products  # the deleted product left valid_catalog; its last values stay raw
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM valid_catalog WHERE title = 'stale title'").fetchone() == (0,)
        assert con.execute("SELECT row_key FROM snapshot_absent WHERE feed = 'catalog'").fetchall() == [("GONE-1",)]
