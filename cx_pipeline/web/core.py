"""The web app's core: templates, the `page` guard, login and logout, security headers.

Every page goes through `page(...)`, which opens the store, requires a live session with one of the page's
roles (else: to the login page, or 403), and checks the CSRF token of every POST. Templates escape
everything (Jinja2 autoescape). The warehouse is never opened, so a pipeline run cannot lock the app out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import secrets
import sqlite3
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from jinja2 import Environment, PackageLoader
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cx_pipeline.core import appstore
from cx_pipeline.quality import wording
from cx_pipeline.review.staleness import DECISIONS
from cx_pipeline.web import accounts

SESSION_COOKIE, LOGIN_CSRF_COOKIE = "cx_session", "cx_login_csrf"
REVIEWERS = ("merchandiser", "admin")
INSPECTORS = ("qa", "admin")
HEADERS = {
    "content-security-policy": "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

templates = Environment(loader=PackageLoader("cx_pipeline.web", "templates"), autoescape=True)
SUBMISSION = re.compile(r"[A-Za-z0-9_-]{16,64}")
FORM_EXPIRED = "This form is out of date: reload the page and try again."


def new_submission() -> str:
    """A one-time token for a form that stores something (see `Context.submission`)."""
    return secrets.token_urlsafe(18)


templates.filters["label"] = lambda code: str(code or "").replace("_", " ")
templates.filters["path_segment"] = lambda value: quote(str(value), safe="")  # a SKU or lot may hold "/" or "?"
templates.filters["percent_change"] = wording.percent_change  # the drivers' one wording, as the pipeline's
templates.globals["submission_token"] = new_submission  # one per rendered form


class IdConvertor(Convertor[int]):
    """`{name:id}` in a route: a whole number of at most 18 digits (a 64-bit id). Longer digit strings do not
    match (404), where Starlette's `int` would fail to convert past Python's 4,300-digit limit (a 500)."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


class Context:
    """What a page handler gets: the request, its form, the open store and the signed-in user."""

    def __init__(self, request: Request, form: FormData | None, store: sqlite3.Connection, user: accounts.Session):
        self.request, self.form, self.store, self.user = request, form, store, user

    def field(self, name: str) -> str:
        value = self.form.get(name, "") if self.form is not None else ""
        return value if isinstance(value, str) else ""

    def submission(self) -> str | None:
        """The form's one-time token, when it sent a well-formed one. Every form that stores something carries
        one (`new_submission`), and the room that stores remembers it with its answer, so a double click, a
        replay or duplicates sent in parallel store once and get the first answer. None: refuse the form."""
        token = self.field("submission")
        return token if SUBMISSION.fullmatch(token) else None

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return render(template, status, user=self.user, **values)


def render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(template).render(decisions=DECISIONS, **values), status_code=status)


