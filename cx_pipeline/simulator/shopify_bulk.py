"""The Shopify test server's inventory items with their named quantities, and its bulk operations.

Built from Shopify's published Admin GraphQL schema (2026-01):

- `inventoryItems(first:, after:)`: each item's `id sku tracked inventoryLevels(first:) { nodes { location { name
  isActive } quantities(names: [...]) { name quantity } } pageInfo }`. The named quantities follow Shopify's
  inventory states: `on_hand` = available + committed + the unavailable ones (damaged, quality_control, reserved,
  safety_stock); `incoming` stands apart. A test may also set `on_hand` itself (bad data);
- `bulkOperationRunQuery(query:)`: one bulk query at a time per shop (a second while one runs is the userError
  OPERATION_IN_PROGRESS); the operation goes CREATED -> RUNNING -> COMPLETED as it is polled (`node(id:)` or
  `currentBulkOperation`), or FAILED with an `errorCode` when a failure was planted. Its result is JSONL served by
  the test server at `url` (no token: Shopify's is a signed storage URL): one line per node, a nested connection's
  nodes on lines of their own carrying their parent's id as `__parentId`. The bulk queries it answers are the
  inventory's (`inventoryItems` with `inventoryLevels`) and, with a world, the catalog's (`products` with
  `variants`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

UNAVAILABLE = ("damaged", "quality_control", "reserved", "safety_stock")
QUANTITY_NAMES = ("available", "committed", "incoming", "on_hand", *UNAVAILABLE)
_NAMES = re.compile(r"quantities\s*\(\s*names\s*:\s*\[([^\]]*)\]")
_BULK_ID = "gid://shopify/BulkOperation/{}"
BULK_PATH = re.compile(r"^/bulk/(\d+)\.jsonl$")


class StockedVariant(Protocol):
    sku: str
    item_id: str
    available: dict[str, int]
    held: dict[str, dict[str, int]]
    tracked: bool


def quantity(variant: StockedVariant, location: str, name: str) -> int:
    """The named quantity of `variant` at `location` (where it is stocked)."""
    held = variant.held.get(location, {})
    if name == "available":
        return variant.available[location]
    if name == "on_hand" and name not in held:
        return variant.available[location] + held.get("committed", 0) + sum(held.get(n, 0) for n in UNAVAILABLE)
    return held.get(name, 0)


def quantity_names(query: str, variables: dict[str, Any]) -> list[str]:
    """The names a query's `quantities(names: [...])` asks for (literal, or the `$names` variable)."""
    match = _NAMES.search(query)
    if match is None:
        return list(variables.get("names") or [])
    return re.findall(r'"([^"]*)"', match.group(1))


