"""The Shopify storefront, through the Admin GraphQL API: variants' `available` quantity at one location, set
with `inventorySetQuantities` (compare-and-swap on `changeFromQuantity`, `@idempotent` key), paced by the
calculated-cost leaky bucket that Shopify reports in `extensions.cost`.

Contract followed (API version 2026-01; the same documents are valid on 2026-04, where `changeFromQuantity` and
`@idempotent` become mandatory): https://shopify.dev/docs/api/admin-graphql/2026-01/mutations/inventorySetQuantities,
https://shopify.dev/changelog/concurrency-protection-features, https://shopify.dev/docs/api/usage/rate-limits.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import orjson
import pandas as pd

from cx_pipeline.http import ApiClient, UpstreamError
from cx_pipeline.storefront.base import (
    STATE_COLUMNS,
    STOCK_STATUSES,
    StockUpdate,
    StorefrontAdapter,
    StorefrontConfigError,
    WriteResult,
)

log = logging.getLogger(__name__)

API_VERSION = "2026-01"
MAX_BATCH = 250  # Shopify's limit on any input array, here `quantities`
STALE = "storefront changed since it was read (compare quantity stale)"
STALE_CODES = frozenset({"CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"})
_KEY_NAMESPACE = uuid.UUID("5b0c9e55-64a4-4f4e-9d35-3c1d1f0a7c21")  # idempotency keys are UUIDs, as Shopify advises

CHECK = """query StorefrontCheck($locationId: ID!) {
  shop { name }
  location(id: $locationId) { id name isActive }
}"""
VARIANTS = """query StorefrontVariants($first: Int!, $after: String, $query: String, $locationId: ID!) {
  productVariants(first: $first, after: $after, query: $query) {
    nodes {
      sku
      inventoryItem {
        id
        inventoryLevel(locationId: $locationId) { quantities(names: ["available"]) { name quantity } }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}"""
SET_QUANTITIES = """mutation StorefrontSetQuantities($input: InventorySetQuantitiesInput!, $idempotencyKey: String!) {
  inventorySetQuantities(input: $input) @idempotent(key: $idempotencyKey) {
    inventoryAdjustmentGroup {
      id
      changes(quantityNames: ["available"]) { name delta quantityAfterChange item { id } location { id } }
    }
    userErrors { field message code }
  }
}"""


class ShopifyStorefront(StorefrontAdapter):
    """One Shopify location as the storefront. `read` pages every variant with a SKU; `write` sets `available`
    per batch with the quantity the pipeline read as `changeFromQuantity`, so a concurrent change is reported,
    never overwritten (an update without `before_quantity` compares with the quantity this adapter last saw).
    Idempotency keys derive from `key` and the batch's content: the same batch under the same key is applied
    once, however often it is sent."""

    name = "shopify"

    def __init__(
        self,
        shop_url: str,
        access_token: str,
        location_id: str,
        *,
        api_version: str = API_VERSION,
        batch_size: int = 100,
        page_size: int = 100,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 5,
        backoff_factor: float = 0.5,
        throttle_attempts: int = 5,
        reason: str = "correction",
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"shopify: batch_size must be 1..{MAX_BATCH}, got {batch_size}")
        shop_url = shop_url.strip().rstrip("/")
        if "://" not in shop_url:
            shop_url = f"https://{shop_url}"  # "my-shop.myshopify.com" is how merchants write it
        self.shop_url, self.api_version = shop_url, api_version
        self.location_id = location_id if location_id.startswith("gid://") else f"gid://shopify/Location/{location_id}"
        self.batch_size, self.page_size = batch_size, min(page_size, MAX_BATCH)
        self.throttle_attempts, self.reason = throttle_attempts, reason
        try:
            self.client = ApiClient(
                shop_url,
                access_token,
                name="shopify",
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries=retries,
                backoff_factor=backoff_factor,
            )
        except ValueError as exc:
            raise StorefrontConfigError(str(exc)) from exc
        # Shopify authenticates with its own header; don't send the token a second time as a bearer token.
        self.client.session.headers.pop("Authorization", None)
        self.client.session.headers["X-Shopify-Access-Token"] = access_token
        self.path = f"/admin/api/{api_version}/graphql.json"
        self.waits: list[float] = []  # seconds slept for the rate limit, for logs and tests
        self._bucket: tuple[float, float, float, float] | None = None  # available, maximum, restore rate, seen at
        self._costs: dict[str, float] = {}
        self._items: dict[str, tuple[str, int]] = {}  # sku -> (inventory item id, available as last seen)
        self._checked = False

    def __repr__(self) -> str:  # never shows the token
        return f"ShopifyStorefront(shop_url={self.shop_url!r}, location_id={self.location_id!r})"

    # -- the adapter interface ---------------------------------------------------------------------------

    def check(self) -> None:
        where = f"Shopify shop {self.shop_url} (API {self.api_version})"
        try:
            data = self._call("check", CHECK, {"locationId": self.location_id}, default_cost=2)
        except UpstreamError as exc:
            raise StorefrontConfigError(f"{where} is not usable: {exc}") from exc
        location = data.get("location")
        if not location:
            raise StorefrontConfigError(f"{where}: no location {self.location_id}; check the configured location id")
        if location.get("isActive") is False:
            raise StorefrontConfigError(f"{where}: location {self.location_id} ({location.get('name')}) is inactive")
        log.info("shopify: shop %r, location %r", (data.get("shop") or {}).get("name"), location.get("name"))
        self._checked = True

    def read(self) -> pd.DataFrame:
        items = self._lookup(None)
        self._items = items
        rows = [
            {"sku": sku, "status": "in_stock" if qty > 0 else "out_of_stock", "quantity": qty}
            for sku, (_, qty) in items.items()
        ]
        return pd.DataFrame(rows, columns=list(STATE_COLUMNS))

    def write(self, updates: Sequence[StockUpdate], key: str) -> list[WriteResult]:
        if not self._checked:
            self.check()
        missing = [u.sku for u in updates if u.sku not in self._items]
        if missing:
            self._items.update(self._lookup(missing))
        results: dict[int, WriteResult] = {}
        pending: list[tuple[int, dict[str, Any]]] = []  # (index in updates, quantity input)
        for i, u in enumerate(updates):
            target = 0 if u.status == "out_of_stock" else u.quantity
            if u.status not in STOCK_STATUSES or target < 0 or (u.status == "in_stock" and target == 0):
                results[i] = WriteResult(u.sku, False, f"invalid update: status {u.status!r}, quantity {u.quantity}")
            elif u.sku not in self._items:
                results[i] = WriteResult(u.sku, False, "unknown SKU: no variant with this SKU is stocked here")
            else:
                item_id, seen = self._items[u.sku]
                before = seen if u.before_quantity is None else u.before_quantity
                quantity = {"inventoryItemId": item_id, "locationId": self.location_id, "quantity": target}
                pending.append((i, {**quantity, "changeFromQuantity": before}))
        # A user error rejects the whole mutation (no adjustment group): report those quantities, send the rest
        # again. Should Shopify ever apply the rest anyway (a group and errors), those are simply done.
        while pending:
            group, errors = self._set_quantities([q for _, q in pending], key)
            rejected = _rejections(errors, len(pending))
            for position, message in rejected.items():
                i = pending[position][0]
                results[i] = WriteResult(updates[i].sku, False, message)
            if group is not None:
                after = {c["item"]["id"]: c["quantityAfterChange"] for c in group.get("changes") or []}
                for i, q in (p for n, p in enumerate(pending) if n not in rejected):
                    qty = after.get(q["inventoryItemId"], q["quantity"])  # no change listed = already there
                    self._items[updates[i].sku] = (q["inventoryItemId"], qty)
                    status = "in_stock" if qty > 0 else "out_of_stock"
                    results[i] = WriteResult(updates[i].sku, True, "ok", status, qty)
                break
            pending = [p for n, p in enumerate(pending) if n not in rejected]
        return [results[i] for i in range(len(updates))]

    def close(self) -> None:
        self.client.close()

    # -- GraphQL plumbing --------------------------------------------------------------------------------

    def _set_quantities(
        self, quantities: list[dict[str, Any]], key: str
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """One `inventorySetQuantities`: (the adjustment group or None, its user errors)."""
        content = orjson.dumps(quantities, option=orjson.OPT_SORT_KEYS).decode()
        variables = {
            "input": {
                "name": "available",
                "reason": self.reason,
                "referenceDocumentUri": f"gid://cx-pipeline/StockSync/{quote(key, safe='')}",
                "quantities": quantities,
            },
            # Same key + same content = same UUID: a retried or re-run batch is replayed, not applied twice.
            "idempotencyKey": str(uuid.uuid5(_KEY_NAMESPACE, f"{key}\n{content}")),
        }
        data = self._call("set", SET_QUANTITIES, variables, default_cost=10)
        payload = data.get("inventorySetQuantities") or {}
        errors = payload.get("userErrors") or []
        group = payload.get("inventoryAdjustmentGroup")
        if group is None and not errors:
            raise UpstreamError(f"shopify: inventorySetQuantities answered neither a result nor errors: {payload}")
        return group, errors

    def _lookup(self, skus: list[str] | None) -> dict[str, tuple[str, int]]:
        """sku -> (inventory item id, available here) for the given SKUs, or for every variant with a SKU."""
        query = " OR ".join('sku:"{}"'.format(s.replace('"', '\\"')) for s in skus) if skus else None
        wanted = set(skus) if skus else None
        found: dict[str, tuple[str, int]] = {}
        unstocked = 0
        for node in self._variant_nodes(query, min(self.page_size, len(skus)) if skus else self.page_size):
            sku, item = node.get("sku"), node.get("inventoryItem") or {}
            if not sku or (wanted is not None and sku not in wanted):  # the search may match more than exact SKUs
                continue
            level = item.get("inventoryLevel")
            if level is None:  # not stocked at this location: nothing to show or set here
                unstocked += 1
                continue
            if sku in found:
                log.warning("shopify: SKU %r is on several variants; using the first", sku)
                continue
            qty = next((q["quantity"] for q in level.get("quantities") or [] if q.get("name") == "available"), 0)
            found[sku] = (item["id"], int(qty))
        if unstocked:
            log.info("shopify: %d variants are not stocked at %s", unstocked, self.location_id)
        return found

    def _variant_nodes(self, query: str | None, first: int) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            variables = {"first": first, "after": after, "query": query, "locationId": self.location_id}
            page = self._call("variants", VARIANTS, variables, default_cost=2 + 3 * first)["productVariants"]
            yield from page["nodes"]
            if not page["pageInfo"]["hasNextPage"]:
                return
            after = page["pageInfo"]["endCursor"]

    def _call(self, operation: str, query: str, variables: dict[str, Any], default_cost: float) -> dict[str, Any]:
        """POST one operation, pacing it by the cost bucket; retry THROTTLED answers, fail on other `errors`."""
        for _ in range(self.throttle_attempts):
            self._pace(self._costs.get(operation, default_cost))
            answer = self.client.post_json(self.path, {"query": query, "variables": variables})
            cost = (answer.get("extensions") or {}).get("cost") or {}
            self._note(cost)
            if cost.get("requestedQueryCost") is not None:
                self._costs[operation] = float(cost["requestedQueryCost"])
            errors = answer.get("errors")
            if not errors:
                return answer.get("data") or {}
            if not _throttled(errors):
                raise UpstreamError(f"shopify: {operation} answered GraphQL errors: {_messages(errors)}")
            log.info("shopify: %s throttled (%s)", operation, cost.get("throttleStatus"))
            # The docs: wait until the bucket has restored enough for the requested cost, then retry.
            self._pace(self._costs.get(operation, default_cost), minimum=1.0)
        raise UpstreamError(f"shopify: {operation} still throttled after {self.throttle_attempts} attempts")

    def _note(self, cost: dict[str, Any]) -> None:
        status = cost.get("throttleStatus")
        if status:
            self._bucket = (
                float(status["currentlyAvailable"]),
                float(status["maximumAvailable"]),
                float(status["restoreRate"]),
                time.monotonic(),
            )

    def _pace(self, cost: float, minimum: float = 0.0) -> None:
        """Sleep until the bucket, as last reported and restored since, holds `cost` points (at least `minimum`
        points' worth of restore time)."""
        if self._bucket is None:
            return
        available, maximum, rate, seen = self._bucket
        available = min(maximum, available + (time.monotonic() - seen) * rate)
        wait = max(min(cost, maximum) - available, minimum) / rate if rate > 0 else 0.0
        if wait > 0:
            self.waits.append(wait)
            time.sleep(wait)


def _throttled(errors: Any) -> bool:
    return isinstance(errors, list) and any((e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors)


def _messages(errors: Any) -> str:
    if isinstance(errors, list):
        return "; ".join(f"{(e.get('extensions') or {}).get('code')}: {e.get('message')}" for e in errors)
    return str(errors)[:300]


def _rejections(errors: list[dict[str, Any]], count: int) -> dict[int, str]:
    """Position in `quantities` -> why it was refused; an error about no one quantity (reason, idempotency key...)
    refuses them all."""
    rejected: dict[int, str] = {}
    for error in errors:
        message = STALE if error.get("code") in STALE_CODES else f"{error.get('code')}: {error.get('message')}"
        position = _quantity_position(error.get("field"), count)
        if position is None:
            return dict.fromkeys(range(count), message)
        rejected.setdefault(position, message)
    return rejected


def _quantity_position(path: Any, count: int) -> int | None:
    """The index in `quantities` a user error's `field` points at (["input", "quantities", "3", ...])."""
    if isinstance(path, list) and len(path) >= 3 and path[:2] == ["input", "quantities"] and str(path[2]).isdigit():
        position = int(path[2])
        return position if position < count else None
    return None
