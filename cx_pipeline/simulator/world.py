"""The demo world: a small online store generated deterministically from a seed and a `now`.

Every table is a set of row *versions*. A version is visible once the world's clock reaches its
`updated_at` and stays current until `valid_to` (when the next version of the same key takes over; NaT
means never). That is how advancing the clock reveals new rows and genuine updates of rows a client
already holds (receipts after QC, orders when they ship, POs when they are received).

Generation is vectorised with numpy/pandas; the causal chain is demand -> replenishment (POs) ->
deliveries (receipts) -> stock -> order outcomes (out of stock: backorder or cancel) -> inquiries.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from cx_pipeline.simulator.catalog import (
    CATEGORIES,
    DAY,
    REQUIRED_ATTRIBUTES,
    build_products,
    build_suppliers,
)
from cx_pipeline.simulator.quality import Quality, build_quality

__all__ = ["REQUIRED_ATTRIBUTES", "WAREHOUSES", "World", "build_world"]

HOUR = 3_600
NEVER = np.iinfo(np.int64).max
WAREHOUSES = ("WH-EAST", "WH-WEST")
WAREHOUSE_SHARE = np.array([0.55, 0.45])  # of customer orders shipped from each

ORDERS_PER_DAY_PER_2000_SKUS = 250  # order volume scales with the catalog so small worlds stay consistent
LINES_PER_ORDER = ((1, 2, 3), (0.62, 0.28, 0.10))
QTY_PER_LINE = ((1, 2, 3), (0.80, 0.15, 0.05))
# Orders by hour of day (UTC): quiet at night, peaks at lunch and in the evening.
HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 7, 8, 7, 6, 6, 6, 7, 8, 9, 9, 8, 5, 3], float)

PO_PERIOD = 7 * DAY  # each supplier takes purchase orders once a week, per warehouse
PO_CANCEL_RATE = 0.02
LATE_RATE, SHORT_RATE, OVER_RATE, SPLIT_RATE, DAMAGE_RATE = 0.11, 0.11, 0.05, 0.06, 0.07  # x supplier factor
QC_DELAY_HOURS = (2, 8)
DAMAGED_STOCK_DAYS = 30  # damaged units wait this long for the return to the supplier
ORDER_CANCEL_RATE, OUT_OF_STOCK_CANCEL_RATE = 0.02, 0.3
INQUIRY_RATE = 0.03
STOREFRONT_STALE_SHARE = 0.03


@dataclass
class World:
    """The generated store. Tables hold every version of every row over the whole timeline; only what
    the clock has reached is visible (`current`, `on_hand`). `storefront` and `notifications` are the
    mutable state behind the write endpoints; guard them with `lock`."""

    seed: int
    now: datetime  # where the clock started
    start: datetime
    end: datetime
    products: pd.DataFrame
    purchase_orders: pd.DataFrame  # header versions
    po_lines: pd.DataFrame
    receipts: pd.DataFrame
    orders: pd.DataFrame  # header versions
    order_lines: pd.DataFrame
    inquiries: pd.DataFrame
    storefront: dict[str, dict[str, Any]]  # sku -> {status, quantity, updated_at}
    ledger: StockLedger
    quality: Quality  # defect rates, QA's inspections so far, and the planted truth behind return inquiries
    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _clock: int = 0  # epoch seconds

    def __post_init__(self) -> None:
        self._clock = int(self.now.timestamp())

    @property
    def clock(self) -> datetime:
        return datetime.fromtimestamp(self._clock, UTC)

    @property
    def clock_seconds(self) -> int:
        return self._clock

    def advance(self, hours: float) -> datetime:
        """Move the clock forward (to the second); past `end` nothing new happens."""
        if hours < 0:
            raise ValueError("the clock only moves forward")
        with self.lock:
            self._clock += round(hours * HOUR)
            return self.clock

    def current(self, table: str, at: datetime | None = None) -> pd.DataFrame:
        """The versions of `table` (products, purchase_orders, receipts, orders, inquiries) current at `at`
        (default: the clock)."""
        frame: pd.DataFrame = getattr(self, table)
        moment = pd.Timestamp(at or self.clock)
        visible = (frame["updated_at"] <= moment) & ~(frame["valid_to"] <= moment)
        return frame[visible]

    def on_hand(self, at: datetime | None = None) -> pd.DataFrame:
        """Stock per sku x warehouse at `at` (default: the clock)."""
        return self.ledger.snapshot(int((at or self.clock).timestamp()))


@dataclass(frozen=True)
class StockLedger:
    """Stock movements per sku x warehouse ("pair" = sku index * 2 + warehouse index), for snapshots."""

    skus: np.ndarray
    initial: np.ndarray
    received_pair: np.ndarray
    received_at: np.ndarray
    qc_at: np.ndarray
    qty_received: np.ndarray
    qty_damaged: np.ndarray
    shipped_pair: np.ndarray
    shipped_at: np.ndarray
    qty_shipped: np.ndarray

    def snapshot(self, at: int) -> pd.DataFrame:
        n = len(self.initial)
        checked = self.qc_at <= at
        good = self.qty_received - self.qty_damaged
        stock = (
            self.initial
            + np.bincount(self.received_pair[checked], good[checked], n)
            - np.bincount(self.shipped_pair[self.shipped_at <= at], self.qty_shipped[self.shipped_at <= at], n)
        )
        waiting = (self.received_at <= at) & ~checked
        in_qc = np.bincount(self.received_pair[waiting], self.qty_received[waiting], n)
        recent = checked & (self.qc_at > at - DAMAGED_STOCK_DAYS * DAY)
        damaged = np.bincount(self.received_pair[recent], self.qty_damaged[recent], n)
        return pd.DataFrame(
            {
                "sku": np.repeat(self.skus, len(WAREHOUSES)),
                "warehouse": np.tile(WAREHOUSES, len(self.skus)),
                # physical units in the building: sellable stock plus units in QC and damaged ones awaiting return
                "on_hand": (np.maximum(stock, 0) + in_qc + damaged).astype(np.int64),
                "in_qc": in_qc.astype(np.int64),
                "damaged": damaged.astype(np.int64),
                "as_of": pd.Timestamp(at, unit="s", tz="UTC"),
            }
        )


@dataclass(frozen=True)
class _Timeline:
    now: int
    start: int
    end: int


def build_world(
    seed: int = 42,
    n_skus: int = 2000,
    history_days: int = 90,
    future_days: int = 30,
    now: datetime | None = None,
) -> World:
    """Generate the demo world; the same seed and `now` give identical data.

    `now` (default: the current UTC hour) is where the clock starts; the timeline spans
    [now - history_days, now + future_days] and everything is generated as offsets from `now`.
    """
    if n_skus < 10:
        raise ValueError("n_skus must be at least 10")
    if now is None:
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    now = now.astimezone(UTC).replace(microsecond=0)
    t = _Timeline(
        int(now.timestamp()),
        int(now.timestamp()) - history_days * DAY,
        int(now.timestamp()) + future_days * DAY,
    )
    rng = np.random.default_rng(seed)

    suppliers = build_suppliers(rng)
    products = build_products(rng, n_skus, suppliers, t.now)
    per_day = ORDERS_PER_DAY_PER_2000_SKUS * n_skus / 2000
    lines = _order_lines(rng, products, t, per_day)
    pairs = _stock_pairs(rng, products, suppliers, per_day)
    po_lines, po_headers = _purchase_orders(rng, products, suppliers, pairs, t)
    receipts = _receipts(rng, products, suppliers, po_lines, po_headers, t)
    orders = _order_outcomes(rng, lines, receipts, pairs, t)
    ledger = StockLedger(
        skus=products["sku"].to_numpy(),
        initial=pairs["initial"].to_numpy(),
        received_pair=receipts["pair"].to_numpy(),
        received_at=receipts["received_at"].to_numpy(),
        qc_at=receipts["qc_at"].to_numpy(),
        qty_received=receipts["qty_received"].to_numpy(),
        qty_damaged=receipts["qty_damaged"].to_numpy(),
        shipped_pair=lines.loc[lines["shipped"], "pair"].to_numpy(),
        shipped_at=orders["changed_at"].to_numpy()[lines.loc[lines["shipped"], "order"].to_numpy()],
        qty_shipped=lines.loc[lines["shipped"], "qty"].to_numpy(),
    )
    # Quality and returns draw from their own streams, so the rest of the world is what it was without them.
    popularity = products["popularity"].to_numpy()
    line_rate = per_day * np.dot(*LINES_PER_ORDER) * popularity / popularity.sum()  # expected lines a day per SKU
    quality = build_quality(np.random.default_rng([seed, 1]), products, receipts, lines, orders, line_rate, t.now)
    inquiries = _inquiries(rng, orders, lines, products, t, quality.draw_returns(np.random.default_rng([seed, 2])))
    return World(
        seed=seed,
        now=now,
        start=now - timedelta(days=history_days),
        end=now + timedelta(days=future_days),
        products=_product_versions(rng, products, t),
        purchase_orders=_po_versions(rng, po_headers, t),
        po_lines=_timestamps(po_lines[["po_id", "po_line", "sku", "qty_ordered", "expected_at"]], "expected_at"),
        receipts=_receipt_versions(receipts, t),
        orders=_order_versions(orders, t),
        order_lines=lines[["order_id", "line_no", "sku", "warehouse", "qty"]].reset_index(drop=True),
        inquiries=inquiries,
        storefront=_storefront(rng, ledger.snapshot(t.now), _reserved(orders, lines, products, t.now), t),
        ledger=ledger,
        quality=quality,
    )


# --- demand ---


def _order_lines(rng: np.random.Generator, products: pd.DataFrame, t: _Timeline, per_day: float) -> pd.DataFrame:
    """Customer order lines over the whole timeline (headers come later, once outcomes are known)."""
    midnight = t.start - t.start % DAY
    days = math.ceil((t.end - midnight) / DAY)
    n = int(rng.poisson(per_day * days))
    ordered_at = (
        midnight
        + rng.integers(0, days, n) * DAY
        + rng.choice(24, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum()) * HOUR
        + rng.integers(0, HOUR, n)
    )
    ordered_at = np.sort(ordered_at[(ordered_at >= t.start) & (ordered_at <= t.end)])
    n = len(ordered_at)
    n_lines = rng.choice(LINES_PER_ORDER[0], n, p=LINES_PER_ORDER[1])
    order = np.repeat(np.arange(n), n_lines)
    weights = products["popularity"].to_numpy()
    sku = rng.choice(len(products), len(order), p=weights / weights.sum())
    warehouse = (rng.uniform(0, 1, n) >= WAREHOUSE_SHARE[0]).astype(np.int64)[order]
    # Repeat customers: a pool a third the size of the orders, drawn with a long tail.
    customers = np.minimum(rng.zipf(1.6, n), max(n // 3, 1))
    starts = np.cumsum(n_lines) - n_lines
    return pd.DataFrame(
        {
            "order": order,
            "order_id": _ids("ORD-", order + 1, 7),
            "customer_id": _ids("CUS-", customers, 6)[order],
            "line_no": np.arange(len(order)) - starts[order] + 1,
            "sku_index": sku,
            "sku": products["sku"].to_numpy()[sku],
            "qty": rng.choice(QTY_PER_LINE[0], len(order), p=QTY_PER_LINE[1]),
            "pair": sku * 2 + warehouse,
            "warehouse": np.array(WAREHOUSES)[warehouse],  # the OMS assigns each line its fulfilment warehouse
            "ordered_at": ordered_at[order],
        }
    )


def _stock_pairs(
    rng: np.random.Generator, products: pd.DataFrame, suppliers: pd.DataFrame, per_day: float
) -> pd.DataFrame:
    """Replenishment policy and opening stock per sku x warehouse."""
    n = len(products) * 2
    sku = np.repeat(np.arange(len(products)), 2)
    popularity = products["popularity"].to_numpy()
    units_per_day = per_day * np.dot(*LINES_PER_ORDER) * np.dot(*QTY_PER_LINE)
    rate = units_per_day * (popularity / popularity.sum())[sku] * np.tile(WAREHOUSE_SHARE, len(products))
    supplier = suppliers.set_index("supplier_id").index.get_indexer(products["supplier_id"])[sku]
    lead = suppliers["lead_days"].to_numpy()[supplier]
    cycle = rng.uniform(14, 35, n)  # every SKU is replenished every 2-5 weeks
    fill = rng.uniform(0.9, 1.15, n)  # the buyer's habit for this SKU; each PO varies around it
    pack = products["pack"].to_numpy()[sku]
    status = products["status"].to_numpy()[sku]
    initial = np.select(
        [status == "active", status == "inactive"],
        [
            np.round(rate * (lead + 14 + rng.uniform(0.9, 1.3, n) * cycle) * fill),
            rng.integers(0, 3, n) * pack,
        ],
        rng.integers(0, 2, n) * rng.integers(0, pack + 1, n),  # discontinued: the last few units, if any
    )
    return pd.DataFrame(
        {
            "sku_index": sku,
            "warehouse": np.tile([0, 1], len(products)),
            "supplier": supplier,
            "rate": rate,
            "cycle": cycle,
            "pack": pack,
            "order_up": rate * cycle * fill,
            "initial": initial.astype(np.int64),
            "replenished": status == "active",
        }
    )


# --- supply ---


def _purchase_orders(
    rng: np.random.Generator,
    products: pd.DataFrame,
    suppliers: pd.DataFrame,
    pairs: pd.DataFrame,
    t: _Timeline,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PO lines (one per replenishment of a pair) grouped into weekly POs per supplier and warehouse."""
    active = pairs[pairs["replenished"]]
    cycle = active["cycle"].to_numpy() * DAY
    first = t.start + rng.uniform(0, 1, len(active)) * cycle
    count = ((t.end - first) // cycle).astype(np.int64) + 1
    row = np.repeat(np.arange(len(active)), count)
    k = np.arange(len(row)) - np.repeat(np.cumsum(count) - count, count)
    wanted = first[row] + k * cycle[row] + rng.normal(0, DAY, len(row))

    supplier = active["supplier"].to_numpy()[row]
    pack = active["pack"].to_numpy()[row]
    midnight = t.start - t.start % DAY
    origin = midnight + (suppliers["order_offset"].to_numpy() // DAY * DAY + 8 * HOUR)[supplier]
    slot = np.ceil((wanted - origin) / PO_PERIOD).astype(np.int64)
    lines = pd.DataFrame(
        {
            "supplier": supplier,
            "warehouse": active["warehouse"].to_numpy()[row],
            "slot": slot,
            "sku_index": active["sku_index"].to_numpy()[row],
            # Each PO misjudges demand a little, so stock random-walks and some SKUs run dry for a while.
            "qty_ordered": np.maximum(
                pack,
                np.ceil(active["order_up"].to_numpy()[row] * rng.uniform(0.75, 1.3, len(row)) / pack) * pack,
            ).astype(np.int64),
            "slot_at": origin + slot * PO_PERIOD,
        }
    ).drop_duplicates(["supplier", "warehouse", "slot", "sku_index"])

    headers = lines.groupby(["supplier", "warehouse", "slot"], as_index=False)["slot_at"].first()
    headers["created_at"] = headers["slot_at"] + rng.integers(0, 3 * HOUR, len(headers))
    headers = headers[(headers["created_at"] >= t.start) & (headers["created_at"] <= t.end)]
    headers = headers.sort_values(["created_at", "supplier", "warehouse"]).reset_index(drop=True)
    headers["po_id"] = _ids("PO-", np.arange(1, len(headers) + 1), 5)
    headers["supplier_id"] = suppliers["supplier_id"].to_numpy()[headers["supplier"]]
    lead = suppliers["lead_days"].to_numpy()[headers["supplier"]] + rng.integers(-1, 3, len(headers))
    arrival_day = headers["created_at"] + lead * DAY
    headers["expected_at"] = arrival_day - arrival_day % DAY
    headers["cancelled"] = rng.uniform(0, 1, len(headers)) < PO_CANCEL_RATE

    lines = lines.merge(headers[["supplier", "warehouse", "slot", "po_id", "expected_at"]])
    lines = lines.sort_values(["po_id", "sku_index"]).reset_index(drop=True)
    lines["po_line"] = lines.groupby("po_id").cumcount() + 1
    lines["sku"] = products["sku"].to_numpy()[lines["sku_index"]]
    lines["pair"] = lines["sku_index"] * 2 + lines["warehouse"]
    return lines, headers.drop(columns=["slot", "slot_at"])


def _receipts(
    rng: np.random.Generator,
    products: pd.DataFrame,
    suppliers: pd.DataFrame,
    po_lines: pd.DataFrame,
    headers: pd.DataFrame,
    t: _Timeline,
) -> pd.DataFrame:
    """Deliveries against PO lines: exact, short, over or split over two deliveries; late, early or on
    time; damaged units found at QC. Rates scale with each supplier's unreliability. Also records on
    `headers.completed_at` when each PO's last delivery arrives."""
    h = len(headers)
    unreliable = suppliers["unreliability"].to_numpy()[headers["supplier"]]
    late = rng.uniform(0, 1, h) < LATE_RATE * unreliable
    offset_days = np.where(late, rng.integers(1, 7, h), rng.choice([-2, -1, 0], h, p=[0.1, 0.2, 0.7]))
    first_at = np.maximum(
        headers["expected_at"] + offset_days * DAY + rng.integers(7 * HOUR, 17 * HOUR, h),
        headers["created_at"] + 2 * DAY,
    )
    second_at = first_at + rng.integers(2, 8, h) * DAY + rng.integers(0, 8 * HOUR, h)
    qc_delay = rng.integers(QC_DELAY_HOURS[0] * HOUR, QC_DELAY_HOURS[1] * HOUR, (h, 2))
    has_split = np.zeros(h, bool)

    lines = po_lines.merge(headers.reset_index()[["po_id", "index", "cancelled"]], on="po_id")
    lines = lines[~lines["cancelled"]].reset_index(drop=True)
    po = lines["index"].to_numpy()
    q = lines["qty_ordered"].to_numpy()
    n = len(lines)
    u = rng.uniform(0, 1, n)
    p_short = SHORT_RATE * unreliable[po]
    short, over = u < p_short, (u >= p_short) & (u < p_short + OVER_RATE)
    split = (u >= p_short + OVER_RATE) & (u < p_short + OVER_RATE + SPLIT_RATE)
    first_qty = np.select(
        [short, over, split],
        [
            np.clip(np.floor(q * rng.uniform(0.5, 0.95, n)), 1, q - 1),
            q + np.maximum(1, np.round(q * rng.uniform(0.02, 0.12, n))),
            np.clip(np.round(q * rng.uniform(0.3, 0.7, n)), 1, q - 1),
        ],
        q,
    ).astype(np.int64)

    rest = np.flatnonzero(split)
    has_split[po[rest]] = True
    headers["completed_at"] = np.where(has_split, second_at, first_at)  # the PO is received when all is in
    deliveries = pd.DataFrame(
        {
            "line": np.concatenate([np.arange(n), rest]),
            "delivery": np.repeat([1, 2], [n, len(rest)]),
            "qty_received": np.concatenate([first_qty, q[rest] - first_qty[rest]]),
        }
    )
    po_of = po[deliveries["line"]]
    deliveries["received_at"] = np.where(deliveries["delivery"] == 1, first_at[po_of], second_at[po_of])
    deliveries["qc_at"] = deliveries["received_at"] + qc_delay[po_of, deliveries["delivery"] - 1]
    deliveries = deliveries[deliveries["received_at"] <= t.end]
    line_cols = ["po_id", "po_line", "sku", "sku_index", "pair", "expected_at", "index"]
    r = pd.concat(
        [deliveries.reset_index(drop=True), lines.loc[deliveries["line"], line_cols].reset_index(drop=True)],
        axis=1,
    )
    r = r.sort_values(["received_at", "po_id", "delivery", "po_line"]).reset_index(drop=True)
    receipt = r.groupby(["received_at", "po_id", "delivery"], sort=False).ngroup().to_numpy()
    r["receipt_id"] = _ids("RCV-", receipt + 1, 6)
    r["line_no"] = r.groupby("receipt_id").cumcount() + 1
    r["warehouse"] = np.array(WAREHOUSES)[r["pair"] % 2]

    m = len(r)
    damaged = rng.uniform(0, 1, m) < DAMAGE_RATE * unreliable[r["index"]]
    share = rng.uniform(0.02, 0.2, m)
    r["qty_damaged"] = np.where(damaged, 1 + rng.binomial(np.maximum(r["qty_received"] - 1, 0), share), 0)
    r["damage_reason"] = None
    category = products["category"].to_numpy()[r["sku_index"]]
    for name, spec in CATEGORIES.items():
        rows = np.flatnonzero(damaged & (category == name))
        weights = np.array(list(spec.damage.values()), float)
        r.loc[rows, "damage_reason"] = np.array(list(spec.damage))[
            rng.choice(len(weights), len(rows), p=weights / weights.sum())
        ]
    return r


# --- customer orders ---


def _order_outcomes(
    rng: np.random.Generator, lines: pd.DataFrame, receipts: pd.DataFrame, pairs: pd.DataFrame, t: _Timeline
) -> pd.DataFrame:
    """Per order: promised date and what happened to it. Stock is projected per sku x warehouse from
    opening stock, good received units and demand; a line ordered into negative stock is out of stock,
    and its order is backordered (ships late) or, more often than usual, cancelled."""
    events = pd.DataFrame(
        {
            "pair": np.concatenate([receipts["pair"], lines["pair"]]),
            "at": np.concatenate([receipts["qc_at"], lines["ordered_at"]]),
            "delta": np.concatenate([receipts["qty_received"] - receipts["qty_damaged"], -lines["qty"]]),
            "line": np.concatenate([np.full(len(receipts), -1), np.arange(len(lines))]),
        }
    ).sort_values(["pair", "at", "line"], kind="stable")
    level = pairs["initial"].to_numpy()[events["pair"]] + events.groupby("pair")["delta"].cumsum().to_numpy()
    is_line = events["line"].to_numpy() >= 0
    out_of_stock = np.zeros(len(lines), bool)
    out_of_stock[events["line"].to_numpy()[is_line]] = level[is_line] < 0
    lines["out_of_stock"] = out_of_stock

    headers = lines.groupby("order", sort=True).agg(
        order_id=("order_id", "first"),
        customer_id=("customer_id", "first"),
        ordered_at=("ordered_at", "first"),
        out_of_stock=("out_of_stock", "max"),
    )
    n = len(headers)
    oos = headers["out_of_stock"].to_numpy()
    ordered = headers["ordered_at"].to_numpy()
    cancelled = rng.uniform(0, 1, n) < ORDER_CANCEL_RATE + OUT_OF_STOCK_CANCEL_RATE * oos
    # Most orders ship within two days (1-4), well inside the promise; backorders wait for the next delivery.
    ship_delay = (DAY + 3 * DAY * rng.uniform(0, 1, n) ** 3).astype(np.int64) + oos * rng.integers(3 * DAY, 9 * DAY, n)
    headers["promised_at"] = ordered + rng.choice([2, 3, 4, 5], n, p=[0.15, 0.35, 0.3, 0.2]) * DAY
    headers["changed_at"] = ordered + np.where(cancelled, rng.integers(HOUR, 2 * DAY, n), ship_delay)
    headers["final_status"] = np.where(cancelled, "cancelled", "shipped")
    lines["shipped"] = ~cancelled[lines["order"]] & (headers["changed_at"].to_numpy()[lines["order"]] <= t.end)
    return headers.reset_index(drop=True)


def _inquiries(
    rng: np.random.Generator,
    orders: pd.DataFrame,
    lines: pd.DataFrame,
    products: pd.DataFrame,
    t: _Timeline,
    returns: pd.DataFrame,
) -> pd.DataFrame:
    """~3% of orders raise an inquiry, mostly for a cause: late delivery or cancellation (the rest are about
    something else); plus the return inquiries of `returns` (see quality.py)."""
    n = len(orders)
    first_line = lines.groupby("order")["sku_index"].first().to_numpy()
    category = products["category"].to_numpy()[first_line]
    return_rate = pd.Series(category).map({k: c.return_rate for k, c in CATEGORIES.items()}).to_numpy()
    price = products["price"].to_numpy()[first_line]
    cancelled = (orders["final_status"] == "cancelled").to_numpy()
    late = ~cancelled & (orders["changed_at"] > orders["promised_at"]).to_numpy()
    score = 1 + 12 * late + 15 * cancelled + 4 * return_rate * np.sqrt(price / 40)

    k = min(round(INQUIRY_RATE * n), n)
    chosen = np.sort(rng.choice(n, k, replace=False, p=score / score.sum()))
    u = rng.uniform(0, 1, k)
    reason = np.select(
        [
            cancelled[chosen] & (u < 0.85),
            late[chosen] & (u < 0.8),
            ~cancelled[chosen] & ~late[chosen] & (u < return_rate[chosen] + 0.3),
        ],
        # returns come from quality.py, where their cause is planted; these are general questions
        ["cancellation", "delivery_delay", "other"],
        np.where(rng.uniform(0, 1, k) < 0.5, "delivery_delay", "other"),
    )
    ordered = orders["ordered_at"].to_numpy()[chosen]
    changed = orders["changed_at"].to_numpy()[chosen]
    promised = orders["promised_at"].to_numpy()[chosen]
    created = np.select(
        [reason == "cancellation", (reason == "delivery_delay") & late[chosen], reason == "return"],
        [
            changed + rng.integers(HOUR // 2, 2 * DAY, k),
            promised + rng.integers(HOUR, 3 * DAY, k),
            changed + rng.integers(2 * DAY, 14 * DAY, k),
        ],
        ordered + rng.integers(HOUR, 5 * DAY, k),
    )
    frame = pd.DataFrame(
        {
            "order_id": np.where(rng.uniform(0, 1, k) < 0.9, orders["order_id"].to_numpy()[chosen], None),
            "sku": np.where(rng.uniform(0, 1, k) < 0.7, products["sku"].to_numpy()[first_line[chosen]], None),
            "reason": reason,
            "created_at": created,
        }
    )
    frame = pd.concat([frame, returns.assign(reason="return")[frame.columns]], ignore_index=True)
    frame = frame[frame["created_at"] <= t.end].sort_values("created_at", kind="stable").reset_index(drop=True)
    frame.insert(0, "inquiry_id", _ids("INQ-", np.arange(1, len(frame) + 1), 6))
    frame["updated_at"] = frame["created_at"]
    frame["valid_to"] = NEVER
    return _timestamps(frame, "created_at", "updated_at", "valid_to")


# --- versions ---


def _chain(times: np.ndarray, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten per-entity stage times (n x k, NEVER where a stage never happens) into versions.

    Returns (entity, stage, valid_to) for every stage reached by `end`; stages are in time order."""
    reached = times <= end
    following = np.concatenate([times[:, 1:], np.full((len(times), 1), NEVER)], axis=1)
    following = np.where(following <= end, following, NEVER)
    entity, stage = np.nonzero(reached)
    return entity, stage, following[entity, stage]


def _product_versions(rng: np.random.Generator, products: pd.DataFrame, t: _Timeline) -> pd.DataFrame:
    """Each product as registered/last edited, plus a catalog update in the future for ~6% of them (a
    price change, sometimes with a status change) so incremental pulls see catalog changes."""
    n = len(products)
    edited = rng.uniform(0, 1, n) < 0.06
    edit_at = np.where(edited, t.now + rng.integers(HOUR, max(t.end - t.now, 2 * HOUR), n), NEVER)
    entity, stage, valid_to = _chain(np.stack([products["updated_at"].to_numpy(), edit_at], axis=1), t.end)
    v = products.iloc[entity].reset_index(drop=True)
    later = stage == 1
    new_price = np.maximum(np.ceil(v["price"] * rng.uniform(0.85, 1.15, len(v))) - 0.01, 0.99).round(2)
    v["price"] = np.where(later, new_price, v["price"])
    flip = later & (rng.uniform(0, 1, len(v)) < 0.3)
    v["status"] = np.where(flip, np.where(v["status"] == "active", "discontinued", "active"), v["status"])
    v["updated_at"] = np.where(later, edit_at[entity], v["updated_at"])
    v["valid_to"] = valid_to
    columns = ["sku", "title", "category", "supplier_id", "price", "currency", "status", "registered_at"]
    return _timestamps(v[[*columns, "updated_at", "attributes", "valid_to"]], "registered_at", "updated_at", "valid_to")


def _po_versions(rng: np.random.Generator, headers: pd.DataFrame, t: _Timeline) -> pd.DataFrame:
    """Each PO while open, then cancelled, or received (its last delivery in) and later closed (invoiced)."""
    cancelled = headers["cancelled"].to_numpy()
    created = headers["created_at"].to_numpy()
    settled = np.where(cancelled, created + rng.integers(DAY, 5 * DAY, len(headers)), headers["completed_at"])
    closed = np.where(cancelled, NEVER, settled + rng.integers(3 * DAY, 10 * DAY, len(headers)))
    entity, stage, valid_to = _chain(np.stack([created, settled, closed], axis=1), t.end)
    v = headers.iloc[entity][["po_id", "supplier_id", "warehouse", "created_at"]].reset_index(drop=True)
    v["warehouse"] = np.array(WAREHOUSES)[v["warehouse"]]
    statuses = np.stack(
        [
            np.full(len(headers), "open"),
            np.where(cancelled, "cancelled", "received"),
            np.full(len(headers), "closed"),
        ],
        axis=1,
    )
    v.insert(3, "status", statuses[entity, stage])
    v["updated_at"] = np.stack([created, settled, closed], axis=1)[entity, stage]
    v["valid_to"] = valid_to
    return _timestamps(v, "created_at", "updated_at", "valid_to")


def _receipt_versions(receipts: pd.DataFrame, t: _Timeline) -> pd.DataFrame:
    """Every receipt line as it arrives (no damage recorded yet); damaged lines again after QC."""
    damaged = (receipts["qty_damaged"] > 0).to_numpy()
    stages = np.stack([receipts["received_at"].to_numpy(), np.where(damaged, receipts["qc_at"], NEVER)], axis=1)
    entity, stage, valid_to = _chain(stages, t.end)
    columns = ["receipt_id", "line_no", "po_id", "po_line", "sku", "warehouse", "qty_received"]
    v = receipts.iloc[entity][[*columns, "qty_damaged", "damage_reason", "received_at", "qc_at"]].reset_index(drop=True)
    before_qc = stage == 0
    v["qty_damaged"] = np.where(before_qc, 0, v["qty_damaged"])
    v["damage_reason"] = v["damage_reason"].where(~before_qc, None)
    v["updated_at"] = np.where(before_qc, v["received_at"], v["qc_at"])
    v["valid_to"] = valid_to
    return _timestamps(v.drop(columns="qc_at"), "received_at", "updated_at", "valid_to")


def _order_versions(orders: pd.DataFrame, t: _Timeline) -> pd.DataFrame:
    """Each order while open, then shipped or cancelled."""
    stages = np.stack([orders["ordered_at"].to_numpy(), orders["changed_at"].to_numpy()], axis=1)
    entity, stage, valid_to = _chain(stages, t.end)
    v = orders.iloc[entity][["order_id", "customer_id", "final_status", "ordered_at", "promised_at", "changed_at"]]
    v = v.reset_index(drop=True)
    v.insert(2, "status", np.where(stage == 0, "open", v["final_status"]))
    v["updated_at"] = np.where(stage == 0, v["ordered_at"], v["changed_at"])
    v["valid_to"] = valid_to
    return _timestamps(
        v.drop(columns=["final_status", "changed_at"]), "ordered_at", "promised_at", "updated_at", "valid_to"
    )


def _reserved(orders: pd.DataFrame, lines: pd.DataFrame, products: pd.DataFrame, at: int) -> pd.Series:
    """Units per SKU on order lines still open at `at`."""
    is_open = (orders["ordered_at"].to_numpy() <= at) & (orders["changed_at"].to_numpy() > at)
    open_lines = lines[is_open[lines["order"].to_numpy()]]
    return open_lines.groupby("sku")["qty"].sum().reindex(products["sku"], fill_value=0)


def _storefront(
    rng: np.random.Generator, on_hand: pd.DataFrame, reserved: pd.Series, t: _Timeline
) -> dict[str, dict[str, Any]]:
    """What the shop shows per SKU, synced from sellable stock at `now`, except ~3% stale listings."""
    sellable = on_hand["on_hand"] - on_hand["in_qc"] - on_hand["damaged"]
    quantity = sellable.groupby(on_hand["sku"], sort=False).sum()
    quantity = (quantity - reserved.reindex(quantity.index).to_numpy()).clip(lower=0)
    n = len(quantity)
    stale = rng.uniform(0, 1, n) < STOREFRONT_STALE_SHARE
    shown = np.where(stale, np.where(quantity > 0, 0, rng.integers(1, 25, n)), quantity)
    synced = t.now - np.where(stale, rng.integers(5 * DAY, 30 * DAY, n), rng.integers(HOUR, 3 * DAY, n))
    status = np.where(shown > 0, "in_stock", "out_of_stock")
    updated = pd.to_datetime(synced, unit="s", utc=True).to_pydatetime()
    return {
        sku: {"status": s, "quantity": int(q), "updated_at": u}
        for sku, s, q, u in zip(quantity.index, status, shown, updated, strict=True)
    }


def _timestamps(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Epoch-second columns as tz-aware UTC datetimes (NEVER becomes NaT)."""
    frame = frame.copy()
    for column in columns:
        values = frame[column].to_numpy(np.int64)
        frame[column] = pd.to_datetime(np.where(values == NEVER, np.iinfo(np.int64).min, values * 10**9), utc=True)
    return frame


def _ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded identifiers such as ORD-0000001."""
    return np.char.add(prefix, np.char.zfill(np.asarray(numbers, np.int64).astype(str), width)).astype(object)
