"""Storefront push: diff the desired stock state against the shop, guard the plan, write only the changes.

A plan is one run's diff (`push_plans` + `push_changes`), kept whether or not it is pushed: it is the
dry-run report. Pushing writes the changes in batches keyed `<plan>-<batch>`, so a retried batch is
replayed by the shop, not applied twice. Each batch is audited as `sent` (committed) before the write and
its answer recorded after, so a run that dies in between leaves a trace; the next run's storefront read
settles it (`settle`). Anything not pushed (a failed batch, a refused SKU, a crash) still differs on the
next run's diff, which finishes the job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import duckdb
import pandas as pd

from cx_pipeline.core.transactions import transaction
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.storefront import stock
from cx_pipeline.storefront.adapters.base import (
    StockUpdate,
    StorefrontAdapter,
    StorefrontConfigError,
    WriteResult,
)

DDL = """
CREATE TABLE IF NOT EXISTS push_plans (
    plan_id        VARCHAR PRIMARY KEY,   -- the run that planned it
    planned_at     TIMESTAMPTZ NOT NULL,
    adapter        VARCHAR NOT NULL,
    catalog_size   INTEGER NOT NULL,      -- catalog SKUs the storefront lists
    changes        INTEGER NOT NULL,
    to_out_of_stock INTEGER NOT NULL,
    back_in_stock  INTEGER NOT NULL,
    quantity_only  INTEGER NOT NULL,
    held           INTEGER NOT NULL,      -- SKUs left alone: an input row of theirs is quarantined
    not_listed     INTEGER NOT NULL,      -- catalog SKUs the storefront does not list
    flip_share     DOUBLE NOT NULL,       -- (to_out_of_stock + back_in_stock) / catalog_size
    max_flip_share DOUBLE NOT NULL,
    forced         BOOLEAN NOT NULL,      -- an operator overrode the flip-share guard for this run
    status         VARCHAR NOT NULL       -- planned -> pushing -> pushed | partly_pushed | interrupted; dry_run
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
    ok              BOOLEAN NOT NULL,     -- the shop shows what was pushed: state 'ok' or 'applied'
    response        VARCHAR NOT NULL,
    pushed_at       TIMESTAMPTZ NOT NULL  -- when the batch was sent
);
-- Added to warehouses that predate the audit-before-write (columns cannot be added NOT NULL here):
-- sent (no answer yet) -> ok | refused | failed; a sent row whose run died -> applied | not_applied, settled
-- by a later plan's storefront read (`settled_by`). Older rows only knew `ok`.
ALTER TABLE push_audit ADD COLUMN IF NOT EXISTS state VARCHAR;
ALTER TABLE push_audit ADD COLUMN IF NOT EXISTS settled_by VARCHAR;
UPDATE push_audit SET state = CASE WHEN ok THEN 'ok' ELSE 'failed' END WHERE state IS NULL;
CREATE TABLE IF NOT EXISTS push_settlements (
    plan_id         VARCHAR PRIMARY KEY,  -- a plan whose run died while pushing
    settled_by      VARCHAR NOT NULL,     -- the plan whose storefront read settled it
    settled_at      TIMESTAMPTZ NOT NULL,
    sent_unanswered INTEGER NOT NULL,     -- SKUs sent without a recorded answer
    applied         INTEGER NOT NULL,     -- of those, the shop showed what was sent
    not_applied     INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class PushReport:
    batches: int
    pushed: int
    failed: int
    skipped_batches: int  # already done by an earlier attempt of the same plan
    errors: list[str]


@dataclass(frozen=True)
class PlanOutcome:
    """A run's plan, and what its storefront read settled of earlier runs that died while pushing."""

    row: dict[str, object]  # the plan's row in push_plans
    settled: pd.DataFrame  # the interrupted plans it settled (`settle`)
    diff: pd.DataFrame  # its changes (`changes`)
    unlisted: list[str]  # a sample of the catalog SKUs the storefront does not list


def settle_and_plan(
    con: duckdb.DuckDBPyConnection,
    current: str,
    *,
    plan_id: str,
    adapter: str,
    max_flip_share: float,
    force: bool,
    now: datetime,
) -> PlanOutcome:
    """Settle the pushes of runs that died while pushing, then plan this run's diff, both from the storefront's
    `current` state (the name of a table or view of `STATE_COLUMNS`: the known shop state, `shop_state`)."""
    # that read is the only look at the shop a run takes: it also settles an interrupted push
    settled = settle(con, current, plan_id=plan_id, now=now)
    row = plan(con, current, plan_id=plan_id, adapter=adapter, max_flip_share=max_flip_share, force=force, now=now)
    diff = changes(con, plan_id)
    return PlanOutcome(row, settled, diff, unlisted(con, current) if row["not_listed"] else [])


def plan(
    con: duckdb.DuckDBPyConnection,
    current: str,
    *,
    plan_id: str,
    adapter: str,
    max_flip_share: float,
    force: bool,
    now: datetime,
) -> dict[str, object]:
    """Diff `stock_position` against the storefront's `current` state (a table or view) and store the plan; return
    its row. All in SQL: at a million SKUs a copy of the shop's state through pandas cost more than the diff."""
    with transaction(con):
        con.execute("DELETE FROM push_changes WHERE plan_id = ?", [plan_id])
        con.execute("DELETE FROM push_plans WHERE plan_id = ?", [plan_id])
        con.execute(
            f"""INSERT INTO push_changes
            SELECT $plan, p.sku,
                   CASE WHEN s.status = p.publish_status THEN 'quantity'
                        WHEN p.publish_status = 'out_of_stock' THEN 'to_out_of_stock' ELSE 'back_in_stock' END,
                   s.status, s.quantity, p.publish_status, p.publish_quantity,
                   s.status IS DISTINCT FROM p.publish_status AND t.changed_run IS DISTINCT FROM $plan
            FROM stock_position p JOIN {current} s USING (sku) LEFT JOIN stock_status_since t USING (sku)
            WHERE NOT p.held AND (s.status IS DISTINCT FROM p.publish_status
                                  OR s.quantity IS DISTINCT FROM p.publish_quantity)""",
            {"plan": plan_id},
        )
        # the catalog SKUs the shop lists: what the flip share is measured against (SKUs only the shop has,
        # and catalog SKUs it does not list, would each skew it)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE listed AS SELECT sku FROM stock_position SEMI JOIN {current} USING (sku)"
        )
        con.execute(
            f"""INSERT INTO push_plans
            SELECT $plan, $now, $adapter, (SELECT count(*) FROM listed), count(*),
                   count(*) FILTER (change = 'to_out_of_stock'), count(*) FILTER (change = 'back_in_stock'),
                   count(*) FILTER (change = 'quantity'),
                   (SELECT count(*) FROM stock_position p JOIN {current} USING (sku) WHERE p.held),
                   (SELECT count(*) FROM stock_position p ANTI JOIN {current} USING (sku)),
                   coalesce(count(*) FILTER (change <> 'quantity') / nullif((SELECT count(*) FROM listed), 0), 0),
                   $max_share, $force, 'planned'
            FROM push_changes WHERE plan_id = $plan""",
            {"plan": plan_id, "now": now, "adapter": adapter, "max_share": max_flip_share, "force": force},
        )
    return plan_row(con, plan_id)


