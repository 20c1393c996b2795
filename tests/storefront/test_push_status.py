"""The stock position, the push plan and the push as the assets call them (one library call each), on a
hand-built warehouse in a DuckDB file and an in-memory shop: what is planned, pushed, settled, reported as a
dry run, and what makes a run fail though the rest was pushed."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cx_pipeline.ingest.contracts import latest_verdicts
from cx_pipeline.ingest.schema import log_import
from cx_pipeline.storefront import push, stock
from cx_pipeline.storefront.adapters.base import STATE_COLUMNS, StockUpdate, StorefrontAdapter, WriteResult
from cx_pipeline.warehouse import connect

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
POLICY = stock.StockPolicy()  # no safety buffer, floor 1
# On hand A 10 (in stock), B 1 (at the floor: out of stock), C 0 with 3 ordered (oversold by 3).
STOCK = {"A": 10, "B": 1, "C": 0}
# What the shop shows before the first push: A out of stock, B and C in stock.
SHOWN = {"A": ("out_of_stock", 0), "B": ("in_stock", 5), "C": ("in_stock", 2)}
DESIRED = {"A": ("in_stock", 10), "B": ("out_of_stock", 0), "C": ("out_of_stock", 0)}


class Shop(StorefrontAdapter):
    """A storefront in memory: it refuses the SKUs in `refuse`, and shows customers `customer_view` where given
    instead of what was written."""

    name = "memory"
    batch_size = 2

    def __init__(
        self,
        shows: dict[str, tuple[str, int]],
        refuse: Sequence[str] = (),
        customer_view: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self.shows = dict(shows)
        self.refuse = set(refuse)
        self.customer_view = customer_view or {}

    def check(self) -> None:
        pass

    def read(self) -> pd.DataFrame:
        return pd.DataFrame([(sku, *state) for sku, state in self.shows.items()], columns=list(STATE_COLUMNS))

    def write(self, updates: Sequence[StockUpdate], key: str) -> list[WriteResult]:
        results = []
        for u in updates:
            if u.sku in self.refuse:
                results.append(WriteResult(u.sku, False, "locked by a merchandiser"))
                continue
            self.shows[u.sku] = self.customer_view.get(u.sku, (u.status, u.quantity))
            results.append(WriteResult(u.sku, True, "ok", *self.shows[u.sku]))
        return results


def add_product(con: duckdb.DuckDBPyConnection, sku: str, on_hand: int) -> None:
    con.execute(
        "INSERT INTO raw_catalog VALUES (?, ?, 'home', 'SUP-1', 10, 'EUR', 'active', ?, ?, NULL, 'b', ?)",
        [sku, f"Product {sku}", NOW - timedelta(days=400), NOW, NOW],
    )
    con.execute("INSERT INTO raw_on_hand VALUES (?, 'WH-EAST', ?, 0, 0, 'b', ?)", [sku, on_hand, NOW])


@pytest.fixture
def con(tmp_path: Path):
    with connect(tmp_path / "w.duckdb") as c:
        for sku, on_hand in STOCK.items():
            add_product(c, sku, on_hand)
        c.execute(
            "INSERT INTO raw_open_orders VALUES ('O1', 1, 'C1', 'C', 'WH-EAST', 3, 'open', ?, ?, ?, 'b', ?)",
            [NOW, NOW + timedelta(days=2), NOW, NOW],
        )
        yield c


def plan(con: duckdb.DuckDBPyConnection, shop: Shop, plan_id: str, **guard: object) -> push.PlanOutcome:
    """Position and plan, as one run's `stock_position` and `storefront_push_plan` do them."""
    stock.refresh_position(con, POLICY, None, NOW, plan_id)
    con.register("shop_read", shop.read())
    return push.settle_and_plan(
        con, "shop_read", plan_id=plan_id, adapter=shop.name, now=NOW,
        **{"max_flip_share": 1.0, "force": False, **guard},
    )  # fmt: skip


def status(con: duckdb.DuckDBPyConnection, plan_id: str) -> str:
    return push.plan_row(con, plan_id)["status"]


def test_the_position_counts_what_can_be_sold_and_names_the_most_oversold(con):
    position = stock.refresh_position(con, POLICY, None, NOW, "run-1")

    assert position.counts == {
        "skus": 3, "in_stock": 1, "out_of_stock": 2, "oversold": 1, "held": 0, "overridden": 0, "units_reserved": 3
    }  # fmt: skip
    assert position.most_oversold.to_dict("records") == [
        {"sku": "C", "on_hand": 0, "in_qc": 0, "damaged": 0, "reserved": 3, "available": -3}
    ]


def test_a_bad_overrides_file_changes_nothing(con, tmp_path):
    stock.refresh_position(con, POLICY, None, NOW, "run-1")
    bad = tmp_path / "overrides.csv"
    bad.write_text("sku,floor\nA,20\nNOT-IN-CATALOG,1\n")

    with pytest.raises(stock.OverridesError, match="NOT-IN-CATALOG"):
        stock.refresh_position(con, POLICY, bad, NOW, "run-2")
    assert con.execute("SELECT publish_status FROM stock_position WHERE sku = 'A'").fetchone() == ("in_stock",)

    good = tmp_path / "good.csv"
    good.write_text("sku,floor\nA,20\n")
    assert stock.refresh_position(con, POLICY, good, NOW, "run-3").counts["overridden"] == 1


