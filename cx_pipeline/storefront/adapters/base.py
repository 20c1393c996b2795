"""The one interface every storefront adapter implements: read the shop's stock state, write a batch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

STOCK_STATUSES = ("in_stock", "out_of_stock")
STATE_COLUMNS = ("sku", "status", "quantity")


class StorefrontConfigError(RuntimeError):
    """The adapter cannot work as configured (bad URL, rejected credentials, missing location...)."""


@dataclass(frozen=True)
class StockUpdate:
    """One SKU's new storefront state, with the state the shop reported when the change was planned."""

    sku: str
    status: str
    quantity: int
    before_status: str | None
    before_quantity: int | None
    # `quantity` split over the pipeline's warehouses (each warehouse's sellable units, scaled down to the
    # total): adapters with stock locations write each mapped location its share. Empty: not known.
    by_warehouse: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteResult:
    """What the shop answered for one SKU of a batch. `response` is short and human-readable.

    `status_after` / `quantity_after` are what a customer sees after the write, read back from the shop's
    customer-facing view (not the write's own echo): the push counts a write only when they match what was
    pushed, and audits a mismatch as an error for that SKU with the adapter's `response` saying why."""

    sku: str
    ok: bool
    response: str
    status_after: str | None = None
    quantity_after: int | None = None


@dataclass(frozen=True)
class ShopRead:
    """The shop's state as read: one row per SKU (`STATE_COLUMNS`); all of it, or only what changed since a time.
    `as_of` is the shop's clock at the read, where the shop says (the next read by change starts there)."""

    state: pd.DataFrame
    as_of: datetime | None


class StorefrontAdapter(ABC):
    """A storefront the pipeline pushes stock status to.

    `check` runs before any write and raises StorefrontConfigError with a message that says what to fix.
    `read` returns the shop's state now, one row per SKU (`STATE_COLUMNS`). `write` applies one batch of at
    most `batch_size` updates and returns one result per update: a SKU the shop refused is `ok=False`, not
    an exception; only a batch that failed as a whole (after retries) raises `UpstreamError`. Writes set
    absolute values and carry `key`, so repeating a batch is harmless.
    """

    name: str
    batch_size: int = 100
    writes_per_location: bool = False  # it reads `StockUpdate.by_warehouse` (computing it costs a pass)

    @abstractmethod
    def check(self) -> None: ...

    @abstractmethod
    def read(self) -> pd.DataFrame: ...

    @abstractmethod
    def write(self, updates: Sequence[StockUpdate], key: str) -> list[WriteResult]: ...

    def read_changes(self, since: datetime) -> ShopRead | None:
        """The SKUs whose state changed at or after `since` on the shop's clock, our own writes included; None
        when the shop keeps no such log (every plan then reads it whole)."""
        return None

    def read_all(self) -> ShopRead:
        """All of the shop's state, with the shop's clock when it gives one."""
        return ShopRead(self.read(), None)

    @property
    def warnings(self) -> list[str]:
        """What `check` and `read` found that a person should know and that is not an error (an item the shop
        sells whatever its stock, a location no warehouse maps to...): logged and shown in the plan's
        metadata. Adapters append to it."""
        return self.__dict__.setdefault("_warnings", [])

    def close(self) -> None:  # noqa: B027 - adapters without a session have nothing to close
        pass
