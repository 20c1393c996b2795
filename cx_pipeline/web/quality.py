"""QA's pages: received lots to inspect (searched by category, SKU, lot, supplier and day received), a lot's
page with its result on record, its history and the entry form (Z1.4 plan, verdict, a first save or an
explicit amendment), CSV upload with problems grouped by reason, recent entries, the return-risk list and the
segments charts (DHU and what drives return inquiries, per category).

Every form that stores something carries a one-time submission token: the same form sent twice (a double
click, a replay, parallel requests) stores once and gets the first one's answer.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from urllib.parse import urlencode

import orjson
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cx_pipeline.core import appstore
from cx_pipeline.core.charts import svg_bars
from cx_pipeline.quality import aql, inspections
from cx_pipeline.quality.checklists import Checklists, load_checklists
from cx_pipeline.web.core import INSPECTORS, Context, new_submission, page

PAGE_SIZE = 50
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
LOT_KEYS = ("category", "sku", "lot", "supplier", "from", "to", "show")
RISK_KEYS = ("category", "supplier", "sku")
EXPIRED = "this form is out of date: reload the page and enter the result again"


def _page_no(ctx: Context) -> int:
    """The page asked for (the store clamps it to the pages there are)."""
    try:
        return min(int(ctx.request.query_params.get("page", "1")), 10**6)
    except ValueError:
        return 1


def _view(ctx: Context, keys: tuple[str, ...]) -> dict[str, str]:
    """The page's filters from its query: known keys with a value, trimmed."""
    return {k: v.strip() for k in keys if (v := ctx.request.query_params.get(k, "")).strip()}


def _day(view: dict[str, str], key: str, problems: list[str]) -> date | None:
    if key not in view:
        return None
    try:
        return date.fromisoformat(view[key])
    except ValueError:
        problems.append(f"received {key} {view[key]!r} is not a day such as 2026-11-23; it was left out")
        return None


