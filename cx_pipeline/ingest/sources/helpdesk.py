"""What a helpdesk ticket becomes: an inquiry row with a reason derived from its tags, its contact-reason field or
keywords per language (`inquiry_rules.yaml`, next to this module, which the business edits).

Tickets hold personal data. A row keeps the ticket's id, tags, derived reason, order reference, SKU and timestamps;
the subject and first message are read in memory to find keywords and never leave this module, nor does anything
about the customer (name, email, phone)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import duckdb
import requests

from cx_pipeline.core.rule_files import RulesError, read_yaml
from cx_pipeline.core.sql import first_row
from cx_pipeline.ingest.feeds import INQUIRY_REASONS, Feed
from cx_pipeline.ingest.http import ApiClient, UpstreamError
from cx_pipeline.ingest.landing import Batch, ProgressFn, stage

RULES_FILE = Path(__file__).with_name("inquiry_rules.yaml")
UNCLASSIFIED = "other"
REASONS = tuple(r for r in INQUIRY_REASONS if r != UNCLASSIFIED)
SECTIONS = ("tags", "fields", "keywords")
LANGUAGE = re.compile(r"^[a-z]{2,3}$")  # ISO 639 codes, as Gorgias sends them (en, de, fr)


@dataclass(frozen=True)
class InquiryRules:
    """Per reason, in the order tried: the tags and contact-reason field values that name it, and per language the
    keywords that suggest it (all lower-case)."""

    tags: dict[str, tuple[str, ...]]
    fields: dict[str, tuple[str, ...]]
    keywords: dict[str, dict[str, tuple[re.Pattern[str], ...]]]  # language -> reason -> patterns

    def classify(
        self, tags: Iterable[str] = (), field: str | None = None, text: str = "", language: str | None = None
    ) -> str:
        """The reason of a ticket: by tag, then by contact-reason field, then by keyword; `other` when none."""
        given = {t.strip().lower() for t in tags if isinstance(t, str)}
        for reason, names in self.tags.items():
            if given.intersection(names):
                return reason
        value = field.strip().lower() if isinstance(field, str) else None
        for reason, values in self.fields.items():
            if value in values:
                return reason
        text = text.lower()
        # the ticket's language when the rules know it; otherwise every language (a helpdesk may not know it)
        languages = [language] if language in self.keywords else list(self.keywords)
        for lang in languages:
            for reason, patterns in self.keywords[lang].items():
                if any(p.search(text) for p in patterns):
                    return reason
        return UNCLASSIFIED


def load_rules(path: str | Path | None = None) -> InquiryRules:
    """The inquiry rules file (`path`, else env CX_INQUIRY_RULES, else the bundled one), validated whole."""
    path = Path(path or os.environ.get("CX_INQUIRY_RULES") or RULES_FILE)
    data = read_yaml(path)
    if not isinstance(data, dict) or not data or not set(data) <= set(SECTIONS):
        raise RulesError(f"{path}: expected the sections {', '.join(SECTIONS)} (any of them)")
    problems: list[str] = []
    tags = _by_reason(data.get("tags") or {}, "tags", problems)
    fields = _by_reason(data.get("fields") or {}, "fields", problems)
    keywords: dict[str, dict[str, tuple[str, ...]]] = {}
    languages = data.get("keywords") or {}
    if not isinstance(languages, dict):
        problems.append("keywords: expected a mapping of language -> reason -> keywords")
        languages = {}
    for language, by_reason in languages.items():
        if not isinstance(language, str) or not LANGUAGE.match(language):
            problems.append(f"keywords.{language}: a language is an ISO 639 code such as en or de")
            continue
        keywords[language] = _by_reason(by_reason, f"keywords.{language}", problems)
    if problems:
        raise RulesError(f"{path}: " + "; ".join(problems))
    return InquiryRules(
        tags,
        fields,
        {lang: {r: tuple(map(_word_start, ws)) for r, ws in rules.items()} for lang, rules in keywords.items()},
    )


def _by_reason(section: object, name: str, problems: list[str]) -> dict[str, tuple[str, ...]]:
    """A section's `reason -> [names]`, lower-cased; every problem is added to `problems`."""
    if not isinstance(section, dict):
        problems.append(f"{name}: expected a mapping of reason -> list of names")
        return {}
    found = {}
    for reason, names in section.items():
        if reason not in REASONS:
            problems.append(
                f"{name}.{reason}: not a reason (choose from {', '.join(REASONS)}; `other` is what is left)"
            )
        elif not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            problems.append(f"{name}.{reason}: expected a non-empty list of texts")
        else:
            found[reason] = tuple(n.strip().lower() for n in names)
    return found


