"""Serving tables as cursor-paged JSON: rows are rendered to JSON once and pages are array slices.

A cursor pins the clock of the page that issued it, so a client that pages while the clock moves still
reads one consistent snapshot: every matching row exactly once.
"""

from __future__ import annotations

import base64
import binascii
import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import orjson
import pandas as pd

NEVER = np.iinfo(np.int64).max


class BadRequest(ValueError):
    """A client error answered with `status` (400) and this message."""

    status = 400


@dataclass(frozen=True)
class Page:
    rows: Sequence[bytes]  # each row already JSON
    next_cursor: str | None
    as_of: int  # epoch seconds


def encode_cursor(feed: str, clock: int, position: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([feed, clock, position])).decode().rstrip("=")


def decode_cursor(feed: str, cursor: str, clock: int) -> tuple[int, int]:
    """(clock, position) of a cursor this feed issued; anything else is a BadRequest."""
    try:
        name, at, position = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise BadRequest("invalid cursor") from exc
    if name != feed or not isinstance(at, int) or not isinstance(position, int) or at > clock or position < 0:
        raise BadRequest("invalid cursor")
    return at, position


def looped(page: Page, feed: str, cursor: str | None, to: str) -> Page:
    """`page` with a next_cursor that loops (fault `cursor_loop`): the cursor it was asked with again ("self"),
    or a fresh cursor to the first page at the same clock ("start"), which then repeats its own successor."""
    if to == "self":
        return replace(page, next_cursor=cursor) if cursor else page
    return replace(page, next_cursor=encode_cursor(feed, page.as_of, 0))


def iso(seconds: np.ndarray, date_only: bool = False) -> np.ndarray:
    """Epoch seconds as ISO 8601 UTC strings with Z, or as YYYY-MM-DD (object array, vectorised)."""
    if date_only:
        return np.datetime_as_string(seconds.astype("datetime64[s]"), unit="D").astype(object)
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    return np.char.add(text, "Z").astype(object)


def epoch_seconds(column: pd.Series) -> np.ndarray:
    """A tz-aware datetime column as epoch seconds (NaT as NEVER)."""
    values = column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[s]").astype(np.int64)
    return np.where(column.isna().to_numpy(), NEVER, values)


def render(
    frame: pd.DataFrame,
    columns: Sequence[str],
    timestamps: Sequence[str] = (),
    dates: Sequence[str] = (),
    extra: dict[str, Sequence[object]] | None = None,
) -> list[dict[str, object]]:
    """Rows of `frame` as JSON-ready dicts: timestamps as ISO strings, dates as YYYY-MM-DD."""
    values: dict[str, list[object]] = {}
    for column in columns:
        series = frame[column]
        if column in timestamps or column in dates:
            seconds = epoch_seconds(series)
            text = iso(np.where(seconds == NEVER, 0, seconds), date_only=column in dates)
            values[column] = np.where(seconds == NEVER, None, text).tolist()
        else:
            values[column] = series.tolist()
    values.update(extra or {})
    names = list(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*values.values(), strict=True)]


def nest(
    lines: pd.DataFrame, parent_key: str, parents: pd.Series, records: list[dict[str, object]]
) -> list[orjson.Fragment]:
    """For each parent, its lines as one pre-rendered JSON list (`lines` sorted by parent key, then line
    number). Rendered once per parent: the versions of a header share them."""
    unique, inverse = np.unique(parents.to_numpy().astype(str), return_inverse=True)
    keys = lines[parent_key].to_numpy().astype(str)
    bounds = zip(
        np.searchsorted(keys, unique, "left").tolist(),
        np.searchsorted(keys, unique, "right").tolist(),
        strict=True,
    )
    rendered = [orjson.Fragment(orjson.dumps(records[a:b])) for a, b in bounds]
    return [rendered[i] for i in inverse.tolist()]


