"""Vendure 3.x through its admin GraphQL API: read every variant's stock, set it with updateProductVariants.

Vendure sells `stockOnHand - stockAllocated - outOfStockThreshold` units of a tracked variant. The pipeline's
quantity is what may be sold, so a write sets `stockOnHand = quantity + stockAllocated + outOfStockThreshold`
(out of stock: quantity 0) with `trackInventory: TRUE`, and a read maps back the same way: a steady state
diffs to nothing even while Vendure holds allocations for its own orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import requests

from cx_pipeline.http import ApiClient, UpstreamError
from cx_pipeline.storefront.base import (
    STATE_COLUMNS,
    StockUpdate,
    StorefrontAdapter,
    StorefrontConfigError,
    WriteResult,
)

LOGIN = """mutation Login($username: String!, $password: String!) {
  login(username: $username, password: $password) {
    __typename ... on CurrentUser { id } ... on ErrorResult { errorCode message } } }"""
VARIANT_FIELDS = "id sku stockOnHand stockAllocated outOfStockThreshold trackInventory"
READ = f"""query Variants($take: Int!, $skip: Int!) {{
  productVariants(options: {{take: $take, skip: $skip, sort: {{id: ASC}}}}) {{
    totalItems items {{ {VARIANT_FIELDS} }} }} }}"""
BY_SKU = f"""query VariantsBySku($skus: [String!]!) {{
  productVariants(options: {{filter: {{sku: {{in: $skus}}}}, take: 1000}}) {{ items {{ {VARIANT_FIELDS} }} }} }}"""
UPDATE = f"""mutation SetStock($input: [UpdateProductVariantInput!]!) {{
  updateProductVariants(input: $input) {{ {VARIANT_FIELDS} }} }}"""


class VendureStorefront(StorefrontAdapter):
    """Vendure admin API at `admin_url` (e.g. https://shop.example.com/admin-api) as an administrator."""

    name = "vendure"

    def __init__(
        self,
        admin_url: str,
        username: str,
        password: str,
        *,
        batch_size: int = 100,
        page_size: int = 500,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 5,
        backoff_factor: float = 0.5,
    ) -> None:
        if not username or not password:
            raise StorefrontConfigError("Vendure: a username and password are required")
        # The bearer token comes from the login; until then the session carries none.
        self.client = ApiClient(
            admin_url,
            "login-pending",
            name="vendure",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
            backoff_factor=backoff_factor,
        )
        self.client.session.headers.pop("Authorization")
        self.admin_url = admin_url
        self.username, self._password = username, password
        self.batch_size, self.page_size = batch_size, page_size
        self._variants: dict[str, dict[str, Any]] = {}

    def check(self) -> None:
        self._login()

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

    def read(self) -> pd.DataFrame:
        skip, total = 0, None
        while total is None or skip < total:
            page = self._gql(READ, {"take": self.page_size, "skip": skip})["productVariants"]
            total = page["totalItems"]
            self._variants |= {v["sku"]: v for v in page["items"] if v["sku"]}
            skip += self.page_size
        return pd.DataFrame([state(v) for v in self._variants.values()], columns=list(STATE_COLUMNS))

    def write(self, updates: Sequence[StockUpdate], key: str) -> list[WriteResult]:
        missing = [u.sku for u in updates if u.sku not in self._variants]
        if missing:
            found = self._gql(BY_SKU, {"skus": missing})["productVariants"]["items"]
            self._variants |= {v["sku"]: v for v in found}
        known = [u for u in updates if u.sku in self._variants]
        results = {u.sku: WriteResult(u.sku, False, "unknown sku in Vendure") for u in updates if u not in known}
        if known:
            payload = [
                {
                    "id": self._variants[u.sku]["id"],
                    "trackInventory": "TRUE",
                    "stockOnHand": (0 if u.status == "out_of_stock" else u.quantity)
                    + self._variants[u.sku]["stockAllocated"]
                    + self._variants[u.sku]["outOfStockThreshold"],
                }
                for u in known
            ]
            try:
                written = self._gql(UPDATE, {"input": payload})["updateProductVariants"]
            except UpstreamError as exc:
                results |= {u.sku: WriteResult(u.sku, False, str(exc)) for u in known}
            else:
                for variant in filter(None, written):
                    self._variants[variant["sku"]] = variant
                    status, quantity = state(variant)[1:]
                    results[variant["sku"]] = WriteResult(variant["sku"], True, "ok", status, quantity)
                for u in known:
                    results.setdefault(u.sku, WriteResult(u.sku, False, "Vendure returned no variant"))
        return [results[u.sku] for u in updates]

    def close(self) -> None:
        self.client.close()


def state(variant: dict[str, Any]) -> tuple[str, str, int]:
    """(sku, status, quantity) as the pipeline sees a Vendure variant."""
    if variant.get("trackInventory") == "FALSE":
        return variant["sku"], "in_stock", 0  # not tracked: Vendure always sells it
    saleable = max(variant["stockOnHand"] - variant["stockAllocated"] - variant["outOfStockThreshold"], 0)
    return variant["sku"], "in_stock" if saleable > 0 else "out_of_stock", saleable