def unlisted(con: duckdb.DuckDBPyConnection, current: str, limit: int = 10) -> list[str]:
    """A sample of the catalog SKUs the storefront does not list (the plan counts them): nothing can be pushed
    for them, and a shop listing none of the catalog is a misconfiguration, not a quiet run."""
    rows = con.execute(
        f"SELECT sku FROM stock_position ANTI JOIN {current} USING (sku) ORDER BY sku LIMIT ?", [limit]
    ).fetchall()
    return [sku for (sku,) in rows]


# Each warehouse's sellable units scaled down to the pushed quantity (largest remainder, so the shares add up).
SPLIT_BY_WAREHOUSE = """
WITH units AS (
    SELECT c.sku, c.quantity, w.warehouse, greatest(w.available, 0) AS units,
           sum(greatest(w.available, 0)) OVER (PARTITION BY c.sku) AS total
    FROM push_changes c JOIN stock_by_warehouse w USING (sku) WHERE c.plan_id = $plan
), shares AS (
    SELECT *, CASE WHEN total > 0 THEN quantity * units / total ELSE 0 END AS exact FROM units
), whole AS (
    SELECT *, floor(exact)::INTEGER AS base,
           row_number() OVER (PARTITION BY sku ORDER BY exact - floor(exact) DESC, warehouse) AS rank
    FROM shares
)
SELECT sku, warehouse, base + (rank <= quantity - sum(base) OVER (PARTITION BY sku))::INTEGER AS units
FROM whole
"""


