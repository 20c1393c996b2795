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
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ys:
            ax.legend()
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, format="svg")
    finally:
        plt.close(fig)
    return path
