"""Pull a feed from its upstream API and land it in the warehouse idempotently."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
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
    """One pull of a feed, staged in `landing_<feed>`: typed columns plus each row exactly as sent (`_raw`)."""

    feed: Feed
    batch_id: str
    rows: int
    pages: int
    as_of: datetime | None
    updated_since: datetime | None


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
    con: duckdb.DuckDBPyConnection,
    client: ApiClient,
    feed: Feed,
    updated_since: datetime | None,
    page_size: int = 1000,
    progress: ProgressFn | None = None,
) -> Batch:
    """Read every page of `feed` changed since `updated_since` (inclusive; None reads everything) into
    `landing_<feed>`."""
    params: dict[str, Any] = {"limit": page_size}
    if feed.incremental and updated_since is not None:
        params["updated_since"] = updated_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    seen = {"pages": 0, "rows": 0, "as_of": None}

    def pages() -> Iterator[list[dict[str, Any]]]:
        for page in client.pages(feed.path, params):
            seen["pages"] += 1
            seen["rows"] += len(page["data"])
            seen["as_of"] = seen["as_of"] or page.get("as_of")
            yield page["data"]
            if progress:
                progress(seen["pages"], seen["rows"])

    batch = stage(con, feed, pages(), updated_since)
    as_of = seen["as_of"]
    return replace(batch, as_of=pd.to_datetime(as_of, utc=True).to_pydatetime() if as_of else None)


def typed_sql(column: str, sql_type: str) -> str:
    """SQL reading `column` from a row as sent, typed; a value that does not parse becomes null.

    Nothing is lost by that: `_raw` keeps the row as sent, so the contract can quarantine it verbatim.
    """
    value = f"_raw->>'{column}'"
    if sql_type == "JSON":
        return f"CASE WHEN json_type(_raw->'{column}') <> 'NULL' THEN _raw->'{column}' END"
    if sql_type == "DATE":  # a date may come as a full timestamp with an offset: its day in UTC
        return f"coalesce(TRY_CAST(TRY_CAST({value} AS TIMESTAMPTZ) AS DATE), TRY_CAST({value} AS DATE))"
    if sql_type == "VARCHAR":
        return value
    return f"TRY_CAST({value} AS {sql_type})"


def rows_sql(feed: Feed, path: Path) -> str:
    """SQL for the rows of a staged file (one JSON line `[page, [record, ...]]` per page) in the order sent.

    Feeds that nest lines under a header get one row per line: the header's fields, then the line's (a line's
    field wins over a header's of the same name; a header without lines stays one row).
    """
    records = f"""SELECT page, generate_subscripts(data, 1) AS record_no, unnest(data) AS record
        FROM (SELECT (j->>0)::INTEGER AS page, CAST(j->1 AS JSON[]) AS data
              FROM read_json_objects({sql_string(path)}, format = 'newline_delimited') AS t(j))"""
    if not feed.explode:
        return f"SELECT row_number() OVER (ORDER BY page, record_no) - 1 AS _row, record AS _raw FROM ({records})"
    fields = "TRY_CAST({} AS MAP(VARCHAR, JSON))"
    lines = f"""SELECT page, record_no, record,
               map_from_entries(list_filter(map_entries({fields.format("record")}),
                                            lambda e: e.key <> '{feed.explode}')) AS header,
               coalesce(nullif(TRY_CAST(record->'{feed.explode}' AS JSON[]), []), [NULL::JSON]) AS lines
        FROM ({records})"""
    return f"""SELECT row_number() OVER (ORDER BY page, record_no, line_no) - 1 AS _row,
               CASE WHEN json_type(record) <> 'OBJECT' THEN record
                    WHEN json_type(line) = 'OBJECT' THEN to_json(map_concat(header, {fields.format("line")}))
                    ELSE to_json(header) END AS _raw
        FROM (SELECT page, record_no, record, header, generate_subscripts(lines, 1) AS line_no, unnest(lines) AS line
              FROM ({lines}))"""


def sql_string(path: Path) -> str:
    """`path` as an SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def stage(
    con: duckdb.DuckDBPyConnection,
    feed: Feed,
    pages: Iterable[list[dict[str, Any]]],
    updated_since: datetime | None = None,
    as_of: datetime | None = None,
) -> Batch:
    """Stage pages of records as `landing_<feed>`, one row per record (per line for nested feeds).

    Each page goes to a newline-delimited JSON file as one line; DuckDB flattens, numbers and types the
    rows in one pass, so no Python loop or DataFrame ever touches a row and millions stream through.
    """
    batch_id = f"{feed.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    page_count = 0
    with tempfile.TemporaryDirectory(prefix="cx-landing-") as tmp:
        path = Path(tmp) / f"{feed.name}.ndjson"
        with path.open("wb") as out:
            for records in pages:
                out.write(b"[%d,%b]\n" % (page_count, orjson.dumps(records, default=str)))
                page_count += 1
        source = rows_sql(feed, path) if page_count else "SELECT NULL::BIGINT AS _row, NULL::JSON AS _raw WHERE false"
        typed = ", ".join(f"{typed_sql(c, t)} AS {c}" for c, t in feed.columns.items())
        con.execute(
            f"CREATE OR REPLACE TABLE landing_{feed.name} AS "
            f"SELECT {typed}, _row, _raw, ?::VARCHAR AS _batch_id FROM ({source}) ORDER BY _row",
            [batch_id],
        )
    (rows,) = one(con, f"SELECT count(*) FROM landing_{feed.name}")
    return Batch(feed, batch_id, rows, page_count, as_of, updated_since)


def copies_sql(feed: Feed) -> str:
    """SQL for the `_row` of every row of `landing_<feed>` that is an exact copy of an earlier one.

    Only rows that share a key can be copies, so only those few are compared whole (a key of nulls counts
    as shared): hashing every row of a large batch as text would cost more than the rest of the landing.
    """
    keys = ", ".join(feed.keys)
    same_key = " AND ".join(f"l.{k} IS NOT DISTINCT FROM r.{k}" for k in feed.keys)
    return f"""SELECT _row FROM landing_{feed.name} l
        SEMI JOIN (SELECT {keys} FROM landing_{feed.name} GROUP BY ALL HAVING count(*) > 1) r ON {same_key}
        QUALIFY row_number() OVER (PARTITION BY {", ".join(f"l.{k}" for k in feed.keys)}, l._raw::VARCHAR
                                   ORDER BY _row) > 1"""


def land(con: duckdb.DuckDBPyConnection, batch: Batch, run_id: str | None = None) -> LandingStats:
    """Land a staged batch: upsert `landing_<feed>` (kept as fetched) into `raw_<feed>` by natural key.

    Re-landing the same rows changes nothing (they count as unchanged). Within one batch the last copy of
    a key wins, so a key is never in `raw_<feed>` twice. Rows without a complete key cannot be upserted:
    they stay in the landing table, where the contract quarantines them. All of it is one transaction.
    """
    feed = batch.feed
    batch_id = batch.batch_id
    columns = ", ".join(feed.columns)
    keys = ", ".join(feed.keys)
    keys_present = " AND ".join(f"{k} IS NOT NULL" for k in feed.keys)
    join_on = " AND ".join(f"l.{k} = r.{k}" for k in feed.keys)
    differs = " IS DISTINCT FROM ".join(f"row({', '.join(f'{t}.{c}' for c in feed.columns)})" for t in ("l", "r"))
    changed_rows = f"landing_{feed.name} l SEMI JOIN changed USING (_row)"

    con.execute("BEGIN")
    try:
        # Only row numbers are kept aside, never a copy of the batch: a first load is tens of millions of rows.
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE latest AS
            SELECT max(_row) AS _row FROM landing_{feed.name} WHERE {keys_present} GROUP BY {keys}
        """)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE changed AS
            SELECT l._row, r.{feed.keys[0]} IS NULL AS _is_new
            FROM landing_{feed.name} l SEMI JOIN latest USING (_row) LEFT JOIN {feed.table} r ON {join_on}
            WHERE r.{feed.keys[0]} IS NULL OR {differs}
        """)
        (keyed,) = one(con, f"SELECT count(*) FROM landing_{feed.name} WHERE {keys_present}")
        incoming, new, changed = one(
            con, "SELECT (SELECT count(*) FROM latest), count(*) FILTER (WHERE _is_new), count(*) FROM changed"
        )
        # exact copies can only be among rows that share a key (or lack one)
        repeats = keyed > incoming or keyed < batch.rows
        (duplicate,) = one(con, f"SELECT count(*) FROM ({copies_sql(feed)})") if repeats else (0,)
        preview = con.execute(
            f"SELECT CASE WHEN _is_new THEN 'new' ELSE 'updated' END AS change, l.{columns.replace(', ', ', l.')} "
            f"FROM landing_{feed.name} l JOIN changed USING (_row) ORDER BY l._row LIMIT {PREVIEW_ROWS}"
        ).df()
        # No primary key on raw tables (an index on tens of millions of keys makes bulk loads crawl): the
        # old versions of changed rows are deleted, then the new ones appended.
        if changed > new:
            con.execute(f"""DELETE FROM {feed.table} r USING landing_{feed.name} l, changed c
                WHERE c._row = l._row AND NOT c._is_new AND {join_on}""")
        con.execute(f"INSERT INTO {feed.table} SELECT {columns}, ?, now() FROM {changed_rows}", [batch_id])
        # A newer version of a quarantined row supersedes it; the contract judges the new one afresh.
        if one(con, "SELECT 1 FROM quarantine WHERE feed = ? AND released_at IS NULL LIMIT 1", [feed.name]):
            con.execute(
                f"UPDATE quarantine SET released_at = now() WHERE feed = ? AND released_at IS NULL "
                f"AND row_key IN (SELECT {row_key_sql(feed, 'l')} FROM {changed_rows})",
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
                batch.rows,
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
    return LandingStats(batch_id, batch.rows, new, changed - new, incoming - changed, duplicate, cursor, preview)
