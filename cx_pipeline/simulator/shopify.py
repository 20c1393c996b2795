"""A local Shopify Admin GraphQL API (contract of version 2026-01, 2026-04 also accepted) for tests and demos.

Served by a stdlib `ThreadingHTTPServer` on 127.0.0.1 at `POST /admin/api/<version>/graphql.json`, with the
`X-Shopify-Access-Token` check, calculated-cost throttling (a leaky bucket reported in `extensions.cost`), and
a shop of product variants, each with one inventory item and an `available` quantity per location.

It is deliberately **not a GraphQL engine**. It recognises the three operations `ShopifyStorefront` sends by
the root field named in the query text, and answers that field with the fixed selection the adapter asks for:

- a query on `shop` (with `location(id: $locationId)`): the connection check;
- a query on `productVariants(first:, after:, query:)`, each node `sku` and `inventoryItem { id
  inventoryLevel(locationId:) { quantities(names: ["available"]) { name quantity } } }`, `pageInfo` cursors;
  `query` understands only `sku:X OR sku:"Y"` terms (exact match);
- the mutation `inventorySetQuantities(input:) @idempotent(key:)` on the `available` quantity, with
  `changeFromQuantity` compare-and-swap (and 2026-01's legacy `compareQuantity`/`ignoreCompareQuantity`).

Any other operation gets a GraphQL error in Shopify's format. Faults: `fail_next` (5xx, optionally after the
mutation was applied, as when an answer is lost) and `throttle_next` (a THROTTLED answer). `answers` and
`adjustment_groups` record what was answered and applied. See docs/simulator.md.
"""

from __future__ import annotations

import base64
import hmac
import re
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import orjson

API_VERSIONS = ("2026-01", "2026-04")
DEFAULT_LOCATION = "gid://shopify/Location/1"
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
MUTATION_COST = 10  # every mutation costs 10 points
NODE_COST = 3  # variant + inventoryItem + inventoryLevel, per connection node
MAX_QUERY_COST = 1000  # single-query limit
MAX_INPUT_ARRAY = 250  # "input arguments that accept an array have a maximum size of 250"
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
_PATH = re.compile(r"^/admin/api/([^/]+)/graphql\.json$")
_IDEMPOTENT = re.compile(r'@idempotent\s*\(\s*key\s*:\s*(?:\$(\w+)|"((?:[^"\\]|\\.)*)")\s*\)')
_SKU_TERM = re.compile(r'sku:(?:"((?:[^"\\]|\\.)*)"|(\S+))')


@dataclass
class Variant:
    sku: str
    item_id: str
    available: dict[str, int]  # location gid -> available quantity; a missing location = not stocked there


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


