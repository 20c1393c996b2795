"""Storefront push: diff the desired stock state against the shop, guard the plan, write only the changes.

A plan is one run's diff (`push_plans` + `push_changes`), kept whether or not it is pushed: it is the
dry-run report. Pushing writes the changes in batches keyed `<plan>-<batch>`, so a retried batch is
replayed by the shop, not applied twice; every SKU's answer goes to `push_audit`. Anything not pushed (a
failed batch, a refused SKU, a crash) still differs on the next run's diff, which finishes the job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from cx_pipeline.http import UpstreamError
from cx_pipeline.storefront.base import STATE_COLUMNS, StockUpdate, StorefrontAdapter

DDL = """
CREATE TABLE IF NOT EXISTS push_plans (
    plan_id        VARCHAR PRIMARY KEY,   -- the run that planned it
    planned_at     TIMESTAMPTZ NOT NULL,
    adapter        VARCHAR NOT NULL,
    catalog_size   INTEGER NOT NULL,      -- SKUs the storefront lists
    changes        INTEGER NOT NULL,
    to_out_of_stock INTEGER NOT NULL,
    back_in_stock  INTEGER NOT NULL,
    quantity_only  INTEGER NOT NULL,
    held           INTEGER NOT NULL,      -- SKUs left alone: an input row of theirs is quarantined
    not_listed     INTEGER NOT NULL,      -- catalog SKUs the storefront does not list
    flip_share     DOUBLE NOT NULL,       -- (to_out_of_stock + back_in_stock) / catalog_size
    max_flip_share DOUBLE NOT NULL,
    forced         BOOLEAN NOT NULL,      -- an operator overrode the flip-share guard for this run
    status         VARCHAR NOT NULL       -- planned -> pushed | partly_pushed | dry_run
);
CREATE TABLE IF NOT EXISTS push_changes (
    plan_id         VARCHAR NOT NULL,
    sku             VARCHAR NOT NULL,
    change          VARCHAR NOT NULL,     -- to_out_of_stock, back_in_stock, quantity
    before_status   VARCHAR,
    before_quantity INTEGER,
    status          VARCHAR NOT NULL,
    quantity        INTEGER NOT NULL,
    PRIMARY KEY (plan_id, sku)
);
-- a flip the WMS did not cause in this run: the shop showed a status the WMS had already left (or never had)
ALTER TABLE push_changes ADD COLUMN IF NOT EXISTS shop_was_stale BOOLEAN;
CREATE TABLE IF NOT EXISTS push_audit (
    plan_id         VARCHAR NOT NULL,
    batch_no        INTEGER NOT NULL,
    idempotency_key VARCHAR NOT NULL,
    sku             VARCHAR NOT NULL,
    adapter         VARCHAR NOT NULL,
    before_status   VARCHAR,
    before_quantity INTEGER,
    after_status    VARCHAR,              -- what the shop reports after the write (null when refused)
    after_quantity  INTEGER,
    ok              BOOLEAN NOT NULL,
    response        VARCHAR NOT NULL,
    pushed_at       TIMESTAMPTZ NOT NULL
);
"""


@dataclass(frozen=True)
class PushReport:
    batches: int
    pushed: int
    failed: int
    skipped_batches: int  # already done by an earlier attempt of the same plan
    errors: list[str]


def plan(
    con: duckdb.DuckDBPyConnection,
    current: pd.DataFrame,
    *,
    plan_id: str,
    adapter: str,
    max_flip_share: float,
    force: bool,
    now: datetime,
) -> dict[str, object]:
    """Diff `stock_position` against the storefront's `current` state and store the plan; return its row."""
    con.register("current_state", current[list(STATE_COLUMNS)])
    try:
        con.execute("BEGIN")
        con.execute("DELETE FROM push_changes WHERE plan_id = ?", [plan_id])
        con.execute("DELETE FROM push_plans WHERE plan_id = ?", [plan_id])
        con.execute(
            """INSERT INTO push_changes
            SELECT $plan, p.sku,
                   CASE WHEN s.status = p.publish_status THEN 'quantity'
                        WHEN p.publish_status = 'out_of_stock' THEN 'to_out_of_stock' ELSE 'back_in_stock' END,
                   s.status, s.quantity, p.publish_status, p.publish_quantity,
                   s.status IS DISTINCT FROM p.publish_status AND t.changed_run IS DISTINCT FROM $plan
            FROM stock_position p JOIN current_state s USING (sku) LEFT JOIN stock_status_since t USING (sku)
            WHERE NOT p.held AND (s.status IS DISTINCT FROM p.publish_status
                                  OR s.quantity IS DISTINCT FROM p.publish_quantity)""",
            {"plan": plan_id},
        )
        con.execute(
            """INSERT INTO push_plans
            SELECT $plan, $now, $adapter, (SELECT count(*) FROM current_state), count(*),
                   count(*) FILTER (change = 'to_out_of_stock'), count(*) FILTER (change = 'back_in_stock'),
                   count(*) FILTER (change = 'quantity'),
                   (SELECT count(*) FROM stock_position p JOIN current_state USING (sku) WHERE p.held),
                   (SELECT count(*) FROM stock_position p ANTI JOIN current_state USING (sku)),
                   coalesce(count(*) FILTER (change <> 'quantity')
                            / nullif((SELECT count(*) FROM current_state), 0), 0),
                   $max_share, $force, 'planned'
            FROM push_changes WHERE plan_id = $plan""",
            {"plan": plan_id, "now": now, "adapter": adapter, "max_share": max_flip_share, "force": force},
        )
        con.execute("COMMIT")
    finally:
        con.unregister("current_state")
    return plan_row(con, plan_id)


