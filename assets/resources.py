"""Dagster resources: the warehouse file and one client per upstream system, configured from env vars."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from cx_pipeline import warehouse
from cx_pipeline.core import appstore
from cx_pipeline.core.sql import first_row
from cx_pipeline.ingest import http
from cx_pipeline.ingest.contracts import ContractPolicy
from cx_pipeline.ingest.feeds import FEEDS, Feed
from cx_pipeline.ingest.graphql import ShopifyGraphQL
from cx_pipeline.ingest.http import ApiClient, register_secret
from cx_pipeline.ingest.landing import Batch, ProgressFn, fetch
from cx_pipeline.ingest.sources import gorgias, shopify, shopify_inventory, vendure, zendesk
from cx_pipeline.ingest.sources.files import default_pattern, pull_files
from cx_pipeline.ingest.sources.helpdesk import InquiryRules, load_rules, stage_tickets
from cx_pipeline.ingest.sources.shopify_bulk import BulkSettings
from cx_pipeline.storefront.adapters import ADAPTERS, StorefrontAdapter, StorefrontConfigError

# The Dagster concurrency pool of every asset that opens the warehouse (deploy/dagster.yaml limits it).
WAREHOUSE_POOL = "warehouse"


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. One process writes it at a time: the run queue keeps runs apart, and a step
    waits while a step of the same run in another process (the multiprocess executor) holds it."""

    path: str = "data/warehouse.duckdb"
    memory_limit: str = warehouse.DEFAULT_MEMORY_LIMIT  # DuckDB's cap; past it, joins and sorts spill to disk
    wait_seconds: float = warehouse.DEFAULT_WAIT_SECONDS  # while another process holds the file

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.path, read_only, self.memory_limit, self.wait_seconds) as con:
            yield con

    @property
    def reports_dir(self) -> Path:
        """Where charts and exports go: `reports/` beside the warehouse file."""
        return Path(self.path).parent / "reports"


class AppStoreResource(dg.ConfigurableResource):
    """The review app's SQLite store: decisions come from it, the review queue is published to it."""

    path: str = "data/app.sqlite"

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        with appstore.connect(self.path) as store:
            yield store