def level_node(variant: StockedVariant, location: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {
        "location": {"name": location["name"], "isActive": location["isActive"]},
        "quantities": [{"name": n, "quantity": quantity(variant, location["id"], n)} for n in names],
    }


def item_node(
    variant: StockedVariant, locations: Callable[[str], dict[str, Any]], names: list[str], levels: int
) -> dict[str, Any]:
    """An inventory item with up to `levels` of its levels (as a paged query returns it)."""
    stocked = list(variant.available)
    return {
        "id": variant.item_id,
        "sku": variant.sku,
        "tracked": variant.tracked,
        "inventoryLevels": {
            "nodes": [level_node(variant, locations(loc), names) for loc in stocked[:levels]],
            "pageInfo": {"hasNextPage": len(stocked) > levels},
        },
    }


def item_cost(levels: int) -> int:
    """Calculated cost of one inventory item: the item, its levels connection, each level with location and
    quantities."""
    return 1 + 2 + 3 * levels


def inventory_jsonl(
    variants: Iterable[StockedVariant], locations: Callable[[str], dict[str, Any]], names: list[str]
) -> bytes:
    """The bulk operation's result for the inventory query: an item per line, each level on its own line."""
    lines = []
    for variant in variants:
        lines.append({"id": variant.item_id, "sku": variant.sku, "tracked": variant.tracked})
        lines.extend(
            {**level_node(variant, locations(loc), names), "__parentId": variant.item_id} for loc in variant.available
        )
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def nested_jsonl(nodes: Iterable[dict[str, Any]], connection: str) -> bytes:
    """The bulk result of nodes with one nested `connection` (products and their variants): each node on a line
    without the connection, each of the connection's nodes on its own line with `__parentId`."""
    lines = []
    for node in nodes:
        lines.append({k: v for k, v in node.items() if k != connection})
        lines.extend({**child, "__parentId": node["id"]} for child in (node.get(connection) or {}).get("nodes") or [])
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


@dataclass
class BulkOperation:
    number: int
    query: str
    created_at: str
    status: str = "CREATED"
    polls: int = 0
    error_code: str | None = None
    result: bytes | None = None
    object_count: int = 0
    fails_with: str | None = None

    @property
    def id(self) -> str:
        return _BULK_ID.format(self.number)


class BulkOperations:
    """The shop's bulk query operations. `running_polls`: how many polls find it RUNNING before it ends."""

    def __init__(self, run: Callable[[str], bytes], now: Callable[[], datetime | None], running_polls: int = 1):
        self.run, self.now, self.running_polls = run, now, running_polls
        self.operations: list[BulkOperation] = []
        self.failures: list[str] = []  # errorCodes the next operations fail with
        self.base_url = ""

    def create(self, query: str) -> dict[str, Any]:
        """`bulkOperationRunQuery`'s payload."""
        if any(op.status in ("CREATED", "RUNNING") for op in self.operations):
            running = next(op for op in self.operations if op.status in ("CREATED", "RUNNING"))
            error = {
                "field": None,
                "message": f"A bulk query operation for this app and shop is already in progress: {running.id}.",
                "code": "OPERATION_IN_PROGRESS",
            }
            return {"bulkOperation": None, "userErrors": [error]}
        if not re.search(r"\b(inventoryItems|products)\b", query) or not re.search(r"\bedges\b|\bnodes\b", query):
            error = {
                "field": ["query"],
                "message": "Bulk queries must contain at least one connection.",
                "code": "INVALID",
            }
            return {"bulkOperation": None, "userErrors": [error]}
        now = self.now()
        operation = BulkOperation(
            len(self.operations) + 1,
            query,
            now.isoformat() if now else "",
            fails_with=self.failures.pop(0) if self.failures else None,
        )
        self.operations.append(operation)
        return {"bulkOperation": self.node(operation), "userErrors": []}

    def poll(self, operation_id: str | None = None) -> dict[str, Any] | None:
        """The operation (the latest when no id), moved on by one poll."""
        found = [op for op in self.operations if operation_id is None or op.id == operation_id]
        if not found:
            return None
        operation = found[-1]
        if operation.status == "CREATED":
            operation.status = "RUNNING"
        elif operation.status == "RUNNING":
            operation.polls += 1
            if operation.polls >= self.running_polls:
                self.finish(operation)
        return self.node(operation)

    def finish(self, operation: BulkOperation) -> None:
        if operation.fails_with:
            operation.status, operation.error_code = "FAILED", operation.fails_with
            return
        operation.result = self.run(operation.query)
        operation.object_count = operation.result.count(b"\n")
        operation.status = "COMPLETED"

    def node(self, operation: BulkOperation) -> dict[str, Any]:
        done = operation.status == "COMPLETED" and operation.object_count > 0
        return {
            "__typename": "BulkOperation",
            "id": operation.id,
            "status": operation.status,
            "errorCode": operation.error_code,
            "createdAt": operation.created_at,
            "objectCount": str(operation.object_count),  # UnsignedInt64: a string
            "url": f"{self.base_url}/bulk/{operation.number}.jsonl" if done else None,
            "partialDataUrl": None,
        }

    def download(self, number: int) -> bytes | None:
        found = [op for op in self.operations if op.number == number and op.result is not None]
        return found[0].result if found else None
