"""HTTP access to upstream systems: one session per client, retries, timeouts and cursor paging."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def retrying_session(retries: int, backoff_factor: float, backoff_max: float = 30.0) -> requests.Session:
    """A session whose GETs and POSTs urllib3 retries on connection errors, 429 (honouring Retry-After) and
    5xx, with exponential backoff; the last answer is handed back, so an error can quote it."""
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class UpstreamError(RuntimeError):
    """An upstream system could not be read (or written) even after retries; the message says why."""


class ApiClient:
    """A client for one upstream JSON API with bearer-token auth and cursor-paged feeds.

    Transport failures (refused or dropped connections, 429 with Retry-After, 5xx) are retried by urllib3
    with exponential backoff. A page whose body arrives cut off or is not JSON is re-fetched a few times by
    `get_json`, because urllib3 only sees the headers. POSTs are retried too: every write this project
    makes is idempotent (it carries an idempotency key, or sets an absolute value), so a repeat is harmless.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        name: str = "upstream",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 5,
        backoff_factor: float = 0.5,
        backoff_max: float = 30.0,
        page_attempts: int = 3,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{name}: base URL must start with http:// or https://, got {base_url!r}")
        if not token:
            raise ValueError(f"{name}: no API token configured")
        self.base_url = base_url.rstrip("/") + "/"
        self.name = name
        self.timeout = (connect_timeout, read_timeout)
        self.page_attempts = page_attempts
        self.backoff_factor = backoff_factor
        self.session = retrying_session(retries, backoff_factor, backoff_max)
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path.lstrip("/"))

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET one JSON document, re-fetching a truncated or malformed body up to `page_attempts` times."""
        url = self.url(path)
        for attempt in range(1, self.page_attempts + 1):
            try:
                response = self.session.get(url, params=params, timeout=self.timeout)
            except requests.exceptions.RetryError as exc:
                raise UpstreamError(f"{self.name}: GET {url} kept failing after retries: {exc}") from exc
            except requests.exceptions.ChunkedEncodingError as exc:
                problem = f"body cut off ({exc.__class__.__name__})"
            except requests.exceptions.RequestException as exc:
                raise UpstreamError(f"{self.name}: GET {url} failed: {exc}") from exc
            else:
                raise_for_status(self.name, response)
                try:
                    return orjson.loads(response.content)
                except orjson.JSONDecodeError as exc:
                    problem = f"body is not valid JSON ({exc})"
            log.warning("%s: GET %s attempt %d/%d: %s", self.name, url, attempt, self.page_attempts, problem)
            time.sleep(self.backoff_factor * attempt)
        raise UpstreamError(f"{self.name}: GET {url} params={params}: {problem} in {self.page_attempts} tries")

    def post_json(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        """POST a JSON body and return the JSON answer; only for idempotent writes (see the class note)."""
        url = self.url(path)
        try:
            response = self.session.post(
                url,
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json", **(headers or {})},
                timeout=self.timeout,
            )
        except requests.exceptions.RequestException as exc:
            raise UpstreamError(f"{self.name}: POST {url} failed: {exc}") from exc
        raise_for_status(self.name, response)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{self.name}: POST {url} answered non-JSON: {response.text[:200]!r}") from exc

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Yield each page envelope (`data`, `next_cursor`, `as_of`) of a cursor-paged feed."""
        params = dict(params or {})
        while True:
            page = self.get_json(path, params)
            if not isinstance(page, dict) or not isinstance(page.get("data"), list):
                raise UpstreamError(f"{self.name}: {path} answered without a 'data' list: {str(page)[:200]}")
            yield page
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor

    def close(self) -> None:
        self.session.close()


def raise_for_status(name: str, response: requests.Response) -> None:
    """Turn an error answer into an UpstreamError that says what to fix (never quoting credentials)."""
    if response.ok:
        return
    hint = {
        401: "the API token was rejected: check the configured token",
        403: "the API token lacks permission for this endpoint",
        404: "no such endpoint: check the configured base URL",
    }.get(response.status_code, "the upstream kept failing after retries")
    raise UpstreamError(
        f"{name}: {response.request.method} {response.url} answered {response.status_code}: {hint}. "
        f"Body: {response.text[:300]!r}"
    )
