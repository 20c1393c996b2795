"""Shopify bulk operations for full reads, and staging a JSONL file into a landing table in SQL.

A bulk query (`bulkOperationRunQuery`) runs in the background at Shopify, free of the cost bucket's page limits; it
is polled with `node(id:)` until COMPLETED, or FAILED / CANCELED / EXPIRED, within a timeout, and its result is a
JSONL file at `url`: one line per node, the nodes of a nested connection on lines of their own carrying their
parent's id as `__parentId`. The file is downloaded to disk and DuckDB reads it with `read_json`, so no Python loop
touches the rows. Contract followed: https://shopify.dev/docs/api/usage/bulk-operations/queries and
https://shopify.dev/docs/api/admin-graphql/latest/objects/BulkOperation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import requests

from cx_pipeline.core.sql import first_row
from cx_pipeline.core.transactions import transaction
from cx_pipeline.ingest.feeds import Feed
from cx_pipeline.ingest.graphql import ShopifyGraphQL, messages
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.ingest.landing import Batch, parsed, typed_columns

RUN_BULK = """mutation SourceBulkRun($query: String!) {
  bulkOperationRunQuery(query: $query) { bulkOperation { id status } userErrors { field message code } }
}"""
POLL_BULK = """query SourceBulkPoll($id: ID!) {
  node(id: $id) { ... on BulkOperation { id status errorCode objectCount url partialDataUrl } }
}"""
BULK_FAILED = ("FAILED", "CANCELED", "CANCELING", "EXPIRED")
MUTATION_COST = 10
DOWNLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class BulkSettings:
    """How long a bulk operation is waited for (`timeout` seconds, its status asked every `poll` seconds), and the
    download's connect and read timeouts."""

    timeout: float = 3600.0
    poll: float = 5.0
    download_timeout: tuple[float, float] = (5.0, 300.0)


def bulk_download(
    shop: ShopifyGraphQL, query: str, jsonl: Path, settings: BulkSettings, setting: str
) -> datetime | None:
    """Run `query` as a bulk operation, wait for it and download its JSONL into `jsonl`; return the shop's clock
    when the operation started (what the read is as of). `setting` names the timeout's variable in messages."""
    started = shop.monotonic()
    operation = start_bulk(shop, query, settings, started)
    as_of = shop.shop_clock
    while True:
        node = shop.query("node", POLL_BULK, {"id": operation}, cost=1).get("node") or {}
        status = node.get("status")
        if status == "COMPLETED":
            break
        if status in BULK_FAILED or status is None:
            raise UpstreamError(
                f"{shop.name}: bulk operation {operation} ended {status or 'missing'}"
                + (f" (errorCode {node['errorCode']})" if node.get("errorCode") else "")
                + ": nothing was read; the next run tries again"
            )
        if shop.monotonic() - started > settings.timeout:
            raise UpstreamError(
                f"{shop.name}: bulk operation {operation} is still {status} after {settings.timeout:,.0f} s "
                f"({setting}): nothing was read"
            )
        shop.sleep(settings.poll)
    if node.get("url"):
        download(node["url"], jsonl, settings.download_timeout, shop.name)
    else:  # Shopify gives no file when the query found nothing
        jsonl.write_bytes(b"")
    return as_of


def start_bulk(shop: ShopifyGraphQL, query: str, settings: BulkSettings, started: float) -> str:
    """The id of a new bulk operation running `query`. While another bulk query of this app runs in the shop
    (Shopify's OPERATION_IN_PROGRESS), wait for it within the timeout."""
    while True:
        payload = shop.query("bulkOperationRunQuery", RUN_BULK, {"query": query}, cost=MUTATION_COST)
        answer: dict[str, Any] = payload.get("bulkOperationRunQuery") or {}
        errors = answer.get("userErrors") or []
        operation = (answer.get("bulkOperation") or {}).get("id")
        if not errors and operation:
            return str(operation)
        busy = any(isinstance(e, dict) and e.get("code") == "OPERATION_IN_PROGRESS" for e in errors)
        if not busy or shop.monotonic() - started > settings.timeout:
            detail = "; ".join(str(e.get("message")) for e in errors if isinstance(e, dict)) or messages(answer)
            raise UpstreamError(f"{shop.name}: the bulk operation was refused: {detail}")
        shop.sleep(settings.poll)


def download(url: str, target: Path, timeout: tuple[float, float], name: str) -> None:
    """Stream the bulk operation's result to `target`. The URL is signed storage, not the shop: it is fetched
    without the shop's access token."""
    try:
        with requests.get(url, stream=True, timeout=timeout) as answer:
            answer.raise_for_status()
            with target.open("wb") as out:
                for chunk in answer.iter_content(DOWNLOAD_CHUNK):
                    out.write(chunk)
    except requests.RequestException as exc:
        raise UpstreamError(
            f"{name}: the bulk operation's result could not be downloaded: {type(exc).__name__}"
        ) from exc


def stage_select(con: duckdb.DuckDBPyConnection, feed: Feed, select_raw: str, params: dict[str, Any]) -> Batch:
    """Stage the rows of `select_raw` (SQL giving one JSON object `_raw` per row, in the feed's columns) as
    `landing_<feed>`, typed by the same SQL as every source's pages (`landing.stage`), in one transaction."""
    batch_id = f"{feed.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    with transaction(con):
        con.execute(
            f"""CREATE OR REPLACE TABLE landing_{feed.name} AS
            SELECT {typed_columns(feed)}, _row, _raw, $batch AS _batch_id
            FROM (SELECT _row, _raw, {parsed(feed)}
                  FROM (SELECT row_number() OVER () - 1 AS _row, _raw FROM ({select_raw})))""",
            {**params, "batch": batch_id},
        )
    (rows,) = first_row(con, f"SELECT count(*) FROM landing_{feed.name}")
    return Batch(feed, batch_id, rows, 1, None, None)
