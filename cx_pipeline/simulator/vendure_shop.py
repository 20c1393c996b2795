"""A real Vendure 3 shop on 127.0.0.1, for `cx-pipeline demo --storefront vendure` and the Vendure tests.

The pinned packages (`vendure/package.json` and its lock file) are installed from npm on first use (about 20 s)
into a cache folder ($CX_VENDURE_HOME, else ~/.cache/cx-pipeline/vendure-<version>), outside the installed
package; the server starts in a few seconds with an in-memory SQLite database, so every shop starts clean. The
helpers set up, through the admin API, what a real shop has: products with facets, stock locations, global
settings, paid orders that allocate stock, disabled, deleted and duplicated variants, restricted administrators.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import requests

if TYPE_CHECKING:
    from cx_pipeline.simulator.world import World

PACKAGE = Path(__file__).parent / "vendure"  # package.json, its lock file and server.js
FILES = ("package.json", "package-lock.json", "server.js")
READY_TIMEOUT_SECONDS = 90
DEFAULT_LOCATION = "Default Stock Location"


class NodeMissing(RuntimeError):
    """Node.js or npm is not installed: the message says what to install."""


def home() -> Path:
    """Where the shop's packages are installed: $CX_VENDURE_HOME, else a cache folder named by the version."""
    version = json.loads((PACKAGE / "package.json").read_text())["dependencies"]["@vendure/core"]
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cx-pipeline" / f"vendure-{version}"
    return Path(os.environ.get("CX_VENDURE_HOME") or default)


