"""Delay notices: at most one per order and run, sent once, whatever retries, re-runs or crashes happen.

An order's first notice names its late items, why each is late, and the new delivery date (or says plainly
that none can be given yet, and why). A later notice (an update) goes out only when that date moves later,
when the date told can no longer be given, or when a date becomes known after a notice that had none (it
promised to write again). A cause relabelled with the date unchanged sends nothing.

The ledger (`notice_ledger`) is written before anything is sent: a notice is `planned`, then `sent` once the
notification API has acknowledged it. Its key (`delay:<order>:<revision>`) is also the API's idempotency key,
so a notice that was sent but not marked (a crash between the two) is acknowledged as a duplicate when the
next run sends it again, and the customer hears from us once. `notice_lines` keeps, per notice, each order
line it named, its cause and the PO line it waits for: what marks a discrepancy customers-notified.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import pandas as pd

from cx_pipeline.core.transactions import transaction
from cx_pipeline.ingest.http import ApiClient, UpstreamError
from cx_pipeline.receiving import allocation
from cx_pipeline.receiving.allocation import CAUSE_KINDS, DELAY_CAUSES

DDL = """
CREATE TABLE IF NOT EXISTS notice_ledger (
    notice_key      VARCHAR PRIMARY KEY,   -- delay:<order_id>:<revision>, also the idempotency key
    order_id        VARCHAR NOT NULL,
    customer_id     VARCHAR NOT NULL,
    cause           VARCHAR NOT NULL,      -- the cause behind the order's date (each line's: notice_lines)
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
-- 1: the order's first notice, 2+: updates. Null: keyed delay:<order_id>:<cause>, before updates existed.
ALTER TABLE notice_ledger ADD COLUMN IF NOT EXISTS revision INTEGER;
CREATE TABLE IF NOT EXISTS notice_lines (  -- the order lines each notice named
    notice_key VARCHAR NOT NULL,
    order_id   VARCHAR NOT NULL,
    line_no    INTEGER NOT NULL,
    sku        VARCHAR NOT NULL,
    warehouse  VARCHAR,                -- the fulfilment warehouse, whose supply decided the cause
    cause      VARCHAR NOT NULL,
    po_id      VARCHAR,                -- the PO line the order line waits for, or whose loss delays it
    po_line    INTEGER,
    eta        TIMESTAMPTZ,
    PRIMARY KEY (notice_key, line_no)
);
"""
# Sent notices are marked in the ledger in groups of at least this many, after a request's batch: each mark is a
# commit (4 ms), and a crash loses at most one group of marks, whose notices the next run sends again as duplicates.
MARK_EVERY = 250
SEND_WORKERS = 4  # requests in flight at once: as many as the client keeps connections (http.py)
# Notices per request to the batch endpoint (its limit). One POST per notice cost the client 0.5 ms of CPU in
# requests' own machinery (3,000 notices 1.5 s): `delay_notices` took 3.1 s of the three-hourly run at 1 M SKUs, 1.2 s
# in batches.
BATCH_NOTICES = 100
# The batch endpoint's answers that say the service cannot take our batches: none there (404, 405, or a handler of
# single notices refusing the shape, 400 or 422) or none this large (413). Then one POST per notice, as before.
NO_BATCHES = (400, 404, 405, 413, 422)


@dataclass(frozen=True)
class SendReport:
    sent: int
    already_sent: int  # the API had them already (acknowledged as duplicates)
    failed: int
    errors: list[str]


@dataclass(frozen=True)
class NoticeRun:
    """What one run of the delay-notice workflow found and did (a dry run plans and sends nothing)."""

    late_order_lines: int
    due: pd.DataFrame  # the notices due this run (`due_notices`)
    planned: int = 0  # notices written to the ledger this run
    pending: int = 0  # planned notices sent this run: this run's and any an earlier run left unsent
    report: SendReport | None = None  # None: a dry run
    notified: int = 0  # discrepancies moved to customers_notified
    ledger_by_cause: pd.DataFrame = field(default_factory=pd.DataFrame)  # the ledger's notices by cause and status

    @property
    def counts(self) -> dict[str, int]:
        """The due notices: first notices and updates, with a new date and without one yet."""
        return {
            "first_notices": int((self.due["revision"] == 1).sum()),
            "updates": int((self.due["revision"] > 1).sum()),
            "with_new_date": int(self.due["new_eta"].notna().sum()),
            "without_date_yet": int(self.due["new_eta"].isna().sum()),
        }

    @property
    def preview(self) -> pd.DataFrame:
        """The due notices as a person checks them."""
        return self.due[["notice_key", "customer_id", "cause", "skus", "promised_at", "previous_eta", "new_eta"]]


def notify_delays(
    con: duckdb.DuckDBPyConnection,
    policy: allocation.AllocationPolicy,
    now: datetime,
    run_id: str | None,
    client: ApiClient | None,
    progress: Callable[[int, int], None] | None = None,
) -> NoticeRun:
    """One run of the delay notices: allocate supply to open order lines, find the notices due, write them to
    the ledger, send every pending one through `client`, and mark the discrepancies customers now know of.
    Without a `client` it is a dry run: it finds what is due and writes and sends nothing."""
    allocation.allocate(con, policy, now)
    delayed = allocation.delayed_lines(con)
    due = due_notices(con, delayed)
    (late_lines,) = con.execute(f"SELECT count(*) FROM {delayed}").fetchall()[0]
    if client is None:
        return NoticeRun(late_lines, due)
    planned = plan(con, due, now, run_id)
    todo = pending(con)
    report = send(con, client, todo, now, progress)
    notified = mark_discrepancies_notified(con, now)
    by_cause = con.sql(
        "SELECT cause, status, count(*) AS notices FROM notice_ledger GROUP BY ALL ORDER BY cause, status"
    ).df()
    return NoticeRun(late_lines, due, planned, len(todo), report, notified, by_cause)


def due_notices(con: duckdb.DuckDBPyConnection, delayed: str) -> pd.DataFrame:
    """Notices that delayed order lines call for now: one per order, for an order never notified, or an update
    when its date moved later (see the module). An order whose last notice is still unsent waits for it.

    Also creates temp table `due_lines`: the order lines each due notice names, for `plan`."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE due_orders AS
        WITH lines AS (
            SELECT l.*, {{'sku': l.sku, 'title': c.title, 'cause': l.cause}} AS item
            FROM {delayed} l LEFT JOIN valid_catalog c USING (sku)  -- one row per SKU (its key)
        ), orders AS (
            SELECT order_id, any_value(customer_id) AS customer_id, min(promised_at) AS promised_at,
                   -- the order arrives with its last line; unknown if any line has no date
                   CASE WHEN bool_or(eta IS NULL) THEN NULL ELSE max(eta) END AS new_eta,
                   first(cause ORDER BY eta DESC NULLS FIRST, cause) AS cause,
                   list(DISTINCT sku ORDER BY sku) AS skus,
                   list(DISTINCT item ORDER BY item) AS items,
                   list(DISTINCT no_date ORDER BY no_date) FILTER (WHERE no_date IS NOT NULL) AS no_date
            FROM lines GROUP BY order_id
        ), told AS (  -- what each order's customer was last told: its latest run's notices
            SELECT order_id, count(*) AS notices, bool_or(status = 'planned') AS unsent,
                   bool_or(new_eta IS NULL) FILTER (WHERE latest) AS last_undated,
                   max(new_eta) FILTER (WHERE latest) AS last_eta
            FROM (SELECT order_id, status, new_eta, planned_at = max(planned_at) OVER (PARTITION BY order_id) AS latest
                  FROM notice_ledger SEMI JOIN orders USING (order_id))
            GROUP BY order_id
        )
        SELECT 'delay:' || o.order_id || ':' || (coalesce(t.notices, 0) + 1) AS notice_key,
               (coalesce(t.notices, 0) + 1)::INTEGER AS revision, o.order_id, o.customer_id, o.cause, o.skus,
               o.promised_at, o.new_eta, CASE WHEN NOT t.last_undated THEN t.last_eta END AS previous_eta,
               coalesce(o.no_date, []) AS no_date, o.items
        FROM orders o LEFT JOIN told t USING (order_id)
        WHERE t.order_id IS NULL
           OR (NOT t.unsent AND (
                   o.new_eta::DATE > t.last_eta::DATE                -- the date moved later
                OR (NOT t.last_undated AND o.new_eta IS NULL)       -- the date told no longer holds
                OR (t.last_undated AND o.new_eta IS NOT NULL)))     -- the date we said we would write with"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE due_lines AS
        SELECT d.notice_key, l.order_id, l.line_no, l.sku, l.warehouse, l.cause, l.po_id, l.po_line, l.eta
        FROM {delayed} l JOIN due_orders d USING (order_id)"""
    )
    return con.sql("SELECT * FROM due_orders ORDER BY order_id").df()


def _day(value: object) -> str:
    day = pd.Timestamp(value)
    return f"{day:%A} {day.day} {day:%B}"


def _known(value: object) -> bool:
    return value is not None and not pd.isna(value)


def message(
    order_id: str,
    items: list[dict[str, str]],
    new_eta: object,
    previous_eta: object = None,
    revision: int = 1,
    no_date: list[str] | None = None,
) -> str:
    """The customer-facing text of a delay notice: what is late and why, and the new date or why none yet.

    `items` are the late items (`sku`, `title`, `cause`); `previous_eta` the date the last notice gave (for
    an update); `no_date` why a line has no date (`overdue`, `none_scheduled`)."""
    update = f"An update on your order {order_id}:"
    if revision <= 1:
        opening = f"Your order {order_id} will arrive later than promised."
    elif not _known(new_eta):
        told = f" by {_day(previous_eta)} as we last told you" if _known(previous_eta) else " when we last said"
        opening = f"{update} it will not arrive{told}."
    elif _known(previous_eta):
        opening = f"{update} it will arrive later than we last told you ({_day(previous_eta)})."
    else:
        opening = f"{update} we now have a delivery date."
    by_cause: dict[str, list[str]] = {}
    for item in items:
        name = f"{item['title']} ({item['sku']})" if item["title"] else item["sku"]
        by_cause.setdefault(item["cause"], []).append(name)
    late = " ".join(f"{', '.join(names)}: {DELAY_CAUSES[cause]}." for cause, names in sorted(by_cause.items()))
    if _known(new_eta):
        when = f"We now expect to deliver it by {_day(new_eta)}."
    else:
        reasons = {
            "overdue": "our supplier's delivery is overdue and has no new date",
            "none_scheduled": "no delivery to our warehouse is scheduled yet",
        }
        why = " and ".join(reasons[r] for r in (no_date or []) if r in reasons) or "we do not know when it will come"
        when = f"We cannot give you a new delivery date yet: {why}. We will write again as soon as we have one."
    return f"{opening} {late} {when}"


def plan(con: duckdb.DuckDBPyConnection, notices: pd.DataFrame, now: datetime, run_id: str | None) -> int:
    """Write due notices to the ledger as `planned`, with the lines they name (committed before any is sent);
    return how many. `notices` comes from `due_notices`, whose `due_lines` it reads."""
    if notices.empty:
        return 0
    frame = notices[["notice_key", "revision", "order_id", "customer_id", "cause", "skus", "promised_at", "new_eta"]]
    frame = frame.assign(
        message=[
            message(n.order_id, list(n.items), n.new_eta, n.previous_eta, n.revision, list(n.no_date))
            for n in notices.itertuples(index=False)
        ]
    )
    con.register("due", frame)
    try:
        with transaction(con):
            con.execute(
                """INSERT INTO notice_ledger (notice_key, revision, order_id, customer_id, cause, skus, promised_at,
                                              new_eta, message, status, planned_at, run_id)
                SELECT notice_key, revision, order_id, customer_id, cause, skus, promised_at, new_eta, message,
                       'planned', $now, $run
                FROM due ON CONFLICT DO NOTHING""",
                {"now": now, "run": run_id},
            )
            con.execute(
                """INSERT INTO notice_lines BY NAME SELECT * FROM due_lines SEMI JOIN due USING (notice_key)
                ON CONFLICT DO NOTHING"""
            )
    finally:
        con.unregister("due")
    return len(frame)


def pending(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Planned notices not yet acknowledged by the API (this run's and any a crashed run left behind)."""
    return con.sql(
        """SELECT notice_key, coalesce(revision, 1) AS revision, order_id, customer_id, cause, skus, promised_at,
                  new_eta, message
        FROM notice_ledger WHERE status = 'planned' ORDER BY planned_at, notice_key"""
    ).df()


