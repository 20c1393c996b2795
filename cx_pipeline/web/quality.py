"""QA's pages: received lots to inspect, the entry form with its Z1.4 plan and verdict, CSV upload, recent
entries, and the return-risk list with the segments that drive it."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cx_pipeline.core import appstore
from cx_pipeline.quality import aql, inspections
from cx_pipeline.quality.checklists import load_checklists
from cx_pipeline.web.core import INSPECTORS, Context, page

PAGE_SIZE = 50
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def _page_no(ctx: Context) -> int:
    """The page asked for (the store clamps it to the pages there are)."""
    try:
        return min(int(ctx.request.query_params.get("page", "1")), 10**6)
    except ValueError:
        return 1


@page(*INSPECTORS)
def overview(ctx: Context) -> Response:
    category = ctx.request.query_params.get("category", "")
    show_all = ctx.request.query_params.get("show") == "all"
    lots = inspections.lots_page(ctx.store, category, not show_all, _page_no(ctx), PAGE_SIZE)
    return ctx.render(
        "quality.html",
        lots=lots.rows,
        total=lots.total,
        page=lots.page,
        pages=lots.pages,
        category=category,
        show_all=show_all,
        categories=list(load_checklists().categories),
        recent=inspections.recent(ctx.store, 20),
    )


def _entry_from_form(ctx: Context, lot: inspections.Lot, items: list[str]) -> tuple[inspections.Entry, list[str]]:
    """The entry as typed; numbers that are not whole numbers are reported, not guessed."""
    problems: list[str] = []
    defects: dict[tuple[str, str], int] = {}
    for item in items:
        for severity in aql.SEVERITIES:
            text = ctx.field(f"d.{item}.{severity}").strip() or "0"
            if text.isascii() and text.isdigit() and len(text) <= 9:
                defects[(item, severity)] = int(text)
            else:
                problems.append(f"{item} {severity}: {text!r} is not a whole number")
    when = ctx.field("inspected_at").strip()
    moment = None
    if when:
        try:
            moment = inspections.parse_time(when)
        except ValueError:
            problems.append(f"inspected at: {when!r} is not a date and time such as 2026-11-23 14:30")
    entry = inspections.Entry(lot.receipt_id, lot.line_no, defects, moment, ctx.field("note"))
    return entry, problems


@page(*INSPECTORS)
def entry_form(ctx: Context) -> Response:
    receipt_id, line_no = ctx.request.path_params["receipt_id"], ctx.request.path_params["line_no"]
    lot = inspections.lot(ctx.store, receipt_id, line_no) if line_no < 2**31 else None
    if lot is None:
        return ctx.render("error.html", 404, message=f"Lot {receipt_id}/{line_no} is not a lot QA can inspect.")
    checklists = load_checklists()
    items = checklists.items(lot.category)
    plan = inspections.plan_for(lot, checklists)
    values: dict[str, str] = {}
    problems: list[str] = []
    verdict = None
    if ctx.form is not None:
        entry, problems = _entry_from_form(ctx, lot, items)
        values = {k: v for k, v in ctx.form.items() if isinstance(v, str)}
        if not problems:
            problems = inspections.check_entry(lot, entry, checklists, datetime.now(UTC))
        if not problems:
            verdict = inspections.verdict(lot, entry, checklists)
            if ctx.field("action") == "save":
                inspection_id = inspections.record(ctx.store, entry, checklists, ctx.user.username)
                return RedirectResponse(f"/quality/inspections/{inspection_id}?saved=1", status_code=303)
    return ctx.render(
        "inspection_form.html",
        status=400 if problems else 200,
        lot=lot,
        plan=plan,
        aqls=checklists.aql,
        checklist=checklists.categories[lot.category],
        severities=aql.SEVERITIES,
        values=values,
        problems=problems,
        verdict=verdict,
    )


@page(*INSPECTORS)
def inspection_page(ctx: Context) -> Response:
    try:
        inspection_id = ctx.request.path_params["inspection_id"]
        if inspection_id >= 2**63:
            raise LookupError(inspection_id)
        header, defects = inspections.inspection(ctx.store, inspection_id)
    except LookupError:
        return ctx.render("error.html", 404, message="No such inspection.")
    by_item: dict[str, dict[str, int]] = {}
    for d in defects:
        by_item.setdefault(d["item"], {})[d["severity"]] = d["defects"]
    return ctx.render(
        "inspection.html",
        inspection=header,
        by_item=by_item,
        severities=aql.SEVERITIES,
        saved=ctx.request.query_params.get("saved") == "1",
    )


@page(*INSPECTORS)
def upload(ctx: Context) -> Response:
    if ctx.form is None:
        return ctx.render("upload.html", columns=inspections.CSV_REQUIRED + inspections.CSV_OPTIONAL)
    file = ctx.form.get("file")
    problems: list[str] = []
    imported = 0
    if file is None or isinstance(file, str) or not file.filename:
        problems = ["choose a CSV file to upload"]
    else:
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            problems = [f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB; split it"]
        else:
            try:
                text = data.decode("utf-8-sig")
                imported = inspections.import_csv(ctx.store, text, load_checklists(), ctx.user.username)
            except UnicodeDecodeError:
                problems = ["the file is not UTF-8 text; save it as CSV UTF-8"]
            except inspections.InspectionError as exc:
                problems = exc.problems
    return ctx.render(
        "upload.html",
        status=400 if problems else 200,
        columns=inspections.CSV_REQUIRED + inspections.CSV_OPTIONAL,
        problems=problems,
        imported=imported,
        filename=getattr(file, "filename", ""),
    )


@page(*INSPECTORS)
def risk(ctx: Context) -> Response:
    risks = appstore.paged(ctx.store, "*", "FROM return_risk", [], "rank", _page_no(ctx), PAGE_SIZE)
    drivers = ctx.store.execute("SELECT * FROM risk_drivers ORDER BY category, rank").fetchall()
    published = ctx.store.execute("SELECT * FROM publications WHERE name = 'return_risk'").fetchone()
    return ctx.render(
        "risk.html",
        risks=[r | {"drivers": orjson.loads(r["drivers"])} for r in risks.rows],
        drivers=[dict(d) for d in drivers],
        published=dict(published) if published else None,
        page=risks.page,
        pages=risks.pages,
    )


routes = [
    Route("/quality", overview),
    Route("/quality/lots/{receipt_id}/{line_no:int}", entry_form, methods=["GET", "POST"]),
    Route("/quality/inspections/{inspection_id:int}", inspection_page),
    Route("/quality/upload", upload, methods=["GET", "POST"]),
    Route("/quality/risk", risk),
]
