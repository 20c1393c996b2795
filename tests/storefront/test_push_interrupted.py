"""A push that dies between sending a batch and recording the shop's answer: the batch is audited as sent
before the write, and the next run's storefront read settles it (applied or not), never leaving it planned.

The crash is real: a separate process runs the pipeline against the simulator and exits on the spot (no
cleanup, no DuckDB checkpoint) the moment the shop has answered its second batch.
"""

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import duckdb
import pytest

from cx_pipeline import warehouse
from cx_pipeline.assets.resources import StorefrontResource
from cx_pipeline.ingest.http import ApiClient
from cx_pipeline.storefront import push
from cx_pipeline.storefront.adapters.base import StockUpdate, StorefrontAdapter, WriteResult
from cx_pipeline.storefront.adapters.rest import RestStorefront
from tests.helpers import TOKEN, materializations, nodes, resources

pytestmark = pytest.mark.slow  # a pipeline killed mid-push in a subprocess

BATCH = "/storefront/stock/batch"
BATCH_SIZE = 10  # small batches: the first plan of the test world (39 changes) has four
CRASH_AT = 2
CRASHED = 77  # the dying process's exit status
ROOT = Path(__file__).resolve().parents[2]
PINNED = datetime(2026, 11, 16, 6, tzinfo=UTC)


class CrashingStorefront(RestStorefront):
    """The REST storefront, except that the process dies as soon as the shop has answered batch `crash_at`,
    before the pipeline can record that answer (as a kill -9 or a lost machine would leave it). The shop
    gives up half way through that batch (the simulator's `partial` fault), so some of it is applied and
    some is not."""

    def __init__(self, client: ApiClient, batch_size: int, crash_at: int) -> None:
        super().__init__(client, batch_size)
        self.crash_at = crash_at

    def write(self, updates: Sequence[StockUpdate], key: str) -> list[WriteResult]:
        if key.rsplit("-", 1)[1] != str(self.crash_at):
            return super().write(updates, key)
        self.client.post_json("/_sim/faults", {"path": BATCH, "kind": "partial", "times": 1})
        super().write(updates, key)
        os._exit(CRASHED)


class CrashingStorefrontResource(StorefrontResource):
    crash_at: int = CRASH_AT

    def build(self) -> StorefrontAdapter:
        rest = super().build()
        assert isinstance(rest, RestStorefront)
        return CrashingStorefront(rest.client, self.batch_size, self.crash_at)


def push_and_die(url: str, warehouse_path: str) -> None:
    """The ingest and storefront part of the graph, with a storefront adapter that kills the process."""
    storefront = CrashingStorefrontResource(url=url, token=TOKEN, backoff_seconds=0.05, batch_size=BATCH_SIZE)
    dg.materialize(
        nodes("ingest", "storefront"),
        resources={**resources(SimpleNamespace(url=url), Path(warehouse_path)), "storefront": storefront},
        raise_on_error=False,
    )
    sys.exit(f"the push never reached batch {CRASH_AT}")


