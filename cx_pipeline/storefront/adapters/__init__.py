"""Storefront adapters behind one interface (`base.StorefrontAdapter`), chosen by configuration."""

from cx_pipeline.storefront.adapters.base import (
    STATE_COLUMNS,
    STOCK_STATUSES,
    ShopRead,
    StockUpdate,
    StorefrontAdapter,
    StorefrontConfigError,
    WriteResult,
)

ADAPTERS = ("rest", "vendure", "shopify")

__all__ = [
    "ADAPTERS",
    "STATE_COLUMNS",
    "STOCK_STATUSES",
    "ShopRead",
    "StockUpdate",
    "StorefrontAdapter",
    "StorefrontConfigError",
    "WriteResult",
]
