"""One transaction helper for both databases (DuckDB and the app store's SQLite): all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def transaction(con: Any, begin: str = "BEGIN") -> Iterator[Any]:
    """All of the block's writes, or none of them. `con` is any DB-API connection with `execute`."""
    con.execute(begin)
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
