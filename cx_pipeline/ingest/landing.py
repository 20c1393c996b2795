"""Pull a feed from its upstream API and land it in the warehouse idempotently."""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import duckdb
import orjson
import pandas as pd

from cx_pipeline.core.sql import first_row
from cx_pipeline.core.transactions import transaction
from cx_pipeline.ingest.feeds import Feed, row_key_sql
from cx_pipeline.ingest.http import ApiClient

ProgressFn = Callable[[int, int], None]  # (pages so far, rows so far)
T = TypeVar("T")
STAGE_ROWS = 20_000
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
    time_zone: str | None = None  # the source's zone, for timestamps sent without one

    @property
    def full_snapshot(self) -> bool:
        """A read of every current key (a snapshot, or a reconciled feed, read whole): it replaces the previous
        one, and a key it leaves out is gone."""
        return self.feed.lists_every_key and self.updated_since is None


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
    keys_absent: int = 0  # a snapshot's: keys of the previous snapshot it no longer lists


# A cursor is the source's: batches landed before sources were recorded came from the bundled REST shape.
SOURCE_OF_BATCH = "coalesce(source, 'rest')"


def last_cursor(con: duckdb.DuckDBPyConnection, feed: Feed, source: str = "rest") -> datetime | None:
    """Where the next read by change of `feed` from `source` starts: the newest `updated_at` landed from it so far
    (for a snapshot read by change, the source's clock at the last read). None when `source` never fed it: a
    feed switched to another system starts with a full read, not at the old system's cursor."""
    if not (feed.incremental or feed.delta):
        return None
    row = first_row(
        con,
        f"""SELECT cursor FROM ingest_batches WHERE feed = ? AND {SOURCE_OF_BATCH} = ? AND cursor IS NOT NULL
        ORDER BY fetched_at DESC LIMIT 1""",
        [feed.name, source],
    )
    return row[0] if row else None


def full_read_due(con: duckdb.DuckDBPyConnection, feed: Feed, every_hours: float, source: str = "rest") -> bool:
    """Whether this run reads snapshot `feed` whole: always for a snapshot the source cannot read by change,
    else when the last full read from `source` is `every_hours` old (0: every run), missing, or was blocked by
    its contract (a truncated snapshot is read whole again, not built on by change)."""
    if feed.incremental and not feed.reconcile:
        return False
    if not feed.full_read_on_cadence or every_hours <= 0:
        return True
    due = next_full_read(con, feed, every_hours, source)
    return due is None or due <= datetime.now(UTC)


def next_full_read(
    con: duckdb.DuckDBPyConnection, feed: Feed, every_hours: float, source: str = "rest"
) -> datetime | None:
    """When the cadence calls for `feed`'s next full read from `source`: `every_hours` after the last one that its
    contract did not block (None: no such read, so the next run reads whole)."""
    (last,) = first_row(
        con,
        f"""SELECT arg_max_null(CASE WHEN verdict IS DISTINCT FROM 'blocked' THEN fetched_at END, fetched_at)
        FROM ingest_batches WHERE feed = ? AND {SOURCE_OF_BATCH} = ? AND updated_since IS NULL
            AND judged_at IS NOT NULL""",
        [feed.name, source],
    )
    return last + timedelta(hours=every_hours) if last else None


@dataclass(frozen=True)
class Drift:
    """What a full snapshot found that the reads by change since the last one had not brought."""

    changed: int  # keys whose figures differ from the state the reads by change built
    new: int  # keys those reads never listed
    gone: int  # keys the snapshot no longer lists

    @property
    def rows(self) -> int:
        return self.changed + self.new + self.gone