def _word_start(keyword: str) -> re.Pattern[str]:
    # at the start of a word, so "storn" finds "Stornierung" but "return" not "nonreturnable"
    return re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, keyword.split())))


def inquiry_row(
    source: str,
    ticket_id: object,
    *,
    reason: str,
    tags: Sequence[str],
    order_id: object,
    sku: object,
    created_at: object,
    updated_at: object,
) -> dict[str, Any]:
    """One row of the inquiries feed from a ticket: only what the pipeline may keep (see the module's note).
    Timestamps and references go as sent, so the contract judges and quarantines them verbatim."""
    return {
        "inquiry_id": f"{source}-{ticket_id}" if ticket_id is not None else None,
        "order_id": _text(order_id),
        "sku": _text(sku),
        "reason": reason,
        "created_at": created_at,
        "updated_at": updated_at,
        "tags": sorted({t.strip().lower() for t in tags if isinstance(t, str) and t.strip()}),
    }


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value).strip()


def unclassified(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Of the inquiries staged by the latest pull (`landing_inquiries`), how many no rule classified, and of how
    many with a reason at all; whatever the source, a high share means the rules need work."""
    other, judged = first_row(
        con,
        f"SELECT count(*) FILTER (WHERE reason = '{UNCLASSIFIED}'), count(reason) FROM landing_inquiries",
    )
    return int(other), int(judged)


class SourceClock:
    """The helpdesk's own clock, read from the `Date` header of its answers: the batch's `as_of`, so the contract
    judges "in the future" by the source's clock, never by this machine's."""

    def __init__(self) -> None:
        self.latest: datetime | None = None

    def saw(self, response: requests.Response, *args: object, **kwargs: object) -> requests.Response:
        # without a usable Date, the contract falls back to the pipeline's clock
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.latest = parsedate_to_datetime(response.headers["Date"]).astimezone(UTC)
        return response


def stage_tickets(
    con: duckdb.DuckDBPyConnection,
    client: ApiClient,
    feed: Feed,
    pages: Callable[[], Iterator[list[dict[str, Any]]]],
    since: datetime | None,
    progress: ProgressFn | None = None,
) -> Batch:
    """Stage the rows `pages` yields (a reader over `client`) in `landing_<feed>`, with the helpdesk's clock as
    `as_of`."""
    if feed.name != "inquiries":
        raise ValueError(f"a helpdesk source provides the inquiries feed only, not {feed.name}")
    clock = SourceClock()
    client.session.hooks["response"].append(clock.saw)
    seen = {"pages": 0, "rows": 0}

    def counted() -> Iterator[list[dict[str, Any]]]:
        for rows in pages():
            seen["pages"] += 1
            seen["rows"] += len(rows)
            yield rows
            if progress:
                progress(seen["pages"], seen["rows"])

    try:
        batch = stage(con, feed, counted(), since)
    finally:
        client.session.hooks["response"].remove(clock.saw)
    return replace(batch, as_of=clock.latest)


def guard_cursor(name: str, cursor: object, asked: set[object], pages: int, max_pages: int) -> None:
    """Every pull ends: a cursor already read in this pull, or more pages than `max_pages`, is an error."""
    if cursor in asked:
        raise UpstreamError(f"{name}: sent cursor {str(cursor)[:80]!r} again after {pages} pages: the export loops")
    if pages >= max_pages:
        raise UpstreamError(f"{name}: more than max_pages={max_pages:,} pages in one pull; stopped there")
    asked.add(cursor)
