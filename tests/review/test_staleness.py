"""Staleness scoring rules, the review cohort and its cadence, and the rule file of required attributes."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pydantic
import pytest

from cx_pipeline.core import appstore
from cx_pipeline.core.rule_files import RulesError
from cx_pipeline.review import decisions
from cx_pipeline.review.families import load_families
from cx_pipeline.review.staleness import REASON_CODES, StalenessPolicy, assess, export_queue
from cx_pipeline.simulator import REQUIRED_ATTRIBUTES
from cx_pipeline.storefront import stock
from cx_pipeline.warehouse import connect

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
FAMILIES = {"apparel": ["color", "size", "material"]}
COMPLETE = '{"color": "red", "size": "M", "material": "wool"}'


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@pytest.fixture
def con(tmp_path: Path):
    with connect(tmp_path / "w.duckdb") as c:
        yield c


def add_product(con, sku: str, years: float, status: str = "active", attributes: str | None = COMPLETE) -> None:
    con.execute(
        """INSERT INTO raw_catalog VALUES (?, 'A title', 'apparel', 'SUP-01', 9.99, 'EUR', ?, ?, ?, ?, 'b', ?)""",
        [sku, status, ago(years * 365.25), ago(1), attributes, NOW],
    )


def add_receipt(con, sku: str, days_ago: float) -> None:
    n = con.execute("SELECT count(*) FROM raw_receipts").fetchall()[0][0] + 1
    con.execute(
        "INSERT INTO raw_receipts VALUES (?, 1, 'PO-1', 1, ?, 'WH-EAST', 10, 0, NULL, ?, ?, 'b', ?)",
        [f"R{n}", sku, ago(days_ago), ago(days_ago), NOW],
    )


def add_order(con, sku: str, days_ago: float, order_id: str | None = None, line: int = 1) -> None:
    n = con.execute("SELECT count(*) FROM raw_open_orders").fetchall()[0][0] + 1
    con.execute(
        "INSERT INTO raw_open_orders VALUES (?, ?, 'C1', ?, 'WH-EAST', 1, 'shipped', ?, ?, ?, 'b', ?)",
        [order_id or f"O{n}", line, sku, ago(days_ago), ago(days_ago - 3), ago(days_ago), NOW],
    )


def add_inquiry(con, sku: str | None, days_ago: float, order_id: str | None = None, reason: str = "cancellation"):
    n = con.execute("SELECT count(*) FROM raw_inquiries").fetchall()[0][0] + 1
    con.execute(
        "INSERT INTO raw_inquiries VALUES (?, ?, ?, ?, ?, ?, NULL, 'b', ?)",  # no tags
        [f"I{n}", order_id, sku, reason, ago(days_ago), ago(days_ago), NOW],
    )


def out_of_stock_since(con, sku: str, days_ago: float) -> None:
    con.execute("INSERT INTO stock_status_since VALUES (?, 'out_of_stock', ?, NULL)", [sku, ago(days_ago)])


def add_mismatch(con, sku: str, days_ago: float, stale: bool = True) -> None:
    plan = f"plan-{days_ago}"
    con.execute(
        "INSERT OR IGNORE INTO push_plans VALUES (?, ?, 'rest', 1, 1, 1, 0, 0, 0, 0, 1, 0.2, false, 'pushed')",
        [plan, ago(days_ago)],
    )
    con.execute(
        "INSERT INTO push_changes VALUES (?, ?, 'to_out_of_stock', 'in_stock', 5, 'out_of_stock', 0, ?)",
        [plan, sku, stale],
    )


def decide(con, sku: str, decision: str, days_ago: float) -> None:
    n = con.execute("SELECT count(*) FROM review_decisions").fetchall()[0][0] + 1
    con.execute(
        """INSERT INTO review_decisions (decision_id, sku, decision, note, reviewer, decided_at, _batch_id, _raw,
        _loaded_at) VALUES (?, ?, ?, '', 'maria', ?, 'b', '{}', ?)""",
        [n, sku, decision, ago(days_ago), NOW],
    )


def well_kept(con, sku: str, years: float) -> None:
    """A product with recent receipts and orders and a complete listing: only its age could speak against it."""
    add_product(con, sku, years)
    add_receipt(con, sku, 5)
    add_order(con, sku, 2)


def assessed(con, **policy: object) -> dict[str, dict]:
    assess(con, StalenessPolicy(**policy), FAMILIES, NOW, whole=True)  # the rows written here come in no batch
    frame = con.sql("SELECT * FROM stale_products").df()
    return {row["sku"]: row for row in frame.to_dict("records")}


def history(con, days: int) -> None:
    """Receipts and orders on record going back `days`, for an unrelated product."""
    if not con.execute("SELECT 1 FROM raw_catalog WHERE sku = 'OTHER'").fetchall():
        well_kept(con, "OTHER", 0.5)
    add_receipt(con, "OTHER", days)
    add_order(con, "OTHER", days)


def test_every_rule_adds_its_points_and_a_reason_in_words(con):
    history(con, 200)
    add_product(con, "STALE", 4.2, attributes='{"color": "red", "size": null}')
    add_receipt(con, "STALE", 75)
    add_order(con, "STALE", 50, order_id="O-STALE")
    out_of_stock_since(con, "STALE", 21)
    for days in (3, 10, 12):
        add_inquiry(con, "STALE", days)
    add_inquiry(con, "STALE", 40)  # outside the 30-day window
    add_inquiry(con, "STALE", 5, reason="return")  # not a cancellation
    add_mismatch(con, "STALE", 2)
    add_mismatch(con, "STALE", 9)

    row = assessed(con)["STALE"]

    assert list(row["reasons"]) == [
        "registered 4.2 years ago",
        "no receipt for 75 days",
        "no order for 50 days",
        "out of stock for 21 days",
        "3 cancellation inquiries in 30 days",
        "storefront showed the wrong stock status in 2 runs",
        "catalog 33 % complete (missing size, material)",
    ]
    assert list(row["reason_codes"]) == list(REASON_CODES)  # every rule applies
    assert row["score"] == 1 + 2 + 2 + 2 + 3 + 2 + 1
    assert row["flagged"] and row["long_registered"] and row["in_queue"]
    assert row["review_state"] == "never_reviewed"


def test_a_well_kept_product_is_not_flagged_however_old(con):
    history(con, 200)
    well_kept(con, "OLD", 5.0)
    well_kept(con, "YOUNG", 0.5)
    rows = assessed(con)

    assert list(rows["OLD"]["reasons"]) == ["registered 5.0 years ago"]
    assert (rows["OLD"]["score"], rows["OLD"]["flagged"], rows["OLD"]["review_state"]) == (1, False, "not_flagged")
    assert rows["YOUNG"]["score"] == 0 and rows["YOUNG"]["review_state"] == "not_in_cohort"
    assert not rows["OLD"]["in_queue"] and not rows["YOUNG"]["in_queue"]


def test_nothing_on_record_counts_only_once_the_history_reaches_back_far_enough(con):
    add_product(con, "NEVER", 3.0)
    history(con, 20)  # 20 days of receipts and orders: too short to say "none for 60 / 45 days"
    assert list(assessed(con)["NEVER"]["reasons"]) == ["registered 3.0 years ago"]

    history(con, 100)
    assert list(assessed(con)["NEVER"]["reasons"]) == [
        "registered 3.0 years ago",
        "no receipt on record (100 days of history)",
        "no order on record (100 days of history)",
    ]


def test_an_inquiry_without_a_sku_counts_for_every_sku_of_its_order(con):
    history(con, 10)
    for sku in ("A", "B"):
        well_kept(con, sku, 3)
    well_kept(con, "C", 3)
    add_order(con, "A", 8, order_id="O-AB", line=1)
    add_order(con, "B", 8, order_id="O-AB", line=2)
    add_inquiry(con, None, 4, order_id="O-AB")
    add_inquiry(con, None, 3, order_id="O-AB")

    rows = assessed(con)

    assert rows["A"]["cancellations_30d"] == rows["B"]["cancellations_30d"] == 2
    assert rows["C"]["cancellations_30d"] == 0
    assert "2 cancellation inquiries in 30 days" in list(rows["A"]["reasons"])


def test_thresholds_and_points_are_configuration(con):
    history(con, 200)
    add_product(con, "P", 1.5)
    add_receipt(con, "P", 40)
    add_order(con, "P", 2)

    default = assessed(con)["P"]
    assert (default["score"], default["long_registered"]) == (0, False)

    tuned = assessed(con, long_registered_years=1.0, no_receipt_days=30, points_no_receipt=5, flag_score=6)
    assert list(tuned["P"]["reason_codes"]) == ["registered", "no_receipt"]
    assert tuned["P"]["score"] == 6 and tuned["P"]["flagged"] and tuned["P"]["in_queue"]


def test_policy_settings_are_validated():
    with pytest.raises(pydantic.ValidationError, match="flag_score"):
        StalenessPolicy(flag_score=0)
    with pytest.raises(pydantic.ValidationError, match="points_no_order"):
        StalenessPolicy(points_no_order=-1)


def stale(con, sku: str) -> None:
    """A long-registered product that is flagged on every assessment."""
    add_product(con, sku, 4.0, attributes='{"color": "red"}')
    add_receipt(con, sku, 100)


@pytest.mark.parametrize(
    ("decision", "days_ago", "state"),
    [
        ("keep", 10, "not_due"),
        ("keep", 179, "not_due"),
        ("keep", 181, "due"),
        ("refresh_listing", 59, "not_due"),
        ("refresh_listing", 61, "due"),
        ("discontinue", 29, "not_due"),
        ("discontinue", 31, "due"),  # the catalog still lists it a month after "discontinue"
    ],
)
def test_a_decision_keeps_the_product_out_of_the_queue_until_its_next_review_is_due(con, decision, days_ago, state):
    history(con, 300)
    stale(con, "P")
    decide(con, "P", decision, days_ago)

    row = assessed(con)["P"]

    assert row["review_state"] == state
    assert row["in_queue"] == (state == "due")
    assert row["last_decision"] == decision
    cadence = {"keep": 180, "refresh_listing": 60, "discontinue": 30}[decision]
    assert row["next_review_due"] == ago(days_ago) + timedelta(days=cadence)


def test_the_latest_decision_counts_and_cadence_is_configuration(con):
    history(con, 300)
    stale(con, "P")
    decide(con, "P", "refresh_listing", 200)
    decide(con, "P", "keep", 100)
    assert assessed(con)["P"]["review_state"] == "not_due"
    assert assessed(con, keep_days=90)["P"]["review_state"] == "due"


def test_a_cancellation_spike_after_the_decision_brings_the_product_back_early(con):
    history(con, 300)
    stale(con, "P")
    for days in (20, 19, 18):  # before the decision: already weighed by the reviewer
        add_inquiry(con, "P", days)
    decide(con, "P", "keep", 10)
    add_inquiry(con, "P", 5)
    add_inquiry(con, "P", 4)
    assert assessed(con)["P"]["review_state"] == "not_due"

    add_inquiry(con, "P", 1)  # the third since the decision
    row = assessed(con)["P"]
    assert (row["review_state"], row["in_queue"]) == ("material_change", True)


def test_a_status_mismatch_found_after_the_decision_brings_the_product_back_early(con):
    history(con, 300)
    stale(con, "P")
    add_mismatch(con, "P", 12)
    decide(con, "P", "keep", 10)
    assert assessed(con)["P"]["review_state"] == "not_due"

    add_mismatch(con, "P", 1)
    assert assessed(con)["P"]["review_state"] == "material_change"


def test_a_flip_the_wms_made_in_the_same_run_is_not_a_mismatch(con):
    """A sell-out pushed by the run that saw it is the push working, not a stale listing."""
    history(con, 300)
    stale(con, "P")
    add_mismatch(con, "P", 2, stale=False)
    row = assessed(con)["P"]
    assert row["mismatches_30d"] == 0 and "status_mismatch" not in list(row["reason_codes"])


def test_discontinued_products_leave_the_cohort(con):
    history(con, 300)
    stale(con, "P")
    con.execute("UPDATE raw_catalog SET status = 'discontinued' WHERE sku = 'P'")
    row = assessed(con)["P"]
    assert (row["review_state"], row["in_queue"]) == ("retired", False)


def test_days_out_of_stock_count_from_the_run_that_first_saw_it(con):
    add_product(con, "P", 3)
    empty = stock.read_overrides(None, set())
    stock.build_stock_position(con, stock.StockPolicy(), empty, ago(20))  # no stock on hand: out of stock
    stock.build_stock_position(con, stock.StockPolicy(), empty, ago(0))
    assert assessed(con)["P"]["days_out_of_stock"] == 20

    con.execute("INSERT INTO raw_on_hand VALUES ('P', 'WH-EAST', 50, 0, 0, 'b', ?)", [NOW])
    stock.build_stock_position(con, stock.StockPolicy(), empty, NOW, whole=True)  # a row in no batch
    assert assessed(con)["P"]["days_out_of_stock"] == 0


def test_the_bundled_families_match_the_demo_catalog():
    assert load_families() == REQUIRED_ATTRIBUTES


def test_a_broken_families_file_is_reported_whole(tmp_path):
    path = tmp_path / "families.yaml"
    path.write_text("apparel: color\nhome: [color, color]\ntoys: [brand]\n")
    with pytest.raises(RulesError) as error:
        load_families(path)
    assert "apparel: expected a list of attribute names" in str(error.value)
    assert "home: an attribute is listed twice" in str(error.value)

    path.write_text("apparel: [color\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_families(path)
    with pytest.raises(RulesError, match="no such file"):
        load_families(tmp_path / "missing.yaml")


def test_the_push_plan_tells_a_stale_listing_from_a_change_the_wms_just_made(con):
    from cx_pipeline.storefront import push

    add_product(con, "P", 3)
    overrides = stock.read_overrides(None, set())
    con.register("shop_in_stock", pd.DataFrame({"sku": ["P"], "status": ["in_stock"], "quantity": [50]}))

    def run(run_id: str, on_hand: int) -> bool | None:
        con.execute("DELETE FROM raw_on_hand WHERE sku = 'P'")  # this run's snapshot
        con.execute("INSERT INTO raw_on_hand VALUES ('P', 'WH-EAST', ?, 0, 0, 'b', ?)", [on_hand, NOW])
        stock.build_stock_position(con, stock.StockPolicy(), overrides, NOW, run_id, whole=True)  # no batch
        push.plan(con, "shop_in_stock", plan_id=run_id, adapter="rest", max_flip_share=1, force=False, now=NOW)
        rows = con.execute("SELECT shop_was_stale FROM push_changes WHERE plan_id = ? AND change <> 'quantity'",
                           [run_id]).fetchall()  # fmt: skip
        return rows[0][0] if rows else None

    assert run("r1", 50) is None  # the shop agrees
    assert run("r2", 0) is False  # sold out in this run: the push follows the WMS
    assert run("r3", 0) is True  # the shop still (again) shows in stock a run later: a stale listing


def test_the_queue_csv_is_written_again_only_when_the_queue_changed_or_the_file_is_gone(con, tmp_path):
    history(con, 200)
    add_product(con, "STALE", 5)
    csv_path = tmp_path / "reports" / "queue.csv"
    assessed(con)

    assert export_queue(con, csv_path)
    first = csv_path.read_text()
    assert "STALE" in first
    assert not export_queue(con, csv_path)  # nothing changed: the file stays as written

    add_product(con, "STALE-TOO", 6)
    assessed(con)
    assert export_queue(con, csv_path)
    assert "STALE-TOO" in csv_path.read_text()

    csv_path.unlink()
    assert export_queue(con, csv_path)
    assert csv_path.exists()


def test_a_later_publication_sends_what_changed_among_the_products_assessed_again(con, tmp_path, monkeypatch):
    monkeypatch.setattr(decisions, "COPY_CHUNK", 2)  # rows reach the app in several chunks, the next read ahead
    history(con, 200)
    for sku in ("A", "B", "C", "D"):
        add_product(con, sku, 5)  # long registered, no receipts or orders: flagged, in the cohort
    assessed(con)

    def queue(store) -> dict[str, float]:
        return dict(store.execute("SELECT sku, score FROM review_queue").fetchall())

    def charted(store) -> list[tuple]:
        return [tuple(r) for r in store.execute("SELECT sku, day, received FROM review_history ORDER BY sku, day")]

    with appstore.connect(tmp_path / "app.sqlite") as store:
        first = decisions.publish_queue(store, con, "run-1")
        assert (first.sent, first.cohort) == (4, 4)
        # as an assessment of A, B and C alone leaves them: A scored anew, B out of the cohort, C the same
        con.execute("UPDATE stale_products SET assessment = assessment + 1 WHERE sku IN ('A', 'B', 'C')")
        con.execute("UPDATE stale_products SET score = score + 1 WHERE sku = 'A'")
        con.execute("UPDATE stale_products SET product_status = 'discontinued' WHERE sku = 'B'")
        add_receipt(con, "D", 0)  # today's history of D, not assessed again, changes
        later = decisions.publish_queue(store, con, "run-2")
        assert (later.sent, later.withdrawn, later.cohort) == (1, 1, 3)  # A sent, B withdrawn, C and D not sent
        by_difference, history_by_difference = queue(store), charted(store)
        assert set(by_difference) == {"A", "C", "D"} and by_difference["A"] == by_difference["D"] + 1
        assert ("D", f"{NOW:%Y-%m-%d}", 10) in history_by_difference
        decisions.publish_queue(store, con, "run-2b")  # nothing new
        assert queue(store) == by_difference and charted(store) == history_by_difference

        store.execute("DELETE FROM publications WHERE name = 'review_queue'")  # the next one is whole
        whole = decisions.publish_queue(store, con, "run-3")
        assert whole.sent == 3 and queue(store) == by_difference and charted(store) == history_by_difference
