"""return_risk is refit once per day of the WMS clock (its risk is of the next 30 days), or at every run if told."""

import duckdb
import pytest

from cx_pipeline.demo import seed_qa_history
from tests.helpers import materializations

pytestmark = pytest.mark.slow  # four pipeline runs


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
