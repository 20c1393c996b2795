"""Helpers for pipeline tests: resources aimed at the simulator, and reading a run's results."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from assets.resources import (
    CatalogResource,
    HelpdeskResource,
    NotificationResource,
    OmsResource,
    StorefrontResource,
    WarehouseResource,
    WmsResource,
)
from cx_pipeline.simulator import Simulator

TOKEN = "test-token"
# The demo world's clock in tests: a Monday morning, so a few hours' advance always brings receipts in.
# (A world started at the wall clock made tests depend on the hour they ran at.)
WORLD_NOW = datetime(2026, 11, 16, 6, tzinfo=UTC)


def resources(sim: Simulator, warehouse_path: Path, **api: object) -> dict[str, object]:
    """Resources aimed at the simulator; `api` overrides client settings (retries, timeouts, page size)."""
    settings = {"base_url": sim.url, "token": TOKEN, "backoff_seconds": 0.05, **api}
    return {
        "warehouse": WarehouseResource(path=str(warehouse_path)),
        "wms": WmsResource(**settings),
        "catalog": CatalogResource(**settings),
        "oms": OmsResource(**settings),
        "helpdesk": HelpdeskResource(**settings),
        "notifications": NotificationResource(**settings),
        "storefront": StorefrontResource(url=sim.url, token=TOKEN, backoff_seconds=0.05),
    }


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    """Metadata values of each materialized asset, by asset name."""
    return {
        event.asset_key.path[-1]: {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """The contract check evaluation of each asset, by asset name."""
    return {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}
