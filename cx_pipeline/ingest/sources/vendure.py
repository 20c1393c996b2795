"""Vendure as the source of the catalog (variants) and open orders feeds, through its admin GraphQL API.

A pull reads the variants, and the products, changed since the feed's cursor (`filter: {updatedAt: {after}}`, sorted by
`updatedAt`, paged by the key: see `keyset_pages`), or everything on a first pull, and maps them to the feed's columns;
orders are read the same way, placed orders only. A row read twice in one pull lands once, as read last. The same
landing and contract then judge the rows as any other source's. The server's clock (the `Date` of its answers) is the
batch's `as_of`, so the cursor never passes it. The field mapping, what Vendure cannot provide, and which changes its
`updatedAt` misses are in docs/architecture.md ("Vendure as a source").

Schema followed (Vendure 3 admin API): `productVariants` / `products` / `orders` with `ListOptions` (`skip`, `take`,
`filter`, `sort`); ProductVariant `sku price currencyCode enabled createdAt updatedAt facetValues options product`;
Order `code state orderPlacedAt updatedAt customer lines { id quantity orderPlacedQuantity productVariant { sku } }
fulfillments { state lines { orderLineId quantity } }`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import duckdb
import pandas as pd
import requests

from cx_pipeline.ingest.feeds import Feed
from cx_pipeline.ingest.http import ApiClient, UpstreamError, register_secret
from cx_pipeline.ingest.landing import Batch, ProgressFn, stage

FEEDS = ("catalog", "open_orders")
# Order states in which nothing is left to ship, and the one in which nothing will be.
SHIPPED_STATES = ("Shipped", "PartiallyDelivered", "Delivered")
CANCELLED_STATE = "Cancelled"
# A change landing in the same second as the cursor is re-read rather than missed (`after` is strict, and the
# server's Date header has whole seconds): landing a row again is harmless, it lands as unchanged.
OVERLAP = timedelta(seconds=1)
# The finest step of Vendure's timestamps (JavaScript dates): the first instant after a given one.
TICK = timedelta(milliseconds=1)

LOGIN = """mutation SourceLogin($username: String!, $password: String!) {
  login(username: $username, password: $password) { __typename ... on ErrorResult { errorCode message } }
}"""
VARIANT_FIELDS = """id name sku price currencyCode enabled createdAt updatedAt
  facetValues { code name facet { code } }
  options { code name group { code name } }"""
PRODUCT_FIELDS = "id name enabled createdAt updatedAt facetValues { code name facet { code } }"
VARIANTS = f"""query SourceVariants($options: ProductVariantListOptions) {{
  productVariants(options: $options) {{ totalItems items {{ {VARIANT_FIELDS} product {{ {PRODUCT_FIELDS} }} }} }}
}}"""
PRODUCTS = f"""query SourceProducts($options: ProductListOptions) {{
  products(options: $options) {{ totalItems items {{ {PRODUCT_FIELDS} variants {{ {VARIANT_FIELDS} }} }} }}
}}"""
ORDERS = """query SourceOrders($options: OrderListOptions) {
  orders(options: $options) { totalItems items {
    id code state active orderPlacedAt createdAt updatedAt customer { id }
    lines { id quantity orderPlacedQuantity productVariant { sku } }
    fulfillments { state lines { orderLineId quantity } }
  } }
}"""


@dataclass(frozen=True)
class VendureMapping:
    """Where the feed's columns come from in a Vendure shop that does not have them as fields: the facets whose
    value is the category and the supplier, the stock location orders ship from, and the dispatch promise."""

    category_facet: str = "category"
    supplier_facet: str = "supplier"
    warehouse: str | None = None  # the feed's name of the location orders ship from (Vendure does not say)
    promise: timedelta | None = None  # after the order was placed (Vendure has no promise date)
    # Orders placed this recently are re-read on every pull: fulfilling or shipping an order does not move its
    # `updatedAt` (verified against Vendure 3.7), so a read by change alone would never see it ship.
    order_lookback: timedelta | None = None


class VendureAdmin:
    """Queries against one Vendure admin API (`.../admin-api`) as an administrator: it logs in with username and
    password, sends the bearer token Vendure returns, logs in again when the session has expired, and keeps the
    server's clock from the `Date` header of its answers."""

    def __init__(
        self,
        admin_url: str,
        username: str,
        password: str,
        *,
        name: str = "vendure",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 5,
        backoff_factor: float = 0.5,
    ) -> None:
        register_secret(password)  # first: no message below may quote it
        if not username or not password:
            raise ValueError(f"{name}: a Vendure administrator's username and password are needed")
        self.name, self.admin_url, self.username, self._password = name, admin_url.rstrip("/"), username, password
        self.client = ApiClient(
            self.admin_url,
            None,  # Vendure authenticates with the token its login returns
            name=name,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
            backoff_factor=backoff_factor,
        )
        self.client.session.hooks["response"].append(self._saw)
        self.server_clock: datetime | None = None  # the `Date` of the latest answer: the server's clock
        self._token: str | None = None

    def __repr__(self) -> str:  # never shows the password or token
        return f"VendureAdmin(admin_url={self.admin_url!r}, username={self.username!r})"

    def query(self, operation: str, text: str, variables: dict[str, Any], relogin: bool = True) -> dict[str, Any]:
        """The `data` of one query; GraphQL errors are an UpstreamError quoting their messages."""
        if self._token is None:
            self.login()
        answer = self.client.post_json("", {"query": text, "variables": variables})
        errors = answer.get("errors") if isinstance(answer, dict) else "not a JSON object"
        if errors and relogin and isinstance(errors, list) and any(code(e) == "FORBIDDEN" for e in errors):
            self._token = None  # the session expired or was revoked: one fresh login, then the error stands
            return self.query(operation, text, variables, relogin=False)
        if errors:
            raise UpstreamError(f"{self.name}: {operation} answered GraphQL errors: {str(errors)[:500]}")
        return answer.get("data") or {}

    def login(self) -> None:
        """Log in as the administrator and send the session's bearer token from now on."""
        self.client.session.headers.pop("Authorization", None)
        self._token = None
        credentials = {"username": self.username, "password": self._password}
        answer = self.client.post_json("", {"query": LOGIN, "variables": credentials})
        login = ((answer or {}).get("data") or {}).get("login") if isinstance(answer, dict) else None
        if not isinstance(login, dict):
            raise UpstreamError(
                f"{self.name}: {self.admin_url} answered without a Vendure login result: is this the admin API URL "
                "(ending in /admin-api)?"
            )
        if login.get("__typename") != "CurrentUser":
            raise UpstreamError(
                f"{self.name}: Vendure rejected the username/password of {self.username!r}: "
                f"{login.get('message') or login.get('errorCode')}"
            )
        if not self._token:
            raise UpstreamError(f"{self.name}: Vendure sent no bearer token: enable authOptions.tokenMethod 'bearer'")
        self.client.session.headers["Authorization"] = f"Bearer {self._token}"

    def pages(
        self, operation: str, text: str, options: dict[str, Any], key: str, page_size: int, max_pages: int
    ) -> Iterator[list[dict[str, Any]]]:
        """The items of list `operation` from `options` (sorted by `key` ascending, optionally filtered by `key`
        after a time), a page of `page_size` at a time, paged by `key` (`keyset_pages`)."""

        def fetch(page: dict[str, Any]) -> list[dict[str, Any]]:
            listing = self.query(operation, text, {"options": page}).get(operation)
            if not isinstance(listing, dict) or not isinstance(listing.get("items"), list):
                raise UpstreamError(f"{self.name}: {operation} answered without a list of items: {str(listing)[:200]}")
            return listing["items"]

        return keyset_pages(fetch, options, key, page_size, max_pages, f"{self.name}: {operation}")

    def close(self) -> None:
        self.client.close()

    def _saw(self, response: requests.Response, *args: object, **kwargs: object) -> requests.Response:
        if token := response.headers.get("vendure-auth-token"):
            register_secret(token)
            self._token = token
        # without a usable Date, the landing falls back to the pipeline's clock
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.server_clock = parsedate_to_datetime(response.headers["Date"]).astimezone(UTC)
        return response