def send(
    con: duckdb.DuckDBPyConnection,
    client: ApiClient,
    notices: pd.DataFrame,
    now: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> SendReport:
    """POST the pending notices with their keys, `BATCH_NOTICES` per request to `/notifications/batch`; mark
    acknowledged ones `sent`. A notice the API refuses stays `planned` with its error, for the next run.

    A service that cannot take the batch (it answers one of `NO_BATCHES`, or without a `results` list) is sent one
    POST per notice to `/notifications` from then on. Requests go out `SEND_WORKERS` at a time (the API is idempotent
    by key, so order does not matter and a retry is harmless); the notices are marked in the order planned.
    """
    acknowledged: list[tuple[str, str]] = []
    errors: list[str] = []
    sent = already = done = 0
    one_by_one = threading.Event()  # set once the service turns out not to take our batches

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

    def post(chunk: list[Any]) -> list[dict[str, Any] | UpstreamError]:
        if not one_by_one.is_set():
            try:
                answer = client.post_json("/notifications/batch", {"notifications": [_body(n) for n in chunk]})
            except UpstreamError as exc:
                if exc.status not in NO_BATCHES:
                    return [exc] * len(chunk)
            else:
                if isinstance(answer, dict) and isinstance(answer.get("results"), list):
                    return _batch_results(client.name, chunk, answer["results"])
            one_by_one.set()
        return [_post_one(client, n) for n in chunk]

    rows = list(notices.itertuples(index=False))
    chunks = [rows[i : i + BATCH_NOTICES] for i in range(0, len(rows), BATCH_NOTICES)]
    with ThreadPoolExecutor(SEND_WORKERS) as pool:
        for chunk, answers in zip(chunks, pool.map(post, chunks), strict=True):
            for n, answer in zip(chunk, answers, strict=True):
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
            done += len(chunk)
            if progress:
                progress(done, len(rows))
    mark()
    return SendReport(sent=sent, already_sent=already, failed=len(errors), errors=errors)


def _body(n: Any) -> dict[str, Any]:
    """The API's body of notice `n` (a row of `pending`)."""
    return {
        "idempotency_key": n.notice_key,
        "kind": "delivery_delay",
        "customer_id": n.customer_id,
        "order_id": n.order_id,
        "update": bool(n.revision > 1),  # a later notice about the same order
        "cause": n.cause,
        "skus": list(n.skus),
        "promised_at": _iso(n.promised_at),
        "new_eta": _iso(n.new_eta),
        "message": n.message,
    }


def _post_one(client: ApiClient, n: Any) -> dict[str, Any] | UpstreamError:
    try:
        return client.post_json("/notifications", _body(n))
    except UpstreamError as exc:
        return exc


def _batch_results(name: str, chunk: list[Any], results: list[Any]) -> list[dict[str, Any] | UpstreamError]:
    """Each notice's result among the batch endpoint's `results`, found by its key: an acknowledgement (`id`,
    `duplicate`) or the error the service gave for it (or for a result it left out)."""
    by_key = {
        r["idempotency_key"]: r for r in results if isinstance(r, dict) and isinstance(r.get("idempotency_key"), str)
    }
    outcome: list[dict[str, Any] | UpstreamError] = []
    for n in chunk:
        result = by_key.get(n.notice_key)
        if result is None:
            outcome.append(UpstreamError(f"{name}: POST /notifications/batch gave no result for this notice"))
        elif result.get("error") or not result.get("id"):
            why = result.get("error") or "no id given"
            outcome.append(UpstreamError(f"{name}: POST /notifications/batch refused this notice: {why}"))
        else:
            outcome.append(result)
    return outcome


def mark_discrepancies_notified(con: duckdb.DuckDBPyConnection, now: datetime) -> int:
    """Move open discrepancies to `customers_notified` when a sent notice named them as the cause of one of its
    lines (the PO line that line waits for, at its own warehouse); return how many moved."""
    kinds = [(cause, kind) for cause, ks in CAUSE_KINDS.items() for kind in ks]
    moved = con.execute(
        """UPDATE receipt_discrepancies d SET status = 'customers_notified', notified_at = $now, updated_at = $now
        FROM (SELECT DISTINCT l.po_id, l.po_line, k.kind
              FROM notice_lines l SEMI JOIN notice_ledger n ON n.notice_key = l.notice_key AND n.status = 'sent'
              JOIN (SELECT unnest($causes::VARCHAR[]) AS cause, unnest($kinds::VARCHAR[]) AS kind) k USING (cause)
              WHERE l.po_id IS NOT NULL) c
        WHERE d.status = 'open' AND d.po_id = c.po_id AND d.po_line = c.po_line AND d.kind = c.kind
        RETURNING d.po_id""",
        {"now": now, "causes": [c for c, _ in kinds], "kinds": [k for _, k in kinds]},
    ).fetchall()
    return len(moved)


def _iso(value: object) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()
