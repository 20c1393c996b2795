"""Pull a feed from its upstream API and land it in the warehouse idempotently."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import pandas as pd

from cx_pipeline.feeds import Feed
from cx_pipeline.http import ApiClient
from cx_pipeline.warehouse import one, row_key_sql

ProgressFn = Callable[[int, int], None]  # (pages so far, rows so far)
PREVIEW_ROWS = 5


@dataclass(frozen=True)
class Batch:
    """One pull of a feed, as typed rows plus each row exactly as the source sent it (`_raw`)."""

    feed: Feed
    frame: pd.DataFrame
    as_of: datetime | None
    updated_since: datetime | None
    pages: int


@dataclass(frozen=True)
class LandingStats:
    batch_id: str
    rows_fetched: int
    rows_new: int
    rows_updated: int
    rows_unchanged: int
    rows_duplicate: int
    cursor: datetime | None
    preview: pd.DataFrame  # a few of the new or changed rows, for people reading the run


def last_cursor(con: duckdb.DuckDBPyConnection, feed: Feed) -> datetime | None:
    """Where the next incremental pull of `feed` starts: the newest `updated_at` landed so far."""
    if not feed.incremental:
        return None
    row = one(
        con,
        "SELECT cursor FROM ingest_batches WHERE feed = ? AND cursor IS NOT NULL ORDER BY fetched_at DESC LIMIT 1",
        [feed.name],
    )
    return row[0] if row else None


def fetch(
    client: ApiClient,
    feed: Feed,
    updated_since: datetime | None,
    page_size: int = 1000,
    progress: ProgressFn | None = None,
) -> Batch:
    """Read every page of `feed` changed since `updated_since` (inclusive; None reads everything)."""
    params: dict[str, Any] = {"limit": page_size}
    if feed.incremental and updated_since is not None:
        params["updated_since"] = updated_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    records: list[dict[str, Any]] = []
    as_of = None
    pages = 0
    for page in client.pages(feed.path, params):
        pages += 1
        as_of = as_of or page.get("as_of")
        records.extend(page["data"])
        if progress:
            progress(pages, len(records))
    return Batch(
        feed=feed,
        frame=to_frame(feed, records),
        as_of=pd.to_datetime(as_of, utc=True).to_pydatetime() if as_of else None,
        updated_since=updated_since,
        pages=pages,
    )


def flatten(feed: Feed, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per line for feeds that nest lines under a header (a header without lines stays one row)."""
    if not feed.explode:
        return records
    rows = []
    for header in records:
        lines = header.get(feed.explode) or [{}]
        base = {k: v for k, v in header.items() if k != feed.explode}
        rows.extend({**base, **line} if isinstance(line, dict) else base for line in lines)
    return rows


def to_frame(feed: Feed, records: list[dict[str, Any]]) -> pd.DataFrame:
    """Type the rows by the feed's declared columns; a value that does not parse becomes null.

    Nothing is lost by that: `_raw` keeps each row as sent, so the contract can quarantine it verbatim.
    """
    rows = flatten(feed, records)
    frame = (
        pd.DataFrame.from_records(rows, columns=list(feed.columns))
        if rows
        else pd.DataFrame(columns=list(feed.columns))
    )
    for column, sql_type in feed.columns.items():
        values = frame[column]
        if sql_type in ("TIMESTAMPTZ", "DATE"):
            frame[column] = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        elif sql_type == "INTEGER" or sql_type.startswith("DECIMAL"):
            frame[column] = pd.to_numeric(values, errors="coerce")
        elif sql_type == "JSON":
            frame[column] = [
                None if v is None else orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode() for v in values
            ]
        else:
            frame[column] = values.where(values.isna(), values.astype(str)).astype(object)
    frame["_row"] = range(len(frame))
    frame["_raw"] = [orjson.dumps(r, default=str).decode() for r in rows]
    return frame


def land(con: duckdb.DuckDBPyConnection, batch: Batch, run_id: str | None = None) -> LandingStats:
    """Land a batch: keep it as fetched in `landing_<feed>`, upsert it into `raw_<feed>` by natural key.

    Re-landing the same rows changes nothing (they count as unchanged). Within one batch the last copy of
    a key wins. Rows without a complete key cannot be upserted: they stay in the landing table, where the
    contract quarantines them. All of it is one transaction.
    """
    feed = batch.feed
    batch_id = f"{feed.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    columns = list(feed.columns)
    typed = ", ".join(f"TRY_CAST({c} AS {t}) AS {c}" for c, t in feed.columns.items())
    keys_present = " AND ".join(f"{k} IS NOT NULL" for k in feed.keys)
    join_on = " AND ".join(f"i.{k} = r.{k}" for k in feed.keys)
    differs = (
        f"row({', '.join('i.' + c for c in columns)}) IS DISTINCT FROM row({', '.join('r.' + c for c in columns)})"
    )

    con.register("batch_frame", batch.frame)
    con.execute("BEGIN")
    try:
        con.execute(
            f"CREATE OR REPLACE TABLE landing_{feed.name} AS "
            f"SELECT {typed}, _row, _raw::JSON AS _raw, ?::VARCHAR AS _batch_id FROM batch_frame",
            [batch_id],
        )
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE incoming AS
            SELECT {", ".join(columns)} FROM landing_{feed.name}
            WHERE {keys_present}
            QUALIFY row_number() OVER (PARTITION BY {", ".join(feed.keys)} ORDER BY _row DESC) = 1
        """)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE changed AS
            SELECT i.*, r.{feed.keys[0]} IS NULL AS _is_new
            FROM incoming i LEFT JOIN {feed.table} r ON {join_on}
            WHERE r.{feed.keys[0]} IS NULL OR {differs}
        """)
        incoming, new, changed, duplicate = one(
            con,
            f"""SELECT (SELECT count(*) FROM incoming), count(*) FILTER (WHERE _is_new), count(*),
                       (SELECT count(*) - count(DISTINCT _raw::VARCHAR) FROM landing_{feed.name})
                FROM changed""",
        )
        preview = con.execute(
            f"SELECT CASE WHEN _is_new THEN 'new' ELSE 'updated' END AS change, * EXCLUDE (_is_new) "
            f"FROM changed LIMIT {PREVIEW_ROWS}"
        ).df()
        con.execute(
            f"INSERT OR REPLACE INTO {feed.table} SELECT {', '.join(columns)}, ?, now() FROM changed",
            [batch_id],
        )
        # A newer version of a quarantined row supersedes it; the contract judges the new one afresh.
        con.execute(
            f"UPDATE quarantine SET released_at = now() WHERE feed = ? AND released_at IS NULL "
            f"AND row_key IN (SELECT {row_key_sql(feed)} FROM changed)",
            [feed.name],
        )
        cursor = None
        if feed.incremental:
            # Never past the source's own clock: one corrupt far-future timestamp must not skip real rows.
            (newest,) = one(
                con,
                f"SELECT max(updated_at) FROM landing_{feed.name} WHERE updated_at <= coalesce(?, now())",
                [batch.as_of],
            )
            cursor = max(filter(None, [newest, batch.updated_since]), default=None)
        con.execute(
            "INSERT INTO ingest_batches VALUES (?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                batch_id,
                feed.name,
                run_id,
                batch.as_of,
                batch.updated_since,
                cursor,
                batch.pages,
                len(batch.frame),
                new,
                changed - new,
                incoming - changed,
                duplicate,
            ],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("batch_frame")
    return LandingStats(batch_id, len(batch.frame), new, changed - new, incoming - changed, duplicate, cursor, preview)