def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_a_push_killed_after_sending_is_settled_by_the_next_runs_storefront_read(sim, run_all, warehouse_path):
    died = subprocess.run(
        [sys.executable, "-m", "tests.storefront.test_push_interrupted", sim.url, str(warehouse_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert died.returncode == CRASHED, died.stderr[-4000:]
    [(old_plan, status)] = query(warehouse_path, "SELECT plan_id, status FROM push_plans")
    assert status == "pushing"  # not `planned`: the run had started writing
    states = query(warehouse_path, "SELECT batch_no, state, count(*) FROM push_audit GROUP BY ALL ORDER BY ALL")
    assert states == [(1, "ok", BATCH_SIZE), (CRASH_AT, "sent", BATCH_SIZE)]  # the dead batch left a trace
    assert sim.requests[BATCH] == CRASH_AT
    sent = {
        sku: (status, qty)
        for sku, status, qty in query(
            warehouse_path,
            """SELECT sku, c.status, c.quantity FROM push_audit a JOIN push_changes c USING (plan_id, sku)
            WHERE a.batch_no = ?""",
            [CRASH_AT],
        )
    }
    shown = {sku: (s["status"], s["quantity"]) for sku, s in sim.world.storefront.items()}
    applied = {sku for sku, planned in sent.items() if shown[sku] == planned}
    assert len(applied) == BATCH_SIZE // 2  # the shop gave up half way through

    result = run_all()
    assert result.success
    plan = materializations(result)["storefront_push_plan"]
    assert (plan["interrupted_applied"], plan["interrupted_not_applied"]) == (len(applied), BATCH_SIZE - len(applied))
    assert old_plan in plan["interrupted_plans_settled"]
    new_plan = plan["plan_id"]
    assert query(warehouse_path, "SELECT status FROM push_plans WHERE plan_id = ?", [old_plan]) == [("interrupted",)]
    settlements = query(
        warehouse_path, "SELECT settled_by, sent_unanswered, applied, not_applied FROM push_settlements"
    )
    assert settlements == [(new_plan, BATCH_SIZE, len(applied), BATCH_SIZE - len(applied))]
    settled = query(
        warehouse_path,
        """SELECT sku, state, ok, settled_by, after_status, after_quantity FROM push_audit
        WHERE plan_id = ? AND batch_no = ?""",
        [old_plan, CRASH_AT],
    )
    assert len(settled) == BATCH_SIZE
    for sku, state, ok, settled_by, *after in settled:
        expected = ("applied", True) if sku in applied else ("not_applied", False)
        assert (state, ok, settled_by) == (*expected, new_plan)
        assert (tuple(after) == sent[sku]) == (sku in applied)  # what the shop showed when it was settled

    # the new plan writes what was not applied, not what was; every SKU ends applied exactly once
    rewritten = {sku for (sku,) in query(warehouse_path, "SELECT sku FROM push_changes WHERE plan_id = ?", [new_plan])}
    assert set(sent) - applied <= rewritten and not applied & rewritten
    once = "SELECT max(n) FROM (SELECT count(*) AS n FROM push_audit WHERE ok GROUP BY sku)"
    assert query(warehouse_path, once) == [(1,)]
    assert query(warehouse_path, "SELECT count(*) FROM push_audit WHERE state = 'sent'") == [(0,)]
    assert materializations(run_all())["storefront_push_plan"]["changes"] == 0


class InterruptedStorefront(RestStorefront):
    """Writes batch `stop_at` to the shop, then is interrupted before the answer comes back to the push."""

    def __init__(self, client: ApiClient, batch_size: int, stop_at: int) -> None:
        super().__init__(client, batch_size)
        self.stop_at = stop_at

    def write(self, updates: Sequence[StockUpdate], key: str) -> list[WriteResult]:
        results = super().write(updates, key)
        if key.endswith(f"-{self.stop_at}"):
            raise KeyboardInterrupt
        return results


def flip_plan(con: duckdb.DuckDBPyConnection, plan_id: str, shop: dict[str, dict]) -> list[str]:
    """A plan that flips five SKUs of the shop, as `push.plan` would store it."""
    skus = sorted(shop)[:5]
    con.execute(
        "INSERT INTO push_plans VALUES (?, ?, 'rest', ?, 5, 0, 0, 0, 0, 0, 0, 0.2, false, 'planned')",
        [plan_id, PINNED, len(shop)],
    )
    for sku in skus:
        before = shop[sku]
        after = ("in_stock", before["quantity"] + 7) if before["status"] == "out_of_stock" else ("out_of_stock", 0)
        con.execute(
            "INSERT INTO push_changes VALUES (?, ?, 'quantity', ?, ?, ?, ?, false)",
            [plan_id, sku, before["status"], before["quantity"], *after],
        )
    return skus


def test_a_second_attempt_of_the_same_plan_skips_done_batches_and_answers_the_unanswered_one(sim, tmp_path):
    client = ApiClient(sim.url, TOKEN, name="storefront", backoff_factor=0.05)
    path = tmp_path / "warehouse.duckdb"
    with warehouse.connect(path) as con:
        skus = flip_plan(con, "run-1", sim.world.storefront)
        with pytest.raises(KeyboardInterrupt):
            push.execute(con, InterruptedStorefront(client, 2, stop_at=2), "run-1", lambda: PINNED)
        assert con.execute("SELECT batch_no, state FROM push_audit GROUP BY ALL ORDER BY ALL").fetchall() == [
            (1, "ok"),
            (2, "sent"),
        ]
        report = push.execute(con, RestStorefront(client, 2), "run-1", lambda: PINNED)
        assert (report.batches, report.skipped_batches, report.pushed, report.failed) == (3, 1, 3, 0)
        rows = con.execute("SELECT sku, batch_no, state, ok FROM push_audit ORDER BY sku").fetchall()
        status = con.execute("SELECT status FROM push_plans").fetchall()
    assert rows == [(sku, i // 2 + 1, "ok", True) for i, sku in enumerate(skus)]  # one row per SKU, answered
    assert status == [("pushed",)]
    assert sim.requests[BATCH] == 4  # batch 2 went twice, under the same key: the shop replayed its answer


OLD_PUSH_AUDIT = """CREATE TABLE push_audit (
    plan_id VARCHAR NOT NULL, batch_no INTEGER NOT NULL, idempotency_key VARCHAR NOT NULL, sku VARCHAR NOT NULL,
    adapter VARCHAR NOT NULL, before_status VARCHAR, before_quantity INTEGER, after_status VARCHAR,
    after_quantity INTEGER, ok BOOLEAN NOT NULL, response VARCHAR NOT NULL, pushed_at TIMESTAMPTZ NOT NULL)"""


def test_a_warehouse_from_before_the_audit_states_is_migrated_in_place(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(OLD_PUSH_AUDIT)
        con.execute(
            """INSERT INTO push_audit VALUES
            ('old', 1, 'old-1', 'SKU-1', 'rest', 'in_stock', 3, 'out_of_stock', 0, true, 'ok', $t),
            ('old', 1, 'old-1', 'SKU-2', 'rest', 'in_stock', 3, NULL, NULL, false, 'unknown sku', $t)""",
            {"t": PINNED},
        )
    for _ in range(2):  # and again: the migration is safe on every connect
        with warehouse.connect(path) as con:
            rows = con.execute("SELECT sku, ok, state, settled_by FROM push_audit ORDER BY sku").fetchall()
            assert con.execute("SELECT count(*) FROM push_settlements").fetchall() == [(0,)]
    assert rows == [("SKU-1", True, "ok", None), ("SKU-2", False, "failed", None)]


if __name__ == "__main__":
    push_and_die(*sys.argv[1:])
