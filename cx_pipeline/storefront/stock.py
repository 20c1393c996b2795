"""Stock position: what each SKU can really sell, and the state the storefront should show.

sellable = on hand - in QC - damaged - reserved by open orders - safety buffer; at or below the floor the
storefront shows 0 (out of stock). Products that are not active show out of stock whatever the shelf holds.
A SKU with a quarantined input row (on hand, open orders, catalog), or whose stock row the latest on-hand
snapshot no longer lists, is `held`: its figures would be built on data that broke its contract (or on no data),
so it is left as the storefront has it until the source sends a good row; `stock_holds` counts the runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import orjson
import pandas as pd

from cx_pipeline.core.sql import exists, first_row
from cx_pipeline.core.transactions import transaction

OVERRIDE_COLUMNS = ("sku", "safety_buffer", "floor", "note")
DDL = """
CREATE TABLE IF NOT EXISTS stock_status_since (
    sku            VARCHAR PRIMARY KEY,
    publish_status VARCHAR NOT NULL,
    since          TIMESTAMPTZ NOT NULL  -- the run that first saw this status (before the first run: unknown)
);
-- the run that changed the status from an earlier one (null: the status was first seen, not a change)
ALTER TABLE stock_status_since ADD COLUMN IF NOT EXISTS changed_run VARCHAR;
-- rebuilt by every stock position; here so a push planned without one (a test, a first run) finds it empty
CREATE TABLE IF NOT EXISTS stock_by_warehouse (
    sku VARCHAR, warehouse VARCHAR, on_hand INTEGER, in_qc INTEGER, damaged INTEGER, reserved INTEGER,
    available INTEGER
);
CREATE TABLE IF NOT EXISTS stock_positioned (  -- the last build's basis (POSITION_BASIS_SQL), for the next one
    basis VARCHAR[] NOT NULL,
    skus  BIGINT NOT NULL                      -- the rows it left in stock_position
);
-- the input batches (judged) the builds have seen, by id
CREATE TABLE IF NOT EXISTS stock_positioned_inputs (id VARCHAR PRIMARY KEY);
CREATE TABLE IF NOT EXISTS stock_holds (  -- SKUs held now, and for how many stock-position runs in a row
    sku      VARCHAR PRIMARY KEY,
    held_by  VARCHAR NOT NULL,
    since    TIMESTAMPTZ NOT NULL,
    runs     INTEGER NOT NULL,
    last_run VARCHAR
);
"""

MOST_OVERSOLD = 20  # the SKUs a stock-position run names as most oversold
# the feeds the stock position is built from: their bad rows hold SKUs, their structural failures stop the push
STOCK_INPUTS = ("on_hand", "open_orders", "catalog")


class OverridesError(ValueError):
    """The per-SKU overrides file breaks its contract; the message lists every offending row."""


@dataclass(frozen=True)
class StockPolicy:
    safety_buffer: int = 0  # units kept back from every SKU
    floor: int = 1  # at or below this many sellable units, publish 0: a last unit is often a display or a miscount


def read_overrides(path: str | Path | None, known_skus: set[str]) -> pd.DataFrame:
    """Per-SKU `safety_buffer` / `floor` overrides from a CSV (`sku,safety_buffer,floor,note`; empty cells
    keep the default). Every bad row is reported with its line number; nothing is half-applied."""
    empty = pd.DataFrame(
        {"sku": pd.Series(dtype=str), "safety_buffer": pd.Series(dtype="Int64"), "floor": pd.Series(dtype="Int64")}
    )
    if not path:
        return empty
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    problems = [
        f"unknown column {c!r} (allowed: {', '.join(OVERRIDE_COLUMNS)})"
        for c in frame.columns
        if c not in OVERRIDE_COLUMNS
    ]
    if "sku" not in frame.columns:
        problems.append("missing column 'sku'")
    else:
        for i, row in frame.iterrows():  # a config file of a few hundred rows: clarity beats vector tricks
            line = int(i) + 2  # the header is line 1
            sku = row["sku"].strip()
            if not sku:
                problems.append(f"line {line}: empty sku")
            elif sku not in known_skus:
                problems.append(f"line {line}: sku {sku!r} is not in the catalog")
            for col in ("safety_buffer", "floor"):
                value = row.get(col, "").strip()
                if value and not (value.isdigit()):
                    problems.append(f"line {line}: {col} must be a whole number >= 0, got {value!r}")
        duplicated = frame.loc[frame["sku"].str.strip().duplicated(keep=False), "sku"]
        problems += [f"sku {s!r} appears more than once" for s in sorted(set(duplicated))]
    if problems:
        raise OverridesError(f"stock overrides {path}: " + "; ".join(problems))
    for col in ("safety_buffer", "floor"):
        frame[col] = pd.to_numeric(frame.get(col, pd.Series(dtype=str)).replace("", None)).astype("Int64")
    frame["sku"] = frame["sku"].str.strip()
    return frame[["sku", "safety_buffer", "floor"]]


# What a SKU's position depends on beyond its own rows: when any of it differs from the last build's, every SKU is
# positioned again. Its own rows are known by their batch: a SKU named by a batch the last build had not seen
# judged (on hand, open orders, catalog) is positioned again, the rest keep their rows.
POSITION_BASIS_SQL = """
SELECT $settings AS settings,
       -- rows quarantined or released in batches already positioned (a new batch's own rows are touched)
       (SELECT count(*) || '/' || count(released_at) FROM quarantine
        WHERE feed IN ('on_hand', 'open_orders', 'catalog') AND batch_id IN (FROM stock_positioned_inputs))
           AS quarantine,
       (SELECT count(*) || '/' || coalesce(max(absent_since)::VARCHAR, '') FROM snapshot_absent
        WHERE feed IN ('on_hand', 'catalog')) AS absent
"""
TOUCHED_SQL = """
CREATE OR REPLACE TEMP TABLE stock_touched AS
WITH new_batches AS (
    SELECT batch_id AS _batch_id FROM ingest_batches
    WHERE feed IN ('on_hand', 'open_orders', 'catalog') AND batch_id NOT IN (FROM stock_positioned_inputs)
)
SELECT sku FROM raw_on_hand SEMI JOIN new_batches USING (_batch_id)
UNION SELECT sku FROM raw_open_orders SEMI JOIN new_batches USING (_batch_id)
UNION SELECT sku FROM raw_catalog SEMI JOIN new_batches USING (_batch_id)
UNION SELECT sku FROM stock_position WHERE held  -- what held it may have gone
"""
# Orders name their fulfilment warehouse, so the reservation is per warehouse too. `{only}` narrows the build to
# the SKUs of `stock_touched` (empty: every SKU).
BY_WAREHOUSE_SQL = """
WITH reserved AS (
    SELECT sku, warehouse, sum(qty) AS reserved FROM valid_open_orders {only} WHERE status = 'open' GROUP BY ALL
)
SELECT sku, warehouse, coalesce(s.on_hand, 0)::INTEGER AS on_hand, coalesce(s.in_qc, 0)::INTEGER AS in_qc,
       coalesce(s.damaged, 0)::INTEGER AS damaged, coalesce(r.reserved, 0)::INTEGER AS reserved,
       (coalesce(s.on_hand, 0) - coalesce(s.in_qc, 0) - coalesce(s.damaged, 0)
        - coalesce(r.reserved, 0))::INTEGER AS available
FROM (FROM valid_on_hand {only}) s FULL JOIN reserved r USING (sku, warehouse)
"""
POSITION_SQL = """
WITH stock AS (
    SELECT sku, sum(on_hand) AS on_hand, sum(in_qc) AS in_qc, sum(damaged) AS damaged,
           sum(reserved) AS reserved
    FROM stock_by_warehouse {only} GROUP BY sku
), unjudged AS (
    SELECT batch_id FROM ingest_batches WHERE judged_at IS NULL
), held AS (  -- every reason an input row of the SKU is hidden from valid_*: its figures are unknown
    SELECT sku, string_agg(DISTINCT why, ', ' ORDER BY why) AS held_by FROM (
        SELECT row_data->>'sku' AS sku, feed AS why FROM quarantine
        WHERE released_at IS NULL AND feed IN ('on_hand', 'open_orders', 'catalog')
        UNION ALL
        SELECT row_data->>'sku', 'on_hand (absent from the latest snapshot)' FROM snapshot_absent
        WHERE feed = 'on_hand'
        UNION ALL
        SELECT sku, 'catalog (batch not judged yet)' FROM raw_catalog
        SEMI JOIN unjudged ON _batch_id = batch_id
        UNION ALL
        SELECT sku, 'on_hand (batch not judged yet)' FROM raw_on_hand
        SEMI JOIN unjudged ON _batch_id = batch_id
        UNION ALL
        SELECT sku, 'open_orders (batch not judged yet)' FROM raw_open_orders
        SEMI JOIN unjudged ON _batch_id = batch_id
    ) GROUP BY sku
), figures AS (
    SELECT c.sku, c.status AS product_status,
           coalesce(s.on_hand, 0)::INTEGER AS on_hand, coalesce(s.in_qc, 0)::INTEGER AS in_qc,
           coalesce(s.damaged, 0)::INTEGER AS damaged, coalesce(s.reserved, 0)::INTEGER AS reserved,
           coalesce(o.safety_buffer, $buffer)::INTEGER AS safety_buffer,
           coalesce(o.floor, $floor)::INTEGER AS floor, o.sku IS NOT NULL AS overridden,
           h.held_by
    FROM (FROM raw_catalog {only}) c  -- a product hidden from valid_catalog is held, so it is here (and says why)
    LEFT JOIN stock s USING (sku)
    LEFT JOIN overrides o USING (sku) LEFT JOIN held h USING (sku)
    WHERE h.sku IS NOT NULL OR c.sku IN (SELECT sku FROM valid_catalog)
)
SELECT *, on_hand - in_qc - damaged - reserved - safety_buffer AS available,
       CASE WHEN product_status <> 'active' OR available <= floor THEN 0 ELSE available END
           AS publish_quantity,
       CASE WHEN publish_quantity > 0 THEN 'in_stock' ELSE 'out_of_stock' END AS publish_status,
       held_by IS NOT NULL AS held
FROM figures
"""


def build_stock_position(
    con: duckdb.DuckDBPyConnection,
    policy: StockPolicy,
    overrides: pd.DataFrame,
    now: datetime,
    run_id: str = "",
    whole: bool = False,
) -> int | None:
    """Bring tables `stock_by_warehouse` and `stock_position` (one row per catalog SKU with its figures summed over
    warehouses, and its desired storefront state) up to date, and note in `stock_status_since` when each SKU's
    state last changed (how long a product has been out of stock). Only the SKUs whose rows may have changed are
    positioned again, unless the basis changed (or `whole`). Returns how many were (None: every SKU)."""
    con.register("overrides", overrides)
    try:
        settings = orjson.dumps([asdict(policy), overrides.astype(str).to_dict("records")]).decode()
        touched = None
        if not whole and _built_on(con) == _basis(con, settings):
            con.execute(TOUCHED_SQL)
            (touched,) = first_row(con, "SELECT count(*) FROM stock_touched")
        params = {"buffer": policy.safety_buffer, "floor": policy.floor}
        with transaction(con):
            if touched is None:
                con.execute(f"CREATE OR REPLACE TABLE stock_by_warehouse AS {BY_WAREHOUSE_SQL.format(only='')}")
                con.execute(f"CREATE OR REPLACE TABLE stock_position AS {POSITION_SQL.format(only='')}", params)
            else:
                only = "SEMI JOIN stock_touched USING (sku)"
                for table, sql in (("stock_by_warehouse", BY_WAREHOUSE_SQL), ("stock_position", POSITION_SQL)):
                    con.execute(f"DELETE FROM {table} WHERE sku IN (FROM stock_touched)")
                    con.execute(f"INSERT INTO {table} BY NAME {sql.format(only=only)}", params if "$" in sql else None)
            _note_build(con, settings)
            con.execute(
                """INSERT INTO stock_status_since  -- only the SKUs whose status is new or changed, not an upsert of all
                SELECT p.sku, p.publish_status, $now, NULL
                FROM stock_position p LEFT JOIN stock_status_since s USING (sku)
                WHERE NOT p.held AND s.publish_status IS DISTINCT FROM p.publish_status
                ON CONFLICT (sku) DO UPDATE SET publish_status = excluded.publish_status, since = excluded.since,
                                                changed_run = $run
                WHERE stock_status_since.publish_status <> excluded.publish_status""",
                {"now": now, "run": run_id},
            )
            # a hold counts once per run, however often the run rebuilds the position
            con.execute("DELETE FROM stock_holds WHERE sku NOT IN (SELECT sku FROM stock_position WHERE held)")
            con.execute(
                """INSERT INTO stock_holds SELECT sku, held_by, $now, 1, $run FROM stock_position WHERE held
                ON CONFLICT (sku) DO UPDATE SET held_by = excluded.held_by, last_run = $run,
                    runs = stock_holds.runs + (stock_holds.last_run IS DISTINCT FROM $run)::INTEGER""",
                {"now": now, "run": run_id},
            )
    finally:
        con.unregister("overrides")
    return touched


def _built_on(con: duckdb.DuckDBPyConnection) -> list[str] | None:
    """The last build's basis, if `stock_position` still holds the rows it left."""
    row = exists(con, "stock_position") and first_row(
        con, "SELECT basis FROM stock_positioned WHERE skus = (SELECT count(*) FROM stock_position)"
    )
    return list(row[0]) if row else None


def _basis(con: duckdb.DuckDBPyConnection, settings: str) -> list[str]:
    return [str(value) for value in first_row(con, POSITION_BASIS_SQL, {"settings": settings}) or ()]


def _note_build(con: duckdb.DuckDBPyConnection, settings: str) -> None:
    """Record the batches this build saw, then its basis over them (so that the next run, asking over the same
    batches, finds the same basis unless something on it changed)."""
    con.execute(
        """INSERT INTO stock_positioned_inputs
        SELECT batch_id FROM ingest_batches
        WHERE judged_at IS NOT NULL AND feed IN ('on_hand', 'open_orders', 'catalog')
        EXCEPT FROM stock_positioned_inputs"""
    )
    con.execute("DELETE FROM stock_positioned")
    con.execute(
        "INSERT INTO stock_positioned SELECT $basis, count(*) FROM stock_position", {"basis": _basis(con, settings)}
    )


def long_holds(con: duckdb.DuckDBPyConnection, max_runs: int) -> pd.DataFrame:
    """SKUs held for `max_runs` stock-position runs in a row or more: a hold must never go unnoticed."""
    return con.execute(
        "SELECT sku, held_by, runs, since FROM stock_holds WHERE runs >= ? ORDER BY runs DESC, sku", [max_runs]
    ).df()


def position_summary(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Counts for the asset's metadata."""
    row = con.execute(
        """SELECT count(*), count(*) FILTER (publish_status = 'in_stock'),
                  count(*) FILTER (publish_status = 'out_of_stock'),
                  count(*) FILTER (available < 0), count(*) FILTER (held), count(*) FILTER (overridden),
                  coalesce(sum(reserved), 0)
        FROM stock_position"""
    ).fetchall()[0]
    keys = ("skus", "in_stock", "out_of_stock", "oversold", "held", "overridden", "units_reserved")
    return dict(zip(keys, (int(v) for v in row), strict=True))


@dataclass(frozen=True)
class PositionReport:
    """What a stock-position run found: the counts (`position_summary`) and the most oversold SKUs."""

    counts: dict[str, int]
    most_oversold: pd.DataFrame
    repositioned: int | None  # SKUs positioned again (None: every SKU)


def refresh_position(
    con: duckdb.DuckDBPyConnection,
    policy: StockPolicy,
    overrides_csv: str | Path | None,
    now: datetime,
    run_id: str = "",
    whole: bool = False,
) -> PositionReport:
    """Bring the stock position up to date under `policy` and the per-SKU overrides of `overrides_csv` (checked
    against the catalog first: a bad file changes nothing), and summarise it."""
    # the catalog's SKUs only for a file to check: a million of them in a Python set cost a second a run
    known = {sku for (sku,) in con.execute("SELECT sku FROM valid_catalog").fetchall()} if overrides_csv else set()
    overrides = read_overrides(overrides_csv, known)
    repositioned = build_stock_position(con, policy, overrides, now, run_id, whole)
    counts = position_summary(con)
    oversold = con.execute(
        """SELECT sku, on_hand, in_qc, damaged, reserved, available FROM stock_position
        WHERE available < 0 ORDER BY available LIMIT ?""",
        [MOST_OVERSOLD],
    ).df()
    return PositionReport(counts, oversold, repositioned)


def held_skus(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The SKUs bad input rows hold now, and what holds each (`held_by`)."""
    return con.sql("SELECT sku, held_by FROM stock_position WHERE held ORDER BY sku").df()
