"""The operator's work list (admins): the problems the pipeline could not solve on its own, newest first, each
with its age and a link to the Dagster run that last saw it."""

from __future__ import annotations

import os

from starlette.responses import Response
from starlette.routing import Route

from cx_pipeline.kpis import worklist
from cx_pipeline.web.core import Context, page

DEFAULT_DAGSTER_URL = "http://localhost:3000"


def dagster_url() -> str:
    """The Dagster UI's address for the links to runs (CX_DAGSTER_URL, as the failure alerts use it)."""
    return (os.environ.get("CX_DAGSTER_URL") or DEFAULT_DAGSTER_URL).rstrip("/")


def age(hours: float | None) -> str:
    """An age in words an operator can scan: minutes, hours, then days."""
    if hours is None:
        return "—"
    if hours < 1:
        return f"{max(0, round(hours * 60))} min"
    if hours < 48:
        return f"{hours:.0f} h"
    return f"{hours / 24:.0f} days"


@page("admin")
def worklist_page(ctx: Context) -> Response:
    filters = worklist.Filter(ctx.request.query_params.get("kind", ""))
    try:
        page_no = min(int(ctx.request.query_params.get("page", "1")), 10**6)
    except ValueError:
        page_no = 1
    found = worklist.page(ctx.store, filters, page_no)
    return ctx.render(
        "worklist.html",
        found=found,
        kind=filters.kind if filters.kind in worklist.KINDS else "",
        kinds=worklist.KINDS,
        counts=worklist.counts(ctx.store),
        published=worklist.publication(ctx.store),
        dagster=dagster_url(),
        age=age,
    )


routes = [Route("/worklist", worklist_page)]
