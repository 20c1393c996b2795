"""Vendure 3.x through its admin GraphQL API: read every variant's stock, set it per stock location.

Vendure (its default MultiChannelStockLocationStrategy) sells `sum(stockOnHand) - sum(stockAllocated) -
threshold` units of a tracked variant, summed over the channel's stock locations, where the threshold is
GlobalSettings.outOfStockThreshold when the variant has `useGlobalOutOfStockThreshold`, else its own. A variant
is tracked when `trackInventory` is TRUE, or INHERIT with GlobalSettings.trackInventory on; an untracked one is
always for sale. The pipeline's quantity is what may be sold, so a write gives each location it covers
`stockOnHand = stockAllocated + its share` (the threshold on the first of them), with allocations re-read
just before the write; a read maps back the same way, so a steady state diffs to nothing while Vendure holds
allocations for its own orders. A write counts when the shop API's `stockLevel` (what a customer sees) and
the admin API's stock levels, read back, show what was pushed. docs/architecture.md, "Vendure: locations,
tracking and thresholds", has the decisions.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

LOGIN = """mutation Login($username: String!, $password: String!) {
  login(username: $username, password: $password) {
    __typename ... on CurrentUser { id } ... on ErrorResult { errorCode message } } }"""
# Only the admin API has `globalSettings`: asked before login, it tells the admin API from the shop API.
PROBE = "query Probe { globalSettings { id } }"
ACCESS = "query Access { activeChannel { id code } me { channels { id code permissions } } }"
SHOP_SETTINGS = """globalSettings { trackInventory outOfStockThreshold }
  stockLocations(options: {take: 1000, sort: {id: ASC}}) { totalItems items { id name } }"""
SETTINGS = f"query Settings {{ {SHOP_SETTINGS} }}"
VARIANT_FIELDS = """id sku enabled productId product { enabled } trackInventory outOfStockThreshold
  useGlobalOutOfStockThreshold stockLevels { stockLocationId stockOnHand stockAllocated }"""
READ = f"""query Variants($take: Int!, $skip: Int!) {{
  productVariants(options: {{take: $take, skip: $skip, sort: {{id: ASC}}}}) {{
    totalItems items {{ {VARIANT_FIELDS} }} }} }}"""
# Settings, locations and the batch's variants (with their allocations) in one request, right before a write.
RESOLVE = f"""query Resolve($skus: [String!]!, $take: Int!) {{ {SHOP_SETTINGS}
  productVariants(options: {{filter: {{sku: {{in: $skus}}}}, take: $take}}) {{ items {{ {VARIANT_FIELDS} }} }} }}"""
BY_ID = f"""query ReadBack($ids: [String!]!, $take: Int!) {{ {SHOP_SETTINGS}
  productVariants(options: {{filter: {{id: {{in: $ids}}}}, take: $take}}) {{ items {{ {VARIANT_FIELDS} }} }} }}"""
UPDATE = """mutation SetStock($input: [UpdateProductVariantInput!]!) {
  updateProductVariants(input: $input) { id } }"""
# What a customer sees: the shop API, anonymous. It lists enabled products and their enabled variants only.
SHOP_LEVELS = """query Levels($ids: [String!]!, $take: Int!) {
  products(options: {filter: {id: {in: $ids}}, take: $take}) { items { variants { id stockLevel } } } }"""
SHOP_PROBE = "query ShopProbe { activeCustomer { id } }"

ADMIN_TAKE = 1000  # Vendure's default adminListQueryLimit
SHOP_TAKE = 100  # and shopListQueryLimit
SAMPLE = 5
# What the adapter does, and the permissions Vendure accepts for it (any one of each pair).
PERMISSIONS = [
    ("read variants' stock", ("ReadCatalog", "ReadProduct")),
    ("read stock locations", ("ReadCatalog", "ReadStockLocation")),
    ("set stock levels", ("UpdateCatalog", "UpdateProduct")),
]
UNTRACKED_FIX = (
    "set enable_tracking=True on the adapter, or turn inventory tracking on for it in Vendure "
    "(the variant's trackInventory, or Settings > Global settings)"
)


@dataclass(frozen=True)
class Shop:
    """The Vendure settings a variant's stock is judged by, as read with it."""

    tracking: bool  # GlobalSettings.trackInventory: what INHERIT means
    threshold: int  # GlobalSettings.outOfStockThreshold: for variants with useGlobalOutOfStockThreshold
    locations: dict[str, str]  # the channel's stock locations, id -> name, oldest first (Vendure's default)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Shop:
        settings, locations = data["globalSettings"], data["stockLocations"]["items"]
        if not locations:
            raise StorefrontConfigError("Vendure: the channel has no stock location to hold stock")
        return cls(settings["trackInventory"], settings["outOfStockThreshold"], {x["id"]: x["name"] for x in locations})

    def tracked(self, variant: dict[str, Any]) -> bool:
        flag = variant["trackInventory"]
        return flag == "TRUE" or (flag == "INHERIT" and self.tracking)

    def threshold_of(self, variant: dict[str, Any]) -> int:
        return self.threshold if variant["useGlobalOutOfStockThreshold"] else variant["outOfStockThreshold"]

    def saleable(self, variant: dict[str, Any]) -> int:
        """What Vendure sells if the variant is tracked; negative when it holds less than it promised."""
        levels = variant["stockLevels"]
        return sum(x["stockOnHand"] - x["stockAllocated"] for x in levels) - self.threshold_of(variant)

    def state(self, variant: dict[str, Any]) -> tuple[str, int]:
        """(status, quantity) as the pipeline sees one Vendure variant.

        A shortfall (a location holding fewer units than it allocated to orders) is reported as it is, so
        the quantity can be negative and the next plan differs from it and repairs it; otherwise the quantity
        is never below 0. A disabled variant (or product) is out of stock: customers cannot buy it. An
        untracked one is in stock whatever its units: Vendure sells it anyway."""
        saleable = self.saleable(variant)
        quantity = saleable if shortfall(variant) else max(saleable, 0)
        if not on_sale(variant):
            return "out_of_stock", 0
        if not self.tracked(variant):
            return "in_stock", quantity
        return ("in_stock" if saleable > 0 else "out_of_stock"), quantity

    def sku_state(self, variants: Sequence[dict[str, Any]]) -> tuple[str, int]:
        """One SKU on several variants: in stock if any is, quantity summed over them."""
        states = [self.state(v) for v in variants]
        status = "in_stock" if any(s == "in_stock" for s, _ in states) else "out_of_stock"
        return status, sum(q for _, q in states)