def test_a_plan_is_pushed_audited_and_marked_and_the_next_plan_finds_nothing_to_do(con):
    shop = Shop(SHOWN)
    planned = plan(con, shop, "run-1")
    assert (planned.row["changes"], planned.row["to_out_of_stock"], planned.row["back_in_stock"]) == (3, 2, 1)
    assert planned.settled.empty and planned.unlisted == [] and set(planned.diff["sku"]) == {"A", "B", "C"}

    pushed = push.push_plan(con, shop, "run-1", lambda: NOW, max_held_runs=3)

    assert (pushed.report.batches, pushed.report.pushed, pushed.report.failed) == (2, 3, 0)
    assert pushed.audit.to_dict("records") == [{"state": "ok", "skus": 3}]
    assert pushed.mismatches == 0 and pushed.problems == []
    assert shop.shows == DESIRED and status(con, "run-1") == "pushed"
    assert plan(con, shop, "run-2").row["changes"] == 0


def test_refused_and_mismatched_skus_fail_the_run_and_say_why(con):
    shop = Shop(SHOWN, refuse=["B"], customer_view={"C": ("in_stock", 1)})
    plan(con, shop, "run-1")

    pushed = push.push_plan(con, shop, "run-1", lambda: NOW, max_held_runs=3)

    assert pushed.audit.set_index("state")["skus"].to_dict() == {"mismatch": 1, "ok": 1, "refused": 1}
    assert pushed.mismatches == 1 and pushed.report.failed == 2
    (problem,) = pushed.problems
    assert problem.startswith(
        "2 SKUs were not updated; they are in push_audit and the next run pushes them again. First errors:\n"
    )
    assert "B: locked by a merchandiser" in problem and "C: the shop accepted the write but shows" in problem
    assert status(con, "run-1") == "partly_pushed"


def quarantine_stock_of(con: duckdb.DuckDBPyConnection, sku: str) -> None:
    """A bad on-hand row of `sku`: its SKU is held."""
    con.execute(
        """INSERT INTO quarantine VALUES ('on_hand', 'b', 'expect_column_values_to_be_between(on_hand)',
        ? || '|WH-EAST', json_object('sku', ?, 'warehouse', 'WH-EAST', 'on_hand', -4), ?, NULL)""",
        [sku, sku, NOW],
    )


def test_a_sku_held_too_many_runs_fails_the_push_though_the_rest_went_out(con):
    quarantine_stock_of(con, "A")
    shop = Shop(SHOWN)
    for run in ("run-1", "run-2", "run-3"):
        plan(con, shop, run)

    pushed = push.push_plan(con, shop, "run-3", lambda: NOW, max_held_runs=3)

    assert pushed.report.pushed == 2 and shop.shows["A"] == SHOWN["A"]  # A is held: left as the shop has it
    assert pushed.problems == [
        "1 SKUs have been held for 3 or more runs in a row, so the shop still shows their old stock: "
        "A (on_hand, 3 runs). Fix the rows the contract quarantined (or the snapshot that lost them); see "
        "stock_holds and quarantine."
    ]
    assert push.push_plan(con, shop, "run-3", lambda: NOW, max_held_runs=4).problems == []


def test_a_dry_run_marks_the_plan_and_a_push_needs_a_plan_from_its_own_run(con):
    plan(con, Shop(SHOWN), "run-1")

    assert push.mark_dry_run(con, "run-1") == 3
    assert status(con, "run-1") == "dry_run"
    with pytest.raises(LookupError, match="storefront_push_plan must run in the same run"):
        push.mark_dry_run(con, "run-2")
    with pytest.raises(LookupError, match="storefront_push_plan must run in the same run"):
        push.push_plan(con, Shop(SHOWN), "run-2", lambda: NOW, max_held_runs=3)


def test_the_next_plan_settles_a_push_whose_run_died_after_sending(con):
    shop = Shop(SHOWN)
    plan(con, shop, "run-1")
    sent = [StockUpdate(sku, *DESIRED[sku], *SHOWN[sku]) for sku in ("A", "B")]
    push.record_sent(con, "run-1", 1, "run-1-1", shop.name, sent, NOW)
    shop.write(sent[:1], "run-1-1")  # the shop applied A; the run died before B, and before recording either

    planned = plan(con, shop, "run-2")

    assert planned.settled.to_dict("records") == [
        {"interrupted_plan": "run-1", "sent_unanswered": 2, "applied": 1, "not_applied": 1}
    ]
    assert status(con, "run-1") == "interrupted"
    assert set(planned.diff["sku"]) == {"B", "C"}  # what is still wrong is planned again


def test_nothing_is_pushed_from_a_stock_input_that_blocked_or_was_never_judged(con):
    for feed, batch, verdict in (("catalog", "B-CAT", "passed"), ("on_hand", "B-OH", "blocked"),
                                 ("open_orders", "B-OO", None)):  # fmt: skip
        log_import(con, batch, feed, "run-1", NOW, 1)
        if verdict:
            con.execute("UPDATE ingest_batches SET judged_at = ?, verdict = ? WHERE batch_id = ?",
                        [NOW, verdict, batch])  # fmt: skip
    quarantine_stock_of(con, "B")
    stock.refresh_position(con, POLICY, None, NOW, "run-1")

    inputs = latest_verdicts(con, stock.STOCK_INPUTS)

    assert list(inputs.blocking["feed"]) == ["on_hand", "open_orders"]
    assert inputs.table.set_index("feed")["verdict"].to_dict() == {
        "catalog": "passed", "on_hand": "blocked", "open_orders": None
    }  # fmt: skip
    assert stock.held_skus(con).to_dict("records") == [{"sku": "B", "held_by": "on_hand"}]
