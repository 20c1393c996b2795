"""The merchandisers' pages: the review queue (search, filters, sorting, paging, decisions in place, bulk
decisions, undo), a product's history, CSV.

Every form that records something carries a one-time submission token (`submission`): the first submission
records and is remembered with its answer (`decisions.submit_once`), so a double click, a replay or a
duplicate sent in parallel stores once and gets the same answer. The banner after a decision is looked up
by that token among the signed-in user's own decisions, never taken from the URL's words.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from urllib.parse import parse_qsl, quote, urlencode

from markupsafe import Markup
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cx_pipeline.core.charts import svg_lines
from cx_pipeline.review import decisions
from cx_pipeline.web.core import FORM_EXPIRED, REVIEWERS, Context, page

VIEW_KEYS = ("search", "category", "supplier", "reason", "sort", "dir", "page")
BULK_PREVIEW_ROWS = 20  # the products a bulk preview lists by name; the count covers all of them


def _view(values: object) -> dict[str, str]:
    """The queue's view (search, filters, sort, page) from query parameters or a form's `back` field: known
    keys only, so nothing else is carried into a redirect."""
    pairs = parse_qsl(values, keep_blank_values=False) if isinstance(values, str) else values.items()
    return {k: v for k, v in pairs if k in VIEW_KEYS and v}


def _filters(view: dict[str, str]) -> decisions.QueueFilter:
    return decisions.QueueFilter(
        view.get("category", ""), view.get("supplier", ""), view.get("reason", ""), view.get("search", "").strip()
    )


def _order(view: dict[str, str]) -> decisions.QueueOrder:
    sort = view.get("sort", "rank")
    return decisions.QueueOrder(sort if sort in decisions.SORTS else "rank", view.get("dir") == "desc")


def _query(view: dict[str, str], **changes: object) -> str:
    return urlencode({k: v for k, v in {**view, **changes}.items() if v not in ("", None)})


def _page_number(view: dict[str, str]) -> int:
    try:
        return max(1, min(int(view.get("page", "1")), 10**6))
    except ValueError:
        return 1


def _sort_links(view: dict[str, str], order: decisions.QueueOrder) -> dict[str, dict[str, str]]:
    """Per sortable column: the link that sorts by it (ascending first, then flipping), and its aria-sort."""
    links = {}
    for column in decisions.SORTS:
        current = order.sort == column
        descending = not order.descending if current else column == "score"  # the highest score first
        links[column] = {
            "href": "/reviews?" + _query(view, sort=column, dir="desc" if descending else "", page=""),
            "aria": ("descending" if order.descending else "ascending") if current else "none",
        }
    return links


@page(*REVIEWERS)
def reviews(ctx: Context) -> Response:
    view = _view(ctx.request.query_params)
    filters, order = _filters(view), _order(view)
    result = decisions.queue_page(ctx.store, filters, _page_number(view), order=order)
    view = {**view, "page": str(result.page)} if result.page > 1 else {k: v for k, v in view.items() if k != "page"}
    done = ctx.request.query_params.get("done", "")
    return ctx.render(
        "reviews.html",
        queue=result,
        filters=filters,
        order=order,
        view=view,
        sort_links=_sort_links(view, order),
        facets=decisions.facets(ctx.store),
        publication=decisions.publication(ctx.store),
        back=_query(view),
        prev_query=_query(view, page=result.page - 1),
        next_query=_query(view, page=result.page + 1),
        export_query=_query(view, page=""),
        done=decisions.outcome(ctx.store, done, ctx.user.username) if done else None,
        done_token=done,
        focus=ctx.request.query_params.get("focus", ""),
    )


def _refused(ctx: Context, exc: decisions.DecisionError) -> Response:
    return ctx.render("error.html", 400, message=str(exc), back=ctx.request.headers.get("referer", "/reviews"))


def _to_product(sku: str, token: str) -> str:
    return f"/products/{quote(sku, safe='')}?{urlencode({'done': token})}"


def _to_queue(view: dict[str, str], token: str, focus: str = "") -> str:
    """Back to the reviewer's page of the queue, the banner for `token`, and the focus on row `focus` (its
    decision control gets `autofocus`, which scrolls it into view; no #fragment: a fragment's target makes
    browsers skip autofocus)."""
    return "/reviews?" + _query(view, done=token, focus=focus)


@page(*REVIEWERS)
def decide(ctx: Context) -> Response:
    """One product's decision; a discontinue is first shown for confirmation."""
    sku, decision, note = ctx.field("sku").strip(), ctx.field("decision"), ctx.field("note")
    if decision == "discontinue" and ctx.field("confirmed") != "yes":
        carried = {k: ctx.field(k) for k in ("sku", "note", "from", "back", "next", "submission")}
        return ctx.render("confirm_discontinue.html", sku=sku, product=decisions.product(ctx.store, sku), form=carried)
    view = _view(ctx.field("back"))

    def record(token: str) -> str:
        decisions.record_for_skus(ctx.store, [sku], decision, note, ctx.user.username, token)
        return _to_product(sku, token) if ctx.field("from") == "product" else _to_queue(view, token, ctx.field("next"))

    return _once(ctx, record)


