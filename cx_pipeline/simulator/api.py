"""The upstream APIs over the demo world, independent of HTTP: a request in, a status and JSON out."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd

from cx_pipeline.simulator.faults import FaultBook
from cx_pipeline.simulator.paging import (
    BadRequest,
    IncrementalFeed,
    LazyFeeds,
    LiveFeed,
    Page,
    SnapshotFeed,
    nest,
    render,
)
from cx_pipeline.simulator.world import World

DEFAULT_LIMIT, MAX_LIMIT = 500, 5000
MAX_BATCH_UPDATES = 100
MAX_BATCH_NOTICES = 100
STOCK_STATUSES = ("in_stock", "out_of_stock")


class TooLarge(BadRequest):
    """A batch of more items than the endpoint takes."""

    status = 413


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable; unused when `page` is set
    page: Page | None = None
    headers: dict[str, str] = field(default_factory=dict)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    """An ISO 8601 instant as epoch seconds, rounded up: `updated_since` is inclusive and rows are on whole
    seconds. A naive time is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadRequest(f"updated_since is not an ISO 8601 timestamp: {text[:40]!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.ceil(moment.timestamp())


class Api:
    """Every endpoint of the simulated WMS, catalog, OMS, helpdesk, storefront and notification service,
    plus the /_sim admin endpoints."""

    def __init__(self, world: World, faults: FaultBook) -> None:
        self.world = world
        self.faults = faults
        self.skus = sorted(world.storefront)
        self.stock_replies: dict[str, Response] = {}  # Idempotency-Key -> first answer
        self.stock_writes = 0  # storefront writes so far: a change log computed before any since still holds
        self.changed_cache: tuple[tuple[int, int, int], list[str]] | None = None
        self.notification_ids: dict[str, str] = {}  # idempotency_key -> id
        self.feeds = LazyFeeds(
            {
                "/wms/receipts": lambda: self._incremental("/wms/receipts", world.receipts, ["receipt_id", "line_no"]),
                "/wms/purchase_orders": lambda: self._nested("/wms/purchase_orders", world.purchase_orders),
                "/catalog/products": lambda: self._incremental("/catalog/products", world.products, ["sku"]),
                "/oms/orders": lambda: self._nested("/oms/orders", world.orders),
                "/helpdesk/inquiries": lambda: self._incremental(
                    "/helpdesk/inquiries", world.inquiries, ["inquiry_id"]
                ),
                "/wms/on_hand": lambda: SnapshotFeed("/wms/on_hand", self._on_hand_rows, self._on_hand_changed),
                "/storefront/stock": lambda: LiveFeed("/storefront/stock", lambda: len(self.skus), self._stock_rows),
                "/notifications": lambda: LiveFeed(
                    "/notifications", lambda: len(world.notifications), self._notification_rows
                ),
            }
        )
        self.routes: dict[tuple[str, str], Callable[[dict[str, str], bytes, dict[str, str]], Response]] = {
            ("POST", "/storefront/stock/batch"): self.stock_batch,
            ("POST", "/notifications"): self.notify,
            ("POST", "/notifications/batch"): self.notify_batch,
            ("GET", "/_sim/clock"): lambda *_: Response(200, {"now": iso(world.clock)}),
            ("POST", "/_sim/clock"): self.advance_clock,
            ("GET", "/_sim/faults"): lambda *_: Response(200, {"faults": faults.active()}),
            ("POST", "/_sim/faults"): self.add_fault,
            ("DELETE", "/_sim/faults"): lambda *_: Response(200, {"cleared": faults.clear()}),
        }

    def is_paged(self, method: str, path: str) -> bool:
        return method == "GET" and path in self.feeds

    def knows(self, path: str) -> bool:
        return path in self.feeds or any(p == path for _, p in self.routes)

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes, headers: dict[str, str]) -> Response:
        try:
            if self.is_paged(method, path):
                return Response(200, page=self.page(path, query))
            route = self.routes.get((method, path))
            if route is None:
                if self.knows(path):
                    return Response(405, {"error": f"{method} is not allowed on {path}"})
                return Response(404, {"error": f"no such endpoint: {path}"})
            return route(query, body, headers)
        except BadRequest as exc:
            return Response(exc.status, {"error": str(exc)})

    # --- paged reads ---------------------------------------------------------------------------------

    def page(self, path: str, query: dict[str, str]) -> Page:
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
        except ValueError as exc:
            raise BadRequest("limit must be an integer") from exc
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
        feed = self.feeds[path]
        clock = self.world.clock_seconds
        if isinstance(feed, IncrementalFeed):
            since = query.get("updated_since")
            return feed.page(clock, limit, query.get("cursor"), parse_time(since) if since else None)
        since = query.get("updated_since")
        if isinstance(feed, SnapshotFeed):  # on hand: the stock that moved since `updated_since`, if given
            return feed.page(clock, limit, query.get("cursor"), parse_time(since) if since else None)
        if since and path == "/storefront/stock":  # the shop's change log: SKUs whose state changed since then
            changed = self._stock_changed(parse_time(since))
            feed = LiveFeed(path, lambda: len(changed), lambda start, end: self._stock_rows_of(changed[start:end]))
        elif since:
            raise BadRequest(f"{path} is a snapshot: updated_since is not supported")
        return feed.page(clock, limit, query.get("cursor"))

    def _incremental(self, path: str, versions: pd.DataFrame, keys: list[str]) -> IncrementalFeed:
        columns = [c for c in versions.columns if c != "valid_to"]
        timestamps = [c for c in columns if isinstance(versions[c].dtype, pd.DatetimeTZDtype)]
        return IncrementalFeed(path, versions, keys, lambda frame: render(frame, columns, timestamps))

    def _nested(self, path: str, headers: pd.DataFrame) -> IncrementalFeed:
        """Headers with their lines nested under `lines` (purchase orders, customer orders)."""
        if path == "/oms/orders":
            key, lines, line_columns, dates = (
                "order_id",
                self.world.order_lines,
                ["line_no", "sku", "warehouse", "qty"],
                [],
            )
        else:
            key, lines, dates = "po_id", self.world.po_lines, ["expected_at"]
            line_columns = ["po_line", "sku", "qty_ordered", "expected_at"]
        lines = lines.sort_values(list(lines.columns[:2])).reset_index(drop=True)
        records = render(lines, line_columns, dates=dates)
        columns = [c for c in headers.columns if c != "valid_to"]
        timestamps = [c for c in columns if isinstance(headers[c].dtype, pd.DatetimeTZDtype)]

        def to_records(frame: pd.DataFrame) -> list[dict[str, object]]:
            nested = nest(lines, key, frame[key], records)
            return render(frame, columns, timestamps, extra={"lines": nested})

        return IncrementalFeed(path, headers, [key], to_records)

    def _on_hand_rows(self, clock: int) -> list[bytes]:
        frame = self.world.on_hand(datetime.fromtimestamp(clock, UTC))
        return [orjson.dumps(r) for r in render(frame, list(frame.columns), ["as_of"])]

    def _on_hand_changed(self, since: int, clock: int) -> list[bytes]:
        """The rows of the on-hand table at `clock` whose figures differ from the table at `since`: every
        movement (a receipt through QC, a shipment, damaged stock leaving) shows, as a WMS's change log would."""
        then, now = (self.world.on_hand(datetime.fromtimestamp(t, UTC)) for t in (since, clock))
        figures = ["on_hand", "in_qc", "damaged"]
        moved = now[(now[figures].to_numpy() != then[figures].to_numpy()).any(axis=1)]
        return [orjson.dumps(r) for r in render(moved, list(moved.columns), ["as_of"])]

    def _stock_rows(self, start: int, end: int) -> list[bytes]:
        return self._stock_rows_of(self.skus[start:end])

    def _stock_rows_of(self, skus: list[str]) -> list[bytes]:
        with self.world.lock:
            return [orjson.dumps({"sku": sku} | self._stock(sku)) for sku in skus]

    def _stock_changed(self, since: int) -> list[str]:
        """The SKUs whose storefront state changed at or after `since` (epoch seconds), in SKU order. Computed once
        per read, not per page (as a shop's indexed change log would): a scan of a million SKUs per page made the
        simulator, not the client, most of a read's time."""
        moment = datetime.fromtimestamp(since, UTC)
        with self.world.lock:
            key = (since, self.world.clock_seconds, self.stock_writes)
            if self.changed_cache is None or self.changed_cache[0] != key:
                changed = [sku for sku in self.skus if self.world.storefront[sku]["updated_at"] >= moment]
                self.changed_cache = (key, changed)
            return self.changed_cache[1]

    def _notification_rows(self, start: int, end: int) -> list[bytes]:
        with self.world.lock:
            return [orjson.dumps(n) for n in self.world.notifications[start:end]]

    def _stock(self, sku: str) -> dict[str, Any]:
        state = self.world.storefront[sku]
        return {
            "status": state["status"],
            "quantity": state["quantity"],
            "updated_at": iso(state["updated_at"]),
        }

    # --- writes --------------------------------------------------------------------------------------

    def stock_batch(self, query: dict[str, str], body: bytes, headers: dict[str, str]) -> Response:
        """Set storefront status and quantity per SKU; a repeated Idempotency-Key replays the first answer."""
        key = headers.get("idempotency-key")
        with self.world.lock:
            if key and key in self.stock_replies:
                return self.stock_replies[key]
            applied, refused = _batch(body, "updates", '{"sku", "status", "quantity"}', MAX_BATCH_UPDATES, headers)
            results = [self._apply_stock(u) for u in applied] + [
                {
                    "sku": u.get("sku") if isinstance(u, dict) else None,
                    "ok": False,
                    "before": None,
                    "after": None,
                    "error": "storefront busy: update not applied (injected fault: partial)",
                }
                for u in refused
            ]
            reply = Response(200, {"results": results})
            if key:
                self.stock_replies[key] = reply
            return reply

    def _apply_stock(self, update: Any) -> dict[str, Any]:
        sku = update.get("sku") if isinstance(update, dict) else None
        result: dict[str, Any] = {"sku": sku, "ok": False, "error": None, "before": None, "after": None}
        if sku not in self.world.storefront:
            return result | {"error": f"unknown sku: {sku}"}
        before = {k: v for k, v in self._stock(sku).items() if k != "updated_at"}
        status, quantity = update.get("status"), update.get("quantity")
        if status not in STOCK_STATUSES:
            return result | {"error": f"status must be one of {', '.join(STOCK_STATUSES)}", "before": before}
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
            return result | {"error": "quantity must be an integer >= 0", "before": before}
        self.world.storefront[sku] = {"status": status, "quantity": quantity, "updated_at": self.world.clock}
        self.stock_writes += 1
        return result | {"ok": True, "before": before, "after": {"status": status, "quantity": quantity}}

    def notify(self, query: dict[str, str], body: bytes, headers: dict[str, str]) -> Response:
        """Record a customer notification once per idempotency_key."""
        answer = self._record_notice(_json_object(body))
        if "error" in answer:
            raise BadRequest(answer["error"])
        return Response(200 if answer["duplicate"] else 201, {"id": answer["id"], "duplicate": answer["duplicate"]})

    def notify_batch(self, query: dict[str, str], body: bytes, headers: dict[str, str]) -> Response:
        """Record up to MAX_BATCH_NOTICES notifications, each once per idempotency_key; one result per notice, in
        order: its `idempotency_key` with `id` and `duplicate`, or with an `error` (that notice is not recorded)."""
        recorded, refused = _batch(body, "notifications", '{"idempotency_key", ...}', MAX_BATCH_NOTICES, headers)
        busy = "notification service busy: not recorded (injected fault: partial)"
        results = [self._record_notice(n) for n in recorded] + [
            {"idempotency_key": n.get("idempotency_key") if isinstance(n, dict) else None, "error": busy}
            for n in refused
        ]
        return Response(200, {"results": results})

    def _record_notice(self, notice: Any) -> dict[str, Any]:
        key = notice.get("idempotency_key") if isinstance(notice, dict) else None
        if not isinstance(key, str) or not key:
            return {"idempotency_key": None, "error": "idempotency_key (a non-empty string) is required"}
        with self.world.lock:
            duplicate = key in self.notification_ids
            if not duplicate:
                self.notification_ids[key] = f"NTF-{len(self.world.notifications) + 1:06d}"
                received = {"id": self.notification_ids[key], "received_at": iso(self.world.clock)}
                self.world.notifications.append(received | notice)
        return {"idempotency_key": key, "id": self.notification_ids[key], "duplicate": duplicate}

    # --- admin ---------------------------------------------------------------------------------------

    def advance_clock(self, query: dict[str, str], body: bytes, headers: dict[str, str]) -> Response:
        hours = _json_object(body).get("advance_hours")
        if not isinstance(hours, int | float) or isinstance(hours, bool) or hours < 0:
            raise BadRequest('body must be {"advance_hours": <hours >= 0>}')
        return Response(200, {"now": iso(self.world.advance(hours))})

    def add_fault(self, query: dict[str, str], body: bytes, headers: dict[str, str]) -> Response:
        spec = _json_object(body)
        params = {k: v for k, v in spec.items() if k not in ("path", "kind", "times")}
        try:
            fault = self.faults.add(
                str(spec.get("path", "")), str(spec.get("kind", "")), spec.get("times", 1), **params
            )
        except (ValueError, TypeError) as exc:
            raise BadRequest(str(exc)) from exc
        return Response(201, {"fault": fault.as_dict()})


def _batch(body: bytes, field: str, shape: str, limit: int, headers: dict[str, str]) -> tuple[list[Any], list[Any]]:
    """A batch write's items under `field` (at most `limit`): those to apply, and those the injected fault
    `partial` refuses (the second half: the service gives up half way through the batch)."""
    items = _json_object(body).get(field)
    if not isinstance(items, list):
        raise BadRequest(f'body must be {{"{field}": [{shape}, ...]}}')
    if len(items) > limit:
        raise TooLarge(f"at most {limit} {field} per batch")
    applied = len(items) // 2 if "partial" in headers.get("x-sim-faults", "") else len(items)
    return items[:applied], items[applied:]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadRequest("body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value
