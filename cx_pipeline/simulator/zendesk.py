"""A local Zendesk Support serving the demo world's inquiries as tickets, for tests and demos.

It implements, from Zendesk's published documents (links in `cx_pipeline.ingest.sources.zendesk`), what the Zendesk
source relies on, errors and rate limits included:

- `GET /api/v2/incremental/tickets/cursor.json` with `start_time` (epoch seconds; tickets whose
  `generated_timestamp` is at or after it) or `cursor` (the previous answer's `after_cursor`), and `per_page` up
  to 1000; the answer's `tickets`, `after_cursor`, `after_url`, `before_cursor`, `before_url` and `end_of_stream`;
  tickets changed within the last minute are left for the next export;
- authentication: `Basic base64("{email}/token:{api_token}")` or `Bearer {oauth_token}`; anything else is 401;
- the incremental exports' rate limit, 10 requests a minute: a sliding window on `timer` (monotonic by default),
  answered 429 with Retry-After in whole seconds.

Tickets have Zendesk's shape: `id`, `subject`, `description` (the first comment), `requester_id`, `via` (with the
sender's address for email tickets), `tags`, `custom_fields` (`[{id, value}]`: order number, SKU, contact reason),
`created_at`, `updated_at` (ISO 8601) and `generated_timestamp`.
"""

from __future__ import annotations

import base64
import math
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from typing import Any

import pandas as pd

from cx_pipeline.simulator.helpdesk import Reply, VendorServer, inquiries, iso
from cx_pipeline.simulator.world import World

EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
ORDER_FIELD, SKU_FIELD, REASON_FIELD = 360000001, 360000002, 360000003
MAX_PER_PAGE = 1000
EXPORT_LAG_SECONDS = 60  # "items that were created or changed within the minute prior to your request are excluded"
RATE_LIMIT = 10  # incremental export requests a minute
UNAUTHORIZED = {"error": "Couldn't authenticate you"}