def split_by_warehouse(con: duckdb.DuckDBPyConnection, plan_id: str) -> dict[str, dict[str, int]]:
    """Each change's quantity over the pipeline's warehouses, for adapters that write per stock location."""
    rows = con.execute(
        f"SELECT sku, list(warehouse ORDER BY warehouse), list(units ORDER BY warehouse) FROM ({SPLIT_BY_WAREHOUSE}) "
        "GROUP BY sku",
        {"plan": plan_id},
    ).fetchall()
    return {sku: dict(zip(warehouses, units, strict=True)) for sku, warehouses, units in rows}


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
                 "after_status", "after_quantity", "ok", "response", "pushed_at", "state"]  # fmt: skip
ANSWER_COLUMNS = ["sku", "state", "ok", "after_status", "after_quantity", "response"]
NO_ANSWER_YET = "sent; no answer recorded yet"
MAX_UNANSWERED_BATCHES = 3  # batches in a row where no SKU went through: the shop is down


def execute(
    con: duckdb.DuckDBPyConnection,
    adapter: StorefrontAdapter,
    plan_id: str,
    now: Callable[[], datetime],
    progress: Callable[[int, int], None] | None = None,
) -> PushReport:
    """Write the plan's changes batch by batch and audit every SKU: as sent before the write, then its answer.
    Batches this plan already pushed completely (an earlier attempt of the same run) are skipped. Stops at the
    first batch that fails as a whole: the shop is down or refusing, and the next run re-plans what is left."""
    todo = changes(con, plan_id)
    done = {
        b
        for (b,) in con.execute(
            "SELECT batch_no FROM push_audit WHERE plan_id = ? GROUP BY batch_no HAVING bool_and(ok)", [plan_id]
        ).fetchall()
    }
    size = adapter.batch_size
    batches = [todo.iloc[i : i + size] for i in range(0, len(todo), size)]
    by_warehouse = split_by_warehouse(con, plan_id) if adapter.writes_per_location else {}
    # committed before the first write: if this run dies from here on, the next run's plan settles this one
    con.execute("UPDATE push_plans SET status = 'pushing' WHERE plan_id = ?", [plan_id])
    pushed = failed = skipped = completed = unanswered = 0
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
                by_warehouse.get(r.sku, {}),
            )
            for r in batch.itertuples(index=False)
        ]
        record_sent(con, plan_id, batch_no, key, adapter.name, updates, now())
        try:
            results = {r.sku: r for r in adapter.write(updates, key)}
            whole_batch_error = None
        except (UpstreamError, StorefrontConfigError) as exc:  # down, or its login no longer works
            results, whole_batch_error = {}, str(exc)
        answers = answer_rows(updates, results, whole_batch_error)
        record_answers(con, plan_id, batch_no, answers)
        ok = int(answers["ok"].sum())
        pushed, failed = pushed + ok, failed + len(answers) - ok
        for sku, response in answers.loc[~answers["ok"], ["sku", "response"]].itertuples(index=False):
            if len(errors) < 20:
                errors.append(f"{sku}: {response[:200]}")
        if progress:
            progress(batch_no, len(batches))
        # batches in a row where not one SKU went through: the shop is down or refusing everything; stop
        # instead of waiting out batch after batch (the next run finishes)
        unanswered = unanswered + 1 if ok == 0 else 0
        if whole_batch_error or unanswered >= MAX_UNANSWERED_BATCHES:
            break
        completed += ok == len(answers)
    status = "pushed" if completed + skipped == len(batches) else "partly_pushed"
    con.execute("UPDATE push_plans SET status = ? WHERE plan_id = ?", [status, plan_id])
    return PushReport(batches=len(batches), pushed=pushed, failed=failed, skipped_batches=skipped, errors=errors)


