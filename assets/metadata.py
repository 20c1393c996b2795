"""Asset metadata and logs for people: a table preview in markdown, the seconds each part of a step took."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pandas as pd

PREVIEW_ROWS = 20


def markdown(frame: pd.DataFrame, empty: str = "none") -> dg.MetadataValue:
    return dg.MetadataValue.md(empty if frame.empty else frame.head(PREVIEW_ROWS).to_markdown(index=False))


@contextmanager
def timed(seconds: dict[str, float], part: str) -> Iterator[None]:
    """Add the seconds the block takes to `seconds[part]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - start
