"""Zendesk Support as the source of the inquiries feed, through the cursor-based Incremental Ticket Export.

Contract followed (Zendesk's published documents):
https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/ (`GET
/api/v2/incremental/tickets/cursor.json` with `start_time` (epoch seconds) on the first request and `cursor` after
it, `per_page` up to 1000; the answer's `tickets`, `after_cursor` and `end_of_stream`; 10 requests a minute, 429 with
Retry-After), https://developer.zendesk.com/documentation/ticketing/managing-tickets/using-the-incremental-export-api
(items changed within the last minute are left for the next export; `start_time` is compared with a ticket's
`generated_timestamp`), and https://support.zendesk.com/hc/en-us/articles/4408831452954 (authentication: basic
`{email}/token:{api_token}` or `Bearer {oauth_token}`). docs/architecture.md maps the fields.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cx_pipeline.ingest.http import ApiClient, Deadline, UpstreamError
from cx_pipeline.ingest.sources.helpdesk import InquiryRules, guard_cursor, inquiry_row

EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
MAX_PER_PAGE = 1000
SOURCE = "zendesk"


@dataclass(frozen=True)
class ZendeskFields:
    """The ids of the account's custom ticket fields that hold an order number, a SKU and a contact reason
    (0: the account has no such field)."""

    order: int = 0
    sku: int = 0
    reason: int = 0


def authorization(email: str, token: str) -> str:
    """The Authorization header: an API token with the agent's email (basic), or an OAuth access token (bearer)."""
    if email:
        return "Basic " + base64.b64encode(f"{email}/token:{token}".encode()).decode()
    return f"Bearer {token}"


def ticket_row(ticket: object, fields: ZendeskFields, rules: InquiryRules) -> dict[str, Any]:
    """The inquiry of one exported ticket; subject and description are read for keywords only."""
    if not isinstance(ticket, dict):
        return inquiry_row(
            SOURCE, None, reason=None, tags=(), order_id=None, sku=None, created_at=None, updated_at=None
        )
    values = {
        f.get("id"): f.get("value") for f in ticket.get("custom_fields") or () if isinstance(f, dict) and f.get("id")
    }
    tags = [t for t in ticket.get("tags") or () if isinstance(t, str)]
    text = f"{ticket.get('subject') or ''}\n{ticket.get('description') or ''}"
    field = values.get(fields.reason) if fields.reason else None
    return inquiry_row(
        SOURCE,
        ticket.get("id"),
        # Zendesk tickets carry no language (the requester's locale needs the users side-load, which is personal)
        reason=rules.classify(tags, field if isinstance(field, str) else None, text, language=None),
        tags=tags,
        order_id=values.get(fields.order) if fields.order else None,
        sku=values.get(fields.sku) if fields.sku else None,
        created_at=ticket.get("created_at"),
        updated_at=ticket.get("updated_at"),
    )


def ticket_pages(
    client: ApiClient, since: datetime | None, rules: InquiryRules, fields: ZendeskFields, per_page: int = MAX_PER_PAGE
) -> Iterator[list[dict[str, Any]]]:
    """Yield the inquiries of every ticket changed since `since` (all of them when None), a page at a time, until
    Zendesk says `end_of_stream`."""
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    # inclusive: whole seconds, rounded down, so a ticket changed in the cursor's own second is read again
    params: dict[str, Any] = {"per_page": per_page, "start_time": math.floor(since.timestamp()) if since else 0}
    pull = Deadline.after(client.pull_deadline, "pull_deadline_seconds")
    asked: set[object] = set()
    pages = 0
    while True:
        page = client.get_json(EXPORT_PATH, params, pull=pull)
        pages += 1
        if not isinstance(page, dict) or not isinstance(page.get("tickets"), list):
            raise UpstreamError(f"{client.name}: {EXPORT_PATH} answered without a 'tickets' list: {str(page)[:200]}")
        yield [ticket_row(t, fields, rules) for t in page["tickets"]]
        if page.get("end_of_stream") is True:
            return
        cursor = page.get("after_cursor")
        if page.get("end_of_stream") is not False or not cursor:
            raise UpstreamError(
                f"{client.name}: {EXPORT_PATH} answered neither end_of_stream nor an after_cursor to go on with"
            )
        guard_cursor(client.name, cursor, asked, pages, client.max_pages)
        params = {"per_page": per_page, "cursor": cursor}
