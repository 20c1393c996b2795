"""Day-grained quality assets: return_risk is refit once per day of the WMS clock (its risk is of the next 30 days),
or at every run if told; the DHU by segment is rebuilt when new inspections came in or a day turned."""

import duckdb
import pytest

from cx_pipeline.core import appstore
from cx_pipeline.demo import seed_qa_history
from cx_pipeline.quality import aql, inspections
from cx_pipeline.quality.checklists import load_checklists
from tests.helpers import materializations

pytestmark = pytest.mark.slow  # pipeline runs


def test_the_risk_is_refit_at_a_days_first_run_or_at_every_run_if_told(run_all, sim, warehouse_path):
    seed_qa_history(sim.world, warehouse_path.with_name("app.sqlite"))

    def status(config: dict | None = None) -> str:
        result = run_all(config)
        assert result.success
        return materializations(result)["return_risk"]["status"]

    assert status() == "scored"
    sim.advance(3)  # the same day, three hours on
    assert status().startswith("kept: scored at ")
    assert status({"return_risk": {"every_run": True}}) == "scored"
    sim.advance(24)
    assert status() == "scored"
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM return_risk_metrics").fetchone() == (3,)


def test_the_dhu_is_rebuilt_only_with_new_inspections_or_on_a_new_day(run_all, sim, warehouse_path):
    app_db = warehouse_path.with_name("app.sqlite")
    seed_qa_history(sim.world, app_db)

    def status() -> str:
        result = run_all()
        assert result.success
        return materializations(result)["inspection_dhu"]["status"]

    assert status() == "built"
    sim.advance(3)
    assert status().startswith("kept: built today")
    with appstore.connect(app_db) as store:  # QA enters a result
        lot = store.execute(
            """SELECT receipt_id, line_no, category FROM inspection_lots l WHERE NOT EXISTS
               (SELECT 1 FROM inspections i WHERE i.receipt_id = l.receipt_id AND i.line_no = l.line_no) LIMIT 1"""
        ).fetchone()
        checklists = load_checklists()
        clean = {(item, severity): 0 for item in checklists.categories[lot[2]] for severity in aql.SEVERITIES}
        inspections.record(store, inspections.Entry(lot[0], lot[1], clean), checklists, "qa", now=sim.world.clock)
    assert status() == "built"
    sim.advance(24)
    assert status() == "built"
