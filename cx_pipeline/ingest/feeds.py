"""The upstream feeds: one declaration each drives the warehouse schema, the landing and the contract."""

from __future__ import annotations

from dataclasses import dataclass, field

DAMAGE_REASONS = ("crushed", "water_damage", "defective", "wrong_item", "missing_parts")
PRODUCT_STATUSES = ("active", "inactive", "discontinued")
PO_STATUSES = ("open", "received", "closed", "cancelled")
ORDER_STATUSES = ("open", "shipped", "cancelled")
INQUIRY_REASONS = ("delivery_delay", "cancellation", "return", "other")


@dataclass(frozen=True)
class Reference:
    """Columns of this feed that must match a key of another raw table (null values are not checked)."""

    columns: tuple[str, ...]
    table: str
    table_columns: tuple[str, ...]

    @property
    def flag(self) -> str:
        return f"_known_{'_'.join(self.columns)}"


@dataclass(frozen=True)
class Feed:
    """One upstream feed, landed as table `raw_<name>`."""

    name: str
    system: str  # resource key of the upstream client: wms, catalog, oms, helpdesk
    path: str
    columns: dict[str, str]  # column -> DuckDB type, in landing order
    keys: tuple[str, ...]
    incremental: bool  # pulled by `updated_since` (else a full paged snapshot each run)
    # A snapshot the source can also read by change (`updated_since`): runs read what changed since the last read,
    # and a full snapshot on its own cadence catches drift and deletions.
    delta: bool = False
    # An incremental feed whose full read lists every current key (the catalog: every product the source still
    # has): a full read on the source's cadence catches what the reads by change missed, and a key it no longer
    # lists was deleted at the source. (Orders, receipts and tickets are history: a full read would not list
    # every past record, and their sources re-read a look-back window instead.)
    reconcile: bool = False
    explode: str | None = None  # nested list of lines flattened to one row per line
    quantities: tuple[str, ...] = ()
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    references: tuple[Reference, ...] = ()
    json_columns: tuple[str, ...] = ()
    nullable: tuple[str, ...] = ()  # every other column is required
    scheduled: tuple[str, ...] = ()  # timestamps that may lie ahead of the source's clock (promises)

    @property
    def table(self) -> str:
        return f"raw_{self.name}"

    @property
    def lists_every_key(self) -> bool:
        """Whether a full read lists every current key, so one it leaves out is gone (snapshots, reconciled feeds)."""
        return not self.incremental or self.reconcile

    @property
    def full_read_on_cadence(self) -> bool:
        """Whether runs read it by change and whole on the source's cadence (delta snapshots, reconciled feeds)."""
        return self.delta or self.reconcile

    @property
    def timestamps(self) -> tuple[str, ...]:
        return tuple(c for c, t in self.columns.items() if t == "TIMESTAMPTZ")

    @property
    def past_timestamps(self) -> tuple[str, ...]:
        """Timestamps of things that happened, so never after the source's clock."""
        return tuple(c for c in self.timestamps if c not in self.scheduled)

    @property
    def dates(self) -> tuple[str, ...]:
        return tuple(c for c, t in self.columns.items() if t == "DATE")


KNOWN_SKU = Reference(("sku",), "raw_catalog", ("sku",))