def note_changes(con: duckdb.DuckDBPyConnection, feed: Feed) -> None:
    """Keep the keys of the read by change staged in `landing_<feed>` as `listed_changes` (a temp table), before a
    full read replaces it: what the source's change log listed is no drift."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE listed_changes AS SELECT DISTINCT {row_key_sql(feed)} AS row_key "
                f"FROM landing_{feed.name}")  # fmt: skip


def snapshot_drift(con: duckdb.DuckDBPyConnection, feed: Feed) -> Drift:
    """Compare the full snapshot staged in `landing_<feed>` with `raw_<feed>` before it lands, leaving out the keys
    in `listed_changes` (see `note_changes`): what differs is drift the reads by change missed."""
    key = row_key_sql(feed, "l")
    join_on = " AND ".join(f"l.{k} = r.{k}" for k in feed.keys)
    differs = " OR ".join(f"l.{c} IS DISTINCT FROM r.{c}" for c in feed.columns if c not in feed.keys)
    absent = f"SELECT row_key FROM snapshot_absent WHERE feed = '{feed.name}'"
    current = f"(SELECT * FROM {feed.table} r ANTI JOIN ({absent}) a ON a.row_key = {row_key_sql(feed, 'r')})"
    unlisted = "NOT IN (SELECT row_key FROM listed_changes)"
    changed, new = first_row(
        con,
        f"""SELECT count(*) FILTER (WHERE r.{feed.keys[0]} IS NOT NULL AND ({differs})),
                   count(*) FILTER (WHERE r.{feed.keys[0]} IS NULL)
        FROM landing_{feed.name} l LEFT JOIN {current} r ON {join_on} WHERE {key} {unlisted}""",
    )
    (gone,) = first_row(
        con,
        f"""SELECT count(*) FROM {current} l ANTI JOIN landing_{feed.name} r ON {join_on}
        WHERE {key} {unlisted}""",
    )
    return Drift(changed, new, gone)


def fetch(
    con: duckdb.DuckDBPyConnection,
    client: ApiClient,
    feed: Feed,
    updated_since: datetime | None,
    page_size: int = 1000,
    progress: ProgressFn | None = None,
    time_zone: str | None = None,
) -> Batch:
    """Read every page of `feed` changed since `updated_since` (inclusive; None reads everything) into
    `landing_<feed>`. `time_zone` is the source's, for timestamps it sends without a zone."""
    params: dict[str, Any] = {"limit": page_size}
    if (feed.incremental or feed.delta) and updated_since is not None:
        params["updated_since"] = updated_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    seen = {"pages": 0, "rows": 0, "as_of": None}

    def pages() -> Iterator[list[dict[str, Any]]]:
        for page in read_ahead(client.pages(feed.path, params)):
            seen["pages"] += 1
            seen["rows"] += len(page["data"])
            seen["as_of"] = seen["as_of"] or page.get("as_of")
            yield page["data"]
            if progress:
                progress(seen["pages"], seen["rows"])

    batch = stage(con, feed, pages(), updated_since, time_zone=time_zone)
    as_of = seen["as_of"]
    return replace(batch, as_of=pd.to_datetime(as_of, utc=True).to_pydatetime() if as_of else None)


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield from `items`, produced in a thread up to `depth` ahead: the next page downloads while DuckDB
    stores this one (both release the GIL while they wait or work). An error in the thread is raised here."""
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        ready.put(("item", item), timeout=0.1)
                        break
                if stop.is_set():
                    return
            ready.put(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put(("error", exc))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()  # the consumer stopped early: let the producer go
        thread.join()


def texts(feed: Feed) -> dict[str, str]:
    """Each column's type as first read from a row as sent: text (JSON columns as JSON), typed afterwards."""
    return {c: "JSON" if t == "JSON" else "VARCHAR" for c, t in feed.columns.items()}


def typed_columns(feed: Feed, time_zone: str | None = None) -> str:
    """SQL for the feed's columns, typed from `v`, the row parsed once by `json_transform(_raw, ...)`, then
    `_unparsed`: the columns whose value was sent but is not a valid value of their type (null when none)."""
    typed = ", ".join(f"{typed_sql(c, t, time_zone)} AS {c}" for c, t in feed.columns.items())
    # a typed column's alias is visible to later expressions of the same SELECT (DuckDB's lateral aliases)
    failed = ", ".join(
        f"CASE WHEN v.{c} IS NOT NULL AND {c} IS NULL THEN '{c}' END"
        for c, t in feed.columns.items()
        if t not in ("VARCHAR", "JSON")
    )
    return f"{typed}, nullif(concat_ws(', ', {failed}), '') AS _unparsed" if failed else f"{typed}, NULL AS _unparsed"


def parsed(feed: Feed) -> str:
    """SQL parsing `_raw` once into `v` (see `texts`)."""
    return f"json_transform(_raw, '{orjson.dumps(texts(feed)).decode()}') AS v"


# A timestamp names its zone after its time: Z, an offset (+01, +0100, +01:00) or a name (UTC, Europe/Berlin).
# (A bare date's "-16" is no offset: the offset must follow the time's minutes or seconds.)
HAS_ZONE = r":\d\d(\.\d+)?(\s*[Zz]|\s*[+-]\d\d(:?\d\d)?|\s*(UTC|GMT|[A-Za-z_]+/[A-Za-z_]+))$"


