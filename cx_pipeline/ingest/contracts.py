"""Data contracts on the landed feeds: the rules that decide what reaches `valid_*` and what is held.

- Every landed batch is judged exactly once before anything reads it: `valid_<feed>` hides the rows of a
  batch not yet judged, and a batch that a stopped run left unjudged is judged before the next pull.
- A row that breaks the contract is quarantined as sent and hides its key from `valid_<feed>`; what it feeds
  is held (stock of its SKU is not pushed), and everything else flows.
- A structural failure blocks everything downstream: a table-level rule (volume, a snapshot's coverage of
  the previous snapshot's keys, a missing column), or more bad rows than `max_bad_row_share` of the batch.
- A quarantined row is released when a newer version of it lands, when the source sends it again and it
  passes, or when it passes being judged again against the current references and clock (every run).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import duckdb
import great_expectations as gx
import pandas as pd

from cx_pipeline.core.sql import exists, first_row, row_exists_sql
from cx_pipeline.core.transactions import transaction
from cx_pipeline.ingest.feeds import Feed, row_key_sql
from cx_pipeline.ingest.landing import copies_sql, parsed, typed_columns
from cx_pipeline.ingest.suites import Violation, build_suite, validate

SAMPLE_ROWS = 10
# Volume: a snapshot must keep at least this share of the previous snapshot's rows; an incremental pull at
# least this share of the quietest of the same windows in the previous weeks (feeds are diurnal, weekly and
# lumpy: receipts arrive in working hours and in waves, so an average would cry wolf). Below
# MIN_EXPECTED_ROWS there is too little to tell an empty window from a broken feed.
SNAPSHOT_MIN_RATIO = 0.5
INCREMENTAL_MIN_RATIO = 0.25
MIN_EXPECTED_ROWS = 8
BASELINE_WEEKS = 4
# A key is 1-100 characters, none of them blank, a control character or `|` (which joins compound keys).
MAX_KEY_LENGTH = 100
KEY_PATTERN = rf"[^\s|\p{{C}}]{{1,{MAX_KEY_LENGTH}}}"
# what `verdict` records in ingest_batches
PASSED, ROWS_HELD, BLOCKED = "passed", "rows_held", "blocked"


@dataclass(frozen=True)
class ContractPolicy:
    """Where bad rows stop holding only what they touch and start blocking everything downstream."""

    max_bad_row_share: float = 0.01  # of a batch's rows; a single bad row never blocks on its own
    min_snapshot_coverage: float = 0.9  # share of the previous snapshot's keys a full snapshot must list


@dataclass(frozen=True)
class Judged:
    """A batch staged for its contract: `table` holds the typed rows with `_row`, `_row_key`, `_batch_id`
    and the flag columns; `sent` holds each row as sent (`_raw`), found by `_row`."""

    table: str
    sent: str
    rows: int


@dataclass(frozen=True)
class Verdict:
    """What the contract said of one batch."""

    judged: Judged
    suite: gx.ExpectationSuite
    violations: list[Violation]
    quarantined: int  # rows quarantined (a row breaking two rules counts once)
    blocking: list[str]  # why the failure is structural; empty when bad rows only hold what they touch
    released: int = 0  # earlier quarantined rows released while judging this batch

    @property
    def outcome(self) -> str:
        return BLOCKED if self.blocking else ROWS_HELD if self.violations else PASSED


def min_rows(con: duckdb.DuckDBPyConnection, feed: Feed, batch_id: str | None = None) -> int:
    """The fewest rows a batch (the latest when `batch_id` is None) may hold without failing the volume
    expectation."""
    batches = con.execute(
        """SELECT rows_fetched, as_of, updated_since FROM ingest_batches
        WHERE feed = $feed AND fetched_at <= coalesce(
            (SELECT fetched_at FROM ingest_batches WHERE batch_id = $batch), 'infinity'::TIMESTAMPTZ)
            AND ($incremental OR updated_since IS NULL OR batch_id = $batch
                 OR fetched_at = (SELECT max(fetched_at) FROM ingest_batches WHERE feed = $feed))
        ORDER BY fetched_at DESC LIMIT 2""",
        {"feed": feed.name, "batch": batch_id, "incremental": feed.incremental},
    ).fetchall()
    if batches and not feed.incremental and batches[0][2] is not None:
        return 0  # a snapshot read by change lists what moved, and nothing may have
    if len(batches) < 2:
        return 1  # a first load must bring something
    (_, as_of, since), (previous_rows, _, _) = batches
    if not feed.incremental:  # a full snapshot against the previous full one
        expected, ratio = previous_rows, SNAPSHOT_MIN_RATIO
    else:
        (first,) = first_row(con, f"SELECT min(updated_at) FROM {feed.table}")
        weeks = [k for k in range(1, BASELINE_WEEKS + 1) if as_of and since and since - timedelta(weeks=k) >= first]
        per_week = (
            con.execute(
                f"""SELECT k, count(*) FROM {feed.table} CROSS JOIN unnest(?::INTEGER[]) AS w(k)
                WHERE updated_at >= ?::TIMESTAMPTZ - to_weeks(k) AND updated_at < ?::TIMESTAMPTZ - to_weeks(k)
                GROUP BY k""",
                [weeks, since, as_of],
            ).fetchall()
            if weeks
            else []
        )
        # the quietest of those windows: deliveries are lumpy, so only a drop below what has happened is news
        counts = dict(per_week)
        expected, ratio = min((counts.get(k, 0) for k in weeks), default=0), INCREMENTAL_MIN_RATIO
    return max(1, math.floor(expected * ratio)) if expected >= MIN_EXPECTED_ROWS else 0


def flags_sql(con: duckdb.DuckDBPyConnection, feed: Feed, among: str) -> str:
    """SQL for the flag columns of rows `l` of table `among`: one `_known_*` per reference, and `_key_format`."""
    references = "".join(
        f", {' OR '.join(f'l.{c} IS NULL' for c in ref.columns)} OR "
        f"{row_exists_sql(con, 'l', ref.columns, ref.table, ref.table_columns, among)} AS {ref.flag}"
        for ref in feed.references
    )
    keys = [k for k in feed.keys if feed.columns[k] == "VARCHAR"]
    key_format = " AND ".join(f"coalesce(regexp_full_match(l.{k}, '{KEY_PATTERN}'), true)" for k in keys) or "true"
    return f"{references}, {key_format} AS _key_format"


def flag_columns(feed: Feed) -> list[str]:
    return [ref.flag for ref in feed.references] + ["_key_format"]


def landed_batch(con: duckdb.DuckDBPyConnection, feed: Feed) -> Judged:
    """Stage the batch in `landing_<feed>` for its contract as the view `contract_<feed>`: the landing read in
    place, exact duplicates left out, with `_row_key` and the flag columns. The rows as sent stay in
    `landing_<feed>`.

    A first load is tens of millions of rows: copying them into a table cost more than judging them. The
    reference tests, the costly flags, run once here and keep only the rows that fail one
    (`contract_<feed>_flags`, a handful); the view gives every other row true.
    """
    landing, flags = f"landing_{feed.name}", flag_columns(feed)
    # The landing counted the batch's exact copies; most batches have none, and looking costs a pass.
    copies = first_row(con, "SELECT rows_duplicate FROM ingest_batches WHERE feed = ? ORDER BY fetched_at DESC LIMIT 1",
                 [feed.name])  # fmt: skip
    con.execute(
        f"CREATE OR REPLACE TABLE contract_{feed.name}_copies AS "
        + (copies_sql(feed) if copies is None or copies[0] else f"SELECT _row FROM {landing} LIMIT 0")
    )
    con.execute(f"""
        CREATE OR REPLACE TABLE contract_{feed.name}_flags AS
        SELECT * FROM (SELECT l._row {flags_sql(con, feed, landing)} FROM {landing} l)
        WHERE NOT ({" AND ".join(flags)})
    """)
    if exists(con, f"contract_{feed.name}"):
        con.execute(f"DROP TABLE contract_{feed.name}")  # the copy an earlier version staged
    con.execute(f"""
        CREATE OR REPLACE VIEW contract_{feed.name} AS
        SELECT l.* EXCLUDE (_raw), {row_key_sql(feed, "l")} AS _row_key,
               {", ".join(f"coalesce(f.{flag}, true) AS {flag}" for flag in flags)}
        FROM {landing} l LEFT JOIN contract_{feed.name}_flags f USING (_row)
        WHERE l._row NOT IN (SELECT _row FROM contract_{feed.name}_copies)
    """)
    (rows,) = first_row(con, f"SELECT count(*) FROM contract_{feed.name}")
    return Judged(f"contract_{feed.name}", landing, rows)


def imported_batch(con: duckdb.DuckDBPyConnection, feed: str, frame: pd.DataFrame) -> Judged:
    """Stage an import from the app store (a frame with `_row`, `_row_key`, `_raw`, `_batch_id`) as
    `contract_<feed>`."""
    con.register("imported", frame)
    try:
        con.execute(f"CREATE OR REPLACE TABLE contract_{feed} AS SELECT * FROM imported")
    finally:
        con.unregister("imported")
    return Judged(f"contract_{feed}", f"contract_{feed}", len(frame))


def judge_import(
    con: duckdb.DuckDBPyConnection,
    feed: str,
    frame: pd.DataFrame,
    suite: Callable[[datetime], gx.ExpectationSuite],
    now: datetime | None = None,
) -> Verdict:
    """Judge an import from the app store (`frame`, as `imported_batch` takes it) against `suite` at `now` (the
    app's clock: entries carry no source's), quarantine its offending rows under `feed`, and record the verdict
    of its batches in `ingest_batches`."""
    judged = imported_batch(con, feed, frame)
    expectations = suite(now or datetime.now(UTC))
    violations = validate(con, judged.table, expectations)
    quarantined = quarantine(con, feed, judged, violations)
    con.execute(
        f"UPDATE ingest_batches SET judged_at = now(), verdict = ? WHERE batch_id IN "
        f"(SELECT DISTINCT _batch_id FROM {judged.table})",
        [BLOCKED if violations else PASSED],
    )
    # an import is all of a person's work at once: any bad row blocks (the app shows why)
    reasons = [f"{v.expectation} broken" for v in violations]
    return Verdict(judged, expectations, violations, quarantined, reasons)


def quarantine(con: duckdb.DuckDBPyConnection, feed: str, judged: Judged, violations: list[Violation]) -> int:
    """Record every offending row of `feed`, verbatim, against the expectation it broke; returns the rows
    quarantined (a row that broke two expectations counts once).

    Judging a batch again (a re-run of the check) replaces its earlier verdict instead of adding to it.
    """
    if not judged.rows:
        return 0
    offending = pd.DataFrame(
        [(v.expectation, row) for v in violations for row in v.row_index], columns=["expectation", "_row"]
    ).astype({"expectation": object, "_row": "int64"})
    con.register("offending", offending)
    try:
        with transaction(con):
            con.execute(
                f"DELETE FROM quarantine WHERE feed = ? AND batch_id IN (SELECT _batch_id FROM {judged.table})", [feed]
            )
            con.execute(
                f"""INSERT INTO quarantine
                SELECT ?, j._batch_id, o.expectation, j._row_key, s._raw::JSON, ?, NULL
                FROM offending o JOIN {judged.table} j USING (_row) JOIN {judged.sent} s USING (_row)""",
                [feed, datetime.now(UTC)],
            )
    finally:
        con.unregister("offending")
    return offending["_row"].nunique()


def coverage_violation(con: duckdb.DuckDBPyConnection, feed: Feed, batch_id: str, minimum: float) -> Violation | None:
    """A full snapshot (or a reconciled feed's full read) that leaves out more of the previous one's keys than
    `minimum` allows."""
    if not feed.lists_every_key:
        return None
    listed, absent = first_row(
        con, "SELECT keys_previous, keys_absent FROM ingest_batches WHERE batch_id = ?", [batch_id]
    )
    if not listed or listed < MIN_EXPECTED_ROWS or (listed - absent) / listed >= minimum:
        return None
    return Violation(
        expectation=f"snapshot_covers_previous_keys(min {minimum:.0%})",
        unexpected_count=absent,
        row_index=[],
        observed=f"{(listed - absent) / listed:.1%}: {absent:,} of the previous snapshot's {listed:,} keys missing",
    )


def structural(violations: list[Violation], quarantined: int, rows: int, policy: ContractPolicy) -> list[str]:
    """Why a batch's failure blocks everything downstream (empty: its bad rows only hold what they touch)."""
    reasons = [f"{v.expectation}: {v.observed}" for v in violations if not v.row_index]
    allowed = max(1, math.floor(policy.max_bad_row_share * rows))
    if quarantined > allowed:
        reasons.append(
            f"{quarantined:,} of {rows:,} rows broke the contract, more than max_bad_row_share "
            f"{policy.max_bad_row_share:.1%} allows ({allowed:,})"
        )
    return reasons


def judge(con: duckdb.DuckDBPyConnection, feed: Feed, policy: ContractPolicy, now: datetime | None = None) -> Verdict:
    """Judge the feed's latest landed batch (in `landing_<feed>`): validate it, quarantine its offending rows,
    release earlier quarantine its good rows answer, and record the verdict in `ingest_batches` (which shows its rows in
    `valid_<feed>`). `now` stands in for the source's clock when the batch did not report one."""
    batch_id, as_of = first_row(
        con, "SELECT batch_id, as_of FROM ingest_batches WHERE feed = ? ORDER BY fetched_at DESC LIMIT 1", [feed.name]
    ) or (None, None)
    (staged,) = first_row(con, f"SELECT any_value(_batch_id) FROM landing_{feed.name}") if batch_id else (None,)
    if batch_id is None or staged not in (None, batch_id):  # staged but never landed: a pull that stopped
        raise LookupError(f"landing_{feed.name} holds no landed batch of {feed.name}: land it before judging it")
    judged = landed_batch(con, feed)
    suite = build_suite(feed, as_of or now or datetime.now(UTC), min_rows(con, feed, batch_id))
    violations = validate(con, judged.table, suite)
    if coverage := coverage_violation(con, feed, batch_id, policy.min_snapshot_coverage):
        violations.append(coverage)
    quarantined = quarantine(con, feed.name, judged, violations)
    released = release_answered(con, feed, judged, batch_id)
    verdict = Verdict(judged, suite, violations, quarantined, structural(violations, quarantined, judged.rows, policy),
                      released)  # fmt: skip
    con.execute(
        "UPDATE ingest_batches SET judged_at = now(), verdict = ? WHERE batch_id = ?", [verdict.outcome, batch_id]
    )
    return verdict


def judge_and_release(con: duckdb.DuckDBPyConnection, feed: Feed, policy: ContractPolicy) -> Verdict:
    """What a feed's contract check does each run: judge its latest landed batch, then judge its open quarantine
    again; `released` counts the rows either step released."""
    verdict = judge(con, feed, policy)
    return replace(verdict, released=verdict.released + rejudge_quarantine(con, feed))


def release_answered(con: duckdb.DuckDBPyConnection, feed: Feed, judged: Judged, batch_id: str) -> int:
    """Release the open quarantine of earlier batches for keys this batch sent again and that passed: the raw
    table holds what this batch sent (a changed row was upserted, an unchanged one was already there)."""
    (released,) = first_row(
        con,
        f"""UPDATE quarantine SET released_at = now()
        WHERE feed = $feed AND released_at IS NULL AND batch_id <> $batch
          AND row_key IN (SELECT _row_key FROM {judged.table})
          AND row_key NOT IN (SELECT row_key FROM quarantine WHERE feed = $feed AND batch_id = $batch
                                                              AND row_key IS NOT NULL)""",
        {"feed": feed.name, "batch": batch_id},
    )
    return released


@dataclass(frozen=True)
class FeedVerdicts:
    """Where some feeds stand with their contracts: per feed (`feed`), the `verdict` on its latest batch and
    whether a batch of it is still `unjudged`."""

    table: pd.DataFrame

    @property
    def blocking(self) -> pd.DataFrame:
        """The feeds nothing downstream may use: the latest batch failed structurally, or a batch is unjudged."""
        return self.table[(self.table["verdict"] == BLOCKED) | self.table["unjudged"]]


def latest_verdicts(con: duckdb.DuckDBPyConnection, feeds: Sequence[str]) -> FeedVerdicts:
    """The contracts' latest verdicts on `feeds`, in the order of their names."""
    return FeedVerdicts(
        con.execute(
            """SELECT feed, arg_max(verdict, fetched_at) AS verdict, bool_or(judged_at IS NULL) AS unjudged
            FROM ingest_batches WHERE list_contains(?::VARCHAR[], feed) GROUP BY feed ORDER BY feed""",
            [list(feeds)],
        ).df()
    )


def judge_pending(con: duckdb.DuckDBPyConnection, feed: Feed, policy: ContractPolicy) -> Verdict | None:
    """Judge the batch a stopped run landed but never judged (the latest batch, still in `landing_<feed>`),
    so the next pull, which replaces the landing, cannot let it through unjudged. None when there is none."""
    latest = first_row(
        con, "SELECT judged_at IS NULL FROM ingest_batches WHERE feed = ? ORDER BY fetched_at DESC LIMIT 1", [feed.name]
    )
    pending = latest is not None and latest[0]
    return judge(con, feed, policy) if pending else None


def rejudge_quarantine(con: duckdb.DuckDBPyConnection, feed: Feed) -> int:
    """Judge the open quarantined rows of `feed`'s earlier batches again, as sent, against the current
    references and the source's current clock and zone setting; release those that pass (a receipt that came
    before its purchase order, a row stamped "in the future" by a source clock that was wrong), and land them
    as now typed. Returns the rows released.

    Conflicting copies of a key stay quarantined (judging one copy alone would release whichever came last),
    and the latest batch was just judged under these very references and clock.
    """
    latest = first_row(
        con,
        "SELECT batch_id, as_of, source_time_zone FROM ingest_batches WHERE feed = ? ORDER BY fetched_at DESC LIMIT 1",
        [feed.name],
    )
    if latest is None:
        return 0
    batch_id, as_of, time_zone = latest
    table = f"rejudge_{feed.name}"
    # one row per key, as last sent (a key quarantined in two batches is one row now)
    (rows,) = first_row(
        con,
        f"""CREATE OR REPLACE TEMP TABLE {table}_sent AS
        SELECT row_number() OVER (ORDER BY row_key) - 1 AS _row, row_key AS _row_key, row_data AS _raw,
               batch_id AS _batch_id
        FROM (SELECT row_key, arg_max(row_data, quarantined_at) AS row_data,
                     arg_max(batch_id, quarantined_at) AS batch_id
              FROM quarantine WHERE feed = $feed AND released_at IS NULL AND row_key IS NOT NULL
              GROUP BY row_key
              HAVING NOT bool_or(batch_id = $batch OR expectation LIKE 'expect_column_values_to_be_unique%'))""",
        {"feed": feed.name, "batch": batch_id},
    )  # fmt: skip
    if not rows:
        return 0
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table}_typed AS
        SELECT {typed_columns(feed, time_zone)}, _row, _row_key, _batch_id
        FROM (SELECT *, {parsed(feed)} FROM {table}_sent)"""
    )
    con.execute(
        f"CREATE OR REPLACE TABLE {table} AS SELECT l.* {flags_sql(con, feed, f'{table}_typed')} FROM {table}_typed l"
    )
    violations = validate(con, table, build_suite(feed, as_of or datetime.now(UTC), min_rows=0))
    if any(not v.row_index for v in violations):  # the suite could not judge rows (an error): release nothing
        con.execute(f"DROP TABLE {table}")
        return 0
    failing = sorted({row for v in violations for row in v.row_index})
    columns = ", ".join(feed.columns)
    same_key = " AND ".join(f"r.{k} = p.{k}" for k in feed.keys)
    with transaction(con):
        con.execute(f"CREATE OR REPLACE TEMP TABLE passing AS SELECT * FROM {table} WHERE _row NOT IN "
                    "(SELECT unnest(?::BIGINT[]))", [failing])  # fmt: skip
        # the raw table gets each released row as typed now (a zone configured since it was landed)
        con.execute(f"DELETE FROM {feed.table} r USING passing p WHERE {same_key}")
        con.execute(f"INSERT INTO {feed.table} SELECT {columns}, _batch_id, now() FROM passing")
        (released,) = first_row(
            con,
            """UPDATE quarantine SET released_at = now()
            WHERE feed = ? AND released_at IS NULL AND row_key IN (SELECT _row_key FROM passing)""",
            [feed.name],
        )
    con.execute(f"DROP TABLE {table}")
    return released


def sample_markdown(con: duckdb.DuckDBPyConnection, judged: Judged, violation: Violation) -> str:
    rows = con.execute(
        f"""SELECT j._row AS row, j._row_key AS key, s._raw::VARCHAR AS "as sent"
        FROM {judged.table} j JOIN {judged.sent} s USING (_row) WHERE j._row IN (SELECT unnest(?::BIGINT[]))
        ORDER BY j._row""",
        [violation.row_index[:SAMPLE_ROWS]],
    ).df()
    return rows.to_markdown(index=False)


def rules_markdown(feed: Feed, policy: ContractPolicy) -> str:
    """The contract's rules in words, for the check's metadata."""
    coverage = (
        ""
        if not feed.lists_every_key
        else (f", coverage of the previous snapshot's keys below {policy.min_snapshot_coverage:.0%}")
    )
    rules = [
        "Rows that break a rule are quarantined as sent; their keys leave `valid_*` and the SKUs they touch "
        "are held (not pushed). Everything else flows, and the check warns.",
        f"Everything downstream is blocked when more than {policy.max_bad_row_share:.1%} of the batch's rows "
        f"break the contract (one bad row alone never blocks), or a table-level rule fails (volume{coverage}, "
        "a missing column).",
        "Integers must be whole, decimals must fit their scale, timestamps must name their zone (unless the "
        f"source's zone is configured); keys are 1-{MAX_KEY_LENGTH} characters, no blanks, controls or `|`.",
        "A quarantined row is released when a newer version lands, when it is sent again and passes, or when "
        "it passes being judged again against the current references and clock (every run).",
    ]
    return "\n".join(f"- {r}" for r in rules)
