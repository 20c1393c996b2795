"""A local Shopify Admin GraphQL API (contract of version 2026-01, 2026-04 also accepted) for tests and demos.

Served by a stdlib `ThreadingHTTPServer` on 127.0.0.1. It implements, from Shopify's published documents (links
in docs/simulator.md), what `ShopifyStorefront` relies on, errors and rate limits included:

- `POST /admin/api/<version>/graphql.json` with the `X-Shopify-Access-Token` check (401 with Shopify's
  `[API] Invalid API key or access token ...` body for an unknown or expired token);
- `POST /admin/oauth/access_token`, the OAuth client-credentials grant of Dev Dashboard apps: `grant_type=
  client_credentials`, `client_id`, `client_secret` (form or JSON) -> `{access_token, scope, expires_in}`; tokens
  expire after `token_lifetime` seconds (Shopify: 86399) on the injectable `clock`; a wrong client is
  `{"error": "invalid_client", "error_description": ...}`;
- access scopes: `currentAppInstallation { accessScopes { handle } }` lists the granted handles, and a field the
  app lacks the scope for answers `ACCESS_DENIED` (a `write_` scope implies its `read_`);
- calculated-cost throttling: a leaky bucket reported in `extensions.cost`, `THROTTLED` when it runs dry,
  `MAX_COST_EXCEEDED` above 1000 points;
- a shop of product variants, each with an inventory item (`tracked` or not), an `inventoryPolicy` (DENY /
  CONTINUE) and an `available` quantity per location; locations may be inactive or not fulfil online orders.
  What a customer sees is derived as Shopify documents it: `sellableOnlineQuantity` counts the units at active
  locations that fulfil online orders, and `availableForSale` is true when those are positive, or whatever the
  stock when the item is untracked or the policy is CONTINUE.

It is deliberately **not a GraphQL engine**. It recognises the operations `ShopifyStorefront` sends by the root
field named in the query text and answers that field with the fixed selection the adapter asks for:

- `shop { name }` with `currentAppInstallation { accessScopes { handle } }`: the check;
- `location(id:)` and `locations(first:, after:, includeInactive:)`: `id name isActive fulfillsOnlineOrders`;
- `productVariants(first:, after:, query:)` and `nodes(ids:)`: each variant's `id sku availableForSale
  inventoryPolicy sellableOnlineQuantity inventoryItem { id tracked inventoryLevels(first: $levels) { nodes
  { location {...} quantities(names: ["available"]) { name quantity } } pageInfo { hasNextPage } } }`;
  `query` understands only `sku:X OR sku:"Y"` terms (exact match);
- the mutation `inventorySetQuantities(input:) @idempotent(key:)` on the `available` quantity, with
  `changeFromQuantity` compare-and-swap (and 2026-01's legacy `compareQuantity`/`ignoreCompareQuantity`);
- the mutation `inventoryItemUpdate(id:, input: {tracked:})`.
- with a demo `world`: `products(first:, after:, query:, sortKey:)` and `orders(...)` for the Shopify source of the
  catalog and open orders feeds (`shopify_shop.py`: the `updated_at` filter, `UPDATED_AT` sorting, cursors on the
  sort key), with `shop { currencyCode }` and a `Date` header on the world's clock.
- for the Shopify inventory source of the on-hand feed: `inventoryItems(first:, after:)` with named quantities, and
  bulk operations (`bulkOperationRunQuery`, polled by `node(id:)` / `currentBulkOperation`, the JSONL served at
  `/bulk/<n>.jsonl`): `shopify_bulk.py`.

Any other operation gets a GraphQL error in Shopify's format. Faults: `fail_next` (5xx, optionally after the
mutation was applied, as when an answer is lost) and `throttle_next` (a THROTTLED answer). `answers`,
`adjustment_groups` and `tokens_issued` record what happened. See docs/simulator.md.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs

import orjson

from cx_pipeline.simulator import shopify_bulk
from cx_pipeline.simulator.shopify_shop import (
    SearchError,
    ShopCatalog,
    order_cost,
    page,
    product_cost,
    search_filter,
)
from cx_pipeline.simulator.world import World

API_VERSIONS = ("2026-01", "2026-04")
DEFAULT_LOCATION = "gid://shopify/Location/1"
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
TOKEN_PATH = "/admin/oauth/access_token"
TOKEN_LIFETIME = 86399  # "expires_in — Seconds until expiration. Always 86399 (24 hours)."
# What a Dev Dashboard app needs to read variants and set inventory per location (write_ implies read_).
DEFAULT_SCOPES = ("read_products", "write_inventory", "read_locations")
MUTATION_COST = 10  # every mutation costs 10 points
VARIANT_COST = 4  # variant + inventoryItem + the levels connection's own cost, per variant
LEVEL_COST = 3  # inventory level + location + quantities, per requested level
MAX_QUERY_COST = 1000  # single-query limit
MAX_INPUT_ARRAY = 250  # "input arguments that accept an array have a maximum size of 250"
MAX_FIRST = 250  # connections return at most 250 nodes a page
# fmt: off
REASONS = frozenset({  # the documented reasons for an inventory change
    "correction", "cycle_count_available", "damaged", "movement_canceled", "movement_created", "movement_received",
    "movement_updated", "other", "promotion", "quality_control", "received", "reservation_created",
    "reservation_deleted", "reservation_updated", "restock", "safety_stock", "shrinkage",
})
# fmt: on
USER_ERRORS = {  # InventorySetQuantitiesUserErrorCode -> the documented message
    "CHANGE_FROM_QUANTITY_STALE": "The changeFromQuantity value does not match persisted value.",
    "COMPARE_QUANTITY_REQUIRED": "The compareQuantity argument must be given to each quantity or ignored using "
    "ignoreCompareQuantity.",
    "COMPARE_QUANTITY_STALE": "The compareQuantity value does not match persisted value.",
    "IDEMPOTENCY_KEY_PARAMETER_MISMATCH": "The same idempotency key cannot be used with different operation "
    "parameters.",
    "INVALID_INVENTORY_ITEM": "The specified inventory item could not be found.",
    "INVALID_LOCATION": "The specified location could not be found.",
    "INVALID_NAME": "The quantity name must be either 'available' or 'on_hand'.",
    "INVALID_QUANTITY_TOO_HIGH": "The total quantity can't be higher than 1,000,000,000.",
    "INVALID_REASON": "The specified reason is invalid.",
    "INVALID_REFERENCE_DOCUMENT": "The specified reference document is invalid.",
    "ITEM_NOT_STOCKED_AT_LOCATION": "The specified inventory item is not stocked at the location.",
    "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR": "The combination of inventoryItemId and locationId must be unique.",
}
# OAuth 2.0 token-endpoint errors (RFC 6749 5.2), the shape Shopify's /admin/oauth/access_token answers.
OAUTH_ERRORS = {
    "invalid_request": "The request is missing a required parameter, includes an unsupported parameter value, "
    "or is otherwise malformed.",
    "invalid_client": "Client authentication failed due to unknown client, no client authentication included, "
    "or unsupported authentication method.",
    "unsupported_grant_type": "The authorization grant type is not supported by the authorization server.",
}
ACCESS_SCOPES_DOC = "https://shopify.dev/api/usage/access-scopes"
_PATH = re.compile(r"^/admin/api/([^/]+)/graphql\.json$")
_IDEMPOTENT = re.compile(r'@idempotent\s*\(\s*key\s*:\s*(?:\$(\w+)|"((?:[^"\\]|\\.)*)")\s*\)')
_SKU_TERM = re.compile(r'sku:(?:"((?:[^"\\]|\\.)*)"|(\S+))')


@dataclass
class Variant:
    sku: str
    item_id: str
    available: dict[str, int]  # location gid -> available quantity; a missing location = not stocked there
    variant_id: str = ""
    policy: str = "DENY"  # ProductVariant.inventoryPolicy: CONTINUE sells when out of stock
    tracked: bool = True  # InventoryItem.tracked: untracked items sell whatever their quantity
    # location gid -> named quantities other than available (committed, damaged, quality_control...; see shopify_bulk)
    held: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class Location:
    id: str
    name: str
    active: bool = True
    fulfills_online_orders: bool = True


@dataclass(frozen=True)
class Answer:
    """One answered request: which operation, the HTTP status, and the top-level error code if any."""

    operation: str
    status: int
    code: str | None = None


@dataclass
class _Fault:
    kind: str  # "status" or "throttled"
    status: int = 503
    after_apply: bool = False


@dataclass
class _Token:
    expires_at: float
    scopes: tuple[str, ...] = field(default_factory=tuple)


class GraphQLError(Exception):
    """A top-level `errors` answer (HTTP 200, no data), as Shopify gives for invalid requests."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class AccessDenied(Exception):
    """A field the app has no access scope for: Shopify answers it null with an ACCESS_DENIED error."""

    def __init__(self, field_name: str, scope: str) -> None:
        super().__init__(f"Access denied for {field_name} field. Required access: `{scope}` access scope.")
        self.field_name, self.scope = field_name, scope


