"""A DuckDB file: how to open it, waiting while another process holds it, with a known memory footprint."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

DEFAULT_MEMORY_LIMIT = "2GB"
# Several times the longest step of a first load at a million SKUs (125 s); past it, something is stuck, or a
# person has the file open, and saying so beats holding the run queue behind it.
DEFAULT_WAIT_SECONDS = 900.0
FIRST_PAUSE = 0.05


class WarehouseBusyError(RuntimeError):
    """Another process kept the warehouse file open for longer than we were prepared to wait."""


def open_when_free(
    path: Path, read_only: bool, config: dict[str, str], wait_seconds: float
) -> duckdb.DuckDBPyConnection:
    """Open `path`, waiting while another process holds it: DuckDB lets one process write a file and fails
    at once otherwise, but parallel steps (the multiprocess executor) each hold it only for their own work."""
    deadline = time.monotonic() + wait_seconds
    pause = FIRST_PAUSE
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            # only another process's lock is worth waiting for (not, say, a file system without locks)
            if "Conflicting lock is held" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(
                    f"{path} is still in use by another process after {wait_seconds:.0f} s: {exc}"
                ) from exc
            if pause == FIRST_PAUSE:
                log.warning("%s is in use by another process; waiting up to %.0f s: %s", path, wait_seconds, exc)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


@contextmanager
def connect(
    path: str | Path,
    create_schema: Callable[[duckdb.DuckDBPyConnection], None],
    read_only: bool = False,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open a DuckDB file (creating it, and on every read-write open the tables `create_schema` makes) and close
    it afterwards.

    DuckDB would take up to 80 % of the machine's memory; `memory_limit` caps it (beyond it, large joins and
    sorts spill to `<file>.tmp/`), so a run's footprint is known in advance whatever the catalog's size.
    While another process has the file open, this waits up to `wait_seconds` for it.
    """
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = open_when_free(path, read_only, {"memory_limit": memory_limit}, wait_seconds)
    # Day counts and weeks in UTC whatever the host's zone; without the ICU extension DuckDB is in UTC anyway.
    with contextlib.suppress(duckdb.Error):
        con.execute("SET TimeZone = 'UTC'")
    try:
        if not read_only:
            create_schema(con)
        yield con
    finally:
        con.close()
