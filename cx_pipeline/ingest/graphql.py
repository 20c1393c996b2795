"""A Shopify Admin GraphQL endpoint for reading: one session, paced by the calculated-cost leaky bucket Shopify reports
in `extensions.cost.throttleStatus`, THROTTLED answers waited out and retried, and the shop's clock read from the
`Date` header of its answers.

Contract followed: https://shopify.dev/docs/api/usage/rate-limits (a query's requested cost is reserved before it
runs, the difference to its actual cost refunded; when the bucket cannot cover it the answer is a `THROTTLED` error,
and a client waits until the bucket has restored enough). The storefront adapter paces its writes the same way and
could move onto this class later.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from cx_pipeline.ingest.http import ApiClient, UpstreamError, register_secret

log = logging.getLogger(__name__)

MAX_QUERY_COST = 1000  # Shopify's single-query limit
MAX_FIRST = 250  # a connection returns at most 250 nodes a page


class ShopifyGraphQL:
    """Queries against one shop's `/admin/api/<version>/graphql.json` with an Admin API access token.

    Before each query it waits until the bucket, as last reported and restored since, can pay the query's cost
    (the cost is learnt from the first answer); a THROTTLED answer is waited out and retried up to
    `throttle_attempts` times. `sleep` and `monotonic` are injectable so tests need not wait on the wall clock."""

    def __init__(
        self,
        shop_url: str,
        access_token: str,
        *,
        api_version: str,
        name: str = "shopify",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 5,
        backoff_factor: float = 0.5,
        throttle_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        register_secret(access_token)  # first: no message below may quote it
        if not access_token:
            raise ValueError(f"{name}: no Admin API access token configured")
        shop_url = shop_url.strip().rstrip("/")
        if "://" not in shop_url:
            shop_url = f"https://{shop_url}"  # "my-shop.myshopify.com" is how merchants write it
        self.name, self.shop_url, self.api_version = name, shop_url, api_version
        self.client = ApiClient(
            shop_url,
            None,  # Shopify authenticates with its own header
            name=name,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
            backoff_factor=backoff_factor,
        )
        self.client.session.headers["X-Shopify-Access-Token"] = access_token
        self.client.session.hooks["response"].append(self._saw)
        self.path = f"/admin/api/{api_version}/graphql.json"
        self.throttle_attempts = throttle_attempts
        self.sleep, self.monotonic = sleep, monotonic
        self.waits: list[float] = []  # seconds slept for the rate limit, for logs and tests
        self.throttled = 0  # THROTTLED answers met
        self.shop_clock: datetime | None = None  # the `Date` of the latest answer: the shop's clock
        self._bucket: tuple[float, float, float, float] | None = None  # available, maximum, restore rate, seen at
        self._costs: dict[str, float] = {}  # operation -> requested cost last reported

    def __repr__(self) -> str:  # never shows the token
        return f"ShopifyGraphQL(shop_url={self.shop_url!r}, api_version={self.api_version!r})"

    def query(self, operation: str, text: str, variables: dict[str, Any], cost: float) -> dict[str, Any]:
        """The `data` of one query (`cost`: its expected cost, until Shopify has told the real one); GraphQL errors
        other than THROTTLED are an UpstreamError quoting their codes and messages."""
        for attempt in range(1, self.throttle_attempts + 1):
            self._pace(self._costs.get(operation, cost))
            answer = self.client.post_json(self.path, {"query": text, "variables": variables})
            spent = (answer.get("extensions") or {}).get("cost") or {} if isinstance(answer, dict) else {}
            self._note(spent)
            if spent.get("requestedQueryCost") is not None:
                self._costs[operation] = float(spent["requestedQueryCost"])
            errors = answer.get("errors") if isinstance(answer, dict) else "not a JSON object"
            if not errors:
                return answer.get("data") or {}
            if not throttled(errors):
                raise UpstreamError(f"{self.name}: {operation} answered GraphQL errors: {messages(errors)}")
            self.throttled += 1
            log.info("%s: %s throttled (attempt %d, %s)", self.name, operation, attempt, spent.get("throttleStatus"))
            # Shopify's advice: wait until the bucket has restored enough for the requested cost, then retry
            self._pace(self._costs.get(operation, cost), minimum=1.0)
        raise UpstreamError(f"{self.name}: {operation} still throttled after {self.throttle_attempts} attempts")

    def pages(
        self, operation: str, text: str, variables: dict[str, Any], cost: float, max_pages: int
    ) -> Iterator[list[dict[str, Any]]]:
        """The nodes of connection `operation`, a page at a time, following `pageInfo.endCursor`. Every pull ends: a
        cursor already followed, a next page without a cursor, or more than `max_pages` pages is an error."""
        variables = dict(variables)
        followed: set[str] = set()
        count = 0
        while True:
            connection = self.query(operation, text, variables, cost).get(operation)
            if not isinstance(connection, dict) or not isinstance(connection.get("nodes"), list):
                raise UpstreamError(
                    f"{self.name}: {operation} answered without a list of nodes: {str(connection)[:200]}"
                )
            count += 1
            yield connection["nodes"]
            info = connection.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return
            cursor = info.get("endCursor")
            if not cursor or cursor in followed:
                raise UpstreamError(
                    f"{self.name}: {operation} page {count} says more follow but gives "
                    + ("no cursor" if not cursor else f"cursor {str(cursor)[:80]!r} again: the paging loops")
                )
            if count >= max_pages:
                raise UpstreamError(
                    f"{self.name}: {operation} has more than max_pages={max_pages:,} pages in one pull; stopped there"
                )
            followed.add(cursor)
            variables["after"] = cursor

    def close(self) -> None:
        self.client.close()

    def _saw(self, response: requests.Response, *args: object, **kwargs: object) -> requests.Response:
        # without a usable Date, the landing falls back to the pipeline's clock
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.shop_clock = parsedate_to_datetime(response.headers["Date"]).astimezone(UTC)
        return response

    def _note(self, cost: dict[str, Any]) -> None:
        status = cost.get("throttleStatus")
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self._bucket = (
                float(status["currentlyAvailable"]),
                float(status["maximumAvailable"]),
                float(status["restoreRate"]),
                self.monotonic(),
            )

    def _pace(self, cost: float, minimum: float = 0.0) -> None:
        """Sleep until the bucket, as last reported and restored since, holds `cost` points (at least `minimum`
        points' worth of restore time)."""
        if self._bucket is None:
            return
        available, maximum, rate, seen = self._bucket
        available = min(maximum, available + (self.monotonic() - seen) * rate)
        wait = max(min(cost, maximum) - available, minimum) / rate if rate > 0 else 0.0
        if wait > 0:
            self.waits.append(wait)
            self.sleep(wait)


def page_size(wanted: int, per_node: int) -> int:
    """Nodes a page may ask for: `wanted`, within Shopify's 250 a connection and its 1000-point single-query limit."""
    return max(1, min(wanted, MAX_FIRST, (MAX_QUERY_COST - 2) // max(per_node, 1)))


def throttled(errors: Any) -> bool:
    return isinstance(errors, list) and any(
        isinstance(e, dict) and (e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors
    )


def messages(errors: Any) -> str:
    if isinstance(errors, list):
        return "; ".join(
            f"{(e.get('extensions') or {}).get('code')}: {e.get('message')}" if isinstance(e, dict) else str(e)
            for e in errors
        )[:500]
    return str(errors)[:300]