def _once(ctx: Context, record: Callable[[str], str]) -> Response:
    """Record once per form submission (see `decisions.submit_once`) and send the reviewer on."""
    if (token := ctx.submission()) is None:
        return _refused(ctx, decisions.DecisionError(FORM_EXPIRED))
    try:
        target = decisions.submit_once(ctx.store, token, ctx.user.username, lambda: record(token))
    except decisions.DecisionError as exc:
        return _refused(ctx, exc)
    return RedirectResponse(target, status_code=303)


@page(*REVIEWERS)
def undo(ctx: Context) -> Response:
    """Take back the user's own decisions: a whole submission (`batch`) or one decision (`decision_id`)."""
    batch = ctx.field("batch")
    try:
        decision_id = int(ctx.field("decision_id") or 0)
    except ValueError:
        decision_id = 0
    sku = ctx.field("sku")

    def record(token: str) -> str:
        decisions.undo(ctx.store, ctx.user.username, token, batch=batch, decision_id=decision_id)
        return _to_product(sku, token) if ctx.field("from") == "product" else _to_queue(_view(ctx.field("back")), token)

    return _once(ctx, record)


def _bulk_selection(ctx: Context) -> tuple[list[str], decisions.QueueFilter | None]:
    """The products a bulk form chose: the ticked SKUs, or every product matching the view's filters."""
    if ctx.field("scope") == "filter":
        return [], _filters(_view(ctx.field("back")))
    return [v for v in ctx.form.getlist("sku") if isinstance(v, str) and v.strip()], None


@page(*REVIEWERS)
def bulk_preview(ctx: Context) -> Response:
    """What a bulk decision would record, with its count, before it does ("Record keep for 37 products?")."""
    skus, filters = _bulk_selection(ctx)
    decision, note = ctx.field("decision"), ctx.field("note").strip()
    if decision not in decisions.DECISIONS:
        return _refused(ctx, decisions.DecisionError(f"choose a decision: {', '.join(decisions.DECISIONS)}"))
    if filters is not None:
        count = decisions.count_matching(ctx.store, filters)
        names = [r["sku"] for r in decisions.queue_page(ctx.store, filters, 1, BULK_PREVIEW_ROWS).rows]
    else:
        count, names = len(set(skus)), sorted(set(skus))[:BULK_PREVIEW_ROWS]
    if count == 0:
        return _refused(ctx, decisions.DecisionError("choose at least one product: tick rows, or all matching"))
    return ctx.render(
        "bulk_preview.html",
        decision=decision,
        note=note,
        count=count,
        names=names,
        skus=sorted(set(skus)),
        scope="filter" if filters is not None else "selected",
        back=ctx.field("back"),
        back_query=_query(_view(ctx.field("back"))),
    )


@page(*REVIEWERS)
def bulk_record(ctx: Context) -> Response:
    """A confirmed bulk decision: one submission, one note, one undo for the whole batch."""
    skus, filters = _bulk_selection(ctx)
    decision, note, view = ctx.field("decision"), ctx.field("note"), _view(ctx.field("back"))
    try:
        expected = int(ctx.field("count") or 0)
    except ValueError:
        expected = 0

    def record(token: str) -> str:
        if filters is not None:
            decisions.record_for_filter(ctx.store, filters, expected, decision, note, ctx.user.username, token)
        else:
            decisions.record_for_skus(ctx.store, skus, decision, note, ctx.user.username, token)
        return _to_queue(view, token)

    return _once(ctx, record)


@page(*REVIEWERS)
def product_page(ctx: Context) -> Response:
    sku = ctx.request.path_params["sku"]
    found = decisions.product(ctx.store, sku)
    history = decisions.history(ctx.store, sku)
    if found is None and not history:
        return ctx.render("error.html", 404, message=f"Product {sku} is not in the review cohort.")
    done = ctx.request.query_params.get("done", "")
    stock = decisions.stock_history(ctx.store, sku)
    return ctx.render(
        "product.html",
        stock=stock,
        stock_chart=_stock_chart(sku, stock) if stock else None,
        sku=sku,
        product=found,
        history=history,
        pending=decisions.pending(ctx.store, sku),
        done=decisions.outcome(ctx.store, done, ctx.user.username) if done else None,
        done_token=done,
    )


def _stock_chart(sku: str, stock: list[dict[str, object]]) -> Markup:
    """Units received and ordered per day (order lines placed that day, cancelled ones left out), and the quantity the
    storefront was set to show (a gap before the first push the warehouse knows of). Days as MM-DD: the table
    beside it has the full dates."""
    return svg_lines(
        [str(d["day"])[5:] for d in stock],
        {
            "received": [d["received"] for d in stock],
            "ordered": [d["ordered"] for d in stock],
            "storefront quantity": [d["shop_quantity"] for d in stock],
        },
        f"{sku}: stock movement and storefront quantity by day",
        unit="units",
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
# A cell starting with one of these is run as a formula by spreadsheets (tab and CR too: some strip them first)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """A text a spreadsheet would run as a formula is written with a leading quote."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


@page(*REVIEWERS)
def export(ctx: Context) -> Response:
    view = _view(ctx.request.query_params)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for row in decisions.queue_rows(ctx.store, _filters(view), _order(view)):
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
    Route("/reviews/undo", undo, methods=["POST"]),
    Route("/reviews/bulk", bulk_preview, methods=["POST"]),
    Route("/reviews/bulk/record", bulk_record, methods=["POST"]),
    Route("/products/{sku:path}", product_page),
]
