"""HTTP access to upstream systems: one session per client, retries, timeouts and cursor paging.

Every pull ends: a cursor already read, more pages than `max_pages`, a Retry-After longer than
`max_retry_after`, a request past its deadline (retries and body included) and a pull past its deadline
are errors, never waits. Secrets stay secret: every token and credential header is registered here and
redacted from every `UpstreamError` and every `cx_pipeline` log line, and no credential follows a redirect
to another origin.
"""

from __future__ import annotations

import contextvars
import copy
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Self
from urllib.parse import quote, urljoin, urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import InvalidHeader, MaxRetryError, ReadTimeoutError, ResponseError
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 120.0
REQUEST_DEADLINE_SECONDS = 300.0  # room for one Retry-After of MAX_RETRY_AFTER_SECONDS and the answer after it
PULL_DEADLINE_SECONDS = 1800.0  # a first load of 20 M receipt lines takes about 5 minutes (docs/scaling.md)
MAX_PAGES = 100_000  # a client's own cap; the resources derive theirs per feed (`page_cap`)
MIN_PAGE_CAP = 10_000
FIRST_LOAD_ROWS = 100_000_000  # five times the largest feed measured (20 M receipt lines)
CHUNK_BYTES = 256 * 1024  # read1 returns what has arrived, up to this


# --- secrets ------------------------------------------------------------------------------------------

REDACTED = "***"
MIN_SECRET_CHARS = 6  # shorter values would redact ordinary words; the patterns below still catch them
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-shopify-access-token",
        "vendure-auth-token",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "cookie",
        "set-cookie",
    }
)
# A credential as quoted in a body or message: a header line, a JSON or Python mapping entry, a query
# parameter. The value runs to the end of the line or the closing quote (a backslash ends it too, so a
# repr's escaped "\r\n" does not swallow the next header).
_CREDENTIAL_VALUE = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-shopify-access-token|vendure-auth-token|x-api-key|api[-_]key"
    r"|x-auth-token|set-cookie|cookie|password|passwd|client[-_]secret|(?:access|refresh|api|auth)[-_]token)"
    r"([\"']?\s*[:=]\s*[\"']?)([^\"'\r\n\\&]+)"
)
_AUTH_SCHEME = re.compile(r"\b(Bearer|bearer|Basic)\s+[A-Za-z0-9._~+/-]{8,}=*")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Redact `value` (a token, a password) from every UpstreamError and cx_pipeline log line from now on.

    ApiClient registers its token and every credential header set on its session; an adapter registers
    any other secret it holds (a password it logs in with)."""
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    forms = {value, quote(value, safe=""), orjson.dumps(value).decode()[1:-1]}  # as sent, in a URL, in JSON
    with _secrets_lock:
        _secrets.update(forms)


def redact(text: str) -> str:
    """`text` without any registered secret nor any credential it quotes."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)  # a longer secret may contain a shorter one
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    text = _CREDENTIAL_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _AUTH_SCHEME.sub(rf"\1 {REDACTED}", text)


def _register_header(name: str, value: object) -> None:
    if name.lower() not in CREDENTIAL_HEADERS or not isinstance(value, str):
        return
    register_secret(value)
    register_secret(value.strip().rpartition(" ")[2])  # the credential after its scheme ("Bearer x")
    for pair in value.split(";"):  # each cookie's value
        register_secret(pair.partition("=")[2].strip())


class SecretHeaders(CaseInsensitiveDict):
    """Session headers that register each credential put in them, so a token an adapter sets itself
    (Vendure's session token, Shopify's access token) is redacted like the client's own."""

    def __setitem__(self, key: str, value: Any) -> None:
        _register_header(key, value)
        super().__setitem__(key, value)


