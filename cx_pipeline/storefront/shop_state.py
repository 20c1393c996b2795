"""The shop's state as the pipeline knows it: its last full read plus the changes the shop listed since, our own
writes among them. A plan compares against that instead of reading every SKU of the shop each run; a full read on
its own cadence catches what the shop's change log missed (drift) and SKUs it no longer lists."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from cx_pipeline.core.sql import first_row
from cx_pipeline.core.transactions import transaction
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.storefront.adapters.base import STATE_COLUMNS, ShopRead, StorefrontAdapter
from cx_pipeline.storefront.push import check_not_empty

TABLE = "shop_state"  # what a plan compares the stock position with (`push.settle_and_plan`)
DDL = """
CREATE TABLE IF NOT EXISTS shop_state (  -- the shop as last known: one row per SKU it lists
    sku      VARCHAR NOT NULL,
    status   VARCHAR,
    quantity INTEGER
);
CREATE TABLE IF NOT EXISTS shop_reads (  -- every look at the shop a plan took
    plan_id       VARCHAR NOT NULL,
    adapter       VARCHAR NOT NULL,
    shop          VARCHAR NOT NULL,      -- where it was read (no credentials)
    read_at       TIMESTAMPTZ NOT NULL,
    full_read     BOOLEAN NOT NULL,      -- all of the shop, or only what changed since `since`
    since         TIMESTAMPTZ,
    as_of         TIMESTAMPTZ,           -- the shop's clock at the read: where the next read by change starts
    rows_read     INTEGER NOT NULL,
    drift_changed INTEGER,               -- a full read's: SKUs whose state differed from the known one, unlisted
    drift_new     INTEGER,               -- ... SKUs it lists that the known state lacked
    drift_gone    INTEGER                -- ... SKUs the known state had that the shop no longer lists
);
"""


@dataclass(frozen=True)
class Drift:
    """What a full read found that the shop's change log since the last read had not listed."""

    changed: int
    new: int
    gone: int

    @property
    def skus(self) -> int:
        return self.changed + self.new + self.gone


@dataclass(frozen=True)
class KnownState:
    """The shop as the plan sees it, and how this run looked at it."""

    listed: int  # SKUs the shop lists: the rows of `shop_state` (TABLE), which the plan reads
    full_read: bool
    rows_read: int
    drift: Drift | None  # a full read after earlier reads: what the change log had missed
    note: str | None = None  # why a read by change gave way to a full read, for the run's log


def read_shop(
    con: duckdb.DuckDBPyConnection,
    adapter: StorefrontAdapter,
    *,
    shop: str,
    plan_id: str,
    every_hours: float,
    empty_shop_ok: bool = False,
) -> KnownState:
    """Bring the known shop state up to date and return it: by the shop's change log since the last read, or
    whole when a full read is due (none yet for this shop, the last one `every_hours` old, 0: every run) or the
    shop keeps no change log. A full read after earlier ones first asks the change log what it lists, so that
    only what it missed counts as drift. A full read that lists nothing stops here (`check_not_empty`), before it
    replaces the known state."""
    # The known state is the last shop read's: reading by change builds on it only when that was this shop.
    cursor, known, fresh, refused = first_row(
        con,
        """WITH latest AS (SELECT adapter, shop, as_of FROM shop_reads ORDER BY read_at DESC LIMIT 1),
             full_reads AS (SELECT max(read_at) AS last_full FROM shop_reads
                            WHERE adapter = $adapter AND shop = $shop AND full_read)
        SELECT (SELECT as_of FROM latest WHERE adapter = $adapter AND shop = $shop),
               (SELECT count(*) FROM latest WHERE adapter = $adapter AND shop = $shop) > 0
                   AND (SELECT last_full FROM full_reads) IS NOT NULL,
               coalesce((SELECT last_full FROM full_reads) > now() - to_microseconds(($hours * 3.6e9)::BIGINT), false),
               -- a write the shop refused since that full read (a SKU it stopped listing, say): the change log
               -- never lists a deletion, so read it whole
               EXISTS (SELECT 1 FROM push_audit WHERE NOT ok AND pushed_at > (SELECT last_full FROM full_reads))""",
        {"adapter": adapter.name, "shop": shop, "hours": every_hours},
    )
    changes, note = None, None
    if cursor is not None and known:
        try:
            changes = adapter.read_changes(cursor)
        except UpstreamError as exc:  # a change log that fails (or forgot that far back): the full read still works
            note = f"the shop's change log could not be read ({exc}); read it whole instead"
    if changes is not None and fresh and not refused and every_hours > 0:
        upsert(con, changes.state)
        record(con, plan_id, adapter.name, shop, full_read=False, since=cursor, read=changes, drift=None)
        return KnownState(listed(con), False, len(changes.state), None, note)
    whole = adapter.read_all()
    check_not_empty(whole.state, adapter.name, shop, empty_shop_ok=empty_shop_ok)
    drift = compare(con, whole.state, listed=changes.state if changes is not None else None) if known else None
    with transaction(con):
        con.execute("DELETE FROM shop_state")
        con.register("whole_read", whole.state[list(STATE_COLUMNS)])
        try:
            con.execute("INSERT INTO shop_state SELECT DISTINCT ON (sku) sku, status, quantity FROM whole_read")
        finally:
            con.unregister("whole_read")
        record(con, plan_id, adapter.name, shop, full_read=True, since=None, read=whole, drift=drift)
    return KnownState(listed(con), True, len(whole.state), drift, note)