@dataclass(frozen=True)
class PushOutcome:
    """What pushing a plan did, and whether the run must fail for it although the rest was pushed."""

    report: PushReport
    audit: pd.DataFrame  # the plan's SKUs per audit state
    long_holds: pd.DataFrame  # SKUs held for `max_held_runs` runs in a row or more (`stock.long_holds`)
    max_held_runs: int

    @property
    def mismatches(self) -> int:
        """SKUs the shop took or refused, but whose customer view is not what was pushed."""
        return int(self.audit.loc[self.audit["state"] == "mismatch", "skus"].sum())

    @property
    def problems(self) -> list[str]:
        """Why the run fails: SKUs not updated (the next run pushes them again), and holds that went on so long
        that they must not go unnoticed."""
        problems = []
        if self.report.failed:
            problems.append(
                f"{self.report.failed} SKUs were not updated; they are in push_audit and the next run pushes them "
                "again. First errors:\n" + "\n".join(self.report.errors[:5])
            )
        if not self.long_holds.empty:
            held = self.long_holds
            sample = ", ".join(f"{r.sku} ({r.held_by}, {r.runs} runs)" for r in held.head(10).itertuples())
            problems.append(
                f"{len(held)} SKUs have been held for {self.max_held_runs} or more runs in a row, so the shop still "
                f"shows their old stock: {sample}. Fix the rows the contract quarantined (or the snapshot that lost "
                "them); see stock_holds and quarantine."
            )
        return problems


def push_plan(
    con: duckdb.DuckDBPyConnection,
    adapter: StorefrontAdapter,
    plan_id: str,
    now: Callable[[], datetime],
    progress: Callable[[int, int], None] | None = None,
    *,
    max_held_runs: int,
) -> PushOutcome:
    """Push plan `plan_id` (planned in the same run: `LookupError` otherwise) with `execute`, and gather what
    the run reports: the audit by state and the SKUs held too long."""
    plan_row(con, plan_id)
    report = execute(con, adapter, plan_id, now, progress)
    return PushOutcome(report, audit_by_state(con, plan_id), stock.long_holds(con, max_held_runs), max_held_runs)


def mark_dry_run(con: duckdb.DuckDBPyConnection, plan_id: str) -> int:
    """Record that plan `plan_id` is only reported, never pushed; return how many changes it would make."""
    would_change = plan_row(con, plan_id)["changes"]
    con.execute("UPDATE push_plans SET status = 'dry_run' WHERE plan_id = ?", [plan_id])
    return int(would_change)


def audit_by_state(con: duckdb.DuckDBPyConnection, plan_id: str) -> pd.DataFrame:
    """How many of the plan's SKUs ended in each audit state."""
    return con.execute(
        "SELECT state, count(*) AS skus FROM push_audit WHERE plan_id = ? GROUP BY state ORDER BY state", [plan_id]
    ).df()