FEEDS: dict[str, Feed] = {
    f.name: f
    for f in (
        Feed(
            name="catalog",
            system="catalog",
            path="/catalog/products",
            columns={
                "sku": "VARCHAR",
                "title": "VARCHAR",
                "category": "VARCHAR",
                "supplier_id": "VARCHAR",
                "price": "DECIMAL(12,2)",
                "currency": "VARCHAR",
                "status": "VARCHAR",
                "registered_at": "TIMESTAMPTZ",
                "updated_at": "TIMESTAMPTZ",
                "attributes": "JSON",
            },
            keys=("sku",),
            incremental=True,
            reconcile=True,
            quantities=("price",),
            enums={"status": PRODUCT_STATUSES},
            json_columns=("attributes",),
            nullable=("attributes",),
        ),
        Feed(
            name="purchase_orders",
            system="wms",
            path="/wms/purchase_orders",
            columns={
                "po_id": "VARCHAR",
                "po_line": "INTEGER",
                "supplier_id": "VARCHAR",
                "warehouse": "VARCHAR",
                "sku": "VARCHAR",
                "qty_ordered": "INTEGER",
                "expected_at": "DATE",
                "status": "VARCHAR",
                "created_at": "TIMESTAMPTZ",
                "updated_at": "TIMESTAMPTZ",
            },
            keys=("po_id", "po_line"),
            incremental=True,
            explode="lines",
            quantities=("qty_ordered",),
            enums={"status": PO_STATUSES},
            references=(KNOWN_SKU,),
        ),
        Feed(
            name="receipts",
            system="wms",
            path="/wms/receipts",
            columns={
                "receipt_id": "VARCHAR",
                "line_no": "INTEGER",
                "po_id": "VARCHAR",
                "po_line": "INTEGER",
                "sku": "VARCHAR",
                "warehouse": "VARCHAR",
                "qty_received": "INTEGER",
                "qty_damaged": "INTEGER",
                "damage_reason": "VARCHAR",
                "received_at": "TIMESTAMPTZ",
                "updated_at": "TIMESTAMPTZ",
            },
            keys=("receipt_id", "line_no"),
            incremental=True,
            quantities=("qty_received", "qty_damaged"),
            enums={"damage_reason": DAMAGE_REASONS},
            nullable=("damage_reason",),
            references=(
                KNOWN_SKU,
                Reference(("po_id", "po_line"), "raw_purchase_orders", ("po_id", "po_line")),
            ),
        ),
        Feed(
            name="on_hand",
            system="wms",
            path="/wms/on_hand",
            columns={
                "sku": "VARCHAR",
                "warehouse": "VARCHAR",
                "on_hand": "INTEGER",
                "in_qc": "INTEGER",
                "damaged": "INTEGER",
            },  # the snapshot's `as_of` is kept per batch in ingest_batches, so a row changes only with stock
            keys=("sku", "warehouse"),
            incremental=False,
            delta=True,
            quantities=("on_hand", "in_qc", "damaged"),
            references=(KNOWN_SKU,),
        ),
        Feed(
            name="open_orders",
            system="oms",
            path="/oms/orders",
            columns={
                "order_id": "VARCHAR",
                "line_no": "INTEGER",
                "customer_id": "VARCHAR",
                "sku": "VARCHAR",
                "warehouse": "VARCHAR",  # the fulfilment warehouse the OMS assigned
                "qty": "INTEGER",
                "status": "VARCHAR",
                "ordered_at": "TIMESTAMPTZ",
                "promised_at": "TIMESTAMPTZ",
                "updated_at": "TIMESTAMPTZ",
            },
            keys=("order_id", "line_no"),
            incremental=True,
            explode="lines",
            quantities=("qty",),
            enums={"status": ORDER_STATUSES},
            references=(KNOWN_SKU,),
            scheduled=("promised_at",),
        ),
        Feed(
            name="inquiries",
            system="helpdesk",
            path="/helpdesk/inquiries",
            columns={
                "inquiry_id": "VARCHAR",
                "order_id": "VARCHAR",
                "sku": "VARCHAR",
                "reason": "VARCHAR",
                "created_at": "TIMESTAMPTZ",
                "updated_at": "TIMESTAMPTZ",
                "tags": "JSON",  # the helpdesk's tags, as the reason was derived from them (not every source has them)
            },
            keys=("inquiry_id",),
            incremental=True,
            enums={"reason": INQUIRY_REASONS},
            json_columns=("tags",),
            nullable=("order_id", "sku", "tags"),
            references=(KNOWN_SKU, Reference(("order_id",), "raw_open_orders", ("order_id",))),
        ),
    )
}


def row_key_sql(feed: Feed, alias: str = "") -> str:
    """SQL for a feed's natural key as one string, e.g. `RCV-1|2`."""
    prefix = f"{alias}." if alias else ""
    return "concat_ws('|', " + ", ".join(f"{prefix}{k}" for k in feed.keys) + ")"