def compare(con: duckdb.DuckDBPyConnection, whole: pd.DataFrame, listed: pd.DataFrame | None) -> Drift | None:
    """How a full read differs from the known state, leaving out the SKUs the change log `listed` (None: the shop
    keeps no change log, so a difference cannot be told from a change: no drift is reported)."""
    if listed is None:
        return None
    con.register("whole_read", whole[list(STATE_COLUMNS)])
    con.register("listed_read", listed[["sku"]])
    try:
        changed, new = first_row(
            con,
            """SELECT count(*) FILTER (WHERE k.sku IS NOT NULL AND (w.status IS DISTINCT FROM k.status
                                                                OR w.quantity IS DISTINCT FROM k.quantity)),
                      count(*) FILTER (WHERE k.sku IS NULL)
            FROM whole_read w LEFT JOIN shop_state k USING (sku) ANTI JOIN listed_read l USING (sku)""",
        )
        (gone,) = first_row(
            con, "SELECT count(*) FROM shop_state k ANTI JOIN whole_read USING (sku) ANTI JOIN listed_read USING (sku)"
        )
    finally:
        con.unregister("whole_read")
        con.unregister("listed_read")
    return Drift(changed, new, gone)


def upsert(con: duckdb.DuckDBPyConnection, changes: pd.DataFrame) -> None:
    """Apply the SKUs a read by change listed: their state now replaces the known one (a SKU listed twice, as
    a change log paged while it moved can do: its last listing)."""
    con.register("changes_read", changes[list(STATE_COLUMNS)].reset_index(drop=True).reset_index(names="_pos"))
    try:
        with transaction(con):
            con.execute("DELETE FROM shop_state WHERE sku IN (SELECT sku FROM changes_read)")
            con.execute(
                """INSERT INTO shop_state SELECT sku, status, quantity FROM changes_read
                QUALIFY row_number() OVER (PARTITION BY sku ORDER BY _pos DESC) = 1"""
            )
    finally:
        con.unregister("changes_read")


def record(
    con: duckdb.DuckDBPyConnection,
    plan_id: str,
    adapter: str,
    shop: str,
    *,
    full_read: bool,
    since: object,
    read: ShopRead,
    drift: Drift | None,
) -> None:
    con.execute(
        "INSERT INTO shop_reads VALUES (?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?)",
        [
            plan_id,
            adapter,
            shop,
            full_read,
            since,
            read.as_of,
            len(read.state),
            *((drift.changed, drift.new, drift.gone) if drift else (None, None, None)),
        ],
    )


def listed(con: duckdb.DuckDBPyConnection) -> int:
    (count,) = first_row(con, f"SELECT count(*) FROM {TABLE}") or (0,)
    return int(count)
