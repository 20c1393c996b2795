"""The ops lead's KPI page: each KPI week by week beside what should move it, as line charts with the same
figures in tables, and each series' change since the first week on record. Any signed-in role may see it."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from cx_pipeline.core.charts import svg_lines
from cx_pipeline.kpis import weekly
from cx_pipeline.web.core import Context, page


def _panel(kpi: weekly.Kpi, shown: weekly.Published) -> dict[str, object]:
    """One KPI's charts (one per unit, the KPI itself first), its table and its change since the first week."""
    charts = [
        {
            "title": _chart_title(chart),
            # a measure with nothing on record in these weeks gets a sentence, not an empty frame
            "svg": svg_lines(shown.weeks, series, _chart_title(chart), chart[0].unit)
            if any(v is not None for values in series.values() for v in values)
            else None,
        }
        for chart in kpi.charts
        for series in [{m.label: shown.values[m.name] for m in chart}]
    ]
    return {
        "kpi": kpi,
        "charts": charts,
        "change": shown.changes.get(kpi.headline.name),
        "changes": {m.name: shown.changes.get(m.name) for m in kpi.metrics},
    }


COUNTS = ("notices", "products", "lots")


def number(value: float | None, metric: weekly.Metric) -> str:
    """A figure as the tables show it: counts whole, rates and hours to one decimal, DHU to two."""
    if value is None:
        return "—"
    if metric.unit in COUNTS:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if metric.unit == "DHU" else f"{value:,.1f}"


def _chart_title(chart: tuple[weekly.Metric, ...]) -> str:
    return " and ".join(m.label for m in chart) + f" ({chart[0].unit})"


@page()
def kpis_page(ctx: Context) -> Response:
    shown = weekly.published(ctx.store)
    published = ctx.store.execute("SELECT * FROM publications WHERE name = 'kpi_weeks'").fetchone()
    return ctx.render(
        "kpis.html",
        shown=shown,
        panels=[_panel(kpi, shown) for kpi in weekly.KPIS] if shown.weeks else [],
        published=published,
        number=number,
    )


routes = [Route("/kpis", kpis_page)]
