"""The Shopify storefront, through the Admin GraphQL API: variants' `available` quantity per location, set with
`inventorySetQuantities` (compare-and-swap on `changeFromQuantity`, `@idempotent` key), read back as a customer
sees it (`availableForSale`, `sellableOnlineQuantity`), paced by the calculated-cost leaky bucket that Shopify
reports in `extensions.cost`. Authenticates with a static Admin API token or, for Dev Dashboard apps, with
24-hour tokens from the client-credentials grant.

Contract followed (API version 2026-01; the same documents are valid on 2026-04, where `changeFromQuantity` and
`@idempotent` become mandatory): https://shopify.dev/docs/api/admin-graphql/2026-01/mutations/inventorySetQuantities,
https://shopify.dev/changelog/concurrency-protection-features, https://shopify.dev/docs/api/usage/rate-limits,
https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/client-credentials-grant,
https://shopify.dev/docs/api/usage/access-scopes. docs/architecture.md has the design and its decisions.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import orjson
import pandas as pd
import requests

from cx_pipeline.ingest.http import ApiClient, UpstreamError, register_secret
from cx_pipeline.storefront.adapters.base import (
    STATE_COLUMNS,
    STOCK_STATUSES,
    StockUpdate,
    StorefrontAdapter,
    StorefrontConfigError,
    WriteResult,
)

log = logging.getLogger(__name__)

API_VERSION = "2026-01"
MAX_BATCH = 250  # Shopify's limit on any input array (`quantities`, `ids`) and on a connection's `first`
MAX_QUERY_COST = 1000  # Shopify's single-query limit
VARIANT_COST, LEVEL_COST = 4, 3  # calculated cost per variant node, and per inventory level it may return
REQUIRED_SCOPES = ("read_products", "read_inventory", "write_inventory")
LOCATIONS_SCOPE = "read_locations"  # to list the shop's locations and resolve mapped names
TOKEN_REFRESH_MARGIN = 300.0  # seconds before expiry a client-credentials token is replaced
SAMPLE = 5  # SKUs quoted in a warning
STALE = "storefront changed since it was read (compare quantity stale)"
STALE_CODES = frozenset({"CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"})
CONTINUE_HELP = (
    'Shopify keeps selling it: its inventoryPolicy is CONTINUE ("Continue selling when out of stock"), which the '
    "pipeline never changes; turn that setting off for this variant in Shopify admin"
)
UNTRACKED_HELP = (
    "Shopify does not track this variant's inventory (InventoryItem.tracked is false), so it sells it whatever the "
    'quantity, and nothing was written: turn on "Track quantity" for it in Shopify admin, or set enable_tracking to '
    "let the pipeline turn it on"
)
_KEY_NAMESPACE = uuid.UUID("5b0c9e55-64a4-4f4e-9d35-3c1d1f0a7c21")  # idempotency keys are UUIDs, as Shopify advises

CHECK = """query StorefrontCheck {
  shop { name }
  currentAppInstallation { accessScopes { handle } }
}"""
LOCATION = """query StorefrontLocation($id: ID!) {
  location(id: $id) { id name isActive fulfillsOnlineOrders }
}"""
LOCATIONS = """query StorefrontLocations($first: Int!, $after: String, $includeInactive: Boolean) {
  locations(first: $first, after: $after, includeInactive: $includeInactive) {
    nodes { id name isActive fulfillsOnlineOrders }
    pageInfo { hasNextPage endCursor }
  }
}"""
VARIANT_FIELDS = """id sku availableForSale inventoryPolicy sellableOnlineQuantity
      inventoryItem {
        id tracked
        inventoryLevels(first: $levels) {
          nodes {
            location { id name isActive fulfillsOnlineOrders }
            quantities(names: ["available"]) { name quantity }
          }
          pageInfo { hasNextPage }
        }
      }"""
VARIANTS = f"""query StorefrontVariants($first: Int!, $after: String, $query: String, $levels: Int!) {{
  productVariants(first: $first, after: $after, query: $query) {{
    nodes {{
      {VARIANT_FIELDS}
    }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""
READ_BACK = f"""query StorefrontReadBack($ids: [ID!]!, $levels: Int!) {{
  nodes(ids: $ids) {{
    ... on ProductVariant {{
      {VARIANT_FIELDS}
    }}
  }}
}}"""
SET_QUANTITIES = """mutation StorefrontSetQuantities($input: InventorySetQuantitiesInput!, $idempotencyKey: String!) {
  inventorySetQuantities(input: $input) @idempotent(key: $idempotencyKey) {
    inventoryAdjustmentGroup {
      id
      changes(quantityNames: ["available"]) { name delta quantityAfterChange item { id } location { id } }
    }
    userErrors { field message code }
  }
}"""
TRACK = """mutation StorefrontTrackInventory($id: ID!, $input: InventoryItemInput!) {
  inventoryItemUpdate(id: $id, input: $input) {
    inventoryItem { id tracked }
    userErrors { field message }
  }
}"""


@dataclass
class _Level:
    available: int
    name: str
    sells_online: bool  # an active location that fulfils online orders: customers can buy its units online


@dataclass
class _Variant:
    """One variant as last read: what a customer sees, and the `available` quantity at each location."""

    variant_id: str
    item_id: str
    tracked: bool
    policy: str
    for_sale: bool  # availableForSale
    sellable: int  # sellableOnlineQuantity
    levels: dict[str, _Level]  # location id -> level, where the item is stocked

    @property
    def status(self) -> str:
        return "in_stock" if self.for_sale else "out_of_stock"


class ShopifyStorefront(StorefrontAdapter):
    """Shopify locations as the storefront. `read` pages every variant with a SKU stocked at a configured location
    and reports what a customer sees; `write` sets `available` at each configured location to its share of the
    pushed quantity, compared-and-swapped against the quantities last read (a concurrent change is reported, never
    overwritten), then reads every SKU of the batch back. Idempotency keys derive from `key` and the batch's
    content: the same mutation under the same key is applied once, however often it is sent.

    Locations: `locations` maps the pipeline's warehouses to Shopify locations (id or name); without it the single
    `location_id` gets the whole quantity. `zero_unmapped_locations` sets to 0 the units a written SKU has at any
    other location that sells online; otherwise those are reported. `enable_tracking` turns inventory tracking on
    for an untracked item before writing it. Credentials: `access_token`, or `client_id` + `client_secret` for
    the client-credentials grant (`clock` decides when its token is due for renewal)."""

    name = "shopify"
    writes_per_location = True

    def __init__(
        self,
        shop_url: str,
        access_token: str = "",
        location_id: str = "",
        *,
        locations: Mapping[str, str] | None = None,
        zero_unmapped_locations: bool = False,
        enable_tracking: bool = False,
        client_id: str = "",
        client_secret: str = "",
        clock: Callable[[], float] = time.monotonic,
        token_refresh_margin: float = TOKEN_REFRESH_MARGIN,
        max_locations: int = 10,
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
        register_secret(client_secret)  # first: no message below may quote either
        register_secret(access_token)
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"shopify: batch_size must be 1..{MAX_BATCH}, got {batch_size}")
        per_variant = VARIANT_COST + LEVEL_COST * max_locations
        if not 1 <= max_locations <= MAX_BATCH or 2 + per_variant > MAX_QUERY_COST:
            raise ValueError(f"shopify: max_locations must be 1..{(MAX_QUERY_COST - 2 - VARIANT_COST) // LEVEL_COST}")
        if access_token and (client_id or client_secret):
            raise StorefrontConfigError("Shopify: configure an access token or a client_id + client_secret, not both")
        if not access_token and not (client_id and client_secret):
            raise StorefrontConfigError(
                "Shopify: no credentials: set an Admin API access token, or the app's client_id and client_secret "
                "(client-credentials grant, for apps made in the Dev Dashboard)"
            )
        if not location_id and not locations:
            raise StorefrontConfigError(
                "Shopify: no location: set location_id, or `locations` mapping the pipeline's warehouses to "
                "Shopify locations"
            )
        shop_url = shop_url.strip().rstrip("/")
        if "://" not in shop_url:
            shop_url = f"https://{shop_url}"  # "my-shop.myshopify.com" is how merchants write it
        self.shop_url, self.api_version = shop_url, api_version
        # location_id is an id, as before mappings existed ("7" or its gid); mapped locations may be names too.
        self.location_id = (
            "" if not location_id else _location_gid(location_id) or f"gid://shopify/Location/{location_id}"
        )
        self.locations = dict(locations or {})
        self.zero_unmapped_locations, self.enable_tracking = zero_unmapped_locations, enable_tracking
        self.max_locations, self.batch_size = max_locations, batch_size
        # A page may not cost more than Shopify's single-query limit: each variant asks for max_locations levels.
        self.page_size = max(1, min(page_size, MAX_BATCH, (MAX_QUERY_COST - 2) // per_variant))
        self.throttle_attempts, self.reason = throttle_attempts, reason
        self.client_id, self._client_secret = client_id, client_secret
        self.clock, self.token_refresh_margin = clock, token_refresh_margin
        try:
            self.client = ApiClient(
                shop_url,
                None,  # Shopify authenticates with its own header, set below or by the grant
                name="shopify",
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries=retries,
                backoff_factor=backoff_factor,
            )
        except ValueError as exc:
            raise StorefrontConfigError(str(exc)) from exc
        if access_token:
            self.client.session.headers["X-Shopify-Access-Token"] = access_token
        self.client.session.hooks["response"].append(self._note_status)  # a 401 means: renew the token
        self.path = f"/admin/api/{api_version}/graphql.json"
        self.waits: list[float] = []  # seconds slept for the rate limit, for logs and tests
        self.tokens_obtained = 0  # client-credentials tokens this adapter asked for
        self._bucket: tuple[float, float, float, float] | None = None  # available, maximum, restore rate, seen at
        self._costs: dict[tuple[str, float], float] = {}
        self._status: int | None = None
        self._token_expires: float | None = None
        self._items: dict[str, _Variant] = {}  # sku -> the variant as last read or written
        self._covered: list[str] = []  # location ids the pipeline sets, the default (whole quantity) first
        self._warehouse_locations: dict[str, str] = {}  # warehouse -> location id
        self._read_warnings: list[str] = []
        self._noted: set[tuple[str, str | None]] = set()
        self._checked = False

    def __repr__(self) -> str:  # never shows the token nor the client secret
        where = self.locations or self.location_id
        return f"ShopifyStorefront(shop_url={self.shop_url!r}, locations={where!r})"

    # -- the adapter interface ---------------------------------------------------------------------------

    def check(self) -> None:
        where = f"Shopify shop {self.shop_url} (API {self.api_version})"
        try:
            data = self._call("check", CHECK, {}, cost=2)
            installation = data.get("currentAppInstallation") or {}
            self._check_scopes(where, {s.get("handle") for s in installation.get("accessScopes") or []})
            self._resolve_locations(where)
        except UpstreamError as exc:
            raise StorefrontConfigError(f"{where} is not usable: {exc}") from exc
        log.info("shopify: shop %r, locations %s", (data.get("shop") or {}).get("name"), ", ".join(self._covered))
        self._checked = True

    def read(self) -> pd.DataFrame:
        if not self._checked:
            self.check()
        found, elsewhere = self._lookup(None)
        self._items = found
        for old in self._read_warnings:  # a second read replaces what the first one found
            if old in self.warnings:
                self.warnings.remove(old)
        self._read_warnings = self._findings(found, elsewhere)
        self.warnings.extend(self._read_warnings)
        for warning in self._read_warnings:
            log.warning("shopify: %s", warning)
        rows = [{"sku": sku, "status": v.status, "quantity": v.sellable} for sku, v in found.items()]
        return pd.DataFrame(rows, columns=list(STATE_COLUMNS))

    def write(self, updates: Sequence[StockUpdate], key: str) -> list[WriteResult]:
        if not self._checked:
            self.check()
        missing = [u.sku for u in updates if u.sku not in self._items]
        elsewhere: dict[str, _Variant] = {}
        if missing:
            found, elsewhere = self._lookup(missing)
            self._items.update(found)
        results: dict[int, WriteResult] = {}
        plans: dict[int, dict[str, int]] = {}  # index in updates -> location id -> quantity to set
        for i, u in enumerate(updates):
            target = 0 if u.status == "out_of_stock" else u.quantity
            item = self._items.get(u.sku)
            if u.status not in STOCK_STATUSES or target < 0 or (u.status == "in_stock" and target == 0):
                results[i] = WriteResult(u.sku, False, f"invalid update: status {u.status!r}, quantity {u.quantity}")
            elif item is None and u.sku in elsewhere:
                where = ", ".join(self._covered)
                results[i] = WriteResult(
                    u.sku, False, f"not stocked at any configured location ({where}): stock it there"
                )
            elif item is None:
                results[i] = WriteResult(u.sku, False, "unknown SKU: Shopify has no variant with this SKU")
            elif not item.tracked and not self.enable_tracking:
                results[i] = WriteResult(u.sku, False, UNTRACKED_HELP)
            else:
                plan = self._allocate(u, item, target)
                moved = any(item.levels[loc].available != qty for loc, qty in plan.items())
                # The plan saw another total than this adapter did: the shop changed in between. Unless it already
                # shows the target (a replayed batch), leave it for the next run's read and plan.
                if moved and u.before_quantity is not None and u.before_quantity != item.sellable:
                    results[i] = WriteResult(u.sku, False, STALE)
                elif moved or not item.tracked:  # an untracked item is tracked (enable_tracking) even if no unit moves
                    plans[i] = plan
        self._track([i for i in plans if not self._items[updates[i].sku].tracked], updates, plans, results)
        self._send(plans, updates, key, results)
        seen = self._read_back([u.sku for u in updates if u.sku in self._items])
        answers = []
        for i, u in enumerate(updates):
            now = seen.get(u.sku)
            if i in results:  # refused: keep why, and say what a customer sees instead
                after = (now.status, now.sellable) if now else (None, None)
                answers.append(replace(results[i], status_after=after[0], quantity_after=after[1]))
            else:
                answers.append(self._verdict(u, now))
        return answers

    def close(self) -> None:
        self.client.close()

    # -- check -------------------------------------------------------------------------------------------

    def _check_scopes(self, where: str, granted: set[str]) -> None:
        """Before any write: the app holds every scope the adapter uses (Shopify: write_X includes read_X, and
        accessScopes lists only what was granted)."""
        needed = [*REQUIRED_SCOPES, *([LOCATIONS_SCOPE] if self.locations else [])]
        held = granted | {f"read_{s[6:]}" for s in granted if s.startswith("write_")}
        missing = [s for s in needed if s not in held]
        if missing:
            raise StorefrontConfigError(
                f"{where}: the app lacks the access scopes {', '.join(missing)} (granted: "
                f"{', '.join(sorted(granted)) or 'none'}). Add them to the app's Admin API access scopes (Dev "
                "Dashboard > the app > Versions, or `scopes` in shopify.app.toml), release that version and approve "
                "it on the shop; nothing was written"
            )

    def _resolve_locations(self, where: str) -> None:
        """Location ids for `location_id` and every mapped warehouse: each must exist and be active."""
        known = self._all_locations() if self.locations else []
        specs = [("location_id", self.location_id)] if self.location_id else []
        specs += [(f"warehouse {wh}", spec) for wh, spec in self.locations.items()]
        resolved: dict[str, dict[str, Any]] = {}
        for label, spec in specs:
            location = self._find_location(where, label, spec, known)
            name = f"{location.get('name')!r} ({location['id']})"
            if location.get("isActive") is False:
                raise StorefrontConfigError(f"{where}: location {name}, configured as {label}, is inactive")
            if location.get("fulfillsOnlineOrders") is False:
                self._warn(
                    f"Shopify location {name}, configured as {label}, does not fulfil online orders: customers "
                    "cannot buy the units written there online"
                )
            resolved[label] = location
        self._warehouse_locations = {wh: resolved[f"warehouse {wh}"]["id"] for wh in self.locations}
        default = resolved["location_id"]["id"] if self.location_id else next(iter(self._warehouse_locations.values()))
        self._covered = list(dict.fromkeys([default, *self._warehouse_locations.values()]))

    def _find_location(self, where: str, label: str, spec: str, known: list[dict[str, Any]]) -> dict[str, Any]:
        gid = _location_gid(spec)
        if not known:  # only location_id: ask for it alone, which read_inventory allows
            location = self._call("location", LOCATION, {"id": gid or spec}, cost=2).get("location")
            if not location:
                raise StorefrontConfigError(f"{where}: no location {spec} ({label}); check the configured location id")
            return location
        matches = [c for c in known if (c["id"] == gid if gid else c.get("name", "").casefold() == spec.casefold())]
        if len(matches) == 1:
            return matches[0]
        listed = ", ".join(f"{c.get('name')!r} ({c['id']})" for c in known[:20])
        why = "several locations have that name: use its id" if matches else f"the shop's locations are: {listed}"
        raise StorefrontConfigError(f"{where}: no single location {spec!r} for {label}; {why}")

    def _all_locations(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after = None
        while True:
            variables = {"first": MAX_BATCH, "after": after, "includeInactive": True}  # to say "inactive"
            page = self._call("locations", LOCATIONS, variables, cost=2 + MAX_BATCH)
            found += page["locations"]["nodes"]
            if not page["locations"]["pageInfo"]["hasNextPage"]:
                return found
            after = page["locations"]["pageInfo"]["endCursor"]

    # -- read --------------------------------------------------------------------------------------------

    def _findings(self, found: dict[str, _Variant], elsewhere: dict[str, _Variant]) -> list[str]:
        """What a person should know about the shop as read: items that sell whatever their stock, units at
        locations the pipeline does not set, SKUs it cannot set at all."""
        findings = []
        policy = sorted(s for s, v in found.items() if v.tracked and v.policy == "CONTINUE")
        untracked = sorted(s for s, v in found.items() if not v.tracked)
        if policy or untracked:
            kinds = []
            if policy:
                kinds.append(
                    f"{len(policy)} sell when out of stock (inventoryPolicy CONTINUE{_sample(policy)}), which the "
                    'pipeline never changes: turn off "Continue selling when out of stock" for them in Shopify admin'
                )
            if untracked:
                fix = (
                    "enable_tracking is on, so the pipeline turns tracking on when it writes them"
                    if self.enable_tracking
                    else 'turn on "Track quantity" for them in Shopify admin, or set enable_tracking'
                )
                kinds.append(f"{len(untracked)} have untracked inventory (tracked false{_sample(untracked)}): {fix}")
            findings.append(
                f"{len(policy) + len(untracked)} SKUs are always for sale on Shopify whatever their stock, so they "
                f"read as in stock and a push out of stock fails: {'; '.join(kinds)}"
            )
        stray: dict[str, list[str]] = {}  # location -> SKUs with units customers can buy there
        for sku, v in found.items():
            for loc, level in v.levels.items():
                if loc not in self._covered and level.sells_online and level.available > 0:
                    stray.setdefault(f"{level.name!r} ({loc})", []).append(sku)
        if stray:
            skus = sorted({s for listed in stray.values() for s in listed})
            places = ", ".join(f"{where}: {len(listed)} SKUs" for where, listed in stray.items())
            fix = (
                "they are set to 0 when those SKUs are written (zero_unmapped_locations)"
                if self.zero_unmapped_locations
                else "map those locations in `locations`, or set zero_unmapped_locations to zero them when the SKUs "
                "are written; until then a write of such a SKU reads back more units than were pushed"
            )
            findings.append(
                f"{len(skus)} SKUs have units customers can buy at Shopify locations the pipeline does not set "
                f"({places}{_sample(skus)}): {fix}"
            )
        selling = sorted(s for s, v in elsewhere.items() if v.for_sale)
        if selling:
            findings.append(
                f"{len(selling)} SKUs sell on Shopify but are stocked at none of the configured locations"
                f"{_sample(selling)}, so the pipeline cannot set them: stock them at a configured location"
            )
        if len(elsewhere) > len(selling):
            log.info("shopify: %d variants are stocked at none of %s", len(elsewhere) - len(selling), self._covered)
        return findings

    def _lookup(self, skus: list[str] | None) -> tuple[dict[str, _Variant], dict[str, _Variant]]:
        """(variants stocked at a configured location, variants stocked at none) by SKU, for the given SKUs or
        for every variant with a SKU."""
        query = " OR ".join('sku:"{}"'.format(s.replace('"', '\\"')) for s in skus) if skus else None
        wanted = set(skus) if skus else None
        found: dict[str, _Variant] = {}
        elsewhere: dict[str, _Variant] = {}
        for node in self._variant_nodes(query, min(self.page_size, len(skus)) if skus else self.page_size):
            sku = node.get("sku")
            if not sku or (wanted is not None and sku not in wanted):  # the search may match more than exact SKUs
                continue
            if sku in found or sku in elsewhere:
                log.warning("shopify: SKU %r is on several variants; using the first", sku)
                continue
            variant = self._parse(sku, node)
            (found if any(loc in variant.levels for loc in self._covered) else elsewhere)[sku] = variant
        return found, elsewhere

    def _variant_nodes(self, query: str | None, first: int) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            variables = {"first": first, "after": after, "query": query, "levels": self.max_locations}
            page = self._call("variants", VARIANTS, variables, cost=2 + first * self._per_variant)["productVariants"]
            yield from page["nodes"]
            if not page["pageInfo"]["hasNextPage"]:
                return
            after = page["pageInfo"]["endCursor"]

    def _read_back(self, skus: list[str]) -> dict[str, _Variant]:
        """What a customer sees now, by SKU, read by variant id (not through search, which may lag)."""
        ids = {self._items[s].variant_id: s for s in skus}
        seen: dict[str, _Variant] = {}
        chunks = [list(ids)[i : i + self.page_size] for i in range(0, len(ids), self.page_size)]
        for chunk in chunks:
            variables = {"ids": chunk, "levels": self.max_locations}
            nodes = self._call("read back", READ_BACK, variables, cost=len(chunk) * self._per_variant)["nodes"]
            for variant_id, node in zip(chunk, nodes, strict=True):
                if node:  # null: the variant was deleted meanwhile
                    seen[ids[variant_id]] = self._items[ids[variant_id]] = self._parse(ids[variant_id], node)
        return seen

    def _parse(self, sku: str, node: dict[str, Any]) -> _Variant:
        item = node.get("inventoryItem") or {}
        connection = item.get("inventoryLevels") or {}
        if (connection.get("pageInfo") or {}).get("hasNextPage"):
            raise UpstreamError(
                f"shopify: SKU {sku!r} is stocked at more than max_locations={self.max_locations} locations; raise "
                "max_locations so that every location's units are seen"
            )
        levels = {}
        for level in connection.get("nodes") or []:
            where = level.get("location") or {}
            qty = next((q["quantity"] for q in level.get("quantities") or [] if q.get("name") == "available"), 0)
            online = where.get("isActive") is not False and where.get("fulfillsOnlineOrders") is not False
            levels[where["id"]] = _Level(int(qty), str(where.get("name")), online)
        return _Variant(
            variant_id=node["id"],
            item_id=item["id"],
            tracked=item.get("tracked") is not False,
            policy=str(node.get("inventoryPolicy") or "DENY"),
            for_sale=bool(node.get("availableForSale")),
            sellable=int(node.get("sellableOnlineQuantity") or 0),
            levels=levels,
        )

    @property
    def _per_variant(self) -> int:
        return VARIANT_COST + LEVEL_COST * self.max_locations

    # -- write -------------------------------------------------------------------------------------------

    def _allocate(self, u: StockUpdate, item: _Variant, target: int) -> dict[str, int]:
        """The quantity to set at each configured location the item is stocked at: each warehouse's share at its
        location; with no split (or one that does not add up to the quantity) all of it at the default location.
        And 0 at the other locations that sell online, if so configured."""
        stocked = [loc for loc in self._covered if loc in item.levels]
        plan = dict.fromkeys(stocked, 0)
        home = stocked[0]  # the default location when the item is stocked there
        if target and u.by_warehouse and sum(u.by_warehouse.values()) == target:
            for warehouse, units in u.by_warehouse.items():
                loc = self._warehouse_locations.get(warehouse)
                if loc not in plan:
                    self._note_rehomed(warehouse, loc, home, u.sku)
                    loc = home
                plan[loc] += units
        elif target:
            plan[home] = target
        if self.zero_unmapped_locations:
            for loc, level in item.levels.items():
                if loc not in plan and level.sells_online and level.available > 0:
                    plan[loc] = 0
        return plan

    def _note_rehomed(self, warehouse: str, loc: str | None, home: str, sku: str) -> None:
        if not self.locations or (warehouse, loc) in self._noted:  # without a mapping this is the design
            return
        self._noted.add((warehouse, loc))
        why = f"is not stocked at {loc}" if loc else f"has no Shopify location for warehouse {warehouse}"
        self._warn(
            f"SKU {sku} (and maybe others) {why}: warehouse {warehouse}'s units are written to {home} instead; "
            "map the warehouse in `locations` and stock the item there in Shopify admin"
        )

    def _track(
        self, indexes: list[int], updates: Sequence[StockUpdate], plans: dict[int, Any], results: dict[int, Any]
    ) -> None:
        """Turn inventory tracking on (enable_tracking) for untracked items about to be written."""
        for i in indexes:
            item = self._items[updates[i].sku]
            answer = (
                self._call("track", TRACK, {"id": item.item_id, "input": {"tracked": True}}, cost=10).get(
                    "inventoryItemUpdate"
                )
                or {}
            )
            errors = answer.get("userErrors") or []
            if errors or not (answer.get("inventoryItem") or {}).get("tracked"):
                messages = "; ".join(str(e.get("message")) for e in errors) or "tracking stayed off"
                results[i] = WriteResult(updates[i].sku, False, f"could not turn on inventory tracking: {messages}")
                plans.pop(i)
                continue
            item.tracked = True
            log.info("shopify: turned on inventory tracking for SKU %s (enable_tracking)", updates[i].sku)

    def _send(
        self, plans: dict[int, dict[str, int]], updates: Sequence[StockUpdate], key: str, results: dict[int, Any]
    ) -> None:
        """Set every planned quantity. A user error rejects the whole mutation (no adjustment group): the SKUs it
        names are refused, the rest sent again. Should Shopify apply the rest anyway (a group and errors), those
        are simply done."""
        pending = []  # (index in updates, quantity input)
        for i, plan in plans.items():
            item = self._items[updates[i].sku]
            for loc, qty in plan.items():
                quantity = {"inventoryItemId": item.item_id, "locationId": loc, "quantity": qty}
                pending.append((i, {**quantity, "changeFromQuantity": item.levels[loc].available}))
        while pending:
            group, errors = self._set_quantities([q for _, q in pending], key)
            refused: dict[int, str] = {}
            for position, message in _rejections(errors, len(pending)).items():
                refused.setdefault(pending[position][0], message)
            for i, message in refused.items():
                results[i] = WriteResult(updates[i].sku, False, message)
            if group is not None or not refused:
                return
            pending = [p for p in pending if p[0] not in refused]  # a SKU is written whole or not at all

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
            # Same key + same content = same UUID: a retried request is replayed by Shopify, not applied twice.
            "idempotencyKey": str(uuid.uuid5(_KEY_NAMESPACE, f"{key}\n{content}")),
        }
        data = self._call("set", SET_QUANTITIES, variables, cost=10)
        payload = data.get("inventorySetQuantities") or {}
        errors = payload.get("userErrors") or []
        group = payload.get("inventoryAdjustmentGroup")
        if group is None and not errors:
            raise UpstreamError(f"shopify: inventorySetQuantities answered neither a result nor errors: {payload}")
        return group, errors

    def _verdict(self, u: StockUpdate, now: _Variant | None) -> WriteResult:
        """The write counts when the shop, as a customer sees it, shows what was pushed; else say why not."""
        target = 0 if u.status == "out_of_stock" else u.quantity
        if now is None:
            return WriteResult(u.sku, False, "the variant was deleted from Shopify while it was written")
        if (now.status, now.sellable) == (u.status, target):
            return WriteResult(u.sku, True, "ok", now.status, now.sellable)
        reasons = []
        if u.status == "out_of_stock" and now.for_sale and now.policy == "CONTINUE":
            reasons.append(CONTINUE_HELP)
        stray = [
            f"{level.available} at {level.name!r} ({loc})"
            for loc, level in now.levels.items()
            if loc not in self._covered and level.sells_online and level.available > 0
        ]
        if stray:
            reasons.append(
                f"customers can also buy units at locations the pipeline does not set ({', '.join(stray)}): map "
                "them in `locations`, or set zero_unmapped_locations"
            )
        offline = [
            f"{level.name!r} ({loc})"
            for loc, level in now.levels.items()
            if loc in self._covered and not level.sells_online and level.available > 0
        ]
        if offline:
            reasons.append(f"{', '.join(offline)} does not sell online (inactive, or not fulfilling online orders)")
        why = f": {'; '.join(reasons)}" if reasons else ""
        shown = f"the shop shows {now.status}/{now.sellable} after the write, not {u.status}/{target}{why}"
        return WriteResult(u.sku, False, shown, now.status, now.sellable)

    # -- GraphQL plumbing and tokens ---------------------------------------------------------------------

    def _call(self, operation: str, query: str, variables: dict[str, Any], cost: float) -> dict[str, Any]:
        """POST one operation, pacing it by the cost bucket; retry THROTTLED answers, renew an expired
        client-credentials token once, fail on other `errors`."""
        throttled, renewed = 0, False
        while True:
            self._ensure_token()
            self._pace(self._costs.get((operation, cost), cost))
            self._status = None
            try:
                answer = self.client.post_json(self.path, {"query": query, "variables": variables})
            except UpstreamError:
                if self._status == 401 and self.client_id and not renewed:
                    log.info("shopify: %s: the access token was refused (expired or revoked); renewing it", operation)
                    renewed = True
                    self._fetch_token()
                    continue
                raise
            spent = (answer.get("extensions") or {}).get("cost") or {}
            self._note(spent)
            if spent.get("requestedQueryCost") is not None:
                self._costs[(operation, cost)] = float(spent["requestedQueryCost"])
            errors = answer.get("errors")
            if not errors:
                return answer.get("data") or {}
            if not _throttled(errors):
                raise UpstreamError(f"shopify: {operation} answered GraphQL errors: {_messages(errors)}")
            throttled += 1
            if throttled >= self.throttle_attempts:
                raise UpstreamError(f"shopify: {operation} still throttled after {self.throttle_attempts} attempts")
            log.info("shopify: %s throttled (%s)", operation, spent.get("throttleStatus"))
            # The docs: wait until the bucket has restored enough for the requested cost, then retry.
            self._pace(self._costs.get((operation, cost), cost), minimum=1.0)

    def _note_status(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._status = response.status_code

    def _ensure_token(self) -> None:
        """With client credentials: a token before the first call, and a new one before this one expires."""
        if not self.client_id:
            return
        if self._token_expires is None or self.clock() >= self._token_expires:
            self._fetch_token()

    def _fetch_token(self) -> None:
        """The client-credentials grant: POST the app's client id and secret to the shop for a ~24 h token."""
        url = f"{self.shop_url}/admin/oauth/access_token"
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._client_secret}
        try:
            response = self.client.session.post(
                url,
                data=form,
                headers={"X-Shopify-Access-Token": None, "Accept": "application/json"},  # None: not the old token
                timeout=self.client.timeout,
            )
        except requests.RequestException as exc:
            raise UpstreamError(f"shopify: POST {url} for an access token failed: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if response.status_code >= 500 or response.status_code == 429:
            raise UpstreamError(f"shopify: POST {url} for an access token answered {response.status_code}")
        if not response.ok or not body.get("access_token"):
            error = f"{body.get('error') or response.status_code}: {body.get('error_description') or 'no token'}"
            raise StorefrontConfigError(
                f"Shopify shop {self.shop_url} refused the client credentials ({error}). Check client_id and "
                "client_secret (Dev Dashboard > the app > Settings), that the app is installed on this shop, and "
                "that app and shop belong to the same organization (else Shopify answers shop_not_permitted)"
            )
        token, lifetime = str(body["access_token"]), float(body.get("expires_in") or 86399)
        register_secret(token)
        self.client.session.headers["X-Shopify-Access-Token"] = token
        # Renew a margin before expiry (a tenth of the lifetime for short-lived tokens), never mid-batch at 0 s.
        self._token_expires = self.clock() + lifetime - min(self.token_refresh_margin, lifetime / 10)
        self.tokens_obtained += 1
        log.info("shopify: obtained an access token valid for %d s (scopes %s)", lifetime, body.get("scope"))

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

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("shopify: %s", message)


def _location_gid(spec: str) -> str | None:
    """A location id as configured ("gid://shopify/Location/7" or "7"), or None for a name."""
    spec = spec.strip()
    if spec.startswith("gid://"):
        return spec
    return f"gid://shopify/Location/{spec}" if spec.isdigit() else None


def _sample(skus: list[str]) -> str:
    return f", e.g. {', '.join(skus[:SAMPLE])}" if skus else ""


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