class IncrementalFeed:
    """Row versions served by `updated_since` (inclusive), ordered by (updated_at, natural key).

    Versions are sorted once; for a given clock the visible ones are one vectorised mask (cached per
    clock), and a page is a searchsorted plus a slice of pre-rendered JSON rows.
    """

    def __init__(self, name: str, versions: pd.DataFrame, keys: Sequence[str], to_records: RecordsFn) -> None:
        versions = versions.sort_values(["updated_at", *keys], kind="stable").reset_index(drop=True)
        self.name = name
        self.updated = epoch_seconds(versions["updated_at"])
        self.valid_to = epoch_seconds(versions["valid_to"])
        self.rows = np.array([orjson.dumps(r) for r in to_records(versions)], dtype=object)
        self.visible = lru_cache(maxsize=8)(self._visible)

    def _visible(self, clock: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the versions current at `clock` and their updated_at, in serving order."""
        positions = np.flatnonzero((self.updated <= clock) & (self.valid_to > clock))
        return positions, self.updated[positions]

    def page(self, clock: int, limit: int, cursor: str | None, updated_since: int | None) -> Page:
        if cursor:
            clock, start = decode_cursor(self.name, cursor, clock)
            positions, updated = self.visible(clock)
        else:
            positions, updated = self.visible(clock)
            start = 0 if updated_since is None else int(np.searchsorted(updated, updated_since, side="left"))
        end = min(start + limit, len(positions))
        rows = self.rows[positions[start:end]].tolist()
        return Page(rows, encode_cursor(self.name, clock, end) if end < len(positions) else None, clock)


RecordsFn = Callable[[pd.DataFrame], list[dict[str, object]]]


class SnapshotFeed:
    """A table computed for a clock (on-hand stock), paged in a fixed order; the cursor pins the clock.

    With `since`, only the rows whose values differ from the table at `since` (a delta read); `changed(since,
    clock)` computes those.
    """

    def __init__(
        self,
        name: str,
        snapshot: Callable[[int], list[bytes]],
        changed: Callable[[int, int], list[bytes]] | None = None,
    ) -> None:
        self.name = name
        self.rows = lru_cache(maxsize=4)(snapshot)
        self.changed = lru_cache(maxsize=4)(changed) if changed else None

    def page(self, clock: int, limit: int, cursor: str | None, since: int | None = None) -> Page:
        start = 0
        if cursor:
            clock, start = decode_cursor(self.name, cursor, clock)
        if since is not None and self.changed is None:
            raise BadRequest(f"{self.name} is a snapshot: updated_since is not supported")
        rows = self.rows(clock) if since is None else self.changed(min(since, clock), clock)
        end = min(start + limit, len(rows))
        return Page(rows[start:end], encode_cursor(self.name, clock, end) if end < len(rows) else None, clock)


class LiveFeed:
    """Mutable state (storefront, notifications) paged by position over a list that only grows or
    changes in place; `rows(start, end)` renders just the page under the caller's lock."""

    def __init__(self, name: str, size: Callable[[], int], rows: Callable[[int, int], list[bytes]]) -> None:
        self.name = name
        self.size = size
        self.rows = rows

    def page(self, clock: int, limit: int, cursor: str | None) -> Page:
        start = decode_cursor(self.name, cursor, clock)[1] if cursor else 0
        total = self.size()
        end = min(start + limit, total)
        return Page(self.rows(start, end), encode_cursor(self.name, clock, end) if end < total else None, clock)


class LazyFeeds:
    """Builds each feed on first use (rendering a big table takes a moment; many tests touch few feeds)."""

    def __init__(self, builders: dict[str, Callable[[], object]]) -> None:
        self._builders = builders
        self._built: dict[str, object] = {}
        self._lock = threading.Lock()

    def __contains__(self, path: str) -> bool:
        return path in self._builders

    def __getitem__(self, path: str) -> object:
        feed = self._built.get(path)
        if feed is None:
            with self._lock, _no_gc():
                feed = self._built.get(path) or self._builders[path]()
                self._built[path] = feed
        return feed


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC while rendering: the millions of fresh dicts and strings of a big table would
    otherwise trigger a full collection again and again, making rendering superlinear."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
