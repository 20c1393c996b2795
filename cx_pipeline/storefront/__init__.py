"""Storefront: the stock position per SKU, the push plan, and the adapters that write to each shop."""
