"""Within a WMS day `stale_products` assesses again only the products whose rows may have changed, and the table it
leaves is the one a whole assessment would build; anything its basis rests on changing makes it assess them all."""

from datetime import timedelta

import pytest

from cx_pipeline.review import staleness
from cx_pipeline.review.families import load_families
from cx_pipeline.warehouse import connect
from tests.helpers import materializations

pytestmark = pytest.mark.slow  # pipeline runs

ROW = "* EXCLUDE (assessed_at, assessment)"  # when and by which assessment each row was last assessed differ by design


def rows_differing(con) -> int:
    """Rows of `stale_products` against a whole assessment at the same clock and policy."""
    (now,) = con.execute("SELECT assessed_at FROM stale_assessment").fetchall()[0]
    con.execute(f"CREATE OR REPLACE TEMP TABLE kept AS SELECT {ROW} FROM stale_products")
    assert staleness.assess(con, staleness.StalenessPolicy(), load_families(None), now, whole=True) is None
    (count,) = con.execute(
        f"""SELECT count(*) FROM ((FROM kept EXCEPT ALL SELECT {ROW} FROM stale_products)
        UNION ALL (SELECT {ROW} FROM stale_products EXCEPT ALL FROM kept))"""
    ).fetchall()[0]
    return count


def test_a_later_run_the_same_day_assesses_only_what_changed_and_agrees_with_a_whole_assessment(
    run_all, sim, warehouse_path
):
    first = materializations(run_all())["stale_products"]
    assert first["assessed_whole"]
    sim.advance(5)  # the same day: orders, receipts, inquiries, pushes since
    later = materializations(run_all())["stale_products"]
    assert not later["assessed_whole"] and 0 < later["assessed"] < later["products"]
    with connect(warehouse_path) as con:
        assert rows_differing(con) == 0


def test_a_new_policy_an_emptied_table_or_a_new_day_is_assessed_whole(run_all, warehouse_path):
    assert run_all().success
    families = load_families(None)
    with connect(warehouse_path) as con:
        (now,) = con.execute("SELECT assessed_at FROM stale_assessment").fetchall()[0]
        policy = staleness.StalenessPolicy()
        assert staleness.assess(con, policy, families, now) == 0  # nothing changed: nothing assessed again
        assert staleness.assess(con, policy.model_copy(update={"flag_score": 4.0}), families, now) is None
        con.execute("DELETE FROM stale_products WHERE sku IN (SELECT sku FROM stale_products LIMIT 1)")
        assert staleness.assess(con, policy, families, now) is None
        noon = (now + timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
        assert staleness.assess(con, policy, families, noon) is None  # a new day
        # the WMS clock is estimated from the source's, and may step back a little: still the same day's basis
        assert staleness.assess(con, policy, families, noon - timedelta(minutes=5)) is not None


def test_a_new_batch_with_quarantined_rows_does_not_make_the_next_run_assess_everything(run_all, warehouse_path):
    assert run_all().success
    families, policy = load_families(None), staleness.StalenessPolicy()
    with connect(warehouse_path) as con:
        (now,) = con.execute("SELECT assessed_at FROM stale_assessment").fetchall()[0]
        con.execute(  # a new batch of inquiries, judged, one of its rows quarantined
            """INSERT INTO ingest_batches BY NAME SELECT * REPLACE ('inquiries-new' AS batch_id)
            FROM ingest_batches WHERE feed = 'inquiries' LIMIT 1"""
        )
        con.execute(
            """INSERT INTO quarantine VALUES
            ('inquiries', 'inquiries-new', 'a rule', 'INQ-X', '{"inquiry_id": "INQ-X"}', now(), NULL)"""
        )
        assert staleness.assess(con, policy, families, now) is not None  # the new batch: by what it touched
        assert staleness.assess(con, policy, families, now) == 0  # and then nothing more