def typed_sql(column: str, sql_type: str, time_zone: str | None = None) -> str:
    """SQL typing `column` from `v`, the row's fields as texts; a value that is not exactly a value of the type
    becomes null (and is named in `_unparsed`), never a nearby one.

    Nothing is lost by that: `_raw` keeps the row as sent, so the contract can quarantine it verbatim. An
    integer must be whole (5.7 is not 6) and a decimal must fit its scale (9.999 is not 10.00). A timestamp
    must name its zone; one without is read in `time_zone`, the source's configured zone, and is not a
    timestamp at all when none is configured (taking it as UTC would move it by hours without a word).
    """
    value = f"v.{column}"
    if sql_type in ("JSON", "VARCHAR"):
        return value
    if sql_type == "DATE":  # a date may come as a full timestamp with an offset: its day in UTC
        return f"coalesce(TRY_CAST(TRY_CAST({value} AS TIMESTAMPTZ) AS DATE), TRY_CAST({value} AS DATE))"
    if sql_type == "TIMESTAMPTZ":
        zoned = f"CASE WHEN regexp_matches(trim({value}), '{HAS_ZONE}') THEN TRY_CAST({value} AS TIMESTAMPTZ) END"
        if time_zone:
            return f"coalesce({zoned}, timezone('{time_zone}', TRY_CAST({value} AS TIMESTAMP)))"
        return zoned
    if sql_type in ("INTEGER", "BIGINT", "SMALLINT"):
        number = f"TRY_CAST({value} AS DOUBLE)"
        return f"CASE WHEN {number} = trunc({number}) THEN TRY_CAST({number} AS {sql_type}) END"
    if sql_type.startswith("DECIMAL"):
        exact = f"TRY_CAST({value} AS DECIMAL(38,10))"
        return f"CASE WHEN {exact} = TRY_CAST({value} AS {sql_type}) THEN TRY_CAST({value} AS {sql_type}) END"
    return f"TRY_CAST({value} AS {sql_type})"


def flatten(feed: Feed, records: list[Any]) -> list[Any]:
    """One row per line for feeds that nest lines under a header: the header's fields, then the line's (a
    header without lines stays one row; anything that is not an object is kept as sent)."""
    if not feed.explode:
        return records
    rows = []
    for header in records:
        if not isinstance(header, dict):
            rows.append(header)
            continue
        base = dict(header)
        lines = base.pop(feed.explode, None) or [{}]
        rows.extend([base | line if isinstance(line, dict) else base for line in lines])
    return rows