class GraphQLError(Exception):
    """A top-level `errors` answer (HTTP 200, no data), as Shopify gives for invalid requests."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


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
    `gid://shopify/Location/1`; inventory items are `gid://shopify/InventoryItem/1`... in that order."""

    def __init__(
        self,
        variants: dict[str, int] | None = None,
        *,
        token: str = "shpat_simulator",
        shop_name: str = "cx-demo-shop",
        bucket_size: float = 2000,
        restore_rate: float = 100,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token, self.shop_name, self.host, self.port = token, shop_name, host, port
        self.locations = {DEFAULT_LOCATION: "Main warehouse"}
        self.variants = [
            Variant(sku, f"gid://shopify/InventoryItem/{n}", {DEFAULT_LOCATION: qty})
            for n, (sku, qty) in enumerate((variants or {}).items(), start=1)
        ]
        self.bucket = Bucket(bucket_size, restore_rate)
        self.answers: list[Answer] = []
        self.requests: Counter[str] = Counter()
        self.adjustment_groups: list[dict[str, Any]] = []
        self._replays: dict[str, tuple[bytes, dict[str, Any]]] = {}  # idempotency key -> (parameters, payload)
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()  # one request at a time touches the shop, the bucket and the records
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

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

    def __repr__(self) -> str:  # never shows the token
        return f"ShopifySimulator(url={self.url if self._server else None!r}, variants={len(self.variants)})"

    # -- test hooks --------------------------------------------------------------------------------------

    def available(self, sku: str, location: str = DEFAULT_LOCATION) -> int | None:
        return self._by_sku(sku).available.get(location)

    def set_available(self, sku: str, quantity: int, location: str = DEFAULT_LOCATION) -> None:
        """Change a quantity behind the client's back (a sale, a merchant's edit)."""
        with self._lock:
            self._by_sku(sku).available[location] = quantity

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

    def _by_sku(self, sku: str) -> Variant:
        return next(v for v in self.variants if v.sku == sku)

    # -- request handling --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """Answer one HTTP request: (status, JSON body)."""
        with self._lock:
            match = _PATH.match(path)
            if method != "POST" or match is None or match.group(1) not in API_VERSIONS:
                return self._record("-", 404, {"errors": "Not Found"})
            given = headers.get("x-shopify-access-token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
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
            except GraphQLError:
                self.bucket.give(requested)  # a request refused before execution costs nothing
                raise
            self.bucket.give(requested - actual)  # the difference to the actual cost is refunded
        except GraphQLError as exc:
            return self._record(operation, 200, {"errors": [{"message": str(exc), "extensions": {"code": exc.code}}]})
        cost = {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": self.bucket.status()}
        return self._record(operation, 200, {"data": data, "extensions": {"cost": cost}})

    def _resolve(self, operation: str, query: str, variables: dict[str, Any], version: str) -> tuple[Any, int]:
        if operation == "shop":
            location_id = variables.get("locationId")
            location = (
                {"id": location_id, "name": self.locations[location_id], "isActive": True}
                if location_id in self.locations
                else None
            )
            return {"shop": {"name": self.shop_name}, "location": location}, 2
        if operation == "productVariants":
            return self._variants(variables)
        if operation == "inventorySetQuantities":
            return {"inventorySetQuantities": self._set_quantities(query, variables, version)}, MUTATION_COST
        raise GraphQLError(
            "This Shopify simulator answers only the shop/location check, productVariants and "
            "inventorySetQuantities operations of ShopifyStorefront.",
            "undefinedField",
        )

    def _variants(self, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
        first, after, location_id = variables.get("first"), variables.get("after"), variables.get("locationId")
        if not isinstance(first, int) or first < 1:
            raise GraphQLError("Variable $first of type Int! was provided invalid value", "INVALID_VARIABLE")
        matching = self.variants
        if variables.get("query"):
            terms = _SKU_TERM.findall(variables["query"])
            if not terms:
                raise GraphQLError("This simulator's productVariants query understands only sku: terms", "BAD_QUERY")
            wanted = {quoted.replace('\\"', '"') or bare for quoted, bare in terms}
            matching = [v for v in self.variants if v.sku in wanted]
        start = _decode_cursor(after) if after else 0
        page = matching[start : start + first]
        nodes = [
            {
                "sku": v.sku,
                "inventoryItem": {
                    "id": v.item_id,
                    "inventoryLevel": (
                        {"quantities": [{"name": "available", "quantity": v.available[location_id]}]}
                        if location_id in v.available
                        else None
                    ),
                },
            }
            for v in page
        ]
        end = start + len(page)
        page_info = {"hasNextPage": end < len(matching), "endCursor": _encode_cursor(end) if page else None}
        return {"productVariants": {"nodes": nodes, "pageInfo": page_info}}, 2 + NODE_COST * len(page)

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
        self.answers.append(Answer(operation, status, code))
        return status, body


def _operation(query: str) -> str:
    """The root field the query is about: enough to tell the adapter's three operations apart."""
    if re.match(r"\s*mutation\b", query):
        return "inventorySetQuantities" if re.search(r"\binventorySetQuantities\s*\(", query) else "mutation"
    if re.search(r"\bproductVariants\s*\(", query):
        return "productVariants"
    return "shop" if re.search(r"\bshop\s*\{", query) else "query"


def _requested_cost(operation: str, variables: dict[str, Any]) -> int:
    if operation == "inventorySetQuantities":
        return MUTATION_COST
    if operation == "productVariants":
        first = variables.get("first")
        return 2 + NODE_COST * (first if isinstance(first, int) and first > 0 else 0)
    return 2


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

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_GET(self) -> None:
        self.dispatch("GET")

    def dispatch(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.reply(*self.server.sim.handle(method, self.path.split("?", 1)[0], headers, body))

    def reply(self, status: int, body: Any) -> None:
        payload = orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