class Bucket:
    """Shopify's leaky bucket: `size` points, refilled at `restore_rate` points a second."""

    def __init__(self, size: float, restore_rate: float) -> None:
        self.size, self.restore_rate = float(size), float(restore_rate)
        self._level, self._at = self.size, time.monotonic()

    def available(self) -> float:
        now = time.monotonic()
        self._level = min(self.size, self._level + (now - self._at) * self.restore_rate)
        self._at = now
        return self._level

    def take(self, points: float) -> bool:
        if self.available() < points:
            return False
        self._level -= points
        return True

    def give(self, points: float) -> None:
        self._level = min(self.size, self.available() + points)

    def status(self) -> dict[str, float]:
        return {"maximumAvailable": self.size, "currentlyAvailable": self.available(), "restoreRate": self.restore_rate}


class ShopifySimulator:
    """A shop on 127.0.0.1. `variants` maps SKU ("" = a variant without SKU) to its available quantity at
    `gid://shopify/Location/1`; inventory items are `gid://shopify/InventoryItem/1`... and variants
    `gid://shopify/ProductVariant/1`... in that order, all tracked with policy DENY.

    `token` is a static Admin API token (an admin-created custom app's); `client_id` + `client_secret` enable the
    client-credentials grant, whose tokens expire `token_lifetime` seconds after they were issued by `clock`.
    `scopes` are the access scopes the app was granted."""

    def __init__(
        self,
        variants: dict[str, int] | None = None,
        *,
        token: str = "shpat_simulator",
        shop_name: str = "cx-demo-shop",
        bucket_size: float = 2000,
        restore_rate: float = 100,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        client_id: str = "",
        client_secret: str = "",
        token_lifetime: float = TOKEN_LIFETIME,
        clock: Callable[[], float] = time.monotonic,
        world: World | None = None,
        currency: str = "EUR",
        now: Callable[[], datetime] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token, self.shop_name, self.host, self.port = token, shop_name, host, port
        # `world` backs the products and orders queries; `now` (default: the world's clock) dates every answer
        self.catalog = ShopCatalog(world) if world is not None else None
        self.currency = currency
        self.now = (now or (lambda: world.clock)) if world is not None else now
        self.searches: list[tuple[str, str | None]] = []  # (products | orders, the `query` filter sent)
        self.scopes = tuple(scopes)
        self.client_id, self.client_secret = client_id, client_secret
        self.token_lifetime, self.clock = token_lifetime, clock
        self.locations = {DEFAULT_LOCATION: Location(DEFAULT_LOCATION, "Main warehouse")}
        self.variants = [
            Variant(
                sku, f"gid://shopify/InventoryItem/{n}", {DEFAULT_LOCATION: qty}, f"gid://shopify/ProductVariant/{n}"
            )
            for n, (sku, qty) in enumerate((variants or {}).items(), start=1)
        ]
        self.bucket = Bucket(bucket_size, restore_rate)
        self.answers: list[Answer] = []
        self.requests: Counter[str] = Counter()
        self.adjustment_groups: list[dict[str, Any]] = []
        self.tokens_issued = 0
        self._tokens: dict[str, _Token] = {}  # client-credentials tokens -> when they expire
        self._replays: dict[str, tuple[bytes, dict[str, Any]]] = {}  # idempotency key -> (parameters, payload)
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()  # one request at a time touches the shop, the bucket and the records
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # bulk query operations (the inventory's), each RUNNING for `bulk_running_polls` polls
        self.bulk = shopify_bulk.BulkOperations(self._bulk_result, lambda: self.now() if self.now else None)

    # -- lifecycle ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The shop URL (what `https://<shop>.myshopify.com` is in production)."""
        if self._server is None:
            raise RuntimeError("the Shopify simulator is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> Self:
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="shopify-sim", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join()
            self._server, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:  # never shows a token or the client secret
        return f"ShopifySimulator(url={self.url if self._server else None!r}, variants={len(self.variants)})"

    # -- test hooks --------------------------------------------------------------------------------------

    def variant(self, sku: str) -> Variant:
        return next(v for v in self.variants if v.sku == sku)

    def available(self, sku: str, location: str = DEFAULT_LOCATION) -> int | None:
        return self.variant(sku).available.get(location)

    def set_available(self, sku: str, quantity: int, location: str = DEFAULT_LOCATION) -> None:
        """Change a quantity behind the client's back (a sale, a merchant's edit); stocks the item there if needed."""
        with self._lock:
            self.variant(sku).available[location] = quantity

    def set_quantities(self, sku: str, location: str = DEFAULT_LOCATION, /, **quantities: int) -> None:
        """Set named quantities of `sku` at `location` (available, committed, damaged, quality_control, reserved,
        safety_stock, incoming; on_hand itself for bad data), stocking it there if needed."""
        with self._lock:
            variant = self.variant(sku)
            variant.available[location] = quantities.pop("available", variant.available.get(location, 0))
            variant.held.setdefault(location, {}).update(quantities)

    def fail_next_bulk(self, error_code: str = "INTERNAL_SERVER_ERROR") -> None:
        """The next bulk operation ends FAILED with `error_code` (ACCESS_DENIED, INTERNAL_SERVER_ERROR, TIMEOUT)."""
        with self._lock:
            self.bulk.failures.append(error_code)

    def unstock(self, sku: str, location: str = DEFAULT_LOCATION) -> None:
        with self._lock:
            self.variant(sku).available.pop(location, None)

    def set_policy(self, sku: str, policy: str) -> None:
        """The merchant's "Continue selling when out of stock" (CONTINUE) or not (DENY)."""
        with self._lock:
            self.variant(sku).policy = policy

    def set_tracked(self, sku: str, tracked: bool) -> None:
        """The merchant's "Track quantity"."""
        with self._lock:
            self.variant(sku).tracked = tracked

    def add_location(
        self, location_id: str, name: str, *, active: bool = True, fulfills_online_orders: bool = True
    ) -> None:
        with self._lock:
            self.locations[location_id] = Location(location_id, name, active, fulfills_online_orders)

    def edit_product(self, sku: str, /, **fields: Any) -> None:
        """Edit the world-backed product of `sku` as a merchant would (`price`, `sku`, `productType`, `status`...)."""
        with self._lock:
            self._shop().edit_product(sku, **fields)

    def delete_product(self, sku: str) -> None:
        """Delete the world-backed product of `sku` from the shop."""
        with self._lock:
            self._shop().delete_product(sku)

    def edit_order_line(self, order_id: str, line_no: int, /, **fields: Any) -> None:
        """Edit a line item of the world-backed order `order_id` (`quantity`, `sku`...)."""
        with self._lock:
            self._shop().edit_order_line(order_id, line_no, **fields)

    def _shop(self) -> ShopCatalog:
        if self.catalog is None:
            raise RuntimeError("this Shopify simulator has no world: pass world= for products and orders")
        return self.catalog

    def expire_tokens(self) -> None:
        """Let every client-credentials token issued so far expire now (without moving the clock)."""
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = float("-inf")

    def issued_tokens(self) -> list[str]:
        """Every client-credentials token issued, for tests that check none of them leaks."""
        with self._lock:
            return list(self._tokens)

    def fail_next(self, times: int = 1, status: int = 503, after_apply: bool = False) -> None:
        """Answer the next `times` requests with `status`; `after_apply`: run the operation first (lost answer)."""
        with self._lock:
            self._faults.extend(_Fault("status", status, after_apply) for _ in range(times))

    def throttle_next(self, times: int = 1) -> None:
        """Answer the next `times` requests THROTTLED, whatever the bucket holds."""
        with self._lock:
            self._faults.extend(_Fault("throttled") for _ in range(times))

    @property
    def throttled(self) -> int:
        """How many THROTTLED answers were given."""
        return sum(a.code == "THROTTLED" for a in self.answers)

    # -- what a customer sees ----------------------------------------------------------------------------

    def sellable(self, variant: Variant) -> int:
        """`sellableOnlineQuantity`: the units at active locations that fulfil online orders (never below 0)."""
        online = sum(
            qty
            for loc, qty in variant.available.items()
            if (where := self.locations.get(loc)) is not None and where.active and where.fulfills_online_orders
        )
        return max(online, 0)

    def available_for_sale(self, variant: Variant) -> bool:
        """`availableForSale`: sellable units, or always when Shopify does not stop selling at zero."""
        return not variant.tracked or variant.policy == "CONTINUE" or self.sellable(variant) > 0

    # -- request handling --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """Answer one HTTP request: (status, JSON body)."""
        with self._lock:
            if path == TOKEN_PATH and method == "POST":
                return self._token_request(headers, body)
            if method == "GET" and (result := shopify_bulk.BULK_PATH.match(path)):
                data = self.bulk.download(int(result.group(1)))  # signed storage in Shopify: no token asked
                return self._record("bulk_download", 200 if data is not None else 404, data or {"errors": "Not Found"})
            match = _PATH.match(path)
            if method != "POST" or match is None or match.group(1) not in API_VERSIONS:
                return self._record("-", 404, {"errors": "Not Found"})
            if not self._authorized(headers.get("x-shopify-access-token", "")):
                return self._record("-", 401, {"errors": INVALID_TOKEN})
            try:
                request = orjson.loads(body)
                query, variables = str(request["query"]), dict(request.get("variables") or {})
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return self._record("-", 400, {"errors": {"query": "Required parameter missing or invalid"}})
            operation = _operation(query)
            self.requests[operation] += 1
            fault = self._faults.popleft() if self._faults else None
            if fault is not None and fault.kind == "throttled":
                return self._record(operation, 200, self._throttled_body(_requested_cost(operation, variables)))
            if fault is not None and not fault.after_apply:
                return self._record(operation, fault.status, {"errors": HTTPStatus(fault.status).phrase})
            status, answer = self._execute(operation, query, variables, match.group(1))
            if fault is not None:  # applied, but the answer is lost on the way back
                return self._record(operation, fault.status, {"errors": HTTPStatus(fault.status).phrase})
            return status, answer

    def _authorized(self, given: str) -> bool:
        if self.token and hmac.compare_digest(given.encode(), self.token.encode()):
            return True
        issued = self._tokens.get(given)
        return issued is not None and self.clock() < issued.expires_at

    def _token_request(self, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """The client-credentials grant: a new token for this app's client id and secret, or an OAuth error."""
        self.requests["access_token"] += 1
        if self._faults and self._faults[0].kind == "status":  # a token endpoint is never THROTTLED
            fault = self._faults.popleft()
            return self._record("access_token", fault.status, {"errors": HTTPStatus(fault.status).phrase})
        form = _form(headers.get("content-type", ""), body)
        if not all(form.get(k) for k in ("grant_type", "client_id", "client_secret")):
            return self._oauth_error(400, "invalid_request")
        if form["grant_type"] != "client_credentials":
            return self._oauth_error(400, "unsupported_grant_type")
        known = bool(self.client_id) and hmac.compare_digest(form["client_id"].encode(), self.client_id.encode())
        if not known or not hmac.compare_digest(form["client_secret"].encode(), self.client_secret.encode()):
            return self._oauth_error(400, "invalid_client")
        token = secrets.token_hex(16)  # the documented example is 32 hex digits
        self._tokens[token] = _Token(self.clock() + self.token_lifetime, self.scopes)
        self.tokens_issued += 1
        answer = {"access_token": token, "scope": ",".join(self.scopes), "expires_in": int(self.token_lifetime)}
        return self._record("access_token", 200, answer)

    def _oauth_error(self, status: int, error: str) -> tuple[int, Any]:
        return self._record("access_token", status, {"error": error, "error_description": OAUTH_ERRORS[error]})

    def _granted(self, scope: str) -> bool:
        # Shopify: a write_ scope includes its read_ scope, and accessScopes lists only what was granted.
        return scope in self.scopes or (scope.startswith("read_") and f"write_{scope[5:]}" in self.scopes)

    def _execute(self, operation: str, query: str, variables: dict[str, Any], version: str) -> tuple[int, Any]:
        try:
            requested = _requested_cost(operation, variables)
            if requested > MAX_QUERY_COST:
                raise GraphQLError(
                    f"Query cost is {requested}, which exceeds the single query max cost limit ({MAX_QUERY_COST}).",
                    "MAX_COST_EXCEEDED",
                )
            if not self.bucket.take(requested):
                return self._record(operation, 200, self._throttled_body(requested))
            try:
                data, actual = self._resolve(operation, query, variables, version)
            except (GraphQLError, AccessDenied):
                self.bucket.give(requested)  # a request refused before execution costs nothing
                raise
            self.bucket.give(requested - actual)  # the difference to the actual cost is refunded
        except GraphQLError as exc:
            return self._record(operation, 200, {"errors": [{"message": str(exc), "extensions": {"code": exc.code}}]})
        except AccessDenied as exc:
            error = {
                "message": str(exc),
                "path": [operation],
                "extensions": {
                    "code": "ACCESS_DENIED",
                    "documentation": ACCESS_SCOPES_DOC,
                    "requiredAccess": f"`{exc.scope}` access scope.",
                },
            }
            cost = {"requestedQueryCost": requested, "actualQueryCost": 0, "throttleStatus": self.bucket.status()}
            return self._record(
                operation, 200, {"data": {operation: None}, "errors": [error], "extensions": {"cost": cost}}
            )
        cost = {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": self.bucket.status()}
        return self._record(operation, 200, {"data": data, "extensions": {"cost": cost}})

    def _require(self, field_name: str, *scopes: str) -> None:
        """AccessDenied unless one of `scopes` is granted."""
        if not any(self._granted(s) for s in scopes):
            raise AccessDenied(field_name, scopes[0])

    def _resolve(self, operation: str, query: str, variables: dict[str, Any], version: str) -> tuple[Any, int]:
        if operation == "shop":
            data: dict[str, Any] = {"shop": {"name": self.shop_name, "currencyCode": self.currency}}
            if "currentAppInstallation" in query:  # needs no scope: an app may always ask what it was granted
                data["currentAppInstallation"] = {"accessScopes": [{"handle": s} for s in self.scopes]}
            return data, 2
        if operation == "location":
            # Since 2024-10 a Location needs read_locations, read_inventory or read_markets_home.
            self._require("location", "read_locations", "read_inventory", "read_markets_home")
            where = self.locations.get(variables.get("id") or variables.get("locationId"))
            return {"location": _location(where) if where else None}, 2
        if operation == "locations":
            self._require("locations", "read_locations")
            return self._locations(variables)
        if operation in ("productVariants", "nodes"):
            self._require(operation, "read_products")
            self._require("inventoryLevels", "read_inventory")
            return self._variants(variables) if operation == "productVariants" else self._nodes(variables)
        if operation in ("products", "orders") and self.catalog is not None:  # only a shop with a world has them
            self._require(operation, "read_products" if operation == "products" else "read_orders")
            return self._search(operation, variables)
        if operation == "inventorySetQuantities":
            self._require(operation, "write_inventory")
            return {"inventorySetQuantities": self._set_quantities(query, variables, version)}, MUTATION_COST
        if operation == "inventoryItems":
            self._require(operation, "read_inventory")
            return self._inventory_items(query, variables)
        if operation == "bulkOperationRunQuery":
            query_text = str(variables.get("query") or "")
            if "inventoryItems" in query_text:  # a bulk query needs the scopes of what it reads
                self._require("inventoryItems", "read_inventory")
            else:
                self._require("products", "read_products")
            self.bulk.base_url = self.url
            return {operation: self.bulk.create(str(variables.get("query") or ""))}, MUTATION_COST
        if operation in ("node", "currentBulkOperation"):
            node = self.bulk.poll(variables.get("id") if operation == "node" else None)
            return {operation: node}, 1
        if operation == "inventoryItemUpdate":
            self._require(operation, "write_inventory")
            return {"inventoryItemUpdate": self._item_update(variables)}, MUTATION_COST
        raise GraphQLError(
            "This Shopify simulator answers only the operations ShopifyStorefront and the Shopify source send: the "
            "shop check, location, locations, productVariants, products and orders (with a world), nodes, "
            "inventorySetQuantities and inventoryItemUpdate.",
            "undefinedField",
        )

    def _search(self, operation: str, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """`products` or `orders` of the demo world: filtered by `query`, sorted by `sortKey`, paged by `after`."""
        first = _first(variables.get("first"))
        self.searches.append((operation, variables.get("query")))
        catalog = self._shop()
        try:
            matches = search_filter(variables.get("query"))
            if operation == "products":
                variants = _first(variables.get("variants"), "variants")
                everything, per_node = catalog.nodes("products", variants), product_cost(variants)
            else:
                lines = _first(variables.get("lines"), "lines")
                orders = _first(variables.get("fulfillmentOrders"), "fulfillmentOrders")
                everything, per_node = catalog.nodes("orders", lines, orders), order_cost(lines, orders)
            nodes, info = page(
                [n for n in everything if matches(n[0][0])], first, variables.get("after"), variables.get("sortKey")
            )
        except SearchError as exc:
            raise GraphQLError(str(exc), "BAD_REQUEST") from exc
        return {operation: {"nodes": nodes, "pageInfo": info}}, 2 + per_node * len(nodes)

    def _inventory_items(self, query: str, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """`inventoryItems(first:, after:)` with each item's levels and the named quantities the query asks for."""
        first, levels = _first(variables.get("first")), _first(variables.get("levels"), "levels")
        names = shopify_bulk.quantity_names(query, variables)
        start = _decode_cursor(variables["after"]) if variables.get("after") else 0
        page = self.variants[start : start + first]
        nodes = [shopify_bulk.item_node(v, self._location_node, names, levels) for v in page]
        end = start + len(page)
        info = {"hasNextPage": end < len(self.variants), "endCursor": _encode_cursor(end) if page else None}
        actual = sum(3 + 3 * len(n["inventoryLevels"]["nodes"]) for n in nodes)
        return {"inventoryItems": {"nodes": nodes, "pageInfo": info}}, 2 + actual

    def _location_node(self, location_id: str) -> dict[str, Any]:
        return _location(self.locations[location_id])

    def _bulk_result(self, query: str) -> bytes:
        """The JSONL of a bulk inventory or products query, read when the operation completes."""
        if "inventoryItems" not in query:
            products = [node for _, node in self._shop().nodes("products", MAX_FIRST)]
            return shopify_bulk.nested_jsonl(products, "variants")
        names = shopify_bulk.quantity_names(query, {})
        return shopify_bulk.inventory_jsonl(self.variants, self._location_node, names)

    def _locations(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        first = _first(variables.get("first"))
        everything = list(self.locations.values())
        matching = everything if variables.get("includeInactive") else [loc for loc in everything if loc.active]
        start = _decode_cursor(variables["after"]) if variables.get("after") else 0
        page = matching[start : start + first]
        end = start + len(page)
        page_info = {"hasNextPage": end < len(matching), "endCursor": _encode_cursor(end) if page else None}
        return {"locations": {"nodes": [_location(loc) for loc in page], "pageInfo": page_info}}, 2 + len(page)

    def _variants(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        first, levels = _first(variables.get("first")), _first(variables.get("levels"), "levels")
        matching = self.variants
        if variables.get("query"):
            terms = _SKU_TERM.findall(variables["query"])
            if not terms:
                raise GraphQLError("This simulator's productVariants query understands only sku: terms", "BAD_QUERY")
            wanted = {quoted.replace('\\"', '"') or bare for quoted, bare in terms}
            matching = [v for v in self.variants if v.sku in wanted]
        start = _decode_cursor(variables["after"]) if variables.get("after") else 0
        page = matching[start : start + first]
        nodes = [self._variant_node(v, levels) for v in page]
        end = start + len(page)
        page_info = {"hasNextPage": end < len(matching), "endCursor": _encode_cursor(end) if page else None}
        return {"productVariants": {"nodes": nodes, "pageInfo": page_info}}, 2 + _nodes_cost(nodes)

    def _nodes(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        ids, levels = variables.get("ids"), _first(variables.get("levels"), "levels")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise GraphQLError("Variable $ids of type [ID!]! was provided invalid value", "INVALID_VARIABLE")
        if len(ids) > MAX_INPUT_ARRAY:
            raise GraphQLError(
                f"The input array size of {len(ids)} is greater than the maximum allowed of {MAX_INPUT_ARRAY}.",
                "MAX_INPUT_SIZE_EXCEEDED",
            )
        by_id = {v.variant_id: v for v in self.variants}
        nodes = [self._variant_node(by_id[i], levels) if i in by_id else None for i in ids]
        return {"nodes": nodes}, _nodes_cost([n for n in nodes if n is not None])

    def _variant_node(self, v: Variant, levels: int) -> dict[str, Any]:
        stocked = list(v.available.items())
        return {
            "id": v.variant_id,
            "sku": v.sku,
            "availableForSale": self.available_for_sale(v),
            "inventoryPolicy": v.policy,
            "sellableOnlineQuantity": self.sellable(v),
            "inventoryItem": {
                "id": v.item_id,
                "tracked": v.tracked,
                "inventoryLevels": {
                    "nodes": [
                        {
                            "location": _location(self.locations[loc]),
                            "quantities": [{"name": "available", "quantity": qty}],
                        }
                        for loc, qty in stocked[:levels]
                    ],
                    "pageInfo": {"hasNextPage": len(stocked) > levels},
                },
            },
        }

    def _item_update(self, variables: dict[str, Any]) -> dict[str, Any]:
        item_id, data = variables.get("id"), variables.get("input")
        variant = next((v for v in self.variants if v.item_id == item_id), None)
        if variant is None:
            return {
                "inventoryItem": None,
                "userErrors": [{"field": ["id"], "message": "Inventory item does not exist"}],
            }
        if isinstance(data, dict) and isinstance(data.get("tracked"), bool):
            variant.tracked = data["tracked"]
        return {"inventoryItem": {"id": variant.item_id, "tracked": variant.tracked}, "userErrors": []}

    def _set_quantities(self, query: str, variables: dict[str, Any], version: str) -> dict[str, Any]:
        key = _idempotency_key(query, variables)
        if key is None and version >= "2026-04":
            raise GraphQLError(
                "The @idempotent directive is required for this mutation but was not provided.", "BAD_REQUEST"
            )
        if key is not None:
            parameters = orjson.dumps(variables.get("input"), option=orjson.OPT_SORT_KEYS)
            if key in self._replays:
                seen, payload = self._replays[key]
                if seen == parameters:
                    return payload  # a duplicate: the first answer again, nothing applied twice
                return _rejected([_user_error("IDEMPOTENCY_KEY_PARAMETER_MISMATCH", None)])
        payload = self._apply(variables.get("input"), version)
        if key is not None:
            self._replays[key] = (parameters, payload)
        return payload

    def _apply(self, data: Any, version: str) -> dict[str, Any]:
        """Validate every quantity first; any user error rejects the whole mutation (nothing is changed)."""
        quantities = data.get("quantities") if isinstance(data, dict) else None
        if not isinstance(quantities, list) or not all(isinstance(q, dict) for q in quantities):
            raise GraphQLError(
                "Variable $input of type InventorySetQuantitiesInput! was provided invalid value", "INVALID_VARIABLE"
            )
        if len(quantities) > MAX_INPUT_ARRAY:
            raise GraphQLError(
                f"The input array size of {len(quantities)} is greater than the maximum allowed of {MAX_INPUT_ARRAY}.",
                "MAX_INPUT_SIZE_EXCEEDED",
            )
        errors: list[dict[str, Any]] = []
        if data.get("name") != "available":  # Shopify also accepts on_hand; this simulator models only available
            errors.append(_user_error("INVALID_NAME", ["input", "name"]))
        if data.get("reason") not in REASONS:
            errors.append(_user_error("INVALID_REASON", ["input", "reason"]))
        uri = data.get("referenceDocumentUri")
        if uri is not None and not re.match(r"^[A-Za-z][\w+.-]*:.+", str(uri)):
            errors.append(_user_error("INVALID_REFERENCE_DOCUMENT", ["input", "referenceDocumentUri"]))
        items = {v.item_id: v for v in self.variants}
        planned: list[tuple[Variant, str, int]] = []
        for i, q in enumerate(quantities):
            path = ["input", "quantities", str(i)]
            variant, location = items.get(q.get("inventoryItemId")), q.get("locationId")
            error = self._check_quantity(q, variant, location, data, version, path)
            if error is None and any(p[0] is variant and p[1] == location for p in planned):
                error = _user_error("NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR", path)
            if error is not None:
                errors.append(error)
            else:
                planned.append((variant, location, q["quantity"]))  # type: ignore[arg-type]
        if errors:
            return _rejected(errors)
        changes = []
        for variant, location, quantity in planned:
            delta = quantity - variant.available[location]
            variant.available[location] = quantity
            if delta:  # a quantity set to its current value is no change
                changes.append(
                    {
                        "name": "available",
                        "delta": delta,
                        "quantityAfterChange": quantity,
                        "item": {"id": variant.item_id},
                        "location": {"id": location},
                    }
                )
        group = {
            "id": f"gid://shopify/InventoryAdjustmentGroup/{len(self.adjustment_groups) + 1}",
            "reason": data["reason"],
            "referenceDocumentUri": uri,
            "changes": changes,
        }
        self.adjustment_groups.append(group)
        return {"inventoryAdjustmentGroup": {"id": group["id"], "changes": changes}, "userErrors": []}

    def _check_quantity(
        self,
        q: dict[str, Any],
        variant: Variant | None,
        location: Any,
        data: dict[str, Any],
        version: str,
        path: list[str],
    ) -> dict[str, Any] | None:
        """The user error for one quantity of the input, or None if it can be applied."""
        if variant is None:
            return _user_error("INVALID_INVENTORY_ITEM", [*path, "inventoryItemId"])
        if location not in self.locations:
            return _user_error("INVALID_LOCATION", [*path, "locationId"])
        if location not in variant.available:
            return _user_error("ITEM_NOT_STOCKED_AT_LOCATION", [*path, "inventoryItemId"])
        quantity = q.get("quantity")
        if not isinstance(quantity, int) or abs(quantity) > 1_000_000_000:
            return _user_error("INVALID_QUANTITY_TOO_HIGH", [*path, "quantity"])
        current = variant.available[location]
        if "changeFromQuantity" in q:  # from 2026-01; an explicit null opts out of the check
            expected = q["changeFromQuantity"]
            if expected is not None and expected != current:
                return _user_error("CHANGE_FROM_QUANTITY_STALE", [*path, "changeFromQuantity"])
            return None
        if version >= "2026-04":
            raise GraphQLError(
                "InventoryQuantityInput must include the following argument: changeFromQuantity",
                "INVALID_FIELD_ARGUMENTS",
            )
        if data.get("ignoreCompareQuantity"):  # the pre-2026-04 syntax
            return None
        if q.get("compareQuantity") is None:
            return _user_error("COMPARE_QUANTITY_REQUIRED", [*path, "compareQuantity"])
        if q["compareQuantity"] != current:
            return _user_error("COMPARE_QUANTITY_STALE", [*path, "compareQuantity"])
        return None

    def _throttled_body(self, requested: int) -> dict[str, Any]:
        cost = {"requestedQueryCost": requested, "actualQueryCost": None, "throttleStatus": self.bucket.status()}
        error = {
            "message": "Throttled",
            "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"},
        }
        return {"errors": [error], "extensions": {"cost": cost}}

    def _record(self, operation: str, status: int, body: Any) -> tuple[int, Any]:
        errors = body.get("errors") if isinstance(body, dict) else None
        code = errors[0].get("extensions", {}).get("code") if isinstance(errors, list) and errors else None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            code = body["error"]  # an OAuth error
        self.answers.append(Answer(operation, status, code))
        return status, body


def _operation(query: str) -> str:
    """The root field the query is about: enough to tell the adapter's operations apart."""
    if re.match(r"\s*mutation\b", query):
        for name in ("inventorySetQuantities", "inventoryItemUpdate", "bulkOperationRunQuery"):
            if re.search(rf"\b{name}\s*\(", query):
                return name
        return "mutation"
    for name in ("currentBulkOperation", "inventoryItems", "productVariants", "products", "orders", "nodes", "node"):
        if re.search(rf"\b{name}\s*\(", query):
            return name
    for name in ("locations", "location"):
        if re.search(rf"\b{name}\s*\(", query):
            return name
    return "shop" if re.search(r"\bshop\s*\{", query) else "query"


def _requested_cost(operation: str, variables: dict[str, Any]) -> int:
    """The cost Shopify calculates before running a query: connections count the nodes they may return."""
    if operation in ("inventorySetQuantities", "inventoryItemUpdate", "bulkOperationRunQuery"):
        return MUTATION_COST
    if operation in ("node", "currentBulkOperation"):
        return 1
    if operation == "inventoryItems":
        return 2 + shopify_bulk.item_cost(_positive(variables.get("levels"))) * _positive(variables.get("first"))
    levels = _positive(variables.get("levels"))
    per_variant = VARIANT_COST + LEVEL_COST * levels
    if operation == "productVariants":
        return 2 + per_variant * _positive(variables.get("first"))
    if operation == "nodes":
        ids = variables.get("ids")
        return per_variant * (len(ids) if isinstance(ids, list) else 0)
    if operation == "locations":
        return 2 + _positive(variables.get("first"))
    if operation == "products":
        return 2 + product_cost(_positive(variables.get("variants"))) * _positive(variables.get("first"))
    if operation == "orders":
        per_order = order_cost(_positive(variables.get("lines")), _positive(variables.get("fulfillmentOrders")))
        return 2 + per_order * _positive(variables.get("first"))
    return 2


def _nodes_cost(nodes: list[dict[str, Any]]) -> int:
    """The actual cost of the variant nodes returned: each with the levels it really has."""
    return sum(VARIANT_COST + LEVEL_COST * len(n["inventoryItem"]["inventoryLevels"]["nodes"]) for n in nodes)


def _positive(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _first(value: Any, name: str = "first") -> int:
    if not isinstance(value, int) or not 1 <= value <= MAX_FIRST:
        raise GraphQLError(
            f"Variable ${name} of type Int! was provided invalid value (1..{MAX_FIRST})", "INVALID_VARIABLE"
        )
    return value


def _location(where: Location) -> dict[str, Any]:
    return {
        "id": where.id,
        "name": where.name,
        "isActive": where.active,
        "fulfillsOnlineOrders": where.fulfills_online_orders,
    }


def _form(content_type: str, body: bytes) -> dict[str, str]:
    """The token request's parameters, sent as a form (Shopify's examples) or as JSON (its libraries)."""
    try:
        if "json" in content_type:
            parsed = orjson.loads(body)
            return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
        return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError):
        return {}


def _idempotency_key(query: str, variables: dict[str, Any]) -> str | None:
    match = _IDEMPOTENT.search(query)
    if match is None:
        return None
    return str(variables.get(match.group(1))) if match.group(1) else match.group(2)


def _user_error(code: str, path: list[str] | None) -> dict[str, Any]:
    return {"field": path, "message": USER_ERRORS[code], "code": code}


def _rejected(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"inventoryAdjustmentGroup": None, "userErrors": errors}


def _encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"last_id": position})).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        return int(orjson.loads(base64.urlsafe_b64decode(cursor.encode()))["last_id"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor!r}", "BAD_REQUEST") from exc


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: ShopifySimulator) -> None:
        self.sim = sim
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Shopify and the client's connection pool expect
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add 40 ms per answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no access log on stderr
        return

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header: the shop's clock (the demo world's, when it has one), which clients read as `as_of`."""
        now = self.server.sim.now
        return (
            format_datetime(now(), usegmt=True)
            if now is not None and timestamp is None
            else super().date_time_string(timestamp)
        )

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_GET(self) -> None:
        self.dispatch("GET")

    def dispatch(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.reply(*self.server.sim.handle(method, self.path.split("?", 1)[0], headers, body))

    def reply(self, status: int, body: Any) -> None:
        raw = isinstance(body, bytes)  # a bulk operation's JSONL, sent as is
        payload = body if raw else orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/jsonl" if raw else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
