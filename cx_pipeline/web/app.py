"""The web app (`cx-pipeline serve`): server-rendered pages, no JavaScript, on the app store only.

Every page goes through `core.page(...)`, which opens the store, requires a live session with one of the
page's roles (else: to the login page, or 403), and checks the CSRF token of every POST. Templates escape
everything (Jinja2 autoescape). The warehouse is never opened, so a pipeline run cannot lock the app out.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from cx_pipeline.core import appstore
from cx_pipeline.web import kpis, quality, reviews, worklist
from cx_pipeline.web.core import BodyLimit, SecurityHeaders, home, login_page, logout

MAX_BODY_BYTES = 25 * 2**20  # the largest CSV upload (20 MB) and its form around it


def create_app(store_path: str | Path, secure_cookies: bool = False) -> ASGIApp:
    """The web app on the app store at `store_path` (created if missing)."""
    appstore.open_store(store_path).close()  # create the schema now, not on the first request
    app = Starlette(
        routes=[
            Route("/login", login_page, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/", home),
            *reviews.routes,
            *quality.routes,
            *kpis.routes,
            *worklist.routes,
            Mount("/static", StaticFiles(packages=[("cx_pipeline.web", "static")]), name="static"),
        ]
    )
    app.state.store_path = str(store_path)
    app.state.secure_cookies = secure_cookies
    return SecurityHeaders(BodyLimit(app, MAX_BODY_BYTES))
