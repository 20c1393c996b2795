"""`stock_position` positions again only the SKUs whose rows may have changed since the last run (named by a batch
it had not seen, or held), and leaves the tables a whole build would; anything its basis rests on changing (the
policy, the overrides, the quarantine of batches already seen, a snapshot's absent rows) makes it position all."""

import pytest

from cx_pipeline.storefront import stock
from cx_pipeline.warehouse import connect
from tests.helpers import WORLD_NOW, materializations

pytestmark = pytest.mark.slow  # pipeline runs

TABLES = ("stock_position", "stock_by_warehouse", "stock_status_since", "stock_holds")


def snapshot(con) -> dict[str, list[tuple]]:
    return {table: sorted(con.execute(f"FROM {table}").fetchall(), key=repr) for table in TABLES}


def test_a_later_run_positions_only_what_changed_and_agrees_with_a_whole_build(run_all, sim, warehouse_path):
    first = materializations(run_all())["stock_position"]
    assert first["positioned_whole"]
    sim.advance(5)  # sales, receipts and stock moves since
    result = run_all()
    later = materializations(result)["stock_position"]
    assert not later["positioned_whole"] and 0 < later["positioned"] < later["skus"]
    with connect(warehouse_path) as con:
        built = snapshot(con)
        empty = stock.read_overrides(None, set())  # the same run again, whole: no status or hold moves
        assert stock.build_stock_position(con, stock.StockPolicy(), empty, WORLD_NOW, result.run_id, whole=True) is None
        assert snapshot(con) == built


def test_a_new_policy_or_an_emptied_table_is_positioned_whole(run_all, warehouse_path):
    assert run_all().success
    empty = stock.read_overrides(None, set())
    with connect(warehouse_path) as con:
        assert stock.build_stock_position(con, stock.StockPolicy(), empty, WORLD_NOW) == 0  # nothing new, none held
        assert stock.build_stock_position(con, stock.StockPolicy(floor=3), empty, WORLD_NOW) is None
        assert stock.build_stock_position(con, stock.StockPolicy(floor=3), empty, WORLD_NOW) == 0
        con.execute("DELETE FROM stock_position WHERE sku IN (SELECT sku FROM stock_position LIMIT 1)")
        assert stock.build_stock_position(con, stock.StockPolicy(floor=3), empty, WORLD_NOW) is None


def test_a_new_batch_with_quarantined_rows_does_not_make_the_next_run_position_everything(run_all, warehouse_path):
    assert run_all().success
    empty = stock.read_overrides(None, set())
    with connect(warehouse_path) as con:
        con.execute(  # a new on-hand batch, judged, one of its rows quarantined (its SKU is held)
            """INSERT INTO ingest_batches BY NAME SELECT * REPLACE ('on_hand-new' AS batch_id)
            FROM ingest_batches WHERE feed = 'on_hand' LIMIT 1"""
        )
        con.execute(
            """INSERT INTO quarantine VALUES
            ('on_hand', 'on_hand-new', 'a rule', 'SKU-X|WH-EAST', '{"sku": "SKU-X"}', now(), NULL)"""
        )
        assert stock.build_stock_position(con, stock.StockPolicy(), empty, WORLD_NOW) is not None
        assert stock.build_stock_position(con, stock.StockPolicy(), empty, WORLD_NOW) is not None  # held ones only