def on_sale(variant: dict[str, Any]) -> bool:
    return bool(variant["enabled"] and (variant.get("product") or {}).get("enabled", True))


def shortfall(variant: dict[str, Any]) -> int:
    """Units Vendure allocated to orders beyond what it holds, over its locations."""
    return sum(max(x["stockAllocated"] - x["stockOnHand"], 0) for x in variant["stockLevels"])


def sample(items: Iterable[str]) -> str:
    items = sorted(items)
    return ", ".join(items[:SAMPLE]) + (f" and {len(items) - SAMPLE} more" if len(items) > SAMPLE else "")


class VendureStorefront(StorefrontAdapter):
    """Vendure admin API at `admin_url` (e.g. https://shop.example.com/admin-api) as an administrator.

    `locations` maps the pipeline's warehouse names to Vendure stock location names; each mapped location
    gets its warehouse's share of a write (`StockUpdate.by_warehouse`). Without it, the whole quantity goes to
    Vendure's default (oldest) location and every other one is emptied. A location the mapping does not cover
    is emptied when `zero_unmapped_locations`, else left alone and reported (a warning from check/read, and a
    failed write while it still holds units). `enable_tracking` lets a write turn inventory tracking on for an
    untracked variant; without it, tracking is never changed and "out of stock" for such a variant fails.
    `shop_url` is the shop API (what customers see), by default `admin_url` with admin-api -> shop-api.
    """

    name = "vendure"
    writes_per_location = True

    def __init__(
        self,
        admin_url: str,
        username: str,
        password: str,
        *,
        locations: Mapping[str, str] | None = None,
        zero_unmapped_locations: bool = False,
        enable_tracking: bool = False,
        shop_url: str | None = None,
        batch_size: int = 100,
        page_size: int = 500,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 5,
        backoff_factor: float = 0.5,
    ) -> None:
        if not username or not password:
            raise StorefrontConfigError("Vendure: a username and password are required")
        register_secret(password)  # an error quoting the login request must not show it
        http = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retries": retries,
            "backoff_factor": backoff_factor,
        }
        # The bearer token comes from the login; until then the session carries none.
        self.client = ApiClient(admin_url, None, name="vendure", **http)
        self.shop_url = shop_url or re.sub(r"admin-api/?$", "shop-api", admin_url)
        # Anonymous, as a customer: the shop API answers what anyone browsing the shop sees.
        self.shop_client = ApiClient(self.shop_url, None, name="vendure shop", **http)
        self.admin_url = admin_url
        self.username, self._password = username, password
        self.locations = dict(locations) if locations is not None else None
        self.zero_unmapped_locations = zero_unmapped_locations
        self.enable_tracking = enable_tracking
        self.batch_size, self.page_size = batch_size, min(page_size, ADMIN_TAKE)

    # --- configuration ---------------------------------------------------------------------------------

    def check(self) -> None:
        self._reject_shop_api()
        self._login()
        self._check_permissions()
        shop = Shop.parse(self._gql(SETTINGS, {}))
        self._mapping(shop)  # a mapped location Vendure lacks fails here
        for location in self._left_alone(shop):
            self._warn(
                f"Vendure stock location {shop.locations[location]!r} is not in `locations`: its units stay on "
                "sale, and a write fails for a SKU still holding units there (map it to a warehouse, or set "
                "zero_unmapped_locations=True to empty it)"
            )
        if self.locations is None and len(shop.locations) > 1:
            first, *others = shop.locations.values()
            self._warn(
                f"Vendure has {len(shop.locations)} stock locations and the adapter has no `locations` mapping: "
                f"writes put every unit in {first!r} (Vendure's default) and empty {sample(others)}"
            )
        self._check_shop_api()

    def _reject_shop_api(self) -> None:
        """The shop API has a `login` too, and rejects an administrator's credentials: say what is wrong."""
        try:
            response = self.client.session.post(self.admin_url, json={"query": PROBE}, timeout=self.client.timeout)
        except requests.RequestException as exc:
            raise StorefrontConfigError(f"cannot reach Vendure at {self.admin_url}: {exc}") from exc
        try:
            errors = response.json().get("errors") or []
        except (ValueError, AttributeError):
            return  # not GraphQL: the login says what it is
        if any('field "globalSettings"' in str(e.get("message")) for e in errors if isinstance(e, dict)):
            raise StorefrontConfigError(
                f"{self.admin_url} is Vendure's shop API, not the admin API: point the adapter at the admin API "
                "(usually the same host, ending in /admin-api)"
            )

    def _login(self) -> None:
        try:
            response = self.client.session.post(
                self.admin_url,
                json={"query": LOGIN, "variables": {"username": self.username, "password": self._password}},
                timeout=self.client.timeout,
            )
        except requests.RequestException as exc:
            raise StorefrontConfigError(f"cannot reach Vendure at {self.admin_url}: {exc}") from exc
        try:
            answer = response.json()
            login = answer["data"]["login"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StorefrontConfigError(
                f"{self.admin_url} answered {response.status_code} without a Vendure login result: "
                "is this the admin API URL (ending in /admin-api)?"
            ) from exc
        if login.get("__typename") != "CurrentUser":
            raise StorefrontConfigError(
                f"Vendure at {self.admin_url} rejected the username/password for {self.username!r}: "
                f"{login.get('message', login.get('errorCode'))}"
            )
        token = response.headers.get("vendure-auth-token")
        if not token:
            raise StorefrontConfigError(
                f"Vendure at {self.admin_url} sent no bearer token: enable authOptions.tokenMethod 'bearer'"
            )
        self.client.session.headers["Authorization"] = f"Bearer {token}"

    def _check_permissions(self) -> None:
        """A read-only administrator would read fine and fail at the first write: refuse it now."""
        access = self._gql(ACCESS, {})
        channel = access["activeChannel"]
        held = next((set(c["permissions"]) for c in access["me"]["channels"] if c["id"] == channel["id"]), set())
        if "SuperAdmin" in held:
            return
        for why, needed in PERMISSIONS:
            if not held & set(needed):
                raise StorefrontConfigError(
                    f"Vendure administrator {self.username!r} lacks the {needed[0]} (or {needed[1]}) permission on "
                    f"channel {channel['code']!r}, needed to {why}: give one of its roles that permission"
                )

    def _check_shop_api(self) -> None:
        try:
            answer = self.shop_client.post_json("", {"query": SHOP_PROBE})
        except UpstreamError as exc:
            raise StorefrontConfigError(
                f"{self.shop_url} does not answer as Vendure's shop API, where writes are checked as customers "
                f"see them ({exc}): pass shop_url"
            ) from exc
        if answer.get("errors") or "activeCustomer" not in (answer.get("data") or {}):
            raise StorefrontConfigError(f"{self.shop_url} is not Vendure's shop API: pass shop_url")

    def _mapping(self, shop: Shop) -> dict[str, str]:
        """Warehouse -> stock location id, in the mapping's order; a name Vendure lacks is a config error."""
        ids = {name: id_ for id_, name in shop.locations.items()}
        missing = sorted({name for name in (self.locations or {}).values() if name not in ids})
        if missing:
            raise StorefrontConfigError(
                f"Vendure has no stock location named {', '.join(map(repr, missing))} (from `locations`); "
                f"its locations: {', '.join(map(repr, shop.locations.values()))}"
            )
        return {warehouse: ids[name] for warehouse, name in (self.locations or {}).items()}

    def _left_alone(self, shop: Shop) -> list[str]:
        """Locations a write never touches: those outside the mapping, unless they are to be emptied."""
        if self.locations is None or self.zero_unmapped_locations:
            return []
        covered = set(self._mapping(shop).values())
        return [location for location in shop.locations if location not in covered]

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _gql(self, query: str, variables: dict[str, Any], relogin: bool = True) -> dict[str, Any]:
        """Run one operation; GraphQL `errors` in a 200 answer are failures. An expired session logs in again."""
        if "Authorization" not in self.client.session.headers:
            self._login()
        answer = self.client.post_json("", {"query": query, "variables": variables})
        errors = answer.get("errors") or []
        if errors and relogin and any(e.get("extensions", {}).get("code") == "FORBIDDEN" for e in errors):
            self._login()
            return self._gql(query, variables, relogin=False)
        if errors:
            raise UpstreamError("vendure: " + "; ".join(str(e.get("message")) for e in errors)[:500])
        return answer["data"]

    # --- read ------------------------------------------------------------------------------------------

    def read(self) -> pd.DataFrame:
        shop = Shop.parse(self._gql(SETTINGS, {}))
        by_sku: dict[str, list[dict[str, Any]]] = defaultdict(list)
        skip, total = 0, None
        while total is None or skip < total:
            page = self._gql(READ, {"take": self.page_size, "skip": skip})["productVariants"]
            total = page["totalItems"]
            for variant in page["items"]:
                if variant["sku"]:
                    by_sku[variant["sku"]].append(variant)
            skip += self.page_size
        self._read_warnings(shop, by_sku)
        rows = [(sku, *shop.sku_state(variants)) for sku, variants in by_sku.items()]
        return pd.DataFrame(rows, columns=list(STATE_COLUMNS))

    def _read_warnings(self, shop: Shop, by_sku: Mapping[str, list[dict[str, Any]]]) -> None:
        def listed(skus: Sequence[str], what: str) -> None:
            if skus:
                self._warn(f"{len(skus)} SKU(s) {what}: {sample(skus)}")

        untracked = [s for s, vs in by_sku.items() if any(on_sale(v) and not shop.tracked(v) for v in vs)]
        listed(
            untracked,
            "not tracked in Vendure (trackInventory FALSE, or INHERIT with global tracking off), so the shop "
            "sells them whatever their stock and they read as in stock; to push them out of stock, " + UNTRACKED_FIX,
        )
        listed(
            [s for s, vs in by_sku.items() if any(shortfall(v) for v in vs)],
            "hold fewer units on hand than Vendure allocated to orders; read with that shortfall as a negative "
            "quantity, so the next push sets them right",
        )
        listed(
            [s for s, vs in by_sku.items() if not any(on_sale(v) for v in vs)],
            "are disabled in Vendure (the variant or its product): read as out of stock, customers cannot buy them",
        )
        duplicated = {s: vs for s, vs in by_sku.items() if len(vs) > 1}
        listed(
            [f"{s} (variants {', '.join(v['id'] for v in vs)})" for s, vs in duplicated.items()],
            "are on more than one Vendure variant: read as one (quantities summed); a write can take them out "
            "of stock but refuses a quantity, which has no one variant to go to",
        )
        for location in self._left_alone(shop):
            holding = [s for s, vs in by_sku.items() if any(units_at(v, location) > 0 for v in vs)]
            listed(
                holding,
                f"hold sellable units in Vendure stock location {shop.locations[location]!r}, which `locations` "
                "does not map: a push cannot take those units off sale (map it, or set zero_unmapped_locations=True)",
            )

    # --- write -----------------------------------------------------------------------------------------

    def write(self, updates: Sequence[StockUpdate], key: str) -> list[WriteResult]:
        # Ids and allocations are resolved by SKU now, not taken from the read: a variant may have been
        # deleted (or its SKU recreated), and orders may have allocated units, since the plan read the shop.
        skus = list(dict.fromkeys(u.sku for u in updates))
        data = self._gql(RESOLVE, {"skus": skus, "take": ADMIN_TAKE})
        shop = Shop.parse(data)
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for variant in data["productVariants"]["items"]:
            found[variant["sku"]].append(variant)

        results: dict[str, WriteResult] = {}
        inputs: dict[str, list[dict[str, Any]]] = {}  # sku -> one input per variant
        for u in updates:
            refused = self._refuse(u, found.get(u.sku, []), shop)
            if refused:
                results[u.sku] = WriteResult(u.sku, False, refused)
            else:
                inputs[u.sku] = [self._input(v, u, shop) for v in found[u.sku]]
        failed = self._send(inputs)
        results |= {sku: WriteResult(sku, False, why) for sku, why in failed.items()}
        written = {u.sku: u for u in updates if u.sku in inputs and u.sku not in failed}
        if written:
            results |= self._read_back(written, [i["id"] for sku in written for i in inputs[sku]])
        return [results[u.sku] for u in updates]

    def _refuse(self, u: StockUpdate, variants: list[dict[str, Any]], shop: Shop) -> str | None:
        """Why this update is not written at all, if it is not."""
        if u.status not in STOCK_STATUSES or u.quantity < 0:
            return f"invalid update: status {u.status!r}, quantity {u.quantity}"
        if not variants:
            return "unknown sku in Vendure"
        if len(variants) > 1 and u.status == "in_stock":
            ids = ", ".join(v["id"] for v in variants)
            return (
                f"SKU is on {len(variants)} Vendure variants (ids {ids}): one quantity cannot be split between "
                "them; give each its own SKU or delete the extra one"
            )
        untracked = [v["id"] for v in variants if not shop.tracked(v)]
        if u.status == "out_of_stock" and untracked and not self.enable_tracking:
            return (
                f"not tracked in Vendure (variant {', '.join(untracked)}: trackInventory FALSE, or INHERIT with "
                f"global tracking off), so the shop sells it whatever its stock; {UNTRACKED_FIX}"
            )
        return None

    def _input(self, variant: dict[str, Any], u: StockUpdate, shop: Shop) -> dict[str, Any]:
        """One variant's `updateProductVariants` input: absolute stock levels per location."""
        target = 0 if u.status == "out_of_stock" else u.quantity
        allocated = {x["stockLocationId"]: x["stockAllocated"] for x in variant["stockLevels"]}
        shares = self._shares(target, u.by_warehouse, shop)
        first = next(iter(shares))
        levels = [
            {
                "stockLocationId": location,
                # Never below what Vendure allocated to orders: those units are promised to customers. A
                # negative threshold (backorders) is therefore not applied below it, and the read-back says so.
                "stockOnHand": allocated.get(location, 0)
                + max(units + (shop.threshold_of(variant) if location == first else 0), 0),
            }
            for location, units in shares.items()
        ]
        entry: dict[str, Any] = {"id": variant["id"], "stockLevels": levels}
        if self.enable_tracking and not shop.tracked(variant):
            entry["trackInventory"] = "TRUE"
        return entry

    def _shares(self, target: int, by_warehouse: Mapping[str, int], shop: Shop) -> dict[str, int]:
        """Sellable units per stock location id for every location a write sets; the first gets the threshold."""
        if self.locations is None:
            default, *others = shop.locations
            return {default: target} | dict.fromkeys(others, 0)
        mapping = self._mapping(shop)
        if not mapping:
            raise StorefrontConfigError("Vendure: `locations` is empty; map at least one warehouse")
        first = next(iter(mapping.values()))
        shares = dict.fromkeys(mapping.values(), 0)
        if by_warehouse and sum(by_warehouse.values()) == target:
            for warehouse, units in by_warehouse.items():
                if warehouse not in mapping:
                    self._warn(
                        f"warehouse {warehouse!r} has no Vendure stock location in `locations`: its units go to "
                        f"{shop.locations[first]!r}"
                    )
                shares[mapping.get(warehouse, first)] += units
        else:  # no split known (or not of this quantity): all of it where the first warehouse maps
            shares[first] = target
        if self.zero_unmapped_locations:
            shares |= {location: 0 for location in shop.locations if location not in shares}
        return shares

    def _send(self, inputs: Mapping[str, list[dict[str, Any]]]) -> dict[str, str]:
        """Write every input in one request; SKU -> why it failed. Vendure runs the list in one transaction,
        so one bad variant (deleted a moment ago...) rolls back all: then each SKU is sent alone, so only
        that SKU fails."""
        if not inputs:
            return {}
        try:
            self._gql(UPDATE, {"input": [i for entries in inputs.values() for i in entries]})
            return {}
        except UpstreamError as exc:
            if len(inputs) == 1:
                return {sku: str(exc) for sku in inputs}
        failed = {}
        for sku, entries in inputs.items():
            try:
                self._gql(UPDATE, {"input": entries})
            except UpstreamError as exc:
                failed[sku] = str(exc)
        return failed

    def _read_back(self, written: Mapping[str, StockUpdate], ids: list[str]) -> dict[str, WriteResult]:
        """What a customer sees now: status from the shop API, quantity from the admin API's stock levels."""
        data = self._gql(BY_ID, {"ids": ids, "take": ADMIN_TAKE})
        shop = Shop.parse(data)
        variants: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for variant in data["productVariants"]["items"]:
            variants[variant["sku"]].append(variant)
        product_ids = list(dict.fromkeys(v["productId"] for vs in variants.values() for v in vs))
        levels: dict[str, str] = {}
        for start in range(0, len(product_ids), SHOP_TAKE):
            chunk = product_ids[start : start + SHOP_TAKE]
            answer = self.shop_client.post_json(
                "", {"query": SHOP_LEVELS, "variables": {"ids": chunk, "take": SHOP_TAKE}}
            )
            if answer.get("errors"):
                raise UpstreamError("vendure shop API: " + "; ".join(str(e.get("message")) for e in answer["errors"]))
            levels |= {v["id"]: v["stockLevel"] for p in answer["data"]["products"]["items"] for v in p["variants"]}

        results = {}
        for sku, u in written.items():
            if not variants.get(sku):
                results[sku] = WriteResult(
                    sku, False, "variant no longer in Vendure after the write (deleted meanwhile)"
                )
                continue
            # Not listed by the shop API (disabled) or OUT_OF_STOCK: a customer cannot buy it.
            seen = [levels.get(v["id"], "OUT_OF_STOCK") for v in variants[sku]]
            status = "out_of_stock" if all(x == "OUT_OF_STOCK" for x in seen) else "in_stock"
            quantity = shop.sku_state(variants[sku])[1]
            target = 0 if u.status == "out_of_stock" else u.quantity
            if (status, quantity) == (u.status, target):
                results[sku] = WriteResult(sku, True, "ok", status, quantity)
            else:
                why = self._why(variants[sku], shop, target)
                results[sku] = WriteResult(
                    sku,
                    False,
                    f"customers see {status} with {quantity} for sale, not {u.status} with {target}"
                    + (f": {why}" if why else ""),
                    status,
                    quantity,
                )
        return results

    def _why(self, variants: list[dict[str, Any]], shop: Shop, target: int) -> str:
        """The reasons, in words, a variant does not show what was written."""
        reasons = []
        if not all(on_sale(v) for v in variants):
            reasons.append("the variant or its product is disabled in Vendure, so customers cannot buy it; enable it")
        for location in self._left_alone(shop):
            units = sum(max(units_at(v, location), 0) for v in variants)
            if units:
                reasons.append(
                    f"Vendure stock location {shop.locations[location]!r} is not in `locations` and still holds "
                    f"{units} sellable unit(s): map it to a warehouse, or set zero_unmapped_locations=True"
                )
        if any(shortfall(v) for v in variants):
            reasons.append(
                "an order was allocated during the write, leaving fewer units on hand than allocated; the next "
                "push sets it right"
            )
        negative = [shop.threshold_of(v) for v in variants if shop.threshold_of(v) < 0]
        if negative and target < -min(negative):
            reasons.append(
                f"the out-of-stock threshold is {min(negative)} (backorders): Vendure sells that many units beyond "
                "stock, and stock is never set below what orders were allocated; raise the threshold to 0"
            )
        return "; ".join(reasons)

    def close(self) -> None:
        self.client.close()
        self.shop_client.close()


def units_at(variant: dict[str, Any], location: str) -> int:
    """On hand less allocated at one stock location."""
    return sum(
        x["stockOnHand"] - x["stockAllocated"] for x in variant["stockLevels"] if x["stockLocationId"] == location
    )