def page(*roles: str) -> Callable[[Callable[[Context], Response]], Callable[[Request], Any]]:
    """Make `handler` a route that needs a session with one of `roles` (and a valid CSRF token on POST)."""

    def wrap(handler: Callable[[Context], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            # The session first: an anonymous client's request body is never read.
            if await run_in_threadpool(_user, request) is None:
                return _to_login(request)
            form = await request.form(max_files=1, max_fields=1000) if request.method == "POST" else None
            return await run_in_threadpool(guarded, request, form)

        def guarded(request: Request, form: FormData | None) -> Response:
            with appstore.connect(request.app.state.store_path) as store:
                user = accounts.session(store, request.cookies.get(SESSION_COOKIE))
                if user is None:
                    return _to_login(request)
                if form is not None and not hmac.compare_digest(str(form.get("csrf_token", "")), user.csrf_token):
                    return render("error.html", 403, user=user, message="This form has expired. Go back and try again.")
                if roles and user.role not in roles:
                    return render("error.html", 403, user=user, message="Your role does not give access to this page.")
                return handler(Context(request, form, store, user))

        return endpoint

    return wrap


def _user(request: Request) -> accounts.Session | None:
    with appstore.connect(request.app.state.store_path) as store:
        return accounts.session(store, request.cookies.get(SESSION_COOKIE))


def _to_login(request: Request) -> RedirectResponse:
    """To the login page, and back afterwards: to this page, or for a form, to the page it was sent from."""
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        referer = urlsplit(request.headers.get("referer", ""))
        target = referer.path + (f"?{referer.query}" if referer.query else "") if referer.path else "/"
    return RedirectResponse(f"/login?{urlencode({'next': safe_next(target)})}", status_code=303)


def safe_next(target: str) -> str:
    """Only local paths: a login link must not bounce the user to another site."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


# --- login ---


async def login_page(request: Request) -> Response:
    if request.method == "GET":
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
        response = render("login.html", next=safe_next(request.query_params.get("next", "/")), csrf_token=token)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request))
        return response
    form = await request.form()
    return await run_in_threadpool(_login, request, form)


def _login(request: Request, form: FormData) -> Response:
    username, password = str(form.get("username", "")).strip().lower(), str(form.get("password", ""))
    target = safe_next(str(form.get("next", "/")))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(str(form.get("csrf_token", "")), expected):
        return render("login.html", 403, next=target, csrf_token=expected, error="The form expired; please try again.")
    with appstore.connect(request.app.state.store_path) as store:
        try:
            token = accounts.login(store, username, password, client=request.client.host if request.client else "")
        except accounts.ClientThrottled as exc:
            refused = render("login.html", 429, next=target, csrf_token=expected, error=str(exc), username=username)
            refused.headers["retry-after"] = str(exc.retry_after)
            return refused
        except accounts.AccountError as exc:
            return render("login.html", 401, next=target, csrf_token=expected, error=str(exc), username=username)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=accounts.SESSION_HOURS * 3600,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


def _secure(request: Request) -> bool:
    return request.app.state.secure_cookies or request.url.scheme == "https"


@page()
def logout(ctx: Context) -> Response:
    accounts.logout(ctx.store, ctx.request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@page()
def home(ctx: Context) -> Response:
    """Each role's first page: the review queue for merchandisers and admins, the inspections for QA."""
    return RedirectResponse("/quality" if ctx.user.role == "qa" else "/reviews", status_code=303)


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413, whatever the route, without holding it: at once when
    the declared Content-Length is over, else (a chunked body) as soon as the bytes read pass the limit; the
    route then sees the client gone, and its own answer is dropped. The refusal reads and drops the rest of
    the body (up to `DRAIN_BYTES`, for `DRAIN_SECONDS`) before it closes the connection, so that a client
    still sending gets the answer instead of a reset."""

    DRAIN_BYTES, DRAIN_SECONDS = 32 * 2**20, 10.0

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(receive, send, body_pending=True)
            return
        seen, refused, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen <= self.max_bytes:
                return message
            refused = True
            if not started:
                await self._refuse(receive, send, body_pending=message.get("more_body", False))
            return {"type": "http.disconnect"}  # the route stops reading (Starlette: ClientDisconnect)

        async def unless_refused(message: Message) -> None:
            nonlocal started
            if not refused:
                started = True
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if not refused:  # else: the route failing on a body it never got whole, already answered
                raise

    async def _refuse(self, receive: Receive, send: Send, body_pending: bool) -> None:
        mib = self.max_bytes / 2**20
        response = render(
            "error.html", 413, message=f"The request is too large: the most this app takes is {mib:g} MiB."
        )
        headers = [*response.raw_headers, (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        if body_pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain(receive), self.DRAIN_SECONDS)
        await send({"type": "http.response.body", "body": b""})

    async def _drain(self, receive: Receive) -> None:
        """Read and drop what the client is still sending, up to `DRAIN_BYTES`."""
        drained = 0
        while drained < self.DRAIN_BYTES:
            message = await receive()
            drained += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


class SecurityHeaders:
    """Adds `HEADERS` to every response (pages, redirects, errors and static files alike)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.encode(), v.encode()) for k, v in HEADERS.items()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)
