"""A local Gorgias helpdesk serving the demo world's inquiries as tickets, for tests and demos.

It implements, from Gorgias's published documents (links in `cx_pipeline.ingest.sources.gorgias`), what the Gorgias
source relies on, errors and rate limits included:

- `GET /api/tickets` with cursor pagination: `cursor`, `limit` (1..100, default 30) and `order_by`
  (`created_datetime` or `updated_datetime`, `:asc` or `:desc`); the answer's `data`, `object`, `uri` and
  `meta.prev_cursor` / `meta.next_cursor`. There is no filter on the time of change;
- basic authentication with the account's email and a REST API key; anything else is 401;
- the leaky bucket of API-key integrations, 40 calls draining at 2 a second, reported in
  `X-Gorgias-Account-Api-Call-Limit` (`used/limit`) and answered 429 with Retry-After when full.

Tickets have Gorgias's shape: `id`, `subject`, `excerpt`, `language`, `channel`, `via`, `customer` (id, name,
email), `tags` (`[{id, name}]`), `custom_fields` (`{field_id: {id, value}}`: order number, contact reason),
`created_datetime` and `updated_datetime`. `tag` adds a tag the way a rule does, optionally without moving
`updated_datetime`, which is why the source re-reads a look-back window.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from typing import Any

import orjson
import pandas as pd

from cx_pipeline.simulator.helpdesk import Reply, VendorServer, inquiries, iso
from cx_pipeline.simulator.world import World

TICKETS_PATH = "/api/tickets"
ORDER_FIELD, REASON_FIELD = "101", "102"
DEFAULT_LIMIT, MAX_LIMIT = 30, 100
ORDERINGS = {f"{field}:{way}" for field in ("created_datetime", "updated_datetime") for way in ("asc", "desc")}
BUCKET_SIZE, LEAK_RATE = 40, 2.0  # API keys: 40 requests per 20 s window


class GorgiasSimulator(VendorServer):
    """The world's inquiries as Gorgias tickets (ticket id = the inquiry's number), for the account `email` with
    REST API key `api_key`; the leaky bucket holds `bucket_size` calls and drains `leak_rate` a second."""

    name = "gorgias"

    def __init__(
        self,
        world: World,
        email: str = "agent@shop.example",
        api_key: str = "gorgias-api-key",
        *,
        bucket_size: int = BUCKET_SIZE,
        leak_rate: float = LEAK_RATE,
        now: Callable[[], datetime] | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(world, now)
        self.accepted = "Basic " + base64.b64encode(f"{email}:{api_key}".encode()).decode()
        self.bucket_size, self.leak_rate, self.timer = bucket_size, leak_rate, timer
        self._level, self._at = 0.0, timer()
        self.tickets: dict[int, dict[str, Any]] = {}
        self.opened: dict[int, pd.Timestamp] = {}  # when the ticket exists in the world
        for inquiry in inquiries(world):
            self.opened[inquiry.number] = inquiry.created_at
            self.tickets[inquiry.number] = {
                "id": inquiry.number,
                "uri": f"/api/tickets/{inquiry.number}/",
                "external_id": None,
                "status": "open",
                "channel": "email",
                "via": "email",
                "language": inquiry.language,
                "subject": inquiry.subject,
                "excerpt": inquiry.body[:80],
                "customer": {
                    "id": 500000 + inquiry.number,
                    "name": inquiry.customer_name,
                    "email": inquiry.customer_email,
                },
                "tags": [{"id": _tag_id(name), "name": name} for name in inquiry.tags],
                "custom_fields": {
                    ORDER_FIELD: {"id": int(ORDER_FIELD), "value": inquiry.order_id},
                    REASON_FIELD: {"id": int(REASON_FIELD), "value": inquiry.contact_reason},
                },
                "created_datetime": iso(inquiry.created_at),
                "updated_datetime": iso(inquiry.updated_at),
            }

    def edit(self, ticket_id: int, at: datetime | None = None, **changes: Any) -> dict[str, Any]:
        """Change a ticket as an agent would: `updated_datetime` moves to `at` (default: now)."""
        with self.lock:
            ticket = self.tickets[ticket_id]
            ticket.update({"updated_datetime": iso(pd.Timestamp(at or self.now()))} | changes)
            return ticket

    def tag(self, ticket_id: int, name: str, touch: bool = False) -> dict[str, Any]:
        """Add a tag as a rule or an agent does; `touch` moves `updated_datetime` to now as well."""
        with self.lock:
            ticket = self.tickets[ticket_id]
            ticket["tags"] = [*ticket["tags"], {"id": _tag_id(name), "name": name}]
            if touch:
                ticket["updated_datetime"] = iso(pd.Timestamp(self.now()))
            return ticket

    def answer(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> Reply:
        if path.rstrip("/") != TICKETS_PATH:
            return HTTPStatus.NOT_FOUND, {"error": {"msg": "Not found"}}, {}
        if headers.get("authorization") != self.accepted:
            return HTTPStatus.UNAUTHORIZED, {"error": {"msg": "Unauthorized: wrong email or API key"}}, {}
        used, wait = self._bucket()
        limit = {"X-Gorgias-Account-Api-Call-Limit": f"{math.ceil(used)}/{self.bucket_size}"}
        if wait:
            return HTTPStatus.TOO_MANY_REQUESTS, {"error": {"msg": "Too many requests"}}, limit | {"Retry-After": wait}
        return (*self._list(query), limit)

    def _bucket(self) -> tuple[float, str]:
        """The calls in the bucket and, when it is full, the seconds to wait (as Retry-After sends them)."""
        now = self.timer()
        self._level = max(0.0, self._level - (now - self._at) * self.leak_rate)
        self._at = now
        if self._level + 1 > self.bucket_size:
            return self._level, str(max(1, math.ceil((self._level + 1 - self.bucket_size) / self.leak_rate)))
        self._level += 1
        return self._level, ""

    def _list(self, query: dict[str, str]) -> tuple[int, Any]:
        order_by = query.get("order_by", "created_datetime:desc")
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
        except ValueError:
            return HTTPStatus.BAD_REQUEST, {"error": {"msg": "limit must be an integer"}}
        if order_by not in ORDERINGS or not 1 <= limit <= MAX_LIMIT:
            return HTTPStatus.BAD_REQUEST, {"error": {"msg": f"order_by or limit (1..{MAX_LIMIT}) is invalid"}}
        field, way = order_by.split(":")
        now = pd.Timestamp(self.now())
        # a broken or future timestamp sorts as the epoch: the list is the helpdesk's, not the test's doing
        ordered = sorted(
            ((_sort_key(t[field]), i) for i, t in self.tickets.items() if self.opened[i] <= now),
            reverse=way == "desc",
        )
        start = 0
        if cursor := query.get("cursor"):
            try:
                after = tuple(orjson.loads(base64.urlsafe_b64decode(cursor)))
            except ValueError:
                return HTTPStatus.BAD_REQUEST, {"error": {"msg": "Invalid cursor"}}
            start = next((n + 1 for n, key in enumerate(ordered) if list(key) == list(after)), len(ordered))
        page = ordered[start : start + limit]
        more = start + limit < len(ordered)
        next_cursor = base64.urlsafe_b64encode(orjson.dumps(list(page[-1]))).decode() if page and more else None
        body = {
            "data": [self.tickets[i] for _, i in page],
            "object": "list",
            "uri": TICKETS_PATH,
            "meta": {"prev_cursor": cursor or None, "next_cursor": next_cursor},
        }
        return HTTPStatus.OK, body


def _sort_key(text: object) -> int:
    moment = pd.to_datetime(text, utc=True, errors="coerce")
    return 0 if pd.isna(moment) else int(moment.timestamp())


def _tag_id(name: str) -> int:
    return sum(map(ord, name)) % 10_000