def ensure_installed() -> Path:
    """Install the pinned Vendure packages (once: again only when the lock file changes); the folder."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise NodeMissing(
            "a Vendure shop needs Node.js 20+ and npm on PATH: `sudo apt-get install nodejs npm` (Debian/Ubuntu), "
            "`brew install node` (macOS) or https://nodejs.org"
        )
    folder = home()
    folder.mkdir(parents=True, exist_ok=True)
    lock = (PACKAGE / "package-lock.json").read_bytes()
    installed = folder / "node_modules" / ".cx-installed-lock.json"
    for name in FILES:
        if not (folder / name).exists() or (folder / name).read_bytes() != (PACKAGE / name).read_bytes():
            shutil.copyfile(PACKAGE / name, folder / name)
    if installed.exists() and installed.read_bytes() == lock:
        return folder
    print(f"Installing Vendure from npm into {folder} (first run only, about 20 s)...", flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=True, timeout=600)
    installed.write_bytes(lock)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VendureServer:
    """Start with `with VendureServer() as shop:`; `admin_url`, `shop_url`, `username`, `password`."""

    username = "superadmin"
    password = "test-password-42"

    def __init__(self) -> None:
        self.port = free_port()
        self.admin_url = f"http://127.0.0.1:{self.port}/admin-api"
        self.shop_url = f"http://127.0.0.1:{self.port}/shop-api"
        self._process: subprocess.Popen[str] | None = None
        self._token: str | None = None
        self._products = 0
        self._shipping_method: str | None = None

    def __enter__(self) -> Self:
        folder = ensure_installed()
        env = {**os.environ, "PORT": str(self.port), "VENDURE_ADMIN": self.username, "VENDURE_PASSWORD": self.password}
        self._process = subprocess.Popen(
            ["node", "server.js"], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        output = []
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line and self._process.poll() is not None:
                break
            output.append(line)
            if "VENDURE READY" in line:
                return self
        self.__exit__(None, None, None)
        raise RuntimeError("Vendure did not start:\n" + "".join(output[-30:]))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process.stdout.close()
            self._process = None

    def admin(self, query: str, **variables: Any) -> dict[str, Any]:
        """Run an admin API operation as the superadmin; GraphQL errors raise."""
        if self._token is None:
            answer = requests.post(
                self.admin_url,
                json={
                    "query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) "
                    "{ ... on CurrentUser { id } } }",
                    "variables": {"u": self.username, "p": self.password},
                },
                timeout=30,
            )
            self._token = answer.headers["vendure-auth-token"]
        answer = requests.post(
            self.admin_url,
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=30,
        ).json()
        if answer.get("errors"):
            raise RuntimeError(answer["errors"])
        return answer["data"]

    def seed_world(self, world: World, orders: int = 0, on_hand: int = 20) -> dict[str, str]:
        """The world's catalog as products, one variant per SKU with its price and its category and supplier as
        facets, `on_hand` units at the default location; then `orders` paid orders of 2 units (the first SKUs).
        Progress is printed every 250 SKUs. sku -> variant id."""
        products = world.current("products")
        categories = self.create_facet("category", set(products["category"]))
        suppliers = self.create_facet("supplier", set(products["supplier_id"]))
        ids: dict[str, str] = {}
        for row in products.itertuples():
            ids[row.sku] = self.create_variant(
                row.sku,
                on_hand,
                price=round(float(row.price) * 100),
                facetValueIds=[categories[row.category], suppliers[row.supplier_id]],
            )
            if len(ids) % 250 == 0:
                print(f"  Vendure: {len(ids):,} of {len(products):,} products created", flush=True)
        for sku in list(ids)[:orders]:
            self.place_order(ids[sku], 2)
        return ids

    def create_facet(self, code: str, names: set[str]) -> dict[str, str]:
        """A public facet `code` with one value per name; name -> value id."""
        values = [{"code": f"v{i}", "translations": [{"languageCode": "en", "name": n}]} for i, n in enumerate(names)]
        made = self.admin(
            """mutation($input: CreateFacetInput!) { createFacet(input: $input) { values { id name } } }""",
            input={
                "code": code,
                "isPrivate": False,
                "translations": [{"languageCode": "en", "name": code}],
                "values": values,
            },
        )["createFacet"]["values"]
        return {v["name"]: v["id"] for v in made}

    def create_products(self, stock: dict[str, int]) -> dict[str, str]:
        """One enabled product with one variant per SKU (price 9.99, inventory tracked); sku -> variant id."""
        return {sku: self.create_variant(sku, on_hand) for sku, on_hand in stock.items()}

    def create_variant(self, sku: str, on_hand: int, **fields: Any) -> str:
        """A new enabled product with one variant (tracked unless `fields` say otherwise); its variant id.

        A SKU that exists already gets a second product and variant: Vendure does not keep SKUs unique."""
        self._products += 1
        product = self.admin(
            """mutation($name: String!, $slug: String!) { createProduct(input: {enabled: true,
            translations: [{languageCode: en, name: $name, slug: $slug, description: ""}]}) { id } }""",
            name=f"Product {sku}",
            slug=f"{sku.lower()}-{self._products}",
        )["createProduct"]["id"]
        variant = {"productId": product, "sku": sku, "price": 999, "stockOnHand": on_hand, "trackInventory": "TRUE"}
        return self.admin(
            """mutation($input: CreateProductVariantInput!) { createProductVariants(input: [$input]) { id } }""",
            input={**variant, **fields, "translations": [{"languageCode": "en", "name": sku}]},
        )["createProductVariants"][0]["id"]

    def update_variant(self, variant_id: str, **fields: Any) -> None:
        """Set fields of a variant (enabled, trackInventory, stockLevels...) as an administrator would."""
        self.admin(
            "mutation($input: UpdateProductVariantInput!) { updateProductVariants(input: [$input]) { id } }",
            input={"id": variant_id, **fields},
        )

    def variant_ids(self, sku: str) -> list[str]:
        """The ids of the variants with this SKU, oldest first."""
        items = self.admin(
            """query($sku: String!) { productVariants(options: {filter: {sku: {eq: $sku}}, sort: {id: ASC}}) {
            items { id } } }""",
            sku=sku,
        )["productVariants"]["items"]
        return [x["id"] for x in items]

    def delete_variant(self, variant_id: str) -> None:
        self.admin("mutation($id: ID!) { deleteProductVariant(id: $id) { result } }", id=variant_id)

    def variant(self, variant_id: str) -> dict[str, Any]:
        """A variant's trackInventory and stock per location name: {name: (on hand, allocated)}."""
        data = self.admin(
            """query($id: ID!) { productVariant(id: $id) { trackInventory
            stockLevels { stockOnHand stockAllocated stockLocation { name } } } }""",
            id=variant_id,
        )["productVariant"]
        levels = {x["stockLocation"]["name"]: (x["stockOnHand"], x["stockAllocated"]) for x in data["stockLevels"]}
        return {"trackInventory": data["trackInventory"], "levels": levels}

    def set_global_settings(self, **settings: Any) -> None:
        """trackInventory / outOfStockThreshold for the whole shop."""
        self.admin(
            "mutation($input: UpdateGlobalSettingsInput!) { updateGlobalSettings(input: $input) { __typename } }",
            input=settings,
        )

    def create_stock_location(self, name: str) -> str:
        return self.admin("mutation($name: String!) { createStockLocation(input: {name: $name}) { id } }", name=name)[
            "createStockLocation"
        ]["id"]

    def stock_locations(self) -> dict[str, str]:
        """name -> id of every stock location."""
        items = self.admin("{ stockLocations { items { id name } } }")["stockLocations"]["items"]
        return {x["name"]: x["id"] for x in items}

    def create_administrator(self, email: str, password: str, permissions: list[str]) -> None:
        """An administrator of the default channel whose one role grants `permissions`."""
        role = self.admin(
            """mutation($code: String!, $permissions: [Permission!]!) { createRole(input: {code: $code,
            description: $code, permissions: $permissions, channelIds: [1]}) { id } }""",
            code=f"role-{email.split('@')[0]}",
            permissions=permissions,
        )["createRole"]["id"]
        self.admin(
            """mutation($email: String!, $password: String!, $role: ID!) { createAdministrator(input: {firstName: "A",
            lastName: "B", emailAddress: $email, password: $password, roleIds: [$role]}) { id } }""",
            email=email,
            password=password,
            role=role,
        )

    def place_order(self, variant_id: str, quantity: int) -> None:
        """An order paid in full (a draft order with a manual payment), so Vendure allocates its units."""
        if self._shipping_method is None:
            self._shipping_method = self.admin(
                """mutation { createShippingMethod(input: {code: "standard", fulfillmentHandler: "manual-fulfillment",
                checker: {code: "default-shipping-eligibility-checker",
                    arguments: [{name: "orderMinimum", value: "0"}]},
                calculator: {code: "default-shipping-calculator", arguments: [{name: "rate", value: "0"},
                    {name: "includesTax", value: "auto"}, {name: "taxRate", value: "0"}]},
                translations: [{languageCode: en, name: "Standard", description: ""}]}) { id } }"""
            )["createShippingMethod"]["id"]
        order = self.admin("mutation { createDraftOrder { id } }")["createDraftOrder"]["id"]
        steps = [
            (
                """mutation($o: ID!, $v: ID!, $q: Int!) { addItemToDraftOrder(orderId: $o,
             input: {productVariantId: $v, quantity: $q}) { __typename ... on ErrorResult { message } } }""",
                {"v": variant_id, "q": quantity},
            ),
            (
                """mutation($o: ID!) { setCustomerForDraftOrder(orderId: $o, input: {firstName: "C", lastName: "D",
             emailAddress: "customer@example.com"}) { __typename ... on ErrorResult { message } } }""",
                {},
            ),
            (
                """mutation($o: ID!) { setDraftOrderShippingAddress(orderId: $o,
             input: {streetLine1: "Street 1", countryCode: "DE"}) { id } }""",
                {},
            ),
            (
                """mutation($o: ID!, $m: ID!) { setDraftOrderShippingMethod(orderId: $o, shippingMethodId: $m) {
             __typename ... on ErrorResult { message } } }""",
                {"m": self._shipping_method},
            ),
            (
                """mutation($o: ID!) { transitionOrderToState(id: $o, state: "ArrangingPayment") {
             __typename ... on OrderStateTransitionError { message transitionError } } }""",
                {},
            ),
            (
                """mutation($o: ID!) { addManualPaymentToOrder(input: {orderId: $o, method: "manual", metadata: {}}) {
             __typename ... on Order { state } ... on ErrorResult { message } } }""",
                {},
            ),
        ]
        for query, variables in steps:
            answer = next(iter(self.admin(query, o=order, **variables).values()))
            if "message" in answer:
                raise RuntimeError(f"placing an order failed: {answer}")
        if answer.get("state") != "PaymentSettled":
            raise RuntimeError(f"the order was not paid: {answer}")

    def shop_stock_levels(self) -> dict[str, str]:
        """What the shop API (what customers see, no login) reports per SKU: IN_STOCK, OUT_OF_STOCK..."""
        levels, skip = {}, 0
        while True:
            data = requests.post(
                self.shop_url,
                json={
                    "query": "query($skip: Int!) { products(options: {take: 100, skip: $skip}) "
                    "{ totalItems items { variants { sku stockLevel } } } }",
                    "variables": {"skip": skip},
                },
                timeout=30,
            ).json()["data"]["products"]
            levels |= {v["sku"]: v["stockLevel"] for p in data["items"] for v in p["variants"]}
            skip += 100
            if skip >= data["totalItems"]:
                return levels
