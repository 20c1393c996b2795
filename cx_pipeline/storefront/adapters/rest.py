"""The REST storefront (the demo simulator's `/storefront` API): paged read, batched keyed writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd

from cx_pipeline.ingest.http import ApiClient, UpstreamError
from cx_pipeline.storefront.adapters.base import (
    STATE_COLUMNS,
    ShopRead,
    StockUpdate,
    StorefrontAdapter,
    StorefrontConfigError,
    WriteResult,
)


class RestStorefront(StorefrontAdapter):
    """`GET /storefront/stock` (cursor-paged) and `POST /storefront/stock/batch` with an Idempotency-Key."""

    name = "rest"

    def __init__(self, client: ApiClient, batch_size: int = 100, page_size: int = 5000) -> None:
        self.client = client
        self.batch_size = batch_size
        self.page_size = page_size

    def check(self) -> None:
        try:
            self.client.get_json("/storefront/stock", {"limit": 1})
        except UpstreamError as exc:
            raise StorefrontConfigError(f"REST storefront at {self.client.base_url} is not usable: {exc}") from exc

    def read(self) -> pd.DataFrame:
        return self.read_all().state

    def read_all(self) -> ShopRead:
        return self._read({"limit": self.page_size})

    def read_changes(self, since: datetime) -> ShopRead:
        return self._read({"limit": self.page_size, "updated_since": since.astimezone(UTC).isoformat()})

    def _read(self, params: dict[str, object]) -> ShopRead:
        rows, as_of = [], None
        for page in self.client.pages("/storefront/stock", params):
            rows += page["data"]
            as_of = as_of or page.get("as_of")  # every page of one read carries the clock of its first
        state = pd.DataFrame(rows, columns=list(STATE_COLUMNS))
        return ShopRead(state, pd.Timestamp(as_of).to_pydatetime() if as_of else None)

    def write(self, updates: Sequence[StockUpdate], key: str) -> list[WriteResult]:
        body = {"updates": [{"sku": u.sku, "status": u.status, "quantity": u.quantity} for u in updates]}
        answer = self.client.post_json("/storefront/stock/batch", body, headers={"Idempotency-Key": key})
        by_sku = {r.get("sku"): r for r in answer.get("results", [])}
        results = []
        for u in updates:
            r = by_sku.get(u.sku)
            if r is None:
                results.append(WriteResult(u.sku, False, "missing from the storefront's answer"))
            elif r.get("ok"):
                after = r.get("after") or {}
                results.append(WriteResult(u.sku, True, "ok", after.get("status"), after.get("quantity")))
            else:
                results.append(WriteResult(u.sku, False, str(r.get("error"))))
        return results

    def close(self) -> None:
        self.client.close()
