"""Small SVG charts for asset metadata and reports (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: pipeline runs and CI have no display

import matplotlib.pyplot as plt
import pandas as pd


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