class RedactSecrets(logging.Filter):
    """Rewrites a log record without secrets, its arguments and traceback included."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            record.msg, record.args = redact(message), None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        except Exception:  # a record that cannot be formatted is the handler's to report
            pass
        return True


_REDACT_FILTER = RedactSecrets()


def protect_logs(prefix: str = "cx_pipeline") -> None:
    """Put the redacting filter on `prefix`'s logger and every logger below it that exists now.

    A logger's filter does not see its children's records, so each module's logger needs its own; the
    clients call this when they are built, by which time the modules that log have been imported."""
    names = [prefix, *(n for n in list(logging.Logger.manager.loggerDict) if n.startswith(prefix + "."))]
    for name in names:
        logger = logging.getLogger(name)
        if _REDACT_FILTER not in logger.filters:
            logger.addFilter(_REDACT_FILTER)


protect_logs()


class UpstreamError(RuntimeError):
    """An upstream system could not be read (or written) even after retries; the message says why.

    The message is redacted when the error is made, so no secret reaches a step failure, whoever raises it.
    `status` is the HTTP status of the error answer that caused it, when there was one."""

    def __init__(self, *args: object, status: int | None = None) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))
        self.status = status


# --- deadlines and retries ----------------------------------------------------------------------------


@dataclass
class Deadline:
    """When a request or a pull must be over (monotonic clock), and the setting that said so, for errors."""

    at: float
    setting: str
    seconds: float
    refusal: str | None = None  # why a retry was refused, when the Retry gave up early

    @classmethod
    def after(cls, seconds: float, setting: str) -> Deadline:
        return cls(time.monotonic() + seconds, setting, seconds)

    def left(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> str:
        return f"{self.setting}={self.seconds:g} passed"


# The deadline of the request under way in this thread, for the Retry (urllib3 gives it no other way in).
_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("cx_http_deadline", default=None)


class BoundedRetry(Retry):
    """urllib3's Retry with two bounds on waiting. A Retry-After longer than `max_retry_after` is refused at
    once rather than slept (urllib3 would sleep up to six hours per retry), and no retry may wait past the
    request's deadline. A refused retry of an error answer hands that answer back; its reason is left on the
    request's Deadline for the error message."""

    def __init__(self, *args: Any, max_retry_after: float = MAX_RETRY_AFTER_SECONDS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_retry_after = max_retry_after

    def new(self, **kwargs: Any) -> Self:
        kwargs.setdefault("max_retry_after", self.max_retry_after)
        return super().new(**kwargs)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Self:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        asked = None
        if response is not None and self.respect_retry_after_header:
            try:
                asked = retry.get_retry_after(response)
            except InvalidHeader:
                asked = None  # a malformed Retry-After: urllib3 would fail on it too; back off instead
        deadline = _current.get()
        wait = asked or retry.get_backoff_time()
        if asked is not None and asked > self.max_retry_after:
            refusal = f"asked to wait {asked:g} s, more than max_retry_after_seconds={self.max_retry_after:g}"
        elif deadline is not None and wait > deadline.left():
            refusal = f"the next retry (in {wait:.1f} s) would pass {deadline.setting}={deadline.seconds:g}"
        else:
            return retry
        if deadline is not None:
            deadline.refusal = refusal
        raise MaxRetryError(_pool, url, error or ResponseError(refusal))


# --- sessions -----------------------------------------------------------------------------------------


class CrossOriginRedirect(requests.exceptions.RequestException):
    """A redirect to another scheme, host or port, refused."""


def origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


class GuardedSession(requests.Session):
    """A session that keeps credentials at home. A redirect to another origin is refused, or, when
    `follow_cross_origin_redirects` is on, followed with a warning and without any credential header
    (requests itself would still send custom ones such as X-Shopify-Access-Token, and cookies)."""

    def __init__(self, follow_cross_origin_redirects: bool = False) -> None:
        super().__init__()
        self.headers = SecretHeaders(self.headers)
        self.follow_cross_origin_redirects = follow_cross_origin_redirects
        # Credentials come from configuration only: with trust_env, requests reads ~/.netrc for every request and
        # an entry there replaces the configured token. Proxies and the CA bundle still come from the environment
        # (`merge_environment_settings`).
        self.trust_env = False
        self._environment: dict[tuple[str, str | None], tuple[dict[str, str], str | None]] = {}

    def merge_environment_settings(
        self, url: str | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        """As requests does with trust_env, but the environment is read once per origin and session: requests
        reads every variable for every request, a quarter of a small POST's CPU. What the call passes wins."""
        no_proxy = (proxies or {}).get("no_proxy")
        key = (origin(url or ""), no_proxy)
        if key not in self._environment:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            self._environment[key] = (get_environ_proxies(url or "", no_proxy=no_proxy), bundle)
        environ_proxies, bundle = self._environment[key]
        if bundle and (verify is True or verify is None):
            verify = bundle
        return super().merge_environment_settings(url, {**environ_proxies, **(proxies or {})}, stream, verify, cert)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        here, there = origin(response.url), origin(prepared_request.url or "")
        if here == there:
            super().rebuild_auth(prepared_request, response)
            return
        if not self.follow_cross_origin_redirects:
            raise CrossOriginRedirect(
                f"redirected from {here} to {there}: refused, its data would come from another origin "
                "(set follow_cross_origin_redirects to follow such redirects, without credentials)",
                response=response,
            )
        for name in [h for h in prepared_request.headers if h.lower() in CREDENTIAL_HEADERS]:
            del prepared_request.headers[name]
        log.warning("following a redirect from %s to %s, without credentials", here, there)


def retrying_session(
    retries: int,
    backoff_factor: float,
    backoff_max: float = 30.0,
    *,
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
    follow_cross_origin_redirects: bool = False,
) -> GuardedSession:
    """A session whose GETs and POSTs urllib3 retries on connection errors, 429 (honouring Retry-After up to
    `max_retry_after` seconds) and 5xx, with exponential backoff; the last answer is handed back, so an error
    can quote it."""
    retry = BoundedRetry(
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
        max_retry_after=max_retry_after,
    )
    session = GuardedSession(follow_cross_origin_redirects)
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def page_cap(largest_pull_pages: int | None, page_size: int) -> int:
    """Pages one pull may take: ten times the feed's largest pull so far, and never fewer than a first load
    of FIRST_LOAD_ROWS rows needs (a feed's first pull has no history, and is its largest)."""
    return max(MIN_PAGE_CAP, math.ceil(FIRST_LOAD_ROWS / max(page_size, 1)), 10 * (largest_pull_pages or 0))


# --- the client ---------------------------------------------------------------------------------------


class _BodyProblem(Exception):
    """A body that arrived cut off or stalled: worth fetching again."""


class ApiClient:
    """A client for one upstream JSON API with bearer-token auth and cursor-paged feeds.

    Transport failures (refused or dropped connections, 429 with Retry-After, 5xx) are retried by urllib3
    with exponential backoff. A page whose body arrives cut off or is not JSON is re-fetched a few times by
    `get_json`, because urllib3 only sees the headers. POSTs are retried too: every write this project
    makes is idempotent (it carries an idempotency key, or sets an absolute value), so a repeat is harmless.
    Bodies are read as they arrive, so a request's deadline holds however slowly its body trickles in.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        name: str = "upstream",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 5,
        backoff_factor: float = 0.5,
        backoff_max: float = 30.0,
        page_attempts: int = 3,
        max_pages: int = MAX_PAGES,
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
        request_deadline: float = REQUEST_DEADLINE_SECONDS,
        pull_deadline: float = PULL_DEADLINE_SECONDS,
        follow_cross_origin_redirects: bool = False,
    ) -> None:
        register_secret(token)  # first: even the errors below must not quote it
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{name}: base URL must start with http:// or https://, got {redact(base_url)!r}")
        if token == "":  # None: the caller authenticates its own way (a login, a vendor header) or not at all
            raise ValueError(f"{name}: no API token configured")
        for setting, value in [
            ("max_pages", max_pages),
            ("request_deadline_seconds", request_deadline),
            ("pull_deadline_seconds", pull_deadline),
        ]:
            if value <= 0:
                raise ValueError(f"{name}: {setting} must be positive, got {value}")
        protect_logs()
        self.base_url = base_url.rstrip("/") + "/"
        self.name = name
        self.timeout = (connect_timeout, read_timeout)
        self.page_attempts = page_attempts
        self.backoff_factor = backoff_factor
        self.max_pages = max_pages
        self.request_deadline = request_deadline
        self.pull_deadline = pull_deadline
        self.session = retrying_session(
            retries,
            backoff_factor,
            backoff_max,
            max_retry_after=max_retry_after,
            follow_cross_origin_redirects=follow_cross_origin_redirects,
        )
        self.session.headers["Accept"] = "application/json"
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:  # never shows the token
        return f"ApiClient(name={self.name!r}, base_url={redact(self.base_url)!r})"

    def with_max_pages(self, max_pages: int) -> ApiClient:
        """This client, sharing its session, with another page cap (one pull's)."""
        if max_pages <= 0:
            raise ValueError(f"{self.name}: max_pages must be positive, got {max_pages}")
        client = copy.copy(self)
        client.max_pages = max_pages
        return client

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path.lstrip("/"))

    def _deadline(self, pull: Deadline | None) -> Deadline:
        """A new request's deadline: `request_deadline` from now, or the pull's when that comes first."""
        request = Deadline.after(self.request_deadline, "request_deadline_seconds")
        return request if pull is None or request.at <= pull.at else replace(pull, refusal=None)

    def get_json(self, path: str, params: dict[str, Any] | None = None, *, pull: Deadline | None = None) -> Any:
        """GET one JSON document, re-fetching a truncated or malformed body up to `page_attempts` times."""
        url = self.url(path)
        for attempt in range(1, self.page_attempts + 1):
            deadline = self._deadline(pull)
            try:
                response = self._send("GET", url, deadline, params=params)
            except _BodyProblem as exc:
                problem = str(exc)
            except requests.exceptions.RetryError as exc:
                raise UpstreamError(f"{self.name}: GET {url} kept failing after retries: {exc}") from exc
            except requests.exceptions.RequestException as exc:
                raise UpstreamError(f"{self.name}: GET {url} failed: {exc}") from exc
            else:
                try:
                    return orjson.loads(response.content)
                except orjson.JSONDecodeError as exc:
                    problem = f"body is not valid JSON ({exc})"
            log.warning("%s: GET %s attempt %d/%d: %s", self.name, url, attempt, self.page_attempts, problem)
            if attempt < self.page_attempts:
                pause = self.backoff_factor * attempt
                if pull is not None and pause >= pull.left():
                    raise UpstreamError(f"{self.name}: GET {url}: {problem}; {pull.passed()} before another try")
                time.sleep(pause)
        raise UpstreamError(f"{self.name}: GET {url} params={params}: {problem} in {self.page_attempts} tries")

    def post_json(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        """POST a JSON body and return the JSON answer; only for idempotent writes (see the class note)."""
        url = self.url(path)
        try:
            response = self._send(
                "POST",
                url,
                self._deadline(None),
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json", **(headers or {})},
            )
        except _BodyProblem as exc:
            raise UpstreamError(f"{self.name}: POST {url}: {exc}") from None
        except requests.exceptions.RequestException as exc:
            raise UpstreamError(f"{self.name}: POST {url} failed: {exc}") from exc
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{self.name}: POST {url} answered non-JSON: {response.text[:200]!r}") from exc

    def _send(self, method: str, url: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        """One request, retried by urllib3 within `deadline`, with its whole body read by then.

        Raises UpstreamError for an error answer, a refused wait or redirect and a passed deadline;
        _BodyProblem for a body worth fetching again; other transport errors as requests raised them."""
        if deadline.left() <= 0:
            raise UpstreamError(f"{self.name}: {method} {url} not sent: {deadline.passed()}")
        token = _current.set(deadline)
        try:
            # a read timeout past the deadline would only make a retry that the Retry then refuses
            left = deadline.left()
            timeout = (min(self.timeout[0], left), min(self.timeout[1], left))
            response = self.session.request(method, url, timeout=timeout, stream=True, **kwargs)
        except CrossOriginRedirect as exc:
            raise UpstreamError(f"{self.name}: {method} {url} was {exc}") from None
        except requests.exceptions.RequestException as exc:
            if deadline.refusal or deadline.left() <= 0:
                why = deadline.refusal or deadline.passed()
                raise UpstreamError(f"{self.name}: {method} {url} failed ({type(exc).__name__}); {why}") from exc
            raise
        finally:
            _current.reset(token)
        self._read_body(method, url, response, deadline)
        raise_for_status(self.name, response, deadline.refusal)
        return response

    def _read_body(self, method: str, url: str, response: requests.Response, deadline: Deadline) -> None:
        """Read the body as it arrives, checking the deadline between chunks: a read timeout is per read, so a
        body trickled a few bytes at a time would otherwise never time out."""
        chunks: list[bytes] = []
        received = 0
        try:
            while True:
                left = deadline.left()
                if left <= 0:
                    raise UpstreamError(
                        f"{self.name}: {method} {url}: {deadline.passed()} with the body still arriving "
                        f"({received:,} bytes so far)"
                    )
                connection = response.raw.connection
                if connection is not None and connection.sock is not None:
                    connection.sock.settimeout(min(self.timeout[1], left))  # a stall ends by the deadline too
                try:
                    chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
                except ReadTimeoutError as exc:
                    if deadline.left() <= 0:
                        continue  # reported above
                    raise _BodyProblem(f"body stalled for {self.timeout[1]:g} s after {received:,} bytes") from exc
                except TransportError as exc:  # IncompleteRead, a reset, a bad encoding
                    raise _BodyProblem(f"body cut off after {received:,} bytes ({exc.__class__.__name__})") from exc
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
        except BaseException:
            response.close()  # hang up: the server stops sending and the connection is not reused half-read
            raise
        response._content = b"".join(chunks)  # as requests itself fills it
        response._content_consumed = True

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Yield each page envelope (`data`, `next_cursor`, `as_of`) of a cursor-paged feed, within
        `pull_deadline` and `max_pages`; a cursor already read in this pull is an error, not a loop."""
        params = dict(params or {})
        pull = Deadline.after(self.pull_deadline, "pull_deadline_seconds")
        asked: set[Any] = set()
        count = 0
        while True:
            page = self.get_json(path, params, pull=pull)
            count += 1
            if not isinstance(page, dict) or not isinstance(page.get("data"), list):
                raise UpstreamError(f"{self.name}: {path} answered without a 'data' list: {str(page)[:200]}")
            yield page
            cursor = page.get("next_cursor")
            if not cursor:
                return
            if cursor in asked:
                raise UpstreamError(
                    f"{self.name}: {path} sent next_cursor {str(cursor)[:80]!r} again after {count} pages: "
                    "the feed loops back to a page already read in this pull"
                )
            if count >= self.max_pages:
                raise UpstreamError(
                    f"{self.name}: {path} has more than max_pages={self.max_pages:,} pages in one pull; stopped "
                    "there. If the feed really is that large, raise the max_pages setting"
                )
            asked.add(cursor)
            params["cursor"] = cursor

    def close(self) -> None:
        self.session.close()


def raise_for_status(name: str, response: requests.Response, why: str | None = None) -> None:
    """Turn an error answer into an UpstreamError that says what to fix (`why`, when known), quoting the
    start of its body without any secret."""
    if response.ok:
        return
    hint = why or {
        401: "the API token was rejected: check the configured token",
        403: "the API token lacks permission for this endpoint",
        404: "no such endpoint: check the configured base URL",
    }.get(response.status_code, "the upstream kept failing after retries")
    body = redact(response.text[:4000])[:300]  # redacted before cutting, so no secret is left half-quoted
    raise UpstreamError(
        f"{name}: {response.request.method} {response.url} answered {response.status_code}: {hint}. Body: {body!r}",
        status=response.status_code,
    )