def code(error: Any) -> str | None:
    return (error.get("extensions") or {}).get("code") if isinstance(error, dict) else None


def changed_since(since: datetime | None) -> dict[str, Any]:
    """List options of a read by change: updated after `since` (less the overlap), oldest change first."""
    options: dict[str, Any] = {"sort": {"updatedAt": "ASC"}}
    if since is not None:
        after = (since.astimezone(UTC) - OVERLAP).isoformat().replace("+00:00", "Z")
        options["filter"] = {"updatedAt": {"after": after}}
    return options


def stamp(moment: datetime) -> str:
    """A time as Vendure's `DateTime` input (UTC, milliseconds)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def keyset_pages(
    fetch: Callable[[dict[str, Any]], list[dict[str, Any]]],
    options: dict[str, Any],
    key: str,
    page_size: int,
    max_pages: int,
    what: str = "vendure",
) -> Iterator[list[dict[str, Any]]]:
    """Pages of a list sorted by `key` (a timestamp, `updatedAt` or `orderPlacedAt`) ascending, from the list options
    of the first page (`options`: the sort, and the filter `key` after a time or none); `fetch` asks the server for
    one page's options and returns its items. Rows may be read more than once: `latest` keeps the last read.

    Paged by the key, not by `skip`: a row read on one page and changed before the next moves to the end of the
    list, so with skip/take every later row shifts left by one and the row at the page boundary was never read (and
    the cursor, moved past it, would not read it again until it changes). Instead each page asks for the rows after
    the previous page's latest `key` less OVERLAP, with `skip: 0`: the rows sharing the boundary's second (SQLite
    keeps whole seconds, and ties have no order) are read again rather than missed, and a row moving to the end is
    read again there. A short page ends the list.

    A full page whose rows all lie within OVERLAP of the previous boundary would ask for itself again forever. Its
    window (the previous boundary, its latest `key`] is then read whole by id: `key` between the window's ends and
    `id` not among the ids read in it yet, `skip: 0`, until a page is short; then the pages go on after the window.
    Chosen over skip-paging within the window, which has the same shifting defect (and the rows of one second have
    no stable order: Vendure sorts by the given fields only, and GraphQL orders a sort object's fields as the schema
    does, so an id tie-break cannot come second), and over raising `take` for that page, which Vendure refuses
    above `adminListQueryLimit` (1,000 by default): a page full of one second's rows could not always be read so.

    Every pull ends: more than `max_pages` pages is an error."""
    sort = options.get("sort") or {key: "ASC"}
    fixed = {name: value for name, value in (options.get("filter") or {}).items() if name != key}
    start = ((options.get("filter") or {}).get(key) or {}).get("after")
    after = parse_stamp(start) if start else None  # the strict lower bound of the next page's `key`
    window: tuple[datetime, datetime, list[str]] | None = None  # (from, to, ids read) of a window read by id
    for _ in range(max_pages):
        if window is None:
            bound = {key: {"after": stamp(after)}} if after is not None else {}
        else:
            low, high, ids = window
            bound = {key: {"between": {"start": stamp(low), "end": stamp(high)}}, "id": {"notIn": ids}}
        filters = {**fixed, **bound}
        page = {"sort": sort, **({"filter": filters} if filters else {}), "skip": 0, "take": page_size}
        items = fetch(page)
        yield items
        if window is not None:
            window[2].extend(str(item.get("id")) for item in items)
            if len(items) < page_size:  # the window is read whole: on after it
                after, window = window[1], None
            continue
        if len(items) < page_size:
            return  # every row after the boundary is read
        times = [parse_stamp(item[key]) for item in items if item.get(key)]
        if len(times) < len(items):
            raise UpstreamError(f"{what}: a page has items without {key}: cannot page by it")
        latest_time = max(times)
        if after is None or latest_time - OVERLAP > after:
            after = latest_time - OVERLAP
        else:  # the whole page is within OVERLAP of the boundary: read that window by id
            window = (after + TICK, latest_time, [str(item.get("id")) for item in items])
    raise UpstreamError(f"{what} has more than max_pages={max_pages:,} pages in one pull")


def parse_stamp(text: str) -> datetime:
    """Vendure's `DateTime` ("2026-11-01T10:00:04.000Z") as an aware datetime."""
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def latest(pages: Iterable[list[dict[str, Any]]], id_field: str, page_size: int) -> Iterator[list[dict[str, Any]]]:
    """The rows of `pages` once per `id_field`, the one read last (the newest version), in pages of `page_size`:
    paging by `updatedAt` reads a row again when it changes during the pull or shares a page boundary's second.
    Holds the pull's rows (mapped, not the API's items) until the last page is read."""
    rows: dict[Any, dict[str, Any]] = {}
    for page in pages:
        for row in page:
            row_id = row.get(id_field)
            row_id = id(row) if row_id is None else str(row_id)
            rows.pop(row_id, None)  # read again: it goes where it was read last
            rows[row_id] = row
    kept = list(rows.values())
    yield kept[:page_size]
    for first in range(page_size, len(kept), page_size):
        yield kept[first : first + page_size]


