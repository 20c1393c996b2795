"""Shopify inventory levels as the source of the on-hand feed, through the Admin GraphQL API.

Every pull reads the inventory whole: Shopify documents no filter that lists the levels whose quantities changed
(see docs/architecture.md, "Shopify as a source"), so a read by change would miss sales and adjustments. A small
shop is read page by page (`inventoryItems` with each item's `inventoryLevels`); a large one by a bulk operation
(`bulkOperationRunQuery`, polled with `node(id:)` until it is COMPLETED or FAILED, its JSONL downloaded from `url`).
Both land the same rows: the pages are written in the bulk operation's JSONL shape (an item per line, each of its
levels on a line of its own carrying the item's id as `__parentId`), and DuckDB reads that file with `read_json`
and maps it to the feed's columns in one statement, so one mapping serves both reads.

Mapping: sku = the inventory item's SKU (its variant's), warehouse = the location's name (through `locations`,
location name -> warehouse code), on_hand = `on_hand`, in_qc = `quality_control`, damaged = `damaged`. An untracked
item and a level at an inactive location are left out; an item without SKU lands with none and its contract
quarantines it. Schema followed (Admin GraphQL 2026-01): InventoryItem `id sku tracked inventoryLevels { location
{ name isActive } quantities(names:) { name quantity } }`; BulkOperation `id status errorCode url objectCount`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson

from cx_pipeline.ingest.feeds import Feed
from cx_pipeline.ingest.graphql import ShopifyGraphQL, page_size
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.ingest.landing import Batch, ProgressFn
from cx_pipeline.ingest.sources.shopify_bulk import BulkSettings, bulk_download, stage_select

# The named quantities the feed takes: on_hand, in_qc, damaged. (available, committed and reserved are not used:
# the pipeline computes what can be sold from on-hand minus open orders itself; incoming: purchase orders come
# from the WMS; safety_stock is the shop's own buffer.)
NAMES = ("on_hand", "quality_control", "damaged")
_NAMES = ", ".join(f'"{n}"' for n in NAMES)
LEVEL_FIELDS = f"location {{ name isActive }} quantities(names: [{_NAMES}]) {{ name quantity }}"
ITEMS = f"""query SourceInventory($first: Int!, $after: String, $levels: Int!) {{
  inventoryItems(first: $first, after: $after) {{
    nodes {{
      id sku tracked
      inventoryLevels(first: $levels) {{ nodes {{ {LEVEL_FIELDS} }} pageInfo {{ hasNextPage }} }}
    }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""
# A bulk query takes no page sizes: Shopify reads every node of each connection.
BULK_ITEMS = f"""{{
  inventoryItems {{
    edges {{ node {{ id sku tracked inventoryLevels {{ edges {{ node {{ {LEVEL_FIELDS} }} }} }} }} }}
  }}
}}"""
# The JSONL's lines: an item (no __parentId) or one of its levels (__parentId = the item's id).
JSONL_COLUMNS = (
    "{id: 'VARCHAR', sku: 'VARCHAR', tracked: 'BOOLEAN', location: 'STRUCT(name VARCHAR, \"isActive\" BOOLEAN)', "
    "quantities: 'STRUCT(name VARCHAR, quantity JSON)[]', __parentId: 'VARCHAR'}"
)


@dataclass(frozen=True)
class InventoryRead:
    """How the inventory is read: by a bulk operation (waited for up to `bulk_timeout` seconds, its status asked
    every `bulk_poll` seconds) or page by page, and the location name -> warehouse code mapping."""

    locations: dict[str, str] = field(default_factory=dict)
    bulk: bool = True
    bulk_timeout: float = 3600.0
    bulk_poll: float = 5.0
    page_size: int = 250
    max_levels: int = 50  # locations per item a page asks for (an item stocked at more fails, naming it)
    max_pages: int = 10_000
    download_timeout: tuple[float, float] = (5.0, 300.0)

    @property
    def bulk_settings(self) -> BulkSettings:
        return BulkSettings(self.bulk_timeout, self.bulk_poll, self.download_timeout)


def item_cost(levels: int) -> int:
    """Calculated cost of one inventory item: the item, its levels connection, and each level with its location
    and quantities."""
    return 1 + 2 + 3 * levels


def pull(
    con: duckdb.DuckDBPyConnection,
    shop: ShopifyGraphQL,
    feed: Feed,
    read: InventoryRead,
    progress: ProgressFn | None = None,
) -> Batch:
    """Stage the shop's whole inventory as on-hand rows in `landing_on_hand`, with the shop's clock as `as_of`."""
    if feed.name != "on_hand":
        raise ValueError(f"Shopify inventory provides the on_hand feed, not {feed.name}")
    with tempfile.TemporaryDirectory(prefix="cx-shopify-inventory-") as folder:
        jsonl = Path(folder) / "inventory.jsonl"
        if read.bulk:
            setting = "CX_ON_HAND_SHOPIFY_BULK_TIMEOUT_SECONDS"
            pages, as_of = 1, bulk_download(shop, BULK_ITEMS, jsonl, read.bulk_settings, setting)
        else:
            pages, as_of = write_pages(shop, jsonl, read, progress), shop.shop_clock
        batch = stage_levels(con, feed, jsonl, read.locations)
    if progress:
        progress(batch.pages, batch.rows)
    return Batch(feed, batch.batch_id, batch.rows, pages, as_of, None)


def write_pages(shop: ShopifyGraphQL, jsonl: Path, read: InventoryRead, progress: ProgressFn | None) -> int:
    """Read the inventory page by page into `jsonl` in the bulk operation's shape; return the pages read."""
    first = page_size(read.page_size, item_cost(read.max_levels))
    variables = {"first": first, "levels": read.max_levels}
    count = rows = 0
    with jsonl.open("wb") as out:
        for items in shop.pages(
            "inventoryItems", ITEMS, variables, 2 + item_cost(read.max_levels) * first, read.max_pages
        ):
            for item in items:
                levels = item.pop("inventoryLevels", None) or {}
                if (levels.get("pageInfo") or {}).get("hasNextPage"):
                    raise UpstreamError(
                        f"{shop.name}: inventory item {item.get('id')} is stocked at more than max_levels="
                        f"{read.max_levels} locations: raise it (CX_ON_HAND_SHOPIFY_MAX_LEVELS) or use the bulk read"
                    )
                out.write(orjson.dumps(item) + b"\n")
                for level in levels.get("nodes") or []:
                    out.write(orjson.dumps({**level, "__parentId": item.get("id")}) + b"\n")
                    rows += 1
            count += 1
            if progress:
                progress(count, rows)
    return count


def levels_sql() -> str:
    """SQL for the on-hand rows of the JSONL at `$path`, each as one JSON object `_raw` (with the item's id, for
    people tracing a row): tracked items' levels at active locations, warehouse mapped by `location_warehouses`."""
    return f"""
        WITH lines AS (SELECT * FROM read_json($path, format = 'newline_delimited', columns = {JSONL_COLUMNS})),
        items AS (SELECT id, sku, tracked FROM lines WHERE __parentId IS NULL),
        levels AS (
            SELECT __parentId AS item_id, location.name AS location, location."isActive" AS active,
                   map_from_entries(list_transform(quantities, lambda q: (q.name, q.quantity))) AS q
            FROM lines WHERE __parentId IS NOT NULL)
        SELECT to_json({{
            'sku': nullif(i.sku, ''), 'warehouse': coalesce(w.warehouse, l.location),
            'on_hand': l.q['on_hand'], 'in_qc': l.q['quality_control'], 'damaged': l.q['damaged'],
            'shopify_inventory_item_id': i.id}}) AS _raw
        FROM levels l JOIN items i ON i.id = l.item_id LEFT JOIN location_warehouses w ON w.location = l.location
        WHERE i.tracked IS NOT FALSE AND l.active IS NOT FALSE
        ORDER BY i.id, l.location"""


def stage_levels(con: duckdb.DuckDBPyConnection, feed: Feed, jsonl: Path, locations: dict[str, str]) -> Batch:
    """Stage the JSONL's levels as `landing_<feed>` (see `shopify_bulk.stage_select`)."""
    con.execute("CREATE OR REPLACE TEMP TABLE location_warehouses (location VARCHAR, warehouse VARCHAR)")
    if locations:
        con.executemany("INSERT INTO location_warehouses VALUES (?, ?)", list(locations.items()))
    return stage_select(con, feed, levels_sql(), {"path": str(jsonl)})
