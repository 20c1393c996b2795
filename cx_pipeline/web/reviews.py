"""The merchandisers' pages: the review queue (filters, paging, decisions in place), a product's history, CSV."""

from __future__ import annotations

import csv
import io
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cx_pipeline.review import decisions
from cx_pipeline.web.core import REVIEWERS, Context, page


def _filters(request: Request) -> decisions.QueueFilter:
    q = request.query_params
    return decisions.QueueFilter(q.get("category", ""), q.get("supplier", ""), q.get("reason", ""))


def _query(filters: decisions.QueueFilter, **extra: object) -> str:
    values = {"category": filters.category, "supplier": filters.supplier, "reason": filters.reason, **extra}
    return urlencode({k: v for k, v in values.items() if v not in ("", None)})


@page(*REVIEWERS)
def reviews(ctx: Context) -> Response:
    filters = _filters(ctx.request)
    try:
        page_no = min(int(ctx.request.query_params.get("page", "1")), 10**6)
    except ValueError:
        page_no = 1
    result = decisions.queue_page(ctx.store, filters, page_no)
    return ctx.render(
        "reviews.html",
        queue=result,
        filters=filters,
        facets=decisions.facets(ctx.store),
        publication=decisions.publication(ctx.store),
        back=_query(filters, page=result.page),
        prev_query=_query(filters, page=result.page - 1),
        next_query=_query(filters, page=result.page + 1),
        export_query=_query(filters),
        done=ctx.request.query_params.get("done", ""),
        done_decision=ctx.request.query_params.get("decision", ""),
    )


@page(*REVIEWERS)
def decide(ctx: Context) -> Response:
    sku = ctx.field("sku")
    try:
        decisions.record_decision(ctx.store, sku, ctx.field("decision"), ctx.field("note"), ctx.user.username)
    except decisions.DecisionError as exc:
        return ctx.render("error.html", 400, message=str(exc), back=ctx.request.headers.get("referer", "/reviews"))
    if ctx.field("from") == "product":
        return RedirectResponse(f"/products/{quote(sku, safe='')}?{urlencode({'done': sku})}", status_code=303)
    back = ctx.field("back")
    separator = "&" if back else ""
    return RedirectResponse(
        f"/reviews?{back}{separator}{urlencode({'done': sku, 'decision': ctx.field('decision')})}", status_code=303
    )


@page(*REVIEWERS)
def product_page(ctx: Context) -> Response:
    sku = ctx.request.path_params["sku"]
    found = decisions.product(ctx.store, sku)
    history = decisions.history(ctx.store, sku)
    if found is None and not history:
        return ctx.render("error.html", 404, message=f"Product {sku} is not in the review cohort.")
    published = decisions.publication(ctx.store)
    through = published["decisions_through"] if published else 0
    return ctx.render(
        "product.html",
        sku=sku,
        product=found,
        history=history,
        pending=bool(history) and history[0]["id"] > through,  # decided after the last assessment
        done=ctx.request.query_params.get("done", ""),
    )


EXPORT_COLUMNS = (
    "sku",
    "title",
    "category",
    "supplier_id",
    "product_status",
    "registered_at",
    "score",
    "review_state",
    "reasons",
    "next_review_due",
)


def _cell(value: object) -> object:
    """A text a spreadsheet would run as a formula (=, +, -, @) is written with a leading quote."""
    return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value


@page(*REVIEWERS)
def export(ctx: Context) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for row in decisions.queue_rows(ctx.store, _filters(ctx.request)):
        writer.writerow([_cell("; ".join(row[c]) if c == "reasons" else row[c]) for c in EXPORT_COLUMNS])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="review_queue.csv"'},
    )


routes = [
    Route("/reviews", reviews),
    Route("/reviews.csv", export),
    Route("/reviews/decide", decide, methods=["POST"]),
    Route("/products/{sku}", product_page),
]
