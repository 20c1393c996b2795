"""Dagster resources: the warehouse file and one client per upstream system, configured from env vars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from cx_pipeline import warehouse
from cx_pipeline.http import ApiClient


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file (one writer at a time: runs use the in-process executor)."""

    path: str = "data/warehouse.duckdb"

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.path, read_only=read_only) as con:
            yield con


class UpstreamApiResource(dg.ConfigurableResource):
    """An upstream JSON API: base URL, bearer token (from an env var, never logged), timeouts and retries."""

    base_url: str
    token: str
    page_size: int = 1000
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    retries: int = 5
    backoff_seconds: float = 0.5

    _client: ApiClient | None = PrivateAttr(default=None)

    @property
    def client(self) -> ApiClient:
        """The client, built once per run so every request of the run shares one session."""
        if self._client is None:
            self._client = ApiClient(
                self.base_url,
                self.token,
                name=type(self).__name__.removesuffix("Resource"),
                connect_timeout=self.connect_timeout_seconds,
                read_timeout=self.read_timeout_seconds,
                retries=self.retries,
                backoff_factor=self.backoff_seconds,
            )
        return self._client

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _ = self.client  # fail at start, before any write, on a malformed URL or a missing token

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()


class WmsResource(UpstreamApiResource):
    """Warehouse management system: receipts, purchase orders, on-hand stock."""


class CatalogResource(UpstreamApiResource):
    """Catalog / PIM: the products."""


class OmsResource(UpstreamApiResource):
    """Order management system: customer orders."""


class HelpdeskResource(UpstreamApiResource):
    """Helpdesk: customer inquiries."""


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """Every resource, configured by the CX_* environment variables documented in the README."""

    def api(cls: type[UpstreamApiResource], system: str) -> UpstreamApiResource:
        return cls(base_url=dg.EnvVar(f"CX_{system}_URL"), token=dg.EnvVar(f"CX_{system}_TOKEN"))

    return {
        "warehouse": WarehouseResource(path=dg.EnvVar("CX_WAREHOUSE_PATH")),
        "wms": api(WmsResource, "WMS"),
        "catalog": api(CatalogResource, "CATALOG"),
        "oms": api(OmsResource, "OMS"),
        "helpdesk": api(HelpdeskResource, "HELPDESK"),
    }