def record_sent(
    con: duckdb.DuckDBPyConnection,
    plan_id: str,
    batch_no: int,
    key: str,
    adapter: str,
    updates: Sequence[StockUpdate],
    sent_at: datetime,
) -> None:
    """Audit a batch as `sent`, in one committed INSERT, before it is written. A SKU an earlier attempt of the
    same plan sent without recording an answer keeps its row: the resend carries the same key, so the shop's
    answer to it is the answer to both."""
    rows = [
        (plan_id, batch_no, key, u.sku, adapter, u.before_status, u.before_quantity, None, None, False,
         NO_ANSWER_YET, sent_at, "sent")
        for u in updates
    ]  # fmt: skip
    con.register("sent_rows", pd.DataFrame(rows, columns=AUDIT_COLUMNS))
    try:
        con.execute(
            """INSERT INTO push_audit BY NAME
            SELECT * REPLACE (after_status::VARCHAR AS after_status, after_quantity::INTEGER AS after_quantity)
            FROM sent_rows s
            WHERE NOT EXISTS (SELECT 1 FROM push_audit a WHERE a.plan_id = s.plan_id AND a.batch_no = s.batch_no
                                                          AND a.sku = s.sku AND a.state = 'sent')"""
        )
    finally:
        con.unregister("sent_rows")


def answer_rows(
    updates: Sequence[StockUpdate], results: dict[str, WriteResult], whole_batch_error: str | None
) -> pd.DataFrame:
    """One row per SKU of a written batch: ok (a customer now sees what was pushed), refused (the shop said no
    to that SKU), mismatch (the shop took the write but customers see something else), failed (no usable
    answer)."""
    rows = []
    for u in updates:
        r = results.get(u.sku)
        if whole_batch_error or r is None:
            rows.append((u.sku, "failed", False, None, None, whole_batch_error or "no answer for this SKU"))
        elif r.status_after is not None and (seen := customer_view_differs(u, r)):
            # whether the shop took the write or refused it, customers see something else than was pushed
            rows.append((u.sku, "mismatch", False, r.status_after, r.quantity_after, seen))
        else:
            rows.append((u.sku, "ok" if r.ok else "refused", r.ok, r.status_after, r.quantity_after, r.response))
    answers = pd.DataFrame(rows, columns=ANSWER_COLUMNS)
    answers["response"] = answers["response"].str[:500]
    return answers


def customer_view_differs(update: StockUpdate, result: WriteResult) -> str | None:
    """Why a write the shop accepted does not count: what a customer sees after it is not what was pushed."""
    quantity_differs = result.quantity_after is not None and result.quantity_after != update.quantity
    if result.status_after == update.status and not quantity_differs:
        return None
    seen = f"{result.status_after}" + (
        f" with {result.quantity_after} for sale" if result.quantity_after is not None else ""
    )
    taken = "accepted the write but" if result.ok else "refused the write and"
    return f"the shop {taken} shows customers {seen}, not {update.status} with {update.quantity} for sale" + (
        f" ({result.response})" if result.response and result.response != "ok" else ""
    )


def record_answers(con: duckdb.DuckDBPyConnection, plan_id: str, batch_no: int, answers: pd.DataFrame) -> None:
    """Turn a batch's `sent` rows into its answer, in one UPDATE."""
    con.register("answers", answers)
    try:
        con.execute(
            """UPDATE push_audit SET state = n.state, ok = n.ok, after_status = n.after_status::VARCHAR,
                   after_quantity = n.after_quantity::INTEGER, response = n.response
            FROM answers n
            WHERE push_audit.plan_id = $plan AND push_audit.batch_no = $batch AND push_audit.sku = n.sku
              AND push_audit.state = 'sent'""",
            {"plan": plan_id, "batch": batch_no},
        )
    finally:
        con.unregister("answers")


