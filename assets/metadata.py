"""Asset metadata and logs for people: a table preview in markdown, the seconds each part of a step took."""

import time
from collections.abc import Callable, Iterator
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


class Progress:
    """Log a long step's progress at most every `seconds`, and its last report: each log line is an event in the
    run's storage (about 2 ms), and one per storefront batch or per hundred notices made hundreds a run."""

    def __init__(self, log: Callable[[str], None], seconds: float = 5.0) -> None:
        self.log, self.seconds, self.logged = log, seconds, float("-inf")

    def __call__(self, message: str, last: bool = False) -> None:
        now = time.monotonic()
        if last or now - self.logged >= self.seconds:
            self.logged = now
            self.log(message)
