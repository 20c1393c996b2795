"""The web pages' charts: inline SVG that renders in colour under the app's content security policy (which
blocks <style> and style attributes) and carries each value in a <title> on its mark."""

from __future__ import annotations

import re

from cx_pipeline.core.charts import svg_bars, svg_lines
from cx_pipeline.web.core import HEADERS

WEEKS = ["2026-W40", "2026-W41", "2026-W42", "2026-W43"]


def test_every_point_and_bar_has_its_value_in_a_title_and_no_style_is_left():
    lines = svg_lines(WEEKS, {"p50": [30.0, None, 26.5, 24.0], "p90": [70.0, 66.0, 61.0, 58.5]}, "Cycle", "hours")
    bars = svg_bars(["packaging", "sizing"], {"DHU": [1.5, 3.25]}, "DHU by segment")
    assert re.findall(r"<title>([^<]*)</title>", str(bars)) == ["DHU by segment", "packaging: 1.5", "sizing: 3.25"]
    titles = re.findall(r"<title>([^<]*)</title>", str(lines))
    assert titles[0] == "Cycle"
    assert "2026-W41, p50: 30 hours" not in titles  # no point where there is no value
    assert {"2026-W40, p50: 30 hours", "2026-W43, p90: 58.5 hours"} <= set(titles)
    assert len(titles) == 1 + 3 + 4
    for chart in (lines, bars):
        assert "style" not in str(chart) and 'id="mark' not in str(chart) and 'id="axes' not in str(chart)
        assert str(chart).startswith("<svg") and 'role="img"' in str(chart)


def test_charts_render_in_colour_under_the_apps_content_security_policy(browser):
    page = browser.new_page(viewport={"width": 800, "height": 900})
    policy = HEADERS["content-security-policy"]
    bars = svg_bars(["packaging", "sizing", "labelling"], {"this week": [1.5, 3.25, 0.0]}, "DHU by segment", "DHU")
    lines = svg_lines(WEEKS, {"delay inquiries": [4.1, 3.9, None, 3.2]}, "Per 1,000 orders")
    page.set_content(f'<meta http-equiv="Content-Security-Policy" content="{policy}">{bars}{lines}')
    first_bar = page.locator("svg >> title", has_text="packaging: 1.5").locator("xpath=../*[name()='path']")
    fill = first_bar.evaluate("e => getComputedStyle(e).fill")
    assert fill not in ("rgb(0, 0, 0)", "none", "")  # the colour came through as an attribute, not a style
    assert page.locator("svg.chart").count() == 2
    assert page.locator("svg.chart").first.bounding_box()["width"] > 300  # scales to the page


def test_labels_are_text_never_tex_math():
    chart = str(svg_bars(["A$x$", "B$\\frac$"], {"units": [1.0, 2.0]}, "SKU-$1$ by day"))
    assert "<title>SKU-$1$ by day</title>" in chart and "<title>B$\\frac$: 2</title>" in chart
    assert ">SKU-$1$ by day<" in chart  # drawn as typed, not as italic math
