"""Inspections through the pipeline: QA's history in the app store, the blocking contract, DHU, the
return-risk model trained and evaluated on the demo world, and the inquiry KPIs."""

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from cx_pipeline import evaluation
from cx_pipeline.core import appstore
from cx_pipeline.demo import seed_qa_history
from cx_pipeline.quality import inspections, returns
from cx_pipeline.quality.checklists import load_checklists
from cx_pipeline.simulator import World
from cx_pipeline.warehouse import connect
from tests.conftest import SharedRun, first_run
from tests.helpers import check_results, materializations


def seed(world: World, warehouse_path: Path) -> Path:
    """The app store with the demo world's inspection history, uploaded as QA would."""
    path = warehouse_path.with_name("app.sqlite")
    assert seed_qa_history(world, path) > 100
    return path


@pytest.fixture
def app_db(sim, warehouse_path: Path) -> Path:
    return seed(sim.world, warehouse_path)


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory: pytest.TempPathFactory) -> SharedRun:
    """One first run over the seeded history, for the module's tests that only read what it left."""
    return first_run(tmp_path_factory.mktemp("seeded_run"), prepare=seed)


def test_inspections_reach_the_warehouse_and_give_defects_per_hundred_units(run_all, app_db, warehouse_path):
    with appstore.connect(app_db) as store:
        (entries,) = store.execute("SELECT count(*) FROM inspections").fetchone()
        (units,) = store.execute("SELECT sum(sample_size) FROM inspections WHERE category = 'apparel'").fetchone()
        (defects,) = store.execute(
            """SELECT sum(d.defects) FROM inspections i JOIN inspection_defects d ON d.inspection_id = i.id
            WHERE i.category = 'apparel' AND d.item = 'sizing'"""
        ).fetchone()

    result = run_all()

    meta = materializations(result)
    assert check_results(result)["inspections"].passed
    assert meta["inspections"]["imported"] == entries
    assert meta["inspection_lots"]["lots"] > 0
    assert Path(meta["inspection_dhu"]["chart"]).read_text().startswith("<?xml")
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        (dhu,) = con.execute(
            """SELECT 100 * sum(defects) / sum(units) FROM inspection_dhu
            WHERE category = 'apparel' AND item = 'sizing'"""
        ).fetchall()[0]
    assert dhu == pytest.approx(100 * defects / units)  # every history lot is inside the 90-day window
    with connect(warehouse_path) as con:
        apparel = inspections.dhu_by(con, "category").set_index("category").loc["apparel"]
    assert apparel["units"] == units  # a lot's sample counts once, not once per checklist item
    again = materializations(run_all())
    assert again["inspections"]["imported"] == 0  # imported once only
    assert again["inspection_lots"]["lots"] == 0  # nothing landed since the last publication: nothing to send


def test_an_entry_that_breaks_its_contract_is_quarantined_and_stops_what_follows(run_all, app_db, warehouse_path):
    with appstore.connect(app_db) as store:  # written around the app, which would refuse it
        lot = store.execute("SELECT * FROM inspection_lots WHERE category = 'toys' LIMIT 1").fetchone()
        cursor = store.execute(
            """INSERT INTO inspections (receipt_id, line_no, sku, category, supplier_id, lot_size, sample_size,
                                        verdict, inspector, inspected_at, entered_at, source)
            VALUES (?, ?, ?, 'toys', ?, ?, 999, 'accept', 'quinn', '2020-01-01T00:00:00+00:00', '', 'form')""",
            [lot["receipt_id"], lot["line_no"], lot["sku"], lot["supplier_id"], lot["lot_size"]],
        )
        store.execute("INSERT INTO inspection_defects VALUES (?, 'warp_drive', 'major', 1)", [cursor.lastrowid])

    result = run_all()

    check = check_results(result)["inspections"]
    assert not check.passed
    broken = {k.split("(")[1].split(",")[0].rstrip(")") for k in check.metadata if k.startswith("expect_")}
    assert broken == {"_known_item", "_sample_as_planned"}
    assert "inspection_dhu" not in materializations(result) and "return_risk" not in materializations(result)
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert con.execute("SELECT DISTINCT row_key FROM quarantine WHERE feed = 'inspections'").fetchall() == [
            (str(cursor.lastrowid),)
        ]


def test_the_return_risk_model_is_trained_evaluated_and_published(seeded_run):
    result, warehouse_path, world = seeded_run
    app_db = warehouse_path.with_name("app.sqlite")

    meta = materializations(result)["return_risk"]
    assert meta["status"] == "scored"
    assert meta["deviance_model"] < meta["deviance_baseline"]
    assert meta["top_decile_capture_model"] > meta["top_decile_capture_baseline"]
    assert Path(meta["chart"]).exists()
    with appstore.connect(app_db) as store:
        ranked = store.execute("SELECT rank, sku, predicted FROM return_risk ORDER BY rank").fetchall()
        drivers = store.execute("SELECT count(*) FROM risk_drivers").fetchone()[0]
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    assert [r["predicted"] for r in ranked] == sorted((r["predicted"] for r in ranked), reverse=True)
    assert drivers == len(returns.segments(load_checklists()))  # every segment of every checklist

    # the evaluation against the world's truth runs on any world (its bars are for `cx-pipeline evaluate-returns`)
    report = evaluation.report(warehouse_path, world)
    assert set(report.figures.columns) >= {"model", "baseline", "oracle"}
    assert len(report.calibration) == 10 and len(report.drivers) == 6
    assert report.capture_ratio > 0


def test_the_inquiry_kpis_are_per_1000_orders_by_reason_and_week(seeded_run):
    result, warehouse_path, _ = seeded_run
    meta = materializations(result)["inquiry_kpis"]
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        week, orders, returns_, per_1000 = con.execute(
            "SELECT week, orders, return_inquiries, return_per_1000 FROM inquiry_kpis WHERE week = ?", [meta["week"]]
        ).fetchall()[0]
        counted = con.execute(
            """SELECT count(*) FROM valid_inquiries WHERE reason = 'return'
            AND date_trunc('week', timezone('UTC', created_at))::DATE = ?""",
            [week],
        ).fetchall()[0][0]
    assert returns_ == counted and per_1000 == pytest.approx(round(1000 * counted / orders, 2))
    assert meta["return_per_1000"] == per_1000
    assert Path(meta["chart"]).exists()


def test_the_model_waits_for_enough_history(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        con.execute(
            """INSERT INTO raw_open_orders VALUES ('O1', 1, 'C1', 'SKU-1', 'WH-EAST', 1, 'shipped',
            '2026-11-01 00:00:00+00', '2026-11-04 00:00:00+00', '2026-11-01 00:00:00+00', 'b', now())"""
        )
        with pytest.raises(returns.NotEnoughHistory, match="spans 10 days; the model needs 30 days"):
            returns.window_days(con, datetime(2026, 11, 11, tzinfo=UTC))
        assert returns.window_days(con, datetime(2026, 12, 11, tzinfo=UTC)) == 40
        assert returns.window_days(con, datetime(2027, 6, 1, tzinfo=UTC)) == 90
