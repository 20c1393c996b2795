"""Small SVG charts (matplotlib, no display needed): files for asset metadata and reports, and inline SVG for
the web app's pages."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: pipeline runs and CI have no display

import matplotlib.pyplot as plt
import pandas as pd
from markupsafe import Markup


def line_chart(frame: pd.DataFrame, x: str, ys: list[str], title: str, ylabel: str, path: Path) -> Path:
    """Plot columns `ys` against `x` as lines, write an SVG to `path` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    try:
        for y in ys:
            ax.plot(frame[x], frame[y], marker="o", label=y)
        ax.set_ylabel(ylabel)
        fig.autofmt_xdate()
        _finish(fig, ax, title, len(ys) > 0, path)
    finally:
        plt.close(fig)
    return path


def bar_chart(frame: pd.DataFrame, label: str, values: list[str], title: str, xlabel: str, path: Path) -> Path:
    """Horizontal bars of columns `values` per row label (first row on top), written as an SVG to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.28 * len(frame) * max(1, len(values) / 1.5)))
    try:
        height = 0.8 / len(values)
        positions = range(len(frame))
        for k, column in enumerate(values):
            ax.barh([p + k * height for p in positions], frame[column], height=height, label=column)
        ax.set_yticks([p + height * (len(values) - 1) / 2 for p in positions], frame[label].astype(str))
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        _finish(fig, ax, title, len(values) > 1, path)
    finally:
        plt.close(fig)
    return path


def _finish(fig: plt.Figure, ax: plt.Axes, title: str, legend: bool, path: Path) -> None:
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="svg")


# --- charts for the web app's pages ---
# Inline SVG that renders under the app's content security policy (no <style>, no style attributes: each
# style becomes presentation attributes) and carries its values: every bar and point has a <title>, which
# browsers show as a tooltip and screen readers read. Pages put a table with the same values beside it.

SVG = "http://www.w3.org/2000/svg"
ET.register_namespace("", SVG)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")
Series = dict[str, list[float | None]]
PLAIN_TEXT = {"text.parse_math": False}  # labels are data (a SKU may hold `$`), never TeX math


def svg_bars(labels: list[str], series: Series, title: str, unit: str = "") -> Markup:
    """Horizontal bars, one group per label (first on top), one bar per series in each group."""
    with plt.rc_context(PLAIN_TEXT):
        return _svg_bars(labels, series, title, unit)


def svg_lines(x_labels: list[str], series: Series, title: str, unit: str = "") -> Markup:
    """One line per series over `x_labels` (e.g. weeks), a point with its value at each; None is a gap."""
    with plt.rc_context(PLAIN_TEXT):
        return _svg_lines(x_labels, series, title, unit)


def _svg_bars(labels: list[str], series: Series, title: str, unit: str) -> Markup:
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.3 * max(1, len(labels)) * max(1, len(series))))
    tips: dict[str, str] = {}
    try:
        height = 0.8 / max(1, len(series))
        for k, (name, values) in enumerate(series.items()):
            positions = [i + k * height for i in range(len(labels))]
            bars = ax.barh(positions, [math.nan if v is None else v for v in values], height=height, label=name)
            for label, value, bar in zip(labels, values, bars, strict=True):
                tips[_mark(bar, tips)] = _tip(label, name, value, unit, len(series) > 1)
        ax.set_yticks([i + height * (len(series) - 1) / 2 for i in range(len(labels))], labels)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        return _inline(fig, ax, title, len(series) > 1, tips)
    finally:
        plt.close(fig)


def _svg_lines(x_labels: list[str], series: Series, title: str, unit: str) -> Markup:
    fig, ax = plt.subplots(figsize=(7, 2.8))
    tips: dict[str, str] = {}
    try:
        for name, values in series.items():
            ys = [math.nan if v is None else v for v in values]
            (line,) = ax.plot(range(len(x_labels)), ys, label=name)
            for i, (label, value) in enumerate(zip(x_labels, values, strict=True)):
                if value is not None:
                    (point,) = ax.plot([i], [value], "o", color=line.get_color(), markersize=4)
                    tips[_mark(point, tips)] = _tip(label, name, value, unit, True)
        step = max(1, math.ceil(len(x_labels) / 10))  # at most about ten labels under the axis
        ax.set_xticks(range(0, len(x_labels), step), x_labels[::step])
        ax.set_ylabel(unit)
        return _inline(fig, ax, title, len(series) > 1, tips)
    finally:
        plt.close(fig)


def _mark(artist: plt.Artist, tips: dict[str, str]) -> str:
    gid = f"mark{len(tips)}"
    artist.set_gid(gid)
    return gid


def _tip(label: str, series: str, value: float | None, unit: str, named: bool) -> str:
    shown = "no value" if value is None else f"{value:,.4g}" + (f" {unit}" if unit else "")
    return f"{label}, {series}: {shown}" if named else f"{label}: {shown}"


def _inline(fig: plt.Figure, ax: plt.Axes, title: str, legend: bool, tips: dict[str, str]) -> Markup:
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize="small")
    fig.tight_layout()
    out = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": title}):
        fig.savefig(out, format="svg", metadata={"Date": None})
    root = ET.fromstring(out.getvalue())
    for parent in root.iter():
        for child in list(parent):
            if child.tag in (f"{{{SVG}}}style", f"{{{SVG}}}metadata"):
                parent.remove(child)
    for element in root.iter():
        _styles_to_attributes(element)
        if element.tag == f"{{{SVG}}}g":  # ids must be unique on a page that shows several charts; only
            tip = tips.get(element.attrib.pop("id", ""))  # the clip paths' (salted by title) are referenced
            if tip is not None:
                element.insert(0, _title(tip))
    del root.attrib["width"], root.attrib["height"]  # scale with the page; the viewBox keeps the shape
    root.set("role", "img")
    root.set("class", "chart")
    root.insert(0, _title(title))
    return Markup(ET.tostring(root, encoding="unicode"))


def _title(text: str) -> ET.Element:
    element = ET.Element(f"{{{SVG}}}title")
    element.text = text
    return element


def _styles_to_attributes(element: ET.Element) -> None:
    """style="fill: #1f77b4; font: 10px 'DejaVu Sans'" → fill="#1f77b4" font-size="10px" font-family=..."""
    style = element.attrib.pop("style", "")
    for declaration in style.split(";"):
        name, _, value = (part.strip() for part in declaration.partition(":"))
        if name == "font":  # matplotlib writes the shorthand "<size>px <family>"
            size, _, family = value.partition(" ")
            element.set("font-size", size)
            element.set("font-family", f"{family.strip()}, sans-serif")
        elif name:
            element.set(name, value)
