"""Delay notices: one per order and cause, sent once, whatever retries, re-runs or crashes happen.

The ledger (`notice_ledger`) is written before anything is sent: a notice is `planned`, then `sent` once the
notification API has acknowledged it. Its key (`delay:<order>:<cause>`) is also the API's idempotency key,
so a notice that was sent but not marked (a crash between the two) is acknowledged as a duplicate when the
next run sends it again, and the customer hears from us once.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pandas as pd

from cx_pipeline.allocation import DELAY_CAUSES
from cx_pipeline.http import ApiClient, UpstreamError

DDL = """
CREATE TABLE IF NOT EXISTS notice_ledger (
    notice_key      VARCHAR PRIMARY KEY,   -- delay:<order_id>:<cause>, also the idempotency key
    order_id        VARCHAR NOT NULL,
    customer_id     VARCHAR NOT NULL,
    cause           VARCHAR NOT NULL,
    skus            VARCHAR[] NOT NULL,
    promised_at     TIMESTAMPTZ,
    new_eta         TIMESTAMPTZ,           -- null: no delivery date can be given yet
    message         VARCHAR NOT NULL,
    status          VARCHAR NOT NULL,      -- planned -> sent
    notification_id VARCHAR,
    planned_at      TIMESTAMPTZ NOT NULL,
    sent_at         TIMESTAMPTZ,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      VARCHAR,
    run_id          VARCHAR
);
"""
MARK_EVERY = 25  # sent notices are marked in the ledger in small groups: a crash loses at most these marks
SEND_WORKERS = 4  # notices in flight at once: as many as the client keeps connections (http.py)


@dataclass(frozen=True)
class SendReport:
    sent: int
    already_sent: int  # the API had them already (acknowledged as duplicates)
    failed: int
    errors: list[str]


def due_notices(con: duckdb.DuckDBPyConnection, delayed: str) -> pd.DataFrame:
    """Notices that delayed order lines call for and the ledger does not hold yet: one per order and cause."""
    return con.sql(
        f"""SELECT 'delay:' || order_id || ':' || cause AS notice_key, order_id, any_value(customer_id) AS customer_id,
               cause, list(DISTINCT sku ORDER BY sku) AS skus, min(promised_at) AS promised_at,
               -- the order arrives with its last line; unknown if any line has no date
               CASE WHEN bool_or(eta IS NULL) THEN NULL ELSE max(eta) END AS new_eta
        FROM {delayed}
        WHERE 'delay:' || order_id || ':' || cause NOT IN (SELECT notice_key FROM notice_ledger)
        GROUP BY order_id, cause ORDER BY order_id, cause"""
    ).df()


def message(cause: str, order_id: str, new_eta: pd.Timestamp | None) -> str:
    """The customer-facing text of a delay notice."""
    when = (
        f"We now expect to deliver it by {new_eta:%A %d %B}."
        if new_eta is not None and not pd.isna(new_eta)
        else "We will write again as soon as we have a new delivery date."
    )
    return f"Your order {order_id} will arrive later than promised: {DELAY_CAUSES[cause]}. {when}"


def plan(con: duckdb.DuckDBPyConnection, notices: pd.DataFrame, now: datetime, run_id: str | None) -> int:
    """Write due notices to the ledger as `planned` (committed before any is sent); return how many."""
    if notices.empty:
        return 0
    frame = notices.assign(
        message=[
            message(c, o, e) for c, o, e in zip(notices["cause"], notices["order_id"], notices["new_eta"], strict=True)
        ]
    )
    con.register("due", frame)
    try:
        con.execute(
            """INSERT INTO notice_ledger (notice_key, order_id, customer_id, cause, skus, promised_at, new_eta,
                                          message, status, planned_at, run_id)
            SELECT notice_key, order_id, customer_id, cause, skus, promised_at, new_eta, message, 'planned', $now, $run
            FROM due ON CONFLICT DO NOTHING""",
            {"now": now, "run": run_id},
        )
    finally:
        con.unregister("due")
    return len(frame)


def pending(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Planned notices not yet acknowledged by the API (this run's and any a crashed run left behind)."""
    return con.sql(
        """SELECT notice_key, order_id, customer_id, cause, skus, promised_at, new_eta, message
        FROM notice_ledger WHERE status = 'planned' ORDER BY planned_at, notice_key"""
    ).df()


def send(
    con: duckdb.DuckDBPyConnection,
    client: ApiClient,
    notices: pd.DataFrame,
    now: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> SendReport:
    """POST each pending notice with its key; mark acknowledged ones `sent`. A notice the API refuses stays
    `planned` with its error, for the next run.

    Notices go out `SEND_WORKERS` at a time (the API is idempotent by key, so order does not matter and a
    retry is harmless); they are marked in the order planned.
    """
    acknowledged: list[tuple[str, str]] = []
    errors: list[str] = []
    sent = already = 0

    def mark() -> None:
        if acknowledged:
            con.execute(
                """UPDATE notice_ledger SET status = 'sent', notification_id = a.id, sent_at = $now,
                       attempts = attempts + 1, last_error = NULL
                FROM (SELECT unnest($keys::VARCHAR[]) AS key, unnest($ids::VARCHAR[]) AS id) a
                WHERE notice_key = a.key""",
                {"now": now, "keys": [k for k, _ in acknowledged], "ids": [i for _, i in acknowledged]},
            )
            acknowledged.clear()

    def post(n: Any) -> dict[str, Any] | UpstreamError:
        body = {
            "idempotency_key": n.notice_key,
            "kind": "delivery_delay",
            "customer_id": n.customer_id,
            "order_id": n.order_id,
            "cause": n.cause,
            "skus": list(n.skus),
            "promised_at": _iso(n.promised_at),
            "new_eta": _iso(n.new_eta),
            "message": n.message,
        }
        try:
            return client.post_json("/notifications", body)
        except UpstreamError as exc:
            return exc

    rows = list(notices.itertuples(index=False))
    with ThreadPoolExecutor(SEND_WORKERS) as pool:
        for i, (n, answer) in enumerate(zip(rows, pool.map(post, rows), strict=True), start=1):
            if isinstance(answer, UpstreamError):
                errors.append(f"{n.notice_key}: {answer}")
                con.execute(
                    "UPDATE notice_ledger SET attempts = attempts + 1, last_error = ? WHERE notice_key = ?",
                    [str(answer)[:500], n.notice_key],
                )
                continue
            duplicate = bool(answer.get("duplicate"))
            already += duplicate
            sent += not duplicate
            acknowledged.append((n.notice_key, str(answer.get("id"))))
            if len(acknowledged) >= MARK_EVERY:
                mark()
            if progress:
                progress(i, len(notices))
    mark()
    return SendReport(sent=sent, already_sent=already, failed=len(errors), errors=errors)


def mark_discrepancies_notified(con: duckdb.DuckDBPyConnection, now: datetime) -> int:
    """Move open discrepancies behind sent notices to `customers_notified`; return how many moved."""
    moved = con.execute(
        """UPDATE receipt_discrepancies d SET status = 'customers_notified', notified_at = $now, updated_at = $now
        FROM (SELECT DISTINCT unnest(skus) AS sku, cause FROM notice_ledger WHERE status = 'sent') n
        WHERE d.status = 'open' AND d.sku = n.sku
          AND ((n.cause = 'short_delivery' AND d.kind IN ('short', 'damaged'))
               OR (n.cause = 'supplier_late' AND d.kind = 'late'))
        RETURNING d.po_id""",
        {"now": now},
    ).fetchall()
    return len(moved)


def _iso(value: object) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()