def settle(con: duckdb.DuckDBPyConnection, current: str, *, plan_id: str, now: datetime) -> pd.DataFrame:
    """Settle the plans of runs that died while pushing, from the storefront's state `current` read by plan
    `plan_id`: a SKU sent without a recorded answer is `applied` when the shop shows what was sent (the rule
    for a write that counts), else `not_applied`; the plan becomes `interrupted`, its counts in
    `push_settlements`. Returns the settlements `plan_id` made (also those of an earlier attempt of it).

    `current` must have been read after those runs ended: the run queue runs one run at a time, so a plan
    still `pushing` when another run plans is one whose run died."""
    found = con.execute(
        """SELECT plan_id FROM push_plans p
        WHERE plan_id <> $plan
          AND (status = 'pushing'
               OR status = 'planned' AND EXISTS (SELECT 1 FROM push_audit a
                                                 WHERE a.plan_id = p.plan_id AND a.state = 'sent'))""",
        {"plan": plan_id},
    ).df()
    if not found.empty:
        con.register("settling", found)
        try:
            with transaction(con):
                con.execute(SETTLE_AUDIT.format(current=current), {"plan": plan_id})
                con.execute(
                    """INSERT INTO push_settlements
                    SELECT i.plan_id, $plan, $now, count(a.sku), count(a.sku) FILTER (a.state = 'applied'),
                           count(a.sku) FILTER (a.state = 'not_applied')
                    FROM settling i LEFT JOIN push_audit a ON a.plan_id = i.plan_id AND a.settled_by = $plan
                    GROUP BY i.plan_id""",
                    {"plan": plan_id, "now": now},
                )
                con.execute("UPDATE push_plans SET status = 'interrupted' WHERE plan_id IN (FROM settling)")
        finally:
            con.unregister("settling")
    return con.execute(
        """SELECT plan_id AS interrupted_plan, sent_unanswered, applied, not_applied FROM push_settlements
        WHERE settled_by = ? ORDER BY plan_id""",
        [plan_id],
    ).df()


# what was sent is the plan's change; what the shop shows now is the read (a SKU it no longer lists: not applied)
SETTLE_AUDIT = """
UPDATE push_audit SET
    state = CASE WHEN x.applied THEN 'applied' ELSE 'not_applied' END,
    ok = x.applied,
    after_status = x.shop_status,
    after_quantity = x.shop_quantity,
    response = 'no answer recorded: the run died after sending; the storefront read by plan ' || $plan
               || CASE WHEN x.applied THEN ' shows what was sent' ELSE ' does not show what was sent' END,
    settled_by = $plan
FROM (
    SELECT c.plan_id, c.sku, s.status AS shop_status, s.quantity AS shop_quantity,
           coalesce(s.status = c.status AND s.quantity = c.quantity, false) AS applied
    FROM push_changes c SEMI JOIN settling USING (plan_id) LEFT JOIN {current} s USING (sku)
) x
WHERE push_audit.plan_id = x.plan_id AND push_audit.sku = x.sku AND push_audit.state = 'sent'
"""


class EmptyStorefrontError(RuntimeError):
    """The storefront listed no SKUs at all, and it is not configured as a new, empty shop."""


def check_not_empty(current: pd.DataFrame, adapter: str, url: str, *, empty_shop_ok: bool) -> None:
    """Stop on a storefront read that lists nothing: a wrong URL, channel, location or permission looks just
    like that, and a plan from it would silently push nothing (or settle a crash as not applied)."""
    if current.empty and not empty_shop_ok:
        raise EmptyStorefrontError(
            f"the {adapter} storefront at {public_url(url)} listed no SKUs at all, so nothing was planned or "
            "pushed. Check that the adapter points at the right shop (URL, sales channel or location) and that "
            "its credentials may read products. If this really is a new, empty shop, re-run with "
            "storefront_push_plan config empty_shop_ok: true."
        )


def public_url(url: str) -> str:
    """`url` as it may be shown: no user name or password, no query string (where some APIs take a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
