"""A real Vendure 3 server for the Vendure adapter's tests: installed from npm, started on 127.0.0.1.

`npm ci` runs on first use (about 20 s) into tests/vendure/node_modules; the server starts in a few
seconds with an in-memory SQLite database, so every test module gets a clean shop.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests

HERE = Path(__file__).parent / "vendure"
READY_TIMEOUT_SECONDS = 90


def ensure_installed() -> None:
    """Install the pinned Vendure packages unless node_modules is newer than the lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("the Vendure tests need Node.js 20+ and npm on PATH (apt-get install nodejs npm)")
    modules, lock = HERE / "node_modules", HERE / "package-lock.json"
    if modules.exists() and modules.stat().st_mtime >= lock.stat().st_mtime:
        return
    print("installing Vendure from npm (first run only)...", flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True, timeout=600)
    modules.touch()


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

    def __enter__(self) -> Self:
        ensure_installed()
        env = {**os.environ, "PORT": str(self.port), "VENDURE_ADMIN": self.username, "VENDURE_PASSWORD": self.password}
        self._process = subprocess.Popen(
            ["node", "server.js"], cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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

    def create_products(self, stock: dict[str, int]) -> dict[str, str]:
        """One enabled product with one variant per SKU (price 9.99, inventory tracked); sku -> variant id."""
        ids = {}
        for sku, on_hand in stock.items():
            product = self.admin(
                """mutation($name: String!, $slug: String!) { createProduct(input: {enabled: true,
                translations: [{languageCode: en, name: $name, slug: $slug, description: ""}]}) { id } }""",
                name=f"Product {sku}",
                slug=sku.lower(),
            )["createProduct"]["id"]
            variant = self.admin(
                """mutation($product: ID!, $sku: String!, $stock: Int!) { createProductVariants(input: [{
                productId: $product, sku: $sku, price: 999, stockOnHand: $stock, trackInventory: TRUE,
                translations: [{languageCode: en, name: $sku}]}]) { id } }""",
                product=product,
                sku=sku,
                stock=on_hand,
            )["createProductVariants"][0]["id"]
            ids[sku] = variant
        return ids

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
