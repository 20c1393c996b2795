"""Shopify as the source of the catalog (products) and open orders feeds, through the Admin GraphQL API.

Each pull reads the products or orders changed since the feed's cursor (`query: "updated_at:>='<cursor>'"`, sorted by
`UPDATED_AT`, paged by `endCursor`), or all of them on a first pull, and maps them to the feed's columns; the same
landing and contract then judge them as any other source's rows. The shop's clock (the `Date` of its answers) is the
batch's `as_of`, so the cursor never passes it. A catalog full read may instead be one bulk operation
(`bulk_catalog`: products and variants as JSONL, mapped in SQL as `catalog_rows` maps a page). The field mapping,
and what Shopify cannot provide, is in docs/architecture.md ("Shopify as a source").

Schema followed (Admin GraphQL 2025-01 and later): Product `createdAt updatedAt status productType vendor title
variants { sku price selectedOptions }`; Order `name createdAt updatedAt cancelledAt customer { id } lineItems { id sku
quantity currentQuantity unfulfilledQuantity } fulfillmentOrders { assignedLocation { name } fulfillBy lineItems
{ lineItem { id } } }`; Shop `currencyCode`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from cx_pipeline.ingest.feeds import Feed
from cx_pipeline.ingest.graphql import ShopifyGraphQL, page_size
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.ingest.landing import Batch, ProgressFn, stage
from cx_pipeline.ingest.sources.shopify_bulk import BulkSettings, bulk_download, stage_select

FEEDS = ("catalog", "open_orders")
# Shopify's product status -> the catalog's: a draft is not for sale yet, an archived product no longer is.
PRODUCT_STATUSES = {"ACTIVE": "active", "DRAFT": "inactive", "ARCHIVED": "discontinued"}
DEFAULT_OPTION = ("Title", "Default Title")  # the one option of a product without variants: no attribute

SHOP = """query SourceShop { shop { name currencyCode } }"""
PRODUCTS = """query SourceProducts($first: Int!, $after: String, $query: String, $variants: Int!) {
  products(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    nodes {
      id title productType vendor status createdAt updatedAt
      variants(first: $variants) {
        nodes { id sku price selectedOptions { name value } }
        pageInfo { hasNextPage }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}"""
# The catalog's full read as a bulk operation (no page sizes: Shopify reads every product and variant).
BULK_PRODUCTS = """{
  products {
    edges { node {
      id title productType vendor status createdAt updatedAt
      variants { edges { node { id sku price selectedOptions { name value } } } }
    } }
  }
}"""
# Its JSONL's lines: a product (no __parentId) or one of its variants (__parentId = the product's id).
PRODUCT_LINES = (
    "{id: 'VARCHAR', title: 'VARCHAR', productType: 'VARCHAR', vendor: 'VARCHAR', status: 'VARCHAR', "
    "createdAt: 'VARCHAR', updatedAt: 'VARCHAR', sku: 'VARCHAR', price: 'VARCHAR', "
    "selectedOptions: 'STRUCT(name VARCHAR, value VARCHAR)[]', __parentId: 'VARCHAR'}"
)
ORDERS = """query SourceOrders($first: Int!, $after: String, $query: String, $lines: Int!, $fulfillmentOrders: Int!) {
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    nodes {
      id name createdAt updatedAt cancelledAt displayFulfillmentStatus
      customer { id }
      lineItems(first: $lines) {
        nodes { id sku quantity currentQuantity unfulfilledQuantity }
        pageInfo { hasNextPage }
      }
      fulfillmentOrders(first: $fulfillmentOrders) {
        nodes {
          assignedLocation { name }
          fulfillBy
          lineItems(first: $lines) { nodes { lineItem { id } } pageInfo { hasNextPage } }
        }
        pageInfo { hasNextPage }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}"""


@dataclass(frozen=True)
class ShopifyLimits:
    """How much of each node a page asks for (a node with more fails the pull, naming the setting), how many nodes
    a page holds at most, and how many pages a pull may take."""

    page_size: int = 250
    max_variants: int = 100  # per product
    max_lines: int = 25  # per order, and per fulfillment order
    max_fulfillment_orders: int = 3  # per order
    max_pages: int = 10_000


def product_cost(limits: ShopifyLimits) -> int:
    """Calculated cost of one product node: the product, its variants connection and each variant it may return."""
    return 1 + 2 + limits.max_variants


def order_cost(limits: ShopifyLimits) -> int:
    """Calculated cost of one order node: the order, its customer, its line items, and its fulfillment orders (each
    with its assigned location and its line items, each an object referring to a line item)."""
    lines = limits.max_lines
    return 1 + 1 + (2 + lines) + 2 + limits.max_fulfillment_orders * (1 + 1 + 2 + 2 * lines)


def search_query(since: datetime | None) -> str | None:
    """The `updated_at` filter of a read by change: inclusive, to the second below (re-reading a node landed at the
    cursor's own second is harmless: it lands as unchanged)."""
    if since is None:
        return None
    return f"updated_at:>='{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}'"


def tail(gid: Any) -> str | None:
    """The id at the end of a Shopify global id (`gid://shopify/Customer/42` -> `42`)."""
    return str(gid).rsplit("/", 1)[-1] or None if gid else None


def catalog_rows(product: dict[str, Any], currency: str | None) -> list[dict[str, Any]]:
    """One catalog row per variant of `product` (a SKU is a variant), in the catalog feed's columns."""
    status = product.get("status")
    rows = []
    for variant in (product.get("variants") or {}).get("nodes") or []:
        options = {
            str(o.get("name")): o.get("value")
            for o in variant.get("selectedOptions") or []
            if isinstance(o, dict) and (o.get("name"), o.get("value")) != DEFAULT_OPTION
        }
        rows.append(
            {
                "sku": variant.get("sku") or None,  # Shopify allows a variant without SKU: the contract refuses it
                "title": product.get("title"),
                "category": product.get("productType") or None,
                "supplier_id": product.get("vendor") or None,
                "price": variant.get("price"),  # Money: a decimal string, typed exactly by the landing
                "currency": currency,
                "status": PRODUCT_STATUSES.get(status, str(status).lower() if status else None),
                "registered_at": product.get("createdAt"),
                "updated_at": product.get("updatedAt"),
                "attributes": options or None,
                "shopify_product_id": product.get("id"),  # kept in the row as sent, for people tracing a row
            }
        )
    return rows


def order_record(order: dict[str, Any], promise: timedelta | None = None) -> dict[str, Any]:
    """One order as a header with its `lines`, in the open orders feed's columns.

    A line ships from the location of the fulfillment order listing it, promised by that fulfillment order's
    `fulfillBy` (else `promise` after the order was placed, if the shop has one). A line is cancelled when its
    order is or when nothing of it is left (`currentQuantity` 0), shipped when nothing is left to fulfil."""
    where: dict[str, tuple[str | None, str | None]] = {}
    for fulfillment in (order.get("fulfillmentOrders") or {}).get("nodes") or []:
        location = (fulfillment.get("assignedLocation") or {}).get("name")
        for item in (fulfillment.get("lineItems") or {}).get("nodes") or []:
            where.setdefault(str((item.get("lineItem") or {}).get("id")), (location, fulfillment.get("fulfillBy")))
    default = next(iter(where.values()), (None, None))
    created = order.get("createdAt")
    lines = []
    for line_no, item in enumerate((order.get("lineItems") or {}).get("nodes") or [], start=1):
        location, fulfill_by = where.get(str(item.get("id")), default)
        if fulfill_by is None and promise is not None and created:
            fulfill_by = (pd.Timestamp(created) + promise).isoformat()
        current = item.get("currentQuantity")
        if order.get("cancelledAt") or current == 0:
            status, qty = "cancelled", item.get("quantity")
        else:
            status, qty = ("shipped" if item.get("unfulfilledQuantity") == 0 else "open"), current
        lines.append(
            {
                "line_no": line_no,
                "sku": item.get("sku") or None,
                "warehouse": location,
                "qty": qty,
                "status": status,
                "promised_at": fulfill_by,
            }
        )
    return {
        "order_id": order.get("name"),
        "customer_id": tail((order.get("customer") or {}).get("id")),
        "ordered_at": created,
        "updated_at": order.get("updatedAt"),
        "shopify_order_id": order.get("id"),
        "lines": lines,
    }


def truncated(order_or_product: dict[str, Any], connections: tuple[str, ...]) -> str | None:
    """The first of `connections` (nested ones as `a.b`) that has more nodes than were asked for, if any."""
    for path in connections:
        outer, _, inner = path.partition(".")
        connection = order_or_product.get(outer) or {}
        if not inner and (connection.get("pageInfo") or {}).get("hasNextPage"):
            return path
        for node in connection.get("nodes") or [] if inner else []:
            if ((node.get(inner) or {}).get("pageInfo") or {}).get("hasNextPage"):
                return path
    return None


def product_pages(
    shop: ShopifyGraphQL, since: datetime | None, limits: ShopifyLimits
) -> Iterator[list[dict[str, Any]]]:
    """Pages of catalog rows: the products changed since `since` (all when None), oldest change first."""
    currency = (shop.query("shop", SHOP, {}, cost=1).get("shop") or {}).get("currencyCode")
    variables = {
        "first": page_size(limits.page_size, product_cost(limits)),
        "query": search_query(since),
        "variants": limits.max_variants,
    }
    cost = 2 + product_cost(limits) * variables["first"]
    for products in shop.pages("products", PRODUCTS, variables, cost, limits.max_pages):
        for product in products:
            if truncated(product, ("variants",)):
                raise UpstreamError(
                    f"{shop.name}: product {product.get('id')} has more than max_variants={limits.max_variants} "
                    "variants: raise max_variants (CX_<ROLE>_SHOPIFY_MAX_VARIANTS)"
                )
        yield [row for product in products for row in catalog_rows(product, currency)]


def order_pages(
    shop: ShopifyGraphQL, since: datetime | None, limits: ShopifyLimits, promise: timedelta | None
) -> Iterator[list[dict[str, Any]]]:
    """Pages of order headers with their lines: the orders changed since `since` (all when None)."""
    variables = {
        "first": page_size(limits.page_size, order_cost(limits)),
        "query": search_query(since),
        "lines": limits.max_lines,
        "fulfillmentOrders": limits.max_fulfillment_orders,
    }
    cost = 2 + order_cost(limits) * variables["first"]
    for orders in shop.pages("orders", ORDERS, variables, cost, limits.max_pages):
        for order in orders:
            if where := truncated(order, ("lineItems", "fulfillmentOrders", "fulfillmentOrders.lineItems")):
                setting = "max_fulfillment_orders" if where == "fulfillmentOrders" else "max_lines"
                raise UpstreamError(
                    f"{shop.name}: order {order.get('name')} has more {where} than {setting}="
                    f"{getattr(limits, setting)} asks for: raise {setting} (CX_<ROLE>_SHOPIFY_{setting.upper()})"
                )
        yield [order_record(order, promise) for order in orders]


def catalog_sql() -> str:
    """SQL for the catalog rows of the products JSONL at `$path` (one per variant), each as one JSON object `_raw`,
    mapped as `catalog_rows` maps a page's products; `$currency` is the shop's."""
    statuses = " ".join(f"WHEN '{shop}' THEN '{ours}'" for shop, ours in PRODUCT_STATUSES.items())
    default_option = f"o.name = '{DEFAULT_OPTION[0]}' AND o.value = '{DEFAULT_OPTION[1]}'"
    return f"""
        WITH lines AS (SELECT * FROM read_json($path, format = 'newline_delimited', columns = {PRODUCT_LINES})),
        products AS (SELECT * FROM lines WHERE __parentId IS NULL),
        variants AS (
            SELECT __parentId AS product_id, sku, price,
                   list_filter(selectedOptions, lambda o: NOT ({default_option})) AS options
            FROM lines WHERE __parentId IS NOT NULL)
        SELECT to_json({{
            'sku': nullif(v.sku, ''), 'title': p.title, 'category': nullif(p.productType, ''),
            'supplier_id': nullif(p.vendor, ''), 'price': v.price, 'currency': $currency,
            'status': CASE p.status {statuses} ELSE lower(p.status) END,
            'registered_at': p.createdAt, 'updated_at': p.updatedAt,
            'attributes': CASE WHEN len(v.options) > 0
                THEN to_json(map_from_entries(list_transform(v.options, lambda o: (o.name, o.value)))) END,
            'shopify_product_id': p.id}}) AS _raw
        FROM variants v JOIN products p ON p.id = v.product_id
        ORDER BY p.updatedAt, p.id"""


def bulk_catalog(con: duckdb.DuckDBPyConnection, shop: ShopifyGraphQL, feed: Feed, settings: BulkSettings) -> Batch:
    """Stage the whole catalog, read by one bulk operation, in `landing_catalog`."""
    currency = (shop.query("shop", SHOP, {}, cost=1).get("shop") or {}).get("currencyCode")
    with tempfile.TemporaryDirectory(prefix="cx-shopify-products-") as folder:
        jsonl = Path(folder) / "products.jsonl"
        as_of = bulk_download(shop, BULK_PRODUCTS, jsonl, settings, "CX_CATALOG_SHOPIFY_BULK_TIMEOUT_SECONDS")
        batch = stage_select(con, feed, catalog_sql(), {"path": str(jsonl), "currency": currency})
    return replace(batch, as_of=as_of)


def pull(
    con: duckdb.DuckDBPyConnection,
    shop: ShopifyGraphQL,
    feed: Feed,
    since: datetime | None,
    limits: ShopifyLimits,
    promise: timedelta | None = None,
    progress: ProgressFn | None = None,
    bulk: BulkSettings | None = None,
) -> Batch:
    """Stage `feed` (catalog or open_orders) changed since `since` in `landing_<feed>`, with the shop's clock as the
    batch's `as_of`. With `bulk`, the catalog's full read is one bulk operation instead of pages."""
    if feed.name not in FEEDS:
        raise ValueError(f"Shopify provides the {' and '.join(FEEDS)} feeds, not {feed.name}")
    if feed.name == "catalog" and since is None and bulk is not None:
        batch = bulk_catalog(con, shop, feed, bulk)
        if progress:
            progress(batch.pages, batch.rows)
        return batch
    pages = product_pages(shop, since, limits) if feed.name == "catalog" else order_pages(shop, since, limits, promise)
    seen = {"pages": 0, "rows": 0}

    def counted() -> Iterator[list[dict[str, Any]]]:
        for rows in pages:
            seen["pages"] += 1
            seen["rows"] += len(rows)
            yield rows
            if progress:
                progress(seen["pages"], seen["rows"])

    batch = stage(con, feed, counted(), since)
    return replace(batch, as_of=shop.shop_clock)