class ZendeskSimulator(VendorServer):
    """The world's inquiries as Zendesk tickets (ticket id = the inquiry's number). `email` + `token` are an agent's
    API token; `oauth_token` an OAuth access token. `requests_per_window` requests are allowed per `window_seconds`."""

    name = "zendesk"

    def __init__(
        self,
        world: World,
        email: str = "agent@shop.example",
        token: str = "zendesk-api-token",
        oauth_token: str = "",
        *,
        requests_per_window: int = RATE_LIMIT,
        window_seconds: float = 60.0,
        now: Callable[[], datetime] | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(world, now)
        credentials = base64.b64encode(f"{email}/token:{token}".encode()).decode()
        self.accepted = {f"Basic {credentials}"} | ({f"Bearer {oauth_token}"} if oauth_token else set())
        self.requests_per_window, self.window_seconds, self.timer = requests_per_window, window_seconds, timer
        self._recent: deque[float] = deque()
        self.tickets: dict[int, dict[str, Any]] = {}
        self.generated: dict[int, int] = {}  # ticket id -> generated_timestamp (epoch s)
        for inquiry in inquiries(world):
            self.tickets[inquiry.number] = {
                "id": inquiry.number,
                "url": f"/api/v2/tickets/{inquiry.number}.json",
                "subject": inquiry.subject,
                "raw_subject": inquiry.subject,
                "description": inquiry.body,
                "status": "open",
                "requester_id": 900000 + inquiry.number,
                "via": {
                    "channel": "email",
                    "source": {
                        "from": {"address": inquiry.customer_email, "name": inquiry.customer_name},
                        "to": {"address": "support@shop.example", "name": "Shop"},
                    },
                },
                "tags": inquiry.tags,
                "custom_fields": [
                    {"id": ORDER_FIELD, "value": inquiry.order_id},
                    {"id": SKU_FIELD, "value": inquiry.sku},
                    {"id": REASON_FIELD, "value": inquiry.contact_reason},
                ],
                "created_at": iso(inquiry.created_at),
                "updated_at": iso(inquiry.updated_at),
            }
            self.generated[inquiry.number] = int(inquiry.updated_at.timestamp())

    def edit(self, ticket_id: int, at: datetime | None = None, **changes: Any) -> dict[str, Any]:
        """Change a ticket as an agent would (tags, subject, fields...): `updated_at` and `generated_timestamp`
        move to `at` (default: now). Any field may be set to anything, a broken timestamp included."""
        with self.lock:
            moment = pd.Timestamp(at or self.now())
            ticket = self.tickets[ticket_id]
            ticket.update({"updated_at": iso(moment)} | changes)
            self.generated[ticket_id] = int(moment.timestamp())
            return ticket

    def answer(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> Reply:
        if path != EXPORT_PATH:
            return HTTPStatus.NOT_FOUND, {"error": "InvalidEndpoint", "description": "Not found"}, {}
        if headers.get("authorization") not in self.accepted:
            return HTTPStatus.UNAUTHORIZED, UNAUTHORIZED, {"WWW-Authenticate": 'Basic realm="Web Password"'}
        if wait := self._rate_limited():
            return (
                HTTPStatus.TOO_MANY_REQUESTS,
                {"error": "APIRateLimitExceeded", "description": "Number of allowed API requests per minute exceeded"},
                {"Retry-After": str(wait)},
            )
        return self._export(query)

    def _rate_limited(self) -> int:
        """Seconds until another request is allowed (0: allowed now, and counted)."""
        now = self.timer()
        while self._recent and self._recent[0] <= now - self.window_seconds:
            self._recent.popleft()
        if len(self._recent) >= self.requests_per_window:
            return max(1, math.ceil(self._recent[0] + self.window_seconds - now))
        self._recent.append(now)
        return 0

    def _export(self, query: dict[str, str]) -> Reply:
        try:
            per_page = int(query.get("per_page", MAX_PER_PAGE))
            if "cursor" in query:
                position = tuple(map(int, base64.urlsafe_b64decode(query["cursor"]).decode().split("|")))
            elif "start_time" in query:
                position = (int(query["start_time"]) - 1, 2**62)  # at or after start_time
            else:
                return HTTPStatus.BAD_REQUEST, _invalid("start_time or cursor is required"), {}
        except ValueError:
            return HTTPStatus.BAD_REQUEST, _invalid("start_time, cursor or per_page is malformed"), {}
        if not 1 <= per_page <= MAX_PER_PAGE:
            return HTTPStatus.BAD_REQUEST, _invalid(f"per_page must be between 1 and {MAX_PER_PAGE}"), {}
        now = int(pd.Timestamp(self.now()).timestamp())
        if position[0] >= now:
            return HTTPStatus.BAD_REQUEST, _invalid("start_time is in the future"), {}
        # a ticket of the world's future has a generated_timestamp ahead of the clock too: not exported yet
        ready = sorted((g, i) for i, g in self.generated.items() if g <= now - EXPORT_LAG_SECONDS)
        following = [key for key in ready if key > position]
        page = following[:per_page]
        last = page[-1] if page else position
        after = base64.urlsafe_b64encode(f"{last[0]}|{last[1]}".encode()).decode()
        before = base64.urlsafe_b64encode(f"{position[0]}|{position[1]}".encode()).decode()
        body = {
            "tickets": [self.tickets[i] | {"generated_timestamp": g} for g, i in page],
            "after_cursor": after,
            "after_url": f"{EXPORT_PATH}?cursor={after}",
            "before_cursor": before,
            "before_url": f"{EXPORT_PATH}?cursor={before}",
            "end_of_stream": len(following) <= per_page,
        }
        return HTTPStatus.OK, body, {"X-Rate-Limit": str(self.requests_per_window)}


def _invalid(description: str) -> dict[str, str]:
    return {"error": "InvalidValue", "description": description}
