"""Gorgias as the source of the inquiries feed, through its tickets list.

Contract followed (Gorgias's published documents): https://developers.gorgias.com/reference/pagination-1 (`cursor`,
`limit`, `order_by` such as `updated_datetime:desc`; the answer's `data` and `meta.next_cursor`),
https://developers.gorgias.com/reference/tickets (the ticket: `id`, `tags`, `language`, `subject`, `customer`,
`created_datetime`, `updated_datetime`), https://developers.gorgias.com/reference/limitations (a leaky bucket of 40
calls per 20 s for API keys, 429 with Retry-After) and basic authentication with the account's email and REST API key.

The list has no updated-since filter, and tags are often added after a ticket is created, so each pull reads the
tickets newest change first and stops below its cursor minus a look-back window: a late tag on a ticket changed in
that window is read again. docs/architecture.md maps the fields.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from cx_pipeline.ingest.http import ApiClient, Deadline, UpstreamError
from cx_pipeline.ingest.sources.helpdesk import InquiryRules, guard_cursor, inquiry_row

TICKETS_PATH = "/api/tickets"
MAX_LIMIT = 100
ORDER_BY = "updated_datetime:desc"
SOURCE = "gorgias"


@dataclass(frozen=True)
class GorgiasFields:
    """The ids of the account's ticket fields that hold an order number and a contact reason ("": none)."""

    order: str = ""
    reason: str = ""


def authorization(email: str, api_key: str) -> str:
    """The Authorization header of a REST API key: basic, with the account's email as user name."""
    return "Basic " + base64.b64encode(f"{email}:{api_key}".encode()).decode()


def ticket_row(ticket: object, fields: GorgiasFields, rules: InquiryRules) -> dict[str, Any]:
    """The inquiry of one listed ticket; subject and excerpt are read for keywords only."""
    if not isinstance(ticket, dict):
        return inquiry_row(
            SOURCE, None, reason=None, tags=(), order_id=None, sku=None, created_at=None, updated_at=None
        )
    custom = ticket.get("custom_fields") if isinstance(ticket.get("custom_fields"), dict) else {}

    def value(field_id: str) -> Any:
        entry = custom.get(field_id) if field_id else None
        return entry.get("value") if isinstance(entry, dict) else None

    tags = [t.get("name") for t in ticket.get("tags") or () if isinstance(t, dict) and isinstance(t.get("name"), str)]
    reason_field = value(fields.reason)
    text = f"{ticket.get('subject') or ''}\n{ticket.get('excerpt') or ''}"
    return inquiry_row(
        SOURCE,
        ticket.get("id"),
        reason=rules.classify(
            tags, reason_field if isinstance(reason_field, str) else None, text, language=ticket.get("language")
        ),
        tags=tags,
        order_id=value(fields.order),
        sku=None,  # a Gorgias ticket names no product
        created_at=ticket.get("created_datetime"),
        updated_at=ticket.get("updated_datetime"),
    )


def ticket_pages(
    client: ApiClient,
    since: datetime | None,
    rules: InquiryRules,
    fields: GorgiasFields,
    lookback: timedelta,
    limit: int = MAX_LIMIT,
) -> Iterator[list[dict[str, Any]]]:
    """Yield the inquiries of the tickets changed since `since - lookback` (all of them when `since` is None), a page
    at a time, newest change first."""
    floor = pd.Timestamp(since - lookback) if since else None
    params: dict[str, Any] = {"limit": max(1, min(limit, MAX_LIMIT)), "order_by": ORDER_BY}
    pull = Deadline.after(client.pull_deadline, "pull_deadline_seconds")
    asked: set[object] = set()
    pages = 0
    while True:
        page = client.get_json(TICKETS_PATH, params, pull=pull)
        pages += 1
        if not isinstance(page, dict) or not isinstance(page.get("data"), list):
            raise UpstreamError(f"{client.name}: {TICKETS_PATH} answered without a 'data' list: {str(page)[:200]}")
        rows, below = [], False
        for ticket in page["data"]:
            changed = (
                pd.to_datetime(ticket.get("updated_datetime"), utc=True, errors="coerce")
                if isinstance(ticket, dict)
                else pd.NaT
            )
            if floor is not None and not pd.isna(changed) and changed < floor:
                below = True  # ordered newest change first: everything after is older still
                break
            rows.append(ticket_row(ticket, fields, rules))
        yield rows
        meta = page.get("meta") if isinstance(page.get("meta"), dict) else {}
        cursor = meta.get("next_cursor")
        if below or not cursor:
            return
        guard_cursor(client.name, cursor, asked, pages, client.max_pages)
        params = {**params, "cursor": cursor}