@page(*INSPECTORS)
def overview(ctx: Context) -> Response:
    view, problems = _view(ctx, LOT_KEYS), []
    search = inspections.LotSearch(
        category=view.get("category", ""),
        sku=view.get("sku", ""),
        lot=view.get("lot", ""),
        supplier=view.get("supplier", ""),
        received_from=_day(view, "from", problems),
        received_to=_day(view, "to", problems),
        pending_only=view.get("show") != "all",
    )
    lots = inspections.lots_page(ctx.store, search, _page_no(ctx), PAGE_SIZE)
    return ctx.render(
        "quality.html",
        lots=lots.rows,
        total=lots.total,
        page=lots.page,
        pages=lots.pages,
        view=view,
        query=urlencode(view),
        problems=problems,
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


def _save(ctx: Context, entry: inspections.Entry, checklists: Checklists) -> tuple[int | None, list[str]]:
    """Store the entry as the form asks: a first result (`save`) or an amendment of the one on record."""
    submission = ctx.submission()
    if submission is None:
        return None, [EXPIRED]
    amends = None
    if ctx.field("action") == "amend":
        seen = ctx.field("amends")
        if not (seen.isascii() and seen.isdigit() and len(seen) <= 18):
            return None, [EXPIRED]
        amends = int(seen)
    try:
        inspection_id = inspections.record(
            ctx.store, entry, checklists, ctx.user.username, datetime.now(UTC), amends, ctx.field("amend_reason"),
            submission,
        )  # fmt: skip
    except inspections.InspectionError as exc:
        return None, exc.problems
    return inspection_id, []


@page(*INSPECTORS)
def lot_page(ctx: Context) -> Response:
    """A lot: its result on record and earlier ones, and the form for a first result or an amendment."""
    receipt_id, line_no = ctx.request.path_params["receipt_id"], ctx.request.path_params["line_no"]
    lot = inspections.lot(ctx.store, receipt_id, line_no) if line_no < 2**31 else None
    if lot is None:
        message = f"Lot {receipt_id}/{line_no} is not a lot QA can inspect: {inspections.NOT_OFFERED}."
        return ctx.render("error.html", 404, message=message)
    checklists = load_checklists()
    values: dict[str, str] = {}
    problems: list[str] = []
    verdict = None
    if ctx.form is not None:
        entry, problems = _entry_from_form(ctx, lot, checklists.items(lot.category))
        values = {k: v for k, v in ctx.form.items() if isinstance(v, str)}
        if not problems:
            problems = inspections.check_entry(lot, entry, checklists, datetime.now(UTC))
        if not problems:
            verdict = inspections.verdict(lot, entry, checklists)
            if ctx.field("action") in ("save", "amend"):
                inspection_id, problems = _save(ctx, entry, checklists)
                if inspection_id is not None:
                    return RedirectResponse(f"/quality/inspections/{inspection_id}?saved=1", status_code=303)
    history = inspections.lot_history(ctx.store, lot.receipt_id, lot.line_no)
    on_record = history[0] if history else None
    on_record_items = _by_item(inspections.inspection(ctx.store, on_record["id"])[1]) if on_record else {}
    if ctx.form is None and on_record:  # an amendment starts from the result on record
        values = {f"d.{item}.{s}": str(n) for item, counts in on_record_items.items() for s, n in counts.items()}
        values["note"] = str(on_record["note"])
    return ctx.render(
        "inspection_form.html",
        status=400 if problems else 200,
        lot=lot,
        plan=inspections.plan_for(lot, checklists),
        aqls=checklists.aql,
        checklist=checklists.categories[lot.category],
        severities=aql.SEVERITIES,
        values=values,
        problems=problems,
        verdict=verdict,
        on_record=on_record,
        on_record_items=on_record_items,
        history=history,
        submission=ctx.submission() or new_submission(),  # a form sent back keeps its token
    )


def _by_item(defects: list[dict[str, object]]) -> dict[str, dict[str, int]]:
    by_item: dict[str, dict[str, int]] = {}
    for d in defects:
        by_item.setdefault(str(d["item"]), {})[str(d["severity"])] = int(d["defects"])
    return by_item


@page(*INSPECTORS)
def inspection_page(ctx: Context) -> Response:
    try:  # the route's id has at most 18 digits: within SQLite's 64-bit integers
        header, defects = inspections.inspection(ctx.store, ctx.request.path_params["inspection_id"])
    except LookupError:
        return ctx.render("error.html", 404, message="No such inspection.")
    return ctx.render(
        "inspection.html",
        inspection=header,
        by_item=_by_item(defects),
        severities=aql.SEVERITIES,
        saved=ctx.request.query_params.get("saved") == "1",
    )


def _import(ctx: Context, file: object) -> tuple[int, list[str], int]:
    """Lots imported, problems and their count, for an uploaded file read as a stream (never whole in memory)."""
    if file is None or isinstance(file, str) or not file.filename:
        return 0, ["choose a CSV file to upload"], 1
    if (submission := ctx.submission()) is None:
        return 0, [EXPIRED], 1
    if file.size is not None and file.size > MAX_UPLOAD_BYTES:
        return 0, [f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB; split it"], 1
    amend_reason = ctx.field("amend_reason").strip() if ctx.field("amend") == "yes" else ""
    if ctx.field("amend") == "yes" and not amend_reason:
        return 0, ["say why the file amends results on record"], 1
    text = io.TextIOWrapper(file.file, encoding="utf-8-sig", newline="")
    try:
        imported = inspections.import_csv(
            ctx.store, text, load_checklists(), ctx.user.username, datetime.now(UTC), amend_reason, submission
        )
    except UnicodeDecodeError:
        return 0, ["the file is not UTF-8 text; save it as CSV UTF-8"], 1
    except inspections.InspectionError as exc:
        return 0, exc.problems, exc.count
    finally:
        text.detach()  # the upload's own file is closed with the request
    return imported, [], 0


@page(*INSPECTORS)
def upload(ctx: Context) -> Response:
    columns = inspections.CSV_REQUIRED + inspections.CSV_OPTIONAL
    if ctx.form is None:
        return ctx.render("upload.html", columns=columns, submission=new_submission())
    file = ctx.form.get("file")
    imported, problems, count = _import(ctx, file)
    return ctx.render(
        "upload.html",
        status=400 if problems else 200,
        columns=columns,
        problems=problems,
        problem_count=count,
        imported=imported,
        filename=getattr(file, "filename", ""),
        amend=ctx.field("amend") == "yes",
        amend_reason=ctx.field("amend_reason"),
        submission=new_submission(),  # the next upload is another submission
    )


@page(*INSPECTORS)
def risk(ctx: Context) -> Response:
    view = _view(ctx, RISK_KEYS)
    where, params = ["1 = 1"], []
    if "category" in view:
        where.append("category = ?")
        params.append(view["category"])
    for key, column in (("supplier", "supplier_id"), ("sku", "sku")):
        if key in view:
            where.append(f"{column} LIKE ? ESCAPE '\\'")
            params.append(inspections.like_prefix(view[key]))
    risks = appstore.paged(
        ctx.store, "*", f"FROM return_risk WHERE {' AND '.join(where)}", params, "rank", _page_no(ctx), PAGE_SIZE
    )
    published = ctx.store.execute("SELECT * FROM publications WHERE name = 'return_risk'").fetchone()
    return ctx.render(
        "risk.html",
        risks=[r | {"drivers": orjson.loads(r["drivers"])} for r in risks.rows],
        published=dict(published) if published else None,
        total=risks.total,
        page=risks.page,
        pages=risks.pages,
        view=view,
        query=urlencode(view),
        categories=list(load_checklists().categories),
    )


@page(*INSPECTORS)
def segments(ctx: Context) -> Response:
    """Per category: DHU by checklist item, and how much 1 DHU in each item moves return inquiries."""
    dhu = ctx.store.execute("SELECT * FROM dhu_segments ORDER BY category, dhu DESC, item").fetchall()
    drivers = ctx.store.execute("SELECT * FROM risk_drivers ORDER BY category, rank").fetchall()
    published = {
        r["name"]: dict(r)
        for r in ctx.store.execute("SELECT * FROM publications WHERE name IN ('inspection_dhu', 'return_risk')")
    }
    categories = []
    for category in load_checklists().categories:
        own_dhu = [dict(r) for r in dhu if r["category"] == category]
        own_drivers = [dict(r) | {"percent": 100 * r["per_dhu"]} for r in drivers if r["category"] == category]
        categories.append(
            {
                "name": category,
                "dhu": own_dhu,
                "drivers": own_drivers,
                "dhu_chart": _bars(own_dhu, "dhu", f"{category}: defects per hundred units (DHU) by item", "DHU"),
                "drivers_chart": _bars(
                    own_drivers, "percent", f"{category}: return inquiries per 1 DHU more, by item", "%"
                ),
            }
        )
    return ctx.render("segments.html", categories=categories, published=published)


def _bars(rows: list[dict[str, object]], value: str, title: str, unit: str) -> object:
    if not rows:
        return None
    labels = [str(r["item"]).replace("_", " ") for r in rows]
    return svg_bars(labels, {title.split(": ", 1)[1]: [round(float(r[value]), 2) for r in rows]}, title, unit)


routes = [
    Route("/quality", overview),
    Route("/quality/lots/{receipt_id:path}/{line_no:id}", lot_page, methods=["GET", "POST"]),
    Route("/quality/inspections/{inspection_id:id}", inspection_page),
    Route("/quality/upload", upload, methods=["GET", "POST"]),
    Route("/quality/risk", risk),
    Route("/quality/segments", segments),
]