class UpstreamApiResource(dg.ConfigurableResource):
    """An upstream JSON API: base URL, bearer token (from an env var, never logged), timeouts and retries,
    and the limits that make every pull end."""

    source_name: ClassVar[str] = "rest"

    base_url: str
    token: str
    # the largest page the API serves (the simulator's limit): a full read of a million rows is client-bound, and
    # each page costs a request and a statement (catalog 9.1 → 7.3 s, stock 5.4 → 3.7 s against 1,000)
    page_size: int = 5000
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    retries: int = 5
    backoff_seconds: float = 0.5
    max_pages: int = 0  # per pull; 0 derives it from the feed's largest pull so far (`page_cap`)
    max_retry_after_seconds: float = http.MAX_RETRY_AFTER_SECONDS  # a longer Retry-After fails at once
    request_deadline_seconds: float = http.REQUEST_DEADLINE_SECONDS  # one request: retries and body included
    pull_deadline_seconds: float = http.PULL_DEADLINE_SECONDS  # one pull of a feed, every page
    follow_cross_origin_redirects: bool = False  # if on: followed with a warning, never with the token
    # a snapshot the source reads by change (on hand) is read whole this often, to catch drift and deletions
    full_read_every_hours: float = 24.0
    # the zone of timestamps the source sends without one (e.g. Europe/Berlin); "": such a timestamp breaks
    # the contract instead of being taken as UTC
    source_time_zone: str = ""

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
                max_retry_after=self.max_retry_after_seconds,
                request_deadline=self.request_deadline_seconds,
                pull_deadline=self.pull_deadline_seconds,
                follow_cross_origin_redirects=self.follow_cross_origin_redirects,
            )
        return self._client

    def pull(
        self, con: duckdb.DuckDBPyConnection, feed: Feed, since: datetime | None, progress: ProgressFn | None = None
    ) -> Batch:
        """Stage `feed`'s rows changed since `since` (all of them when None) in `landing_<feed>`."""
        client = self.client.with_max_pages(self.max_pages or self.page_cap(con, feed))
        zone = self.source_time_zone or None
        return fetch(con, client, feed, since, page_size=self.page_size, progress=progress, time_zone=zone)

    def changed_since(self, feed: Feed, since: str | None) -> str | None:
        """The source's clock (`as_of`) if `feed` has a row changed after `since` (an `as_of` it sent before;
        None: any row), else None. One request for one row: cheap enough for a sensor's every tick."""
        params: dict[str, object] = {"limit": 1}
        if since:  # updated_since is inclusive: ask for what came after the moment already seen
            params["updated_since"] = (datetime.fromisoformat(since) + timedelta(microseconds=1)).isoformat()
        page = self.client.get_json(feed.path, params)
        return str(page["as_of"]) if page.get("data") else None

    def page_cap(self, con: duckdb.DuckDBPyConnection, feed: Feed) -> int:
        """The pages a pull of `feed` may take when `max_pages` is unset: ten times its largest pull so far,
        and never fewer than a first load needs (see `http.page_cap`)."""
        (largest,) = first_row(con, "SELECT max(pages) FROM ingest_batches WHERE feed = ?", [feed.name])
        return http.page_cap(largest, self.page_size)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _ = self.client  # fail at start, before any write, on a malformed URL or a missing token
        if self.source_time_zone:
            try:
                zoneinfo.ZoneInfo(self.source_time_zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise dg.DagsterInvalidConfigError(
                    f"{type(self).__name__}: source_time_zone {self.source_time_zone!r} is not a time zone name "
                    "(use an IANA name such as Europe/Berlin, or leave it empty)",
                    [],
                    self.source_time_zone,
                ) from exc

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


class NotificationResource(UpstreamApiResource):
    """Customer notification API (`POST /notifications`, idempotent by key)."""


class SourceResource(Protocol):
    """Where a role's feeds come from (the REST shape, a vendor's API, a folder of files): every source stages
    its rows in the feed's columns in `landing_<feed>`, so the same landing and contract judge them all.
    `source_name` is recorded with each batch: a read by change continues only from the same source's cursor."""

    source_name: ClassVar[str]

    def pull(
        self, con: duckdb.DuckDBPyConnection, feed: Feed, since: datetime | None, progress: ProgressFn | None = None
    ) -> Batch: ...


@runtime_checkable
class ChangeProbe(Protocol):
    """A source a sensor can ask, cheaply, whether a feed changed since a moment it was told (the REST shape's
    `updated_since` with one row). Vendors' APIs and file drops have no such question here yet."""

    def changed_since(self, feed: Feed, since: str | None) -> str | None: ...


def rest_source(cls: type[UpstreamApiResource]) -> Callable[[str], UpstreamApiResource]:
    """A builder of the bundled REST shape's resource for a role: CX_<ROLE>_URL, _TOKEN and _TIME_ZONE."""

    def build(role: str) -> UpstreamApiResource:
        prefix = f"CX_{role.upper()}"
        return cls(
            base_url=dg.EnvVar(f"{prefix}_URL"),
            token=dg.EnvVar(f"{prefix}_TOKEN"),
            source_time_zone=os.environ.get(f"{prefix}_TIME_ZONE", ""),
            full_read_every_hours=float(os.environ.get(f"{prefix}_FULL_READ_EVERY_HOURS", 24)),
        )

    return build


# The bundled REST shape's client of each role the feeds name (`Feed.system`, also the resource key).
UPSTREAM: dict[str, type[UpstreamApiResource]] = {
    "wms": WmsResource,
    "catalog": CatalogResource,
    "oms": OmsResource,
    "helpdesk": HelpdeskResource,
}


class HelpdeskApiResource(dg.ConfigurableResource):
    """A vendor helpdesk as the source of the inquiries feed: its URL and credentials (from env vars, never logged),
    the inquiry rules file (empty: the bundled one), timeouts, retries and the limits that make every pull end."""

    url: str
    email: str = ""
    token: str
    rules_path: str = ""
    page_size: int = 100
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    retries: int = 5
    backoff_seconds: float = 0.5
    max_pages: int = 10_000
    max_retry_after_seconds: float = http.MAX_RETRY_AFTER_SECONDS  # a longer Retry-After fails at once
    pull_deadline_seconds: float = http.PULL_DEADLINE_SECONDS

    _client: ApiClient | None = PrivateAttr(default=None)
    _rules: InquiryRules | None = PrivateAttr(default=None)

    def authorization(self) -> str:
        raise NotImplementedError

    @property
    def client(self) -> ApiClient:
        """The client, built once per run; the vendor's own Authorization header is set on its session (which
        registers it as a secret)."""
        if self._client is None:
            client = ApiClient(
                self.url,
                None,
                name=type(self).__name__.removesuffix("Resource"),
                connect_timeout=self.connect_timeout_seconds,
                read_timeout=self.read_timeout_seconds,
                retries=self.retries,
                backoff_factor=self.backoff_seconds,
                max_pages=self.max_pages,
                max_retry_after=self.max_retry_after_seconds,
                pull_deadline=self.pull_deadline_seconds,
            )
            if not self.token:
                raise ValueError(f"{client.name}: no API token configured")
            register_secret(self.token)  # the token itself, not only the header built from it, is never shown
            client.session.headers["Authorization"] = self.authorization()
            self._client = client
        return self._client

    @property
    def rules(self) -> InquiryRules:
        if self._rules is None:
            self._rules = load_rules(self.rules_path or None)
        return self._rules

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _ = self.client, self.rules  # a bad URL, a missing token or a broken rules file fail before any write

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()


class ZendeskResource(HelpdeskApiResource):
    """Zendesk Support (`url` = https://<subdomain>.zendesk.com): `email` + `token` an agent's API token, or `token`
    alone an OAuth access token; the ids of the custom fields holding an order number, a SKU and a contact reason."""

    source_name: ClassVar[str] = "zendesk"

    order_field_id: int = 0
    sku_field_id: int = 0
    reason_field_id: int = 0
    page_size: int = zendesk.MAX_PER_PAGE

    def authorization(self) -> str:
        return zendesk.authorization(self.email, self.token)

    def pull(
        self, con: duckdb.DuckDBPyConnection, feed: Feed, since: datetime | None, progress: ProgressFn | None = None
    ) -> Batch:
        """Stage the inquiries of the tickets changed since `since` (all when None) from the incremental export."""
        fields = zendesk.ZendeskFields(self.order_field_id, self.sku_field_id, self.reason_field_id)
        pages = partial(zendesk.ticket_pages, self.client, since, self.rules, fields, self.page_size)
        return stage_tickets(con, self.client, feed, pages, since, progress)


class GorgiasResource(HelpdeskApiResource):
    """Gorgias (`url` = https://<domain>.gorgias.com): `email` + `token` (a REST API key); the ids of the ticket
    fields holding an order number and a contact reason; how far back each pull re-reads (tags come late)."""

    source_name: ClassVar[str] = "gorgias"

    order_field_id: str = ""
    reason_field_id: str = ""
    lookback_hours: float = 72.0

    def authorization(self) -> str:
        return gorgias.authorization(self.email, self.token)

    def pull(
        self, con: duckdb.DuckDBPyConnection, feed: Feed, since: datetime | None, progress: ProgressFn | None = None
    ) -> Batch:
        """Stage the inquiries of the tickets changed since `since` minus the look-back (all when None)."""
        fields = gorgias.GorgiasFields(self.order_field_id, self.reason_field_id)
        lookback = timedelta(hours=self.lookback_hours)
        pages = partial(gorgias.ticket_pages, self.client, since, self.rules, fields, lookback, self.page_size)
        return stage_tickets(con, self.client, feed, pages, since, progress)


def helpdesk_source(cls: type[HelpdeskApiResource]) -> Callable[[str], HelpdeskApiResource]:
    """A builder of a vendor helpdesk's resource: CX_HELPDESK_URL, _EMAIL, _TOKEN, _ORDER_FIELD, _REASON_FIELD,
    _SKU_FIELD (Zendesk), _LOOKBACK_HOURS (Gorgias) and CX_INQUIRY_RULES."""

    def build(role: str) -> HelpdeskApiResource:
        prefix = f"CX_{role.upper()}"
        settings: dict[str, object] = {
            "url": dg.EnvVar(f"{prefix}_URL"),
            "email": os.environ.get(f"{prefix}_EMAIL", ""),
            "token": dg.EnvVar(f"{prefix}_TOKEN"),
            "rules_path": os.environ.get("CX_INQUIRY_RULES", ""),
        }
        env = {name: os.environ.get(f"{prefix}_{name}", "").strip() for name in ("ORDER_FIELD", "REASON_FIELD")}
        if cls is ZendeskResource:  # Zendesk's custom fields have numeric ids, and one may hold the SKU
            env["SKU_FIELD"] = os.environ.get(f"{prefix}_SKU_FIELD", "").strip()
            settings |= {f"{n.lower()}_id": int(v) for n, v in env.items() if v}
        else:
            settings |= {f"{n.lower()}_id": v for n, v in env.items() if v}
            settings["lookback_hours"] = float(os.environ.get(f"{prefix}_LOOKBACK_HOURS", 72))
        return cls(**settings)

    return build


class FileDropResource(dg.ConfigurableResource):
    """A folder the source system drops its exports into (the WMS's receipts, purchase orders and on-hand as CSV or
    Parquet):
    each new file is loaded once, only once it has settled, and a malformed one is rejected whole
    (`cx_pipeline.ingest.sources.files`; the CSV shape per feed: docs/architecture.md, "File drop")."""

    source_name: ClassVar[str] = "files"

    folder: str
    settle_seconds: float = 60.0  # a file changed more recently than this may still be being written
    # feed -> file name patterns (`;` between several); a feed left out reads <feed>*.csv, <feed>*.parquet...
    patterns: dict[str, str] = {}  # noqa: RUF012
    source_time_zone: str = ""  # the zone of timestamps the export writes without one ("": they break the contract)

    def pattern(self, feed: Feed) -> str:
        """The names of `feed`'s export files (any case), e.g. receipts*.csv; by default CSV and Parquet, and
        workbooks too, which are rejected saying to save them as CSV rather than left unnoticed."""
        return self.patterns.get(feed.name, default_pattern(feed))

    def pull(
        self, con: duckdb.DuckDBPyConnection, feed: Feed, since: datetime | None, progress: ProgressFn | None = None
    ) -> Batch:
        """Stage `feed`'s new settled files as one batch in `landing_<feed>` (`since` is not needed: the files
        ledger, not a timestamp, says what was read), and say in the run's log what became of each file."""
        read = pull_files(
            con, feed, Path(self.folder), self.pattern(feed), since, time.time(), self.settle_seconds,
            self.source_time_zone or None,
        )  # fmt: skip
        log = dg.get_dagster_logger()
        for note in read.notes:
            log.info(f"{feed.table}: {note}")
        for problem in read.rejected:
            log.error(f"{feed.table}: {problem}")
        if read.loaded:
            log.info(f"{feed.table}: read {', '.join(read.loaded)} from {self.folder} ({read.batch.rows:,} rows)")
        if progress:
            progress(read.batch.pages, read.batch.rows)
        return read.batch

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.source_time_zone:  # a wrong zone name fails at start, before any write
            zoneinfo.ZoneInfo(self.source_time_zone)


def file_drop_source(role: str) -> FileDropResource:
    """A builder of the file-drop source for a role: CX_<ROLE>_DROP_DIR, _SETTLE_SECONDS and _TIME_ZONE."""
    prefix = f"CX_{role.upper()}"
    return FileDropResource(
        folder=dg.EnvVar(f"{prefix}_DROP_DIR"),
        settle_seconds=float(os.environ.get(f"{prefix}_SETTLE_SECONDS", 60)),
        source_time_zone=os.environ.get(f"{prefix}_TIME_ZONE", ""),
    )


class ShopifyAdminResource(dg.ConfigurableResource):
    """A Shopify shop's Admin GraphQL API, what the Shopify sources share: `shop_url` (https://<shop>.myshopify.com),
    an Admin API `access_token` (from an env var, never logged), the API version, and the limits that make every
    request end; one endpoint per run, so every query of the run shares one session and cost bucket."""

    source_name: ClassVar[str] = "shopify"

    shop_url: str
    access_token: str
    api_version: str = "2026-01"
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    retries: int = 5
    backoff_seconds: float = 0.5
    throttle_attempts: int = 5

    _shop: ShopifyGraphQL | None = PrivateAttr(default=None)

    @property
    def shop(self) -> ShopifyGraphQL:
        if self._shop is None:
            self._shop = ShopifyGraphQL(
                self.shop_url,
                self.access_token,
                api_version=self.api_version,
                connect_timeout=self.connect_timeout_seconds,
                read_timeout=self.read_timeout_seconds,
                retries=self.retries,
                backoff_factor=self.backoff_seconds,
                throttle_attempts=self.throttle_attempts,
            )
        return self._shop

    def log_throttling(self, feed: Feed) -> None:
        if self.shop.throttled:
            dg.get_dagster_logger().info(
                f"{feed.table}: Shopify throttled {self.shop.throttled} queries; waited {sum(self.shop.waits):.1f} s "
                "for its cost bucket"
            )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _ = self.shop  # a malformed URL or a missing token fails before any write

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._shop is not None:
            self._shop.close()


class ShopifySourceResource(ShopifyAdminResource):
    """A Shopify shop as the source of the catalog (products) and open orders feeds, through the Admin GraphQL API:
    `shop_url` (https://<shop>.myshopify.com), an Admin API `access_token` (from an env var, never logged), the API
    version, how much of each product / order a page asks for, and the limits that make every pull end.
    `promise_days`: the dispatch promise of an order whose fulfillment order has no `fulfillBy` (0: none, and such
    an order breaks the contract). See docs/architecture.md, "Shopify as a source"."""

    page_size: int = 250
    max_variants: int = 100
    max_lines: int = 25
    max_fulfillment_orders: int = 3
    max_pages: int = 10_000
    promise_days: float = 0.0
    # the catalog is read by change each run and whole this often, to catch deletions and missed edits
    full_read_every_hours: float = 24.0
    # the catalog's full reads by one bulk operation (a large shop), waited for up to bulk_timeout_seconds
    bulk_full_reads: bool = False
    bulk_timeout_seconds: float = 3600.0
    bulk_poll_seconds: float = 5.0

    def pull(
        self, con: duckdb.DuckDBPyConnection, feed: Feed, since: datetime | None, progress: ProgressFn | None = None
    ) -> Batch:
        """Stage the products (catalog) or orders (open_orders) changed since `since` (all when None)."""
        limits = shopify.ShopifyLimits(
            self.page_size, self.max_variants, self.max_lines, self.max_fulfillment_orders, self.max_pages
        )
        promise = timedelta(days=self.promise_days) if self.promise_days > 0 else None
        bulk = BulkSettings(self.bulk_timeout_seconds, self.bulk_poll_seconds) if self.bulk_full_reads else None
        batch = shopify.pull(con, self.shop, feed, since, limits, promise, progress, bulk)
        self.log_throttling(feed)
        return batch


def shopify_source(role: str) -> ShopifySourceResource:
    """A builder of the Shopify source for a role (catalog, oms): CX_<ROLE>_URL (the shop), _TOKEN (an Admin API
    access token), _SHOPIFY_API_VERSION, _SHOPIFY_MAX_VARIANTS, _SHOPIFY_MAX_LINES, _SHOPIFY_MAX_FULFILLMENT_ORDERS and
    _PROMISE_DAYS and _FULL_READ_EVERY_HOURS; _SHOPIFY_BULK (1: the catalog's full reads by a bulk operation) and
    _SHOPIFY_BULK_TIMEOUT_SECONDS."""
    prefix = f"CX_{role.upper()}"
    settings: dict[str, object] = {"shop_url": dg.EnvVar(f"{prefix}_URL"), "access_token": dg.EnvVar(f"{prefix}_TOKEN")}
    if version := os.environ.get(f"{prefix}_SHOPIFY_API_VERSION", "").strip():
        settings["api_version"] = version
    for name in ("max_variants", "max_lines", "max_fulfillment_orders"):
        if value := os.environ.get(f"{prefix}_SHOPIFY_{name.upper()}", "").strip():
            settings[name] = int(value)
    for name in ("promise_days", "full_read_every_hours"):
        if value := os.environ.get(f"{prefix}_{name.upper()}", "").strip():
            settings[name] = float(value)
    settings["bulk_full_reads"] = env_flag(f"{prefix}_SHOPIFY_BULK")
    if value := os.environ.get(f"{prefix}_SHOPIFY_BULK_TIMEOUT_SECONDS", "").strip():
        settings["bulk_timeout_seconds"] = float(value)
    return ShopifySourceResource(**settings)


class ShopifyInventoryResource(ShopifyAdminResource):
    """A Shopify shop's inventory levels as the source of the on-hand feed, through the Admin GraphQL API: `shop_url`,
    an Admin API `access_token` (read_inventory; from an env var, never logged), `locations` (the shop's location
    name -> the pipeline's warehouse code; a location left out keeps its name). Read whole every run, by a bulk
    operation (`bulk`, waited for up to `bulk_timeout_seconds`) or page by page: Shopify documents no filter that
    lists the quantities changed since a moment, so it has no `full_read_every_hours`. Only for a shop the stock
    status is not pushed to. See docs/architecture.md, "Shopify as a source"."""

    locations: dict[str, str] = {}  # noqa: RUF012 - pydantic copies field defaults
    bulk: bool = True
    bulk_timeout_seconds: float = 3600.0
    bulk_poll_seconds: float = 5.0
    page_size: int = 250
    max_levels: int = 50
    max_pages: int = 10_000
    download_timeout_seconds: float = 300.0

    def pull(
        self, con: duckdb.DuckDBPyConnection, feed: Feed, since: datetime | None, progress: ProgressFn | None = None
    ) -> Batch:
        """Stage the shop's whole inventory as on-hand rows (`since` is never set: see the class)."""
        read = shopify_inventory.InventoryRead(
            locations=dict(self.locations),
            bulk=self.bulk,
            bulk_timeout=self.bulk_timeout_seconds,
            bulk_poll=self.bulk_poll_seconds,
            page_size=self.page_size,
            max_levels=self.max_levels,
            max_pages=self.max_pages,
            download_timeout=(self.connect_timeout_seconds, self.download_timeout_seconds),
        )
        batch = shopify_inventory.pull(con, self.shop, feed, read, progress)
        self.log_throttling(feed)
        return batch


def shopify_inventory_source(prefix: str) -> ShopifyInventoryResource:
    """A builder of the Shopify inventory source of the on-hand feed: CX_<PREFIX>_URL (the shop), _TOKEN (an Admin
    API access token with read_inventory), _LOCATIONS (JSON: shop location name -> warehouse code),
    _SHOPIFY_API_VERSION, _SHOPIFY_BULK (0: read page by page; default a bulk operation),
    _SHOPIFY_BULK_TIMEOUT_SECONDS and _SHOPIFY_MAX_LEVELS (locations per item, page by page)."""
    prefix = f"CX_{prefix.upper()}"
    settings: dict[str, object] = {"shop_url": dg.EnvVar(f"{prefix}_URL"), "access_token": dg.EnvVar(f"{prefix}_TOKEN")}
    settings["locations"] = env_json(f"{prefix}_LOCATIONS", "shop location name to warehouse code")
    if version := os.environ.get(f"{prefix}_SHOPIFY_API_VERSION", "").strip():
        settings["api_version"] = version
    if os.environ.get(f"{prefix}_SHOPIFY_BULK", "").strip():
        settings["bulk"] = env_flag(f"{prefix}_SHOPIFY_BULK")
    if value := os.environ.get(f"{prefix}_SHOPIFY_BULK_TIMEOUT_SECONDS", "").strip():
        settings["bulk_timeout_seconds"] = float(value)
    if value := os.environ.get(f"{prefix}_SHOPIFY_MAX_LEVELS", "").strip():
        settings["max_levels"] = int(value)
    return ShopifyInventoryResource(**settings)


class VendureSourceResource(dg.ConfigurableResource):
    """A Vendure shop as the source of the catalog (variants) and open orders feeds, through its admin API: `url`
    (`.../admin-api`), an administrator's `username` and `password` (from env vars, never logged), the facets that
    carry the category and the supplier, the `warehouse` orders ship from and the dispatch promise (`promise_days`;
    0: none, and such an order breaks the contract). See docs/architecture.md, "Vendure as a source"."""

    source_name: ClassVar[str] = "vendure"

    url: str
    username: str
    password: str
    category_facet: str = "category"
    supplier_facet: str = "supplier"
    warehouse: str = ""
    promise_days: float = 0.0
    # orders placed this recently are read on every pull: Vendure does not move an order's updatedAt as it ships
    order_lookback_days: float = 14.0
    # the catalog is read by change each run and whole this often, to catch deletions and missed edits
    full_read_every_hours: float = 24.0
    page_size: int = 100
    max_pages: int = 10_000
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    retries: int = 5
    backoff_seconds: float = 0.5

    _admin: vendure.VendureAdmin | None = PrivateAttr(default=None)

    @property
    def admin(self) -> vendure.VendureAdmin:
        """The admin API, logged in once per run."""
        if self._admin is None:
            self._admin = vendure.VendureAdmin(
                self.url,
                self.username,
                self.password,
                connect_timeout=self.connect_timeout_seconds,
                read_timeout=self.read_timeout_seconds,
                retries=self.retries,
                backoff_factor=self.backoff_seconds,
            )
        return self._admin

    def pull(
        self, con: duckdb.DuckDBPyConnection, feed: Feed, since: datetime | None, progress: ProgressFn | None = None
    ) -> Batch:
        """Stage the variants (catalog) or placed orders (open_orders) changed since `since` (all when None)."""
        mapping = vendure.VendureMapping(
            self.category_facet,
            self.supplier_facet,
            self.warehouse or None,
            timedelta(days=self.promise_days) if self.promise_days > 0 else None,
            timedelta(days=self.order_lookback_days) if self.order_lookback_days > 0 else None,
        )
        return vendure.pull(con, self.admin, feed, since, mapping, self.page_size, self.max_pages, progress)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.admin.login()  # a wrong URL or rejected credentials fail before any write

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._admin is not None:
            self._admin.close()


def vendure_source(role: str) -> VendureSourceResource:
    """A builder of the Vendure source for a role (catalog, oms): CX_<ROLE>_URL (the admin API), _USERNAME,
    _PASSWORD, _CATEGORY_FACET, _SUPPLIER_FACET, _WAREHOUSE, _PROMISE_DAYS, _ORDER_LOOKBACK_DAYS and
    _FULL_READ_EVERY_HOURS."""
    prefix = f"CX_{role.upper()}"
    settings: dict[str, object] = {
        field: dg.EnvVar(f"{prefix}_{field.upper()}") for field in ("url", "username", "password")
    }
    for name in ("category_facet", "supplier_facet", "warehouse"):
        if value := os.environ.get(f"{prefix}_{name.upper()}", "").strip():
            settings[name] = value
    for name in ("promise_days", "order_lookback_days", "full_read_every_hours"):
        if value := os.environ.get(f"{prefix}_{name.upper()}", "").strip():
            settings[name] = float(value)
    return VendureSourceResource(**settings)


# The sources each role's feeds may come from, by the name CX_<ROLE>_SOURCE gives (rest, the default, is the
# bundled REST shape).
SOURCES: dict[str, dict[str, Callable[[str], SourceResource]]] = {
    role: {"rest": rest_source(cls)} for role, cls in UPSTREAM.items()
}

SOURCES["helpdesk"] |= {"zendesk": helpdesk_source(ZendeskResource), "gorgias": helpdesk_source(GorgiasResource)}
SOURCES["wms"]["files"] = file_drop_source  # exports dropped as files in a folder (CX_WMS_DROP_DIR)
SOURCES["catalog"]["shopify"] = shopify_source  # products from a Shopify shop (CX_CATALOG_URL, _TOKEN)
SOURCES["oms"]["shopify"] = shopify_source  # orders from a Shopify shop (CX_OMS_URL, _TOKEN)
SOURCES["catalog"]["vendure"] = vendure_source  # variants from a Vendure shop (CX_CATALOG_URL, _USERNAME, _PASSWORD)
SOURCES["oms"]["vendure"] = vendure_source  # orders from a Vendure shop (CX_OMS_URL, _USERNAME, _PASSWORD)

# Sources that serve only one feed of a role, chosen by CX_<FEED>_SOURCE (besides the role's own sources).
FEED_SOURCES: dict[str, dict[str, Callable[[str], SourceResource]]] = {
    "on_hand": {"shopify": shopify_inventory_source},  # inventory levels of a shop that is not the one pushed to
}

# The stock truth comes from the WMS: the shop the status is pushed to is never read back as on hand.
PUSH_TARGETS = ("vendure", "shopify")


class WmsSources(dg.ConfigurableResource):
    """The WMS role's feeds from more than one system: each feed's source, as CX_<FEED>_SOURCE names it (else
    CX_WMS_SOURCE's), e.g. receipts and purchase orders as files dropped by the WMS and on-hand from its API. Each
    feed's settings then use its own prefix (CX_ON_HAND_URL, CX_RECEIPTS_DROP_DIR...)."""

    receipts: dg.ConfigurableResource
    purchase_orders: dg.ConfigurableResource
    on_hand: dg.ConfigurableResource

    def for_feed(self, feed: Feed) -> SourceResource:
        return getattr(self, feed.name)


def feed_source(resource: Any, feed: Feed) -> SourceResource:
    """The source of `feed` within its role's resource (a role's resource is one source, or `WmsSources`)."""
    return resource.for_feed(feed) if isinstance(resource, WmsSources) else resource


def push_target_refusal(
    source: str, source_url: str = "", adapter: str = "", storefront_url: str = "", variable: str = "CX_WMS_SOURCE"
) -> str | None:
    """Why the on-hand source `source` (at `source_url`, named by `variable`) may not be used with the storefront
    `adapter` at `storefront_url`, or None when it may."""
    why = (
        "the stock truth comes from the WMS, and the storefront is where the pipeline pushes stock: reading it back "
        "as on hand would read the pipeline's own writes"
    )
    readers = {*SOURCES["wms"], *(FEED_SOURCES["on_hand"] if variable != "CX_WMS_SOURCE" else ())}
    apart = source_url and storefront_url and source_url.rstrip("/").lower() != storefront_url.rstrip("/").lower()
    if source in PUSH_TARGETS and (source not in readers or (source == adapter and not apart)):
        return f"{variable}={source!r} is refused: {why}. Keep it on the WMS (rest or files)"
    # The bundled REST shape may share a host with the storefront (the simulator serves both); a shop's own API
    # as the WMS's address is the push target read back.
    same = source_url and storefront_url and not apart
    if same and adapter in PUSH_TARGETS:
        prefix = variable.removesuffix("_SOURCE")
        return f"{prefix}_URL is the {adapter} storefront the stock is pushed to (CX_STOREFRONT_URL): refused, as {why}"
    return None


def source_from_env(role: str) -> SourceResource:
    """The resource of `role`'s source, as CX_<ROLE>_SOURCE names it (rest when unset); for the WMS, a feed that
    names its own source (CX_RECEIPTS_SOURCE, CX_PURCHASE_ORDERS_SOURCE, CX_ON_HAND_SOURCE) makes it `WmsSources`.
    A push target as the on-hand source is refused."""
    own = {f.name: env_source(f.name) for f in FEEDS.values() if f.system == role and role == "wms"}
    on_hand = "ON_HAND" if own.get("on_hand") else "WMS"
    if role == "wms" and (
        refusal := push_target_refusal(
            env_source(on_hand),
            os.environ.get(f"CX_{on_hand}_URL", ""),
            os.environ.get("CX_STOREFRONT_ADAPTER", "rest").strip().lower(),
            os.environ.get("CX_STOREFRONT_URL", ""),
            f"CX_{on_hand}_SOURCE",
        )
    ):
        raise ValueError(refusal)
    base = build_source(role, role, SOURCES[role])
    if not any(own.values()):
        return base
    return WmsSources(
        **{f: build_source(f, f, SOURCES[role] | FEED_SOURCES.get(f, {})) if name else base for f, name in own.items()}
    )


def env_source(prefix: str) -> str:
    """The source CX_<PREFIX>_SOURCE names ("" when unset)."""
    return os.environ.get(f"CX_{prefix.upper()}_SOURCE", "").strip().lower()


def build_source(name: str, prefix: str, choices: dict[str, Callable[[str], SourceResource]]) -> SourceResource:
    """The source CX_<PREFIX>_SOURCE names among `choices` (rest when unset), built from CX_<PREFIX>_* settings."""
    variable, chosen = f"CX_{prefix.upper()}_SOURCE", env_source(prefix) or "rest"
    if chosen not in choices:
        raise ValueError(f"{variable}={chosen!r} is not a source of the {name} feeds: choose {', '.join(choices)}")
    return choices[chosen](prefix)


class StorefrontResource(dg.ConfigurableResource):
    """The storefront stock status is pushed to, through the adapter named by `adapter`.

    rest: `url` + `token` (the simulator's REST storefront). vendure: `url` = the admin API
    (`.../admin-api`), `username` + `password`. shopify: `url` = the shop (`https://<shop>.myshopify.com`),
    `token` = an Admin API access token, `location_id` = the location whose `available` quantity is set.
    shopify may use `client_id` + `client_secret` (a custom app's client-credentials grant: short-lived tokens,
    renewed by the adapter) instead of `token`.
    vendure and shopify: `locations` maps the pipeline's warehouses to the shop's stock locations (Vendure:
    by name; Shopify: by id or name); a location it leaves out is reported, or emptied when
    `zero_unmapped_locations`; `enable_tracking` lets a write turn on inventory tracking for an item the shop
    sells whatever its stock (else such an item is reported, and not pushed out of stock).
    """

    adapter: str = "rest"
    url: str
    token: str = ""
    username: str = ""
    password: str = ""
    location_id: str = ""
    client_id: str = ""
    client_secret: str = ""
    locations: dict[str, str] = {}  # noqa: RUF012 - pydantic copies field defaults
    zero_unmapped_locations: bool = False
    enable_tracking: bool = False
    batch_size: int = 100
    # a shop with a change log (rest) is read by change each run and whole this often, to catch drift
    full_read_every_hours: float = 24.0
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    retries: int = 5
    backoff_seconds: float = 0.5

    _adapter: StorefrontAdapter | None = PrivateAttr(default=None)

    def build(self) -> StorefrontAdapter:
        """A new adapter as configured (not yet checked)."""
        http = {
            "connect_timeout": self.connect_timeout_seconds,
            "read_timeout": self.read_timeout_seconds,
            "retries": self.retries,
            "backoff_factor": self.backoff_seconds,
        }
        if self.adapter == "rest":
            from cx_pipeline.storefront.adapters.rest import RestStorefront

            return RestStorefront(ApiClient(self.url, self.token, name="storefront", **http), self.batch_size)
        if self.adapter == "vendure":
            from cx_pipeline.storefront.adapters.vendure import VendureStorefront

            return VendureStorefront(
                self.url,
                self.username,
                self.password,
                batch_size=self.batch_size,
                locations=self.locations or None,
                zero_unmapped_locations=self.zero_unmapped_locations,
                enable_tracking=self.enable_tracking,
                **http,
            )
        if self.adapter == "shopify":
            from cx_pipeline.storefront.adapters.shopify import ShopifyStorefront

            return ShopifyStorefront(
                self.url,
                self.token,
                self.location_id,
                client_id=self.client_id,
                client_secret=self.client_secret,
                locations=self.locations or None,
                zero_unmapped_locations=self.zero_unmapped_locations,
                enable_tracking=self.enable_tracking,
                batch_size=self.batch_size,
                **http,
            )
        raise StorefrontConfigError(
            f"storefront adapter {self.adapter!r} is unknown; choose one of {', '.join(ADAPTERS)}"
        )

    @property
    def client(self) -> StorefrontAdapter:
        """The adapter, built and checked once per run."""
        if self._adapter is None:
            adapter = self.build()
            adapter.check()
            self._adapter = adapter
        return self._adapter

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _ = self.client  # a bad URL or rejected credentials fail here, before any write

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._adapter is not None:
            self._adapter.close()


class ContractsResource(dg.ConfigurableResource):
    """Where the data contracts stop holding only what bad rows touch and block everything downstream, and
    how long a SKU may stay held before the run fails (see `cx_pipeline.ingest.contracts`)."""

    max_bad_row_share: float = ContractPolicy.max_bad_row_share
    min_snapshot_coverage: float = ContractPolicy.min_snapshot_coverage
    max_held_runs: int = 2  # a SKU held this many stock-position runs in a row fails the run

    @property
    def policy(self) -> ContractPolicy:
        return ContractPolicy(self.max_bad_row_share, self.min_snapshot_coverage)


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """Every resource, configured by the CX_* environment variables documented in the README."""

    def api(cls: type[UpstreamApiResource], system: str) -> UpstreamApiResource:
        return cls(
            base_url=dg.EnvVar(f"CX_{system}_URL"),
            token=dg.EnvVar(f"CX_{system}_TOKEN"),
            source_time_zone=os.environ.get(f"CX_{system}_TIME_ZONE", ""),
        )

    # Only the settings the chosen adapter needs are read, so the others may stay unset.
    kind = os.environ.get("CX_STOREFRONT_ADAPTER", "rest")
    shopify = ("client_id", "client_secret") if os.environ.get("CX_STOREFRONT_CLIENT_ID") else ("token",)
    if not os.environ.get("CX_STOREFRONT_LOCATIONS"):  # a location mapping names the locations itself
        shopify += ("location_id",)
    needs = {"rest": ("token",), "vendure": ("username", "password"), "shopify": shopify}
    storefront = StorefrontResource(
        adapter=kind,
        url=dg.EnvVar("CX_STOREFRONT_URL"),
        **{field: dg.EnvVar(f"CX_STOREFRONT_{field.upper()}") for field in needs.get(kind, ())},
        locations=env_json("CX_STOREFRONT_LOCATIONS"),
        zero_unmapped_locations=env_flag("CX_STOREFRONT_ZERO_UNMAPPED_LOCATIONS"),
        enable_tracking=env_flag("CX_STOREFRONT_ENABLE_TRACKING"),
        full_read_every_hours=float(os.environ.get("CX_STOREFRONT_FULL_READ_EVERY_HOURS", 24)),
    )
    return {
        "warehouse": WarehouseResource(
            path=dg.EnvVar("CX_WAREHOUSE_PATH"),
            memory_limit=os.environ.get("CX_WAREHOUSE_MEMORY_LIMIT", warehouse.DEFAULT_MEMORY_LIMIT),
            wait_seconds=float(os.environ.get("CX_WAREHOUSE_WAIT_SECONDS", warehouse.DEFAULT_WAIT_SECONDS)),
        ),
        "app_store": AppStoreResource(path=dg.EnvVar("CX_APP_DB")),
        "contracts": ContractsResource(
            max_bad_row_share=float(os.environ.get("CX_MAX_BAD_ROW_SHARE", ContractPolicy.max_bad_row_share)),
            min_snapshot_coverage=float(
                os.environ.get("CX_MIN_SNAPSHOT_COVERAGE", ContractPolicy.min_snapshot_coverage)
            ),
            max_held_runs=int(os.environ.get("CX_MAX_HELD_RUNS", 2)),
        ),
        **{role: source_from_env(role) for role in SOURCES},
        "notifications": api(NotificationResource, "NOTIFY"),
        "storefront": storefront,
    }


def env_flag(name: str) -> bool:
    """A yes/no setting: 1, true, yes or on (any case) is yes; unset is no."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def env_json(name: str, meaning: str = "warehouse name to shop location name") -> dict[str, str]:
    """A mapping setting given as a JSON object of names to names (`meaning` says which), e.g. {"WH-EAST": "Main
    warehouse"}; unset is empty."""
    text = os.environ.get(name, "").strip()
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} must be a JSON object of {meaning}: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"{name} must be a JSON object of {meaning}, got {text!r}")
    return value