def facet(facet_values: list[dict[str, Any]] | None, facet_code: str) -> str | None:
    """The name of the first value of facet `facet_code` (e.g. category: "Shoes")."""
    for value in facet_values or []:
        if ((value.get("facet") or {}).get("code")) == facet_code:
            return value.get("name") or value.get("code")
    return None


def minor_to_decimal(price: Any) -> str | None:
    """Vendure's money (an integer of the currency's minor unit, e.g. 999) as a decimal string ("9.99")."""
    if price is None:
        return None
    return str(Decimal(str(price)) / 100)


def later(*stamps: Any) -> Any:
    """The latest of ISO timestamps (ignoring missing ones)."""
    present = [s for s in stamps if s]
    return max(present, key=pd.Timestamp) if present else None


def catalog_row(variant: dict[str, Any], product: dict[str, Any], mapping: VendureMapping) -> dict[str, Any]:
    """One catalog row for a variant (a SKU is a variant), in the catalog feed's columns.

    A facet of the variant wins over the same facet of its product; a variant is active when both it and its
    product are enabled. A variant's row changes when its product does, so it carries the later `updatedAt`."""
    values = (variant.get("facetValues") or []) + (product.get("facetValues") or [])
    options = {
        str((o.get("group") or {}).get("name") or (o.get("group") or {}).get("code")): o.get("name") or o.get("code")
        for o in variant.get("options") or []
    }
    enabled = bool(variant.get("enabled")) and bool(product.get("enabled", True))
    return {
        "sku": variant.get("sku") or None,  # Vendure accepts an empty SKU: the contract refuses it
        "title": variant.get("name") or product.get("name"),
        "category": facet(values, mapping.category_facet),
        "supplier_id": facet(values, mapping.supplier_facet),
        "price": minor_to_decimal(variant.get("price")),
        "currency": variant.get("currencyCode"),
        "status": "active" if enabled else "inactive",
        "registered_at": variant.get("createdAt"),
        "updated_at": later(variant.get("updatedAt"), product.get("updatedAt")),
        "attributes": options or None,
        "vendure_variant_id": variant.get("id"),  # kept in the row as sent, for people tracing a row
    }