def stage(
    con: duckdb.DuckDBPyConnection,
    feed: Feed,
    pages: Iterable[list[dict[str, Any]]],
    updated_since: datetime | None = None,
    as_of: datetime | None = None,
    time_zone: str | None = None,
) -> Batch:
    """Stage pages of records as `landing_<feed>`, one row per record (per line for nested feeds).

    Each page goes to DuckDB as one JSON text, which it splits into rows, numbers and types in one statement:
    no DataFrame is built and memory holds a page, not the batch. All of it is one transaction: a pull that
    fails half way leaves the previous landing as it was.
    """
    batch_id = f"{feed.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    rows_of_page = f"""SELECT {typed_columns(feed, time_zone)}, _row, _raw, $batch AS _batch_id
        FROM (SELECT _row, _raw, {parsed(feed)}
              FROM (SELECT $first + generate_subscripts(data, 1) - 1 AS _row, unnest(data) AS _raw
                    FROM (SELECT CAST($rows::JSON AS JSON[]) AS data)))"""
    rows = page_count = 0
    pending: list[Any] = []

    def store() -> None:
        nonlocal rows
        if pending:
            text = orjson.dumps(pending, default=str).decode()
            (inserted,) = first_row(
                con, f"INSERT INTO landing_{feed.name} {rows_of_page}", {"rows": text, "first": rows, "batch": batch_id}
            )
            rows += inserted
            pending.clear()

    with transaction(con):
        # the table of an empty page: the batch's shape, typed by the same statement that fills it
        con.execute(
            f"CREATE OR REPLACE TABLE landing_{feed.name} AS {rows_of_page}",
            {"rows": "[]", "first": 0, "batch": batch_id},
        )
        for records in pages:
            pending.extend(flatten(feed, records))
            page_count += 1
            if len(pending) >= STAGE_ROWS:  # a few pages per statement: fewer round trips, bounded memory
                store()
        store()
    return Batch(feed, batch_id, rows, page_count, as_of, updated_since, time_zone)


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


def land(con: duckdb.DuckDBPyConnection, batch: Batch, run_id: str | None = None, source: str = "rest") -> LandingStats:
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
        (keyed,) = first_row(con, f"SELECT count(*) FROM landing_{feed.name} WHERE {keys_present}")
        incoming, new, changed = first_row(
            con, "SELECT (SELECT count(*) FROM latest), count(*) FILTER (WHERE _is_new), count(*) FROM changed"
        )
        # exact copies can only be among rows that share a key (or lack one)
        repeats = keyed > incoming or keyed < batch.rows
        (duplicate,) = first_row(con, f"SELECT count(*) FROM ({copies_sql(feed)})") if repeats else (0,)
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
        if first_row(con, "SELECT 1 FROM quarantine WHERE feed = ? AND released_at IS NULL LIMIT 1", [feed.name]):
            con.execute(
                f"UPDATE quarantine SET released_at = now() WHERE feed = ? AND released_at IS NULL "
                f"AND row_key IN (SELECT {row_key_sql(feed, 'l')} FROM {changed_rows})",
                [feed.name],
            )
        keys_previous, keys_absent = absent_from_snapshot(con, batch, new) if batch.full_snapshot else (None, 0)
        if feed.full_read_on_cadence and not batch.full_snapshot:  # a key a read by change lists is current again
            con.execute(
                f"DELETE FROM snapshot_absent WHERE feed = ? AND row_key IN "
                f"(SELECT {row_key_sql(feed, 'l')} FROM landing_{feed.name} l)",
                [feed.name],
            )
        cursor = batch.as_of if feed.delta else None  # the next read by change starts at the source's clock
        if feed.incremental:
            # Never past the source's own clock: one corrupt far-future timestamp must not skip real rows.
            (newest,) = first_row(
                con,
                f"SELECT max(updated_at) FROM landing_{feed.name} WHERE updated_at <= coalesce(?, now())",
                [batch.as_of],
            )
            cursor = max(filter(None, [newest, batch.updated_since]), default=None)
        con.execute(
            """INSERT INTO ingest_batches (batch_id, feed, run_id, fetched_at, as_of, updated_since, cursor, pages,
                rows_fetched, rows_new, rows_updated, rows_unchanged, rows_duplicate, source_time_zone,
                keys_previous, keys_absent, source)
            VALUES (?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
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
                batch.time_zone,
                keys_previous,
                keys_absent,
                source,
            ],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return LandingStats(
        batch_id, batch.rows, new, changed - new, incoming - changed, duplicate, cursor, preview, keys_absent
    )


def absent_from_snapshot(con: duckdb.DuckDBPyConnection, batch: Batch, new_keys: int) -> tuple[int, int]:
    """Note in `snapshot_absent` every key of `raw_<feed>` that this full snapshot no longer lists; return how
    many keys the previous snapshot listed and how many of those this one left out.

    A full snapshot replaces the previous one, so an absent key is no longer current: its last values stay in
    the raw table (to show what it was) but `valid_<feed>` hides it and what it feeds is held, never read as
    the old value nor as zero. A key that comes back is current again. Called inside `land`'s transaction,
    after the upsert (which added the batch's `new_keys` to the raw table).
    """
    feed = batch.feed
    key = row_key_sql(feed, "r")
    row = f"to_json(struct_pack({', '.join(f'r.{c}' for c in feed.columns)}))"
    join_on = " AND ".join(f"l.{k} = r.{k}" for k in feed.keys)
    (listed_before,) = first_row(
        con,
        f"""SELECT count(*) FROM {feed.table} r
        ANTI JOIN (SELECT row_key FROM snapshot_absent WHERE feed = ?) a ON a.row_key = {key}""",
        [feed.name],
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE absent_now AS
        SELECT {key} AS row_key, {row} AS row_data FROM {feed.table} r ANTI JOIN landing_{feed.name} l ON {join_on}
    """)
    con.execute(
        "DELETE FROM snapshot_absent WHERE feed = ? AND row_key NOT IN (SELECT row_key FROM absent_now)", [feed.name]
    )
    (newly_absent,) = first_row(
        con,
        """INSERT INTO snapshot_absent
        SELECT ?, row_key, row_data, ?, now() FROM absent_now
        WHERE row_key NOT IN (SELECT row_key FROM snapshot_absent WHERE feed = ?)""",
        [feed.name, batch.batch_id, feed.name],
    )
    return listed_before - new_keys, newly_absent