def plan_row(con: duckdb.DuckDBPyConnection, plan_id: str) -> dict[str, object]:
    cursor = con.execute("SELECT * FROM push_plans WHERE plan_id = ?", [plan_id])
    names = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    if not rows:
        raise LookupError(f"no push plan for run {plan_id!r}: storefront_push_plan must run in the same run")
    return dict(zip(names, rows[0], strict=True))


def changes(con: duckdb.DuckDBPyConnection, plan_id: str) -> pd.DataFrame:
    return con.execute(
        "SELECT * EXCLUDE (plan_id) FROM push_changes WHERE plan_id = ? ORDER BY change, sku", [plan_id]
    ).df()


AUDIT_COLUMNS = ["plan_id", "batch_no", "idempotency_key", "sku", "adapter", "before_status", "before_quantity",
                 "after_status", "after_quantity", "ok", "response", "pushed_at"]  # fmt: skip


def execute(
    con: duckdb.DuckDBPyConnection,
    adapter: StorefrontAdapter,
    plan_id: str,
    now: Callable[[], datetime],
    progress: Callable[[int, int], None] | None = None,
) -> PushReport:
    """Write the plan's changes batch by batch and audit every SKU. Batches this plan already pushed
    completely (an earlier attempt of the same run) are skipped. Stops at the first batch that fails as a
    whole: the shop is down or refusing, and the next run re-plans what is left."""
    todo = changes(con, plan_id)
    done = {
        b
        for (b,) in con.execute(
            "SELECT batch_no FROM push_audit WHERE plan_id = ? GROUP BY batch_no HAVING bool_and(ok)", [plan_id]
        ).fetchall()
    }
    size = adapter.batch_size
    batches = [todo.iloc[i : i + size] for i in range(0, len(todo), size)]
    pushed = failed = skipped = completed = 0
    errors: list[str] = []
    for batch_no, batch in enumerate(batches, start=1):
        if batch_no in done:
            skipped += 1
            continue
        key = f"{plan_id}-{batch_no}"
        updates = [
            StockUpdate(
                r.sku,
                r.status,
                int(r.quantity),
                r.before_status,
                None if pd.isna(r.before_quantity) else int(r.before_quantity),
            )
            for r in batch.itertuples(index=False)
        ]
        try:
            results = {r.sku: r for r in adapter.write(updates, key)}
            whole_batch_error = None
        except UpstreamError as exc:
            results, whole_batch_error = {}, str(exc)
        rows, pushed_at = [], now()  # one clock reading per batch: it is a warehouse query
        for u in updates:
            r = results.get(u.sku)
            ok = r is not None and r.ok
            response = whole_batch_error or (r.response if r else "no answer for this SKU")
            rows.append(
                (
                    plan_id,
                    batch_no,
                    key,
                    u.sku,
                    adapter.name,
                    u.before_status,
                    u.before_quantity,
                    r.status_after if r else None,
                    r.quantity_after if r else None,
                    ok,
                    response[:500],
                    pushed_at,
                )
            )
            pushed += ok
            if not ok:
                failed += 1
                if len(errors) < 20:
                    errors.append(f"{u.sku}: {response[:200]}")
        audit = pd.DataFrame(rows, columns=AUDIT_COLUMNS)  # one INSERT, not one per SKU
        con.register("audit", audit)
        try:
            con.execute("INSERT INTO push_audit BY NAME SELECT * FROM audit")
        finally:
            con.unregister("audit")
        if progress:
            progress(batch_no, len(batches))
        if whole_batch_error:
            break
        completed += all(row[9] for row in rows)
    status = "pushed" if completed + skipped == len(batches) else "partly_pushed"
    con.execute("UPDATE push_plans SET status = ? WHERE plan_id = ?", [status, plan_id])
    return PushReport(batches=len(batches), pushed=pushed, failed=failed, skipped_batches=skipped, errors=errors)