def order_record(order: dict[str, Any], mapping: VendureMapping) -> dict[str, Any]:
    """One placed order as a header with its `lines`, in the open orders feed's columns.

    A line is cancelled when its order is, or when nothing of it is left (quantity 0, keeping what was ordered);
    shipped when its order has shipped or fulfilments (not cancelled ones) cover it; else open."""
    fulfilled: dict[str, int] = {}
    for fulfillment in order.get("fulfillments") or []:
        if fulfillment.get("state") == "Cancelled":
            continue
        for line in fulfillment.get("lines") or []:
            key = str(line.get("orderLineId"))
            fulfilled[key] = fulfilled.get(key, 0) + int(line.get("quantity") or 0)
    placed = order.get("orderPlacedAt")
    promised = (pd.Timestamp(placed) + mapping.promise).isoformat() if placed and mapping.promise else None
    lines = []
    for line_no, line in enumerate(order.get("lines") or [], start=1):
        quantity = line.get("quantity")
        if order.get("state") == CANCELLED_STATE or quantity == 0:
            status, qty = "cancelled", line.get("orderPlacedQuantity") or quantity
        elif order.get("state") in SHIPPED_STATES or fulfilled.get(str(line.get("id")), 0) >= (quantity or 0):
            status, qty = "shipped", quantity
        else:
            status, qty = "open", quantity
        lines.append(
            {
                "line_no": line_no,
                "sku": (line.get("productVariant") or {}).get("sku") or None,
                "warehouse": mapping.warehouse,
                "qty": qty,
                "status": status,
                "promised_at": promised,
            }
        )
    return {
        "order_id": order.get("code"),
        "customer_id": (order.get("customer") or {}).get("id"),
        "ordered_at": placed,
        "updated_at": order.get("updatedAt"),
        "vendure_order_id": order.get("id"),
        "lines": lines,
    }


