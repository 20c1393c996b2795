"""The demo world as a Shopify shop's catalog and orders, for the Shopify simulator's `products` and `orders` queries.

Built from Shopify's published Admin GraphQL schema (2025-01 and later): `products(first:, after:, query:, sortKey:)`
and `orders(...)` with the `updated_at` search filter (`updated_at:>='2026-11-16T06:00:00Z'`, comparators `>`, `>=`,
`<`, `<=`), sorted by `UPDATED_AT` (ties by id) and paged by opaque cursors that carry the last node's sort key, as
Shopify's do. The world's products become one product with one variant each (`productType` = category, `vendor` =
supplier, `status` ACTIVE / DRAFT / ARCHIVED, `selectedOptions` = the product's attributes); its orders become orders
with line items and one fulfillment order per warehouse (`assignedLocation.name` = the warehouse, `fulfillBy` = the
promised date). Tests edit nodes through `edit_product` / `edit_order_line`, which move `updatedAt` to the world's
clock like an edit in Shopify admin, and delete products with `delete_product`.
"""

from __future__ import annotations

import base64
import bisect
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd

from cx_pipeline.simulator.world import World

PRODUCT_STATUS = {"active": "ACTIVE", "inactive": "DRAFT", "discontinued": "ARCHIVED"}
SORT_KEYS = ("UPDATED_AT", "ID")
# `updated_at:>='2026-11-16T06:00:00Z'`: the only filter this shop understands (quotes single or double)
_TERM = re.compile(r"""^updated_at:(>=|<=|>|<)(?:'([^']*)'|"([^"]*)"|(\S+))$""")
_COMPARE: dict[str, Callable[[int, int], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


class SearchError(ValueError):
    """A `query`, `sortKey` or cursor this shop cannot answer: the simulator turns it into a GraphQL error."""


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(value: Any) -> int:
    return int(pd.Timestamp(value).timestamp())


def search_filter(query: str | None) -> Callable[[int], bool]:
    """A test of a node's `updated_at` (epoch seconds) from a search `query` of `updated_at` terms joined by AND."""
    if not query or not query.strip():
        return lambda _: True
    tests: list[Callable[[int], bool]] = []
    for term in re.split(r"\s+(?:AND\s+)?", query.strip()):
        match = _TERM.match(term)
        if match is None:
            raise SearchError(f"This simulator's search understands only updated_at comparisons, not {term!r}")
        text = match.group(2) or match.group(3) or match.group(4)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise SearchError(f"Invalid date in search query: {text!r}") from exc
        bound = int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
        compare = _COMPARE[match.group(1)]
        tests.append(lambda at, c=compare, b=bound: c(at, b))
    return lambda at: all(test(at) for test in tests)


def encode_cursor(key: tuple[int, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"last_id": key[1], "last_value": key[0]})).decode()


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        return int(data["last_value"]), int(data["last_id"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise SearchError(f"Invalid cursor for current pagination sort: {cursor!r}") from exc


def page(
    nodes: list[tuple[tuple[int, int], dict[str, Any]]], first: int, after: str | None, sort_key: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of `(sort key, node)` pairs (sorted by that key: updatedAt, then id) after the cursor `after`, in the
    order of `sort_key`."""
    if (sort_key or "ID") not in SORT_KEYS:
        raise SearchError(f"This simulator sorts only by {' or '.join(SORT_KEYS)}, not {sort_key}")
    keyed = nodes  # sorted by (updatedAt, id) already
    if (sort_key or "ID") == "ID":
        keyed = sorted((((k[1], k[1]), node) for k, node in nodes), key=lambda n: n[0])
    start = bisect.bisect_right([k for k, _ in keyed], decode_cursor(after)) if after else 0
    chosen = keyed[start : start + first]
    info = {"hasNextPage": start + first < len(keyed), "endCursor": encode_cursor(chosen[-1][0]) if chosen else None}
    return [node for _, node in chosen], info


class ShopCatalog:
    """The world's current products and orders as Shopify nodes, with the edits tests made on top."""

    def __init__(self, world: World) -> None:
        self.world = world
        skus = sorted(world.products["sku"].unique())
        self.product_ids = {sku: n for n, sku in enumerate(skus, start=1)}
        self.order_ids = {oid: n for n, oid in enumerate(sorted(world.orders["order_id"].unique()), start=1)}
        self._lines: dict[str, list[dict[str, Any]]] | None = None
        self._edits = 0
        self.product_edits: dict[str, tuple[dict[str, Any], int]] = {}  # sku -> (field overrides, edited at)
        self.line_edits: dict[tuple[str, int], tuple[dict[str, Any], int]] = {}  # (order, line_no) -> same
        self.deleted: set[str] = set()  # skus of products deleted in the shop
        # the nodes as of one clock and set of edits, sorted: built once, not for every page a client asks for
        self._cache: dict[tuple[Any, ...], list[tuple[tuple[int, int], dict[str, Any]]]] = {}

    def nodes(self, operation: str, *sizes: int) -> list[tuple[tuple[int, int], dict[str, Any]]]:
        """`products(variants)` or `orders(lines, fulfillment_orders)` as ((updatedAt, id), node), by that key."""
        key = (operation, sizes, self.world.clock_seconds, self._edits)
        if key not in self._cache:
            built = self.products(*sizes) if operation == "products" else self.orders(*sizes)
            self._cache = {key: sorted(built, key=lambda n: n[0])}
        return self._cache[key]

    # -- test hooks --------------------------------------------------------------------------------------

    def edit_product(self, sku: str, /, **fields: Any) -> None:
        """Change a product or its variant as a merchant would (`price`, `sku`, `title`, `productType`, `vendor`,
        `status`...): its `updatedAt` becomes the world's clock."""
        earlier = self.product_edits.get(sku, ({}, 0))[0]
        self.product_edits[sku] = ({**earlier, **fields}, self.world.clock_seconds)
        self._edits += 1

    def delete_product(self, sku: str) -> None:
        """Delete a product as a merchant would: it leaves every products query (Shopify keeps no tombstone there)."""
        self.deleted.add(sku)
        self._edits += 1

    def edit_order_line(self, order_id: str, line_no: int, /, **fields: Any) -> None:
        """Change an order's line item (`quantity`, `sku`...): the order's `updatedAt` becomes the world's clock."""
        earlier = self.line_edits.get((order_id, line_no), ({}, 0))[0]
        self.line_edits[(order_id, line_no)] = ({**earlier, **fields}, self.world.clock_seconds)
        self._edits += 1

    # -- products ----------------------------------------------------------------------------------------

    def products(self, variants: int) -> list[tuple[tuple[int, int], dict[str, Any]]]:
        """Every current product as ((updatedAt, id), node) with up to `variants` variants."""
        nodes = []
        for row in self.world.current("products").to_dict("records"):
            if row["sku"] in self.deleted:
                continue
            number = self.product_ids[row["sku"]]
            edits, edited_at = self.product_edits.get(row["sku"], ({}, 0))
            updated = max(_seconds(row["updated_at"]), edited_at)
            attributes = row["attributes"] if isinstance(row["attributes"], dict) else {}
            variant = {
                "id": f"gid://shopify/ProductVariant/{number}",
                "sku": edits.get("sku", row["sku"]),
                "price": edits.get("price", f"{row['price']:.2f}"),
                "selectedOptions": [{"name": k, "value": str(v)} for k, v in attributes.items()]
                or [{"name": "Title", "value": "Default Title"}],
            }
            node = {
                "id": f"gid://shopify/Product/{number}",
                "title": edits.get("title", row["title"]),
                "productType": edits.get("productType", row["category"]),
                "vendor": edits.get("vendor", row["supplier_id"]),
                "status": edits.get("status", PRODUCT_STATUS[row["status"]]),
                "createdAt": iso(_seconds(row["registered_at"])),
                "updatedAt": iso(updated),
                "variants": {"nodes": [variant][:variants], "pageInfo": {"hasNextPage": variants < 1}},
            }
            nodes.append(((updated, number), node))
        return nodes

    # -- orders ------------------------------------------------------------------------------------------

    def lines(self) -> dict[str, list[dict[str, Any]]]:
        """Each order's lines (built once: the world's lines never change, only their orders' status)."""
        if self._lines is None:
            frame = self.world.order_lines.sort_values(["order_id", "line_no"])
            grouped: dict[str, list[dict[str, Any]]] = {}
            for line in frame[["order_id", "line_no", "sku", "warehouse", "qty"]].to_dict("records"):
                grouped.setdefault(line["order_id"], []).append(line)
            self._lines = grouped
        return self._lines

    def orders(self, lines: int, fulfillment_orders: int) -> list[tuple[tuple[int, int], dict[str, Any]]]:
        """Every current order as ((updatedAt, id), node), with up to `lines` line items and `fulfillment_orders`
        fulfillment orders (each listing up to `lines` of its line items)."""
        nodes = []
        all_lines = self.lines()
        for row in self.world.current("orders").to_dict("records"):
            number = self.order_ids[row["order_id"]]
            updated = _seconds(row["updated_at"])
            items, by_warehouse = [], {}
            for line in all_lines.get(row["order_id"], []):
                edits, edited_at = self.line_edits.get((row["order_id"], line["line_no"]), ({}, 0))
                updated = max(updated, edited_at)
                ordered = edits.get("quantity", line["qty"])
                item = {
                    "id": f"gid://shopify/LineItem/{number * 1000 + line['line_no']}",
                    "sku": edits.get("sku", line["sku"]),
                    "quantity": ordered,
                    "currentQuantity": 0 if row["status"] == "cancelled" else ordered,
                    "unfulfilledQuantity": ordered if row["status"] == "open" else 0,
                }
                items.append(item)
                by_warehouse.setdefault(line["warehouse"], []).append({"lineItem": {"id": item["id"]}})
            customer = int(re.sub(r"\D", "", row["customer_id"]) or 0)
            promised = None if pd.isna(row["promised_at"]) else iso(_seconds(row["promised_at"]))
            fulfillment = [
                {
                    "assignedLocation": {"name": warehouse},
                    "fulfillBy": promised,
                    "lineItems": {"nodes": listed[:lines], "pageInfo": {"hasNextPage": len(listed) > lines}},
                }
                for warehouse, listed in by_warehouse.items()
            ]
            node = {
                "id": f"gid://shopify/Order/{number}",
                "name": row["order_id"],
                "createdAt": iso(_seconds(row["ordered_at"])),
                "updatedAt": iso(updated),
                "cancelledAt": iso(_seconds(row["updated_at"])) if row["status"] == "cancelled" else None,
                "displayFulfillmentStatus": "FULFILLED" if row["status"] == "shipped" else "UNFULFILLED",
                "customer": {"id": f"gid://shopify/Customer/{customer}"},
                "lineItems": {"nodes": items[:lines], "pageInfo": {"hasNextPage": len(items) > lines}},
                "fulfillmentOrders": {
                    "nodes": fulfillment[:fulfillment_orders],
                    "pageInfo": {"hasNextPage": len(fulfillment) > fulfillment_orders},
                },
            }
            nodes.append(((updated, number), node))
        return nodes


def product_cost(variants: int) -> int:
    """Calculated cost of one product node: the product, its variants connection and each variant it may return."""
    return 1 + 2 + variants


def order_cost(lines: int, fulfillment_orders: int) -> int:
    """Calculated cost of one order node: the order, its customer, its line items, and its fulfillment orders, each
    with its assigned location and a connection of line items (each an object referring to a line item)."""
    return 1 + 1 + (2 + lines) + 2 + fulfillment_orders * (1 + 1 + 2 + 2 * lines)