def variant_pages(
    admin: VendureAdmin, since: datetime | None, mapping: VendureMapping, page_size: int, max_pages: int
) -> Iterator[list[dict[str, Any]]]:
    """Pages of catalog rows: the variants changed since `since`, then every variant of the products changed since
    then (a product's name, facets or enabling changes its variants' rows but not their `updatedAt`)."""
    seen: set[str] = set()
    options = changed_since(since)
    for variants in admin.pages("productVariants", VARIANTS, options, "updatedAt", page_size, max_pages):
        seen.update(str(v.get("id")) for v in variants)
        yield [catalog_row(v, v.get("product") or {}, mapping) for v in variants]
    if since is None:
        return  # a first read has every variant already
    for products in admin.pages("products", PRODUCTS, options, "updatedAt", page_size, max_pages):
        rows = [
            catalog_row(v, p, mapping)
            for p in products
            for v in p.get("variants") or []
            if str(v.get("id")) not in seen
        ]
        seen.update(str(r["vendure_variant_id"]) for r in rows)
        yield rows


def order_pages(
    admin: VendureAdmin, since: datetime | None, mapping: VendureMapping, page_size: int, max_pages: int
) -> Iterator[list[dict[str, Any]]]:
    """Pages of placed orders with their lines changed since `since` (carts and drafts are not orders yet), then
    those placed within the look-back window (whose shipping Vendure's `updatedAt` does not show)."""
    seen: set[str] = set()
    for orders in admin.pages("orders", ORDERS, changed_since(since), "updatedAt", page_size, max_pages):
        seen.update(str(o.get("id")) for o in orders)
        yield [order_record(o, mapping) for o in orders if o.get("orderPlacedAt")]
    if since is None or mapping.order_lookback is None or admin.server_clock is None:
        return
    start = (admin.server_clock - mapping.order_lookback).isoformat().replace("+00:00", "Z")
    recent = {"sort": {"orderPlacedAt": "ASC"}, "filter": {"orderPlacedAt": {"after": start}}}
    for orders in admin.pages("orders", ORDERS, recent, "orderPlacedAt", page_size, max_pages):
        fresh = [o for o in orders if str(o.get("id")) not in seen]
        seen.update(str(o.get("id")) for o in fresh)
        yield [order_record(o, mapping) for o in fresh]


def pull(
    con: duckdb.DuckDBPyConnection,
    admin: VendureAdmin,
    feed: Feed,
    since: datetime | None,
    mapping: VendureMapping,
    page_size: int = 100,
    max_pages: int = 10_000,
    progress: ProgressFn | None = None,
) -> Batch:
    """Stage `feed` (catalog or open_orders) changed since `since` in `landing_<feed>`, with the server's clock as
    the batch's `as_of`."""
    if feed.name not in FEEDS:
        raise ValueError(f"Vendure provides the {' and '.join(FEEDS)} feeds, not {feed.name}")
    read = variant_pages if feed.name == "catalog" else order_pages
    pages = read(admin, since, mapping, page_size, max_pages)
    seen: dict[str, Any] = {"pages": 0, "rows": 0, "clock": None}

    def counted() -> Iterator[list[dict[str, Any]]]:
        for rows in pages:
            # the clock of the first answer: what changes while the pages are read is re-read next time
            seen["clock"] = seen["clock"] or admin.server_clock
            seen["pages"] += 1
            seen["rows"] += len(rows)
            yield rows
            if progress:
                progress(seen["pages"], seen["rows"])

    id_field = "vendure_variant_id" if feed.name == "catalog" else "vendure_order_id"
    batch = stage(con, feed, latest(counted(), id_field, page_size), since)
    return replace(batch, as_of=seen["clock"] or admin.server_clock)
