"""Small SQL helpers every room uses."""

from __future__ import annotations

import duckdb


def first_row(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | dict[str, object] | None = None
) -> tuple | None:
    """The first row of a query, or None. Uses fetchall: DuckDB 2 keeps a fetchone() result open."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def exists(con: duckdb.DuckDBPyConnection, table: str, column: str | None = None) -> bool:
    """The database has `table` (a table or a temp table, not a view), with `column` when one is named."""
    if column is None:
        row = first_row(con, "SELECT 1 FROM duckdb_tables() WHERE table_name = ?", [table])
    else:
        row = first_row(con, "SELECT 1 FROM duckdb_columns() WHERE table_name = ? AND column_name = ?", [table, column])
    return row is not None


def row_exists_sql(
    con: duckdb.DuckDBPyConnection,
    alias: str,
    columns: tuple[str, ...],
    table: str,
    table_columns: tuple[str, ...],
    among: str,
) -> str:
    """SQL: `alias`'s `columns` name a row of `table` (by `table_columns`), for rows `alias` of table `among`.

    The test hashes the smaller side. A correlated EXISTS hashes all of `table`: right for a first load, which
    is larger, but 1.4 s to check 50,000 receipts against 10 M PO lines, where narrowing the table to the keys
    the batch names first takes 0.2 s.
    """
    pairs = list(zip(columns, table_columns, strict=True))
    (batch_is_smaller,) = first_row(con, f"SELECT (SELECT count(*) FROM {among}) < (SELECT count(*) FROM {table})")
    if not batch_is_smaller:
        return f"EXISTS (SELECT 1 FROM {table} t WHERE {' AND '.join(f't.{tc} = {alias}.{c}' for c, tc in pairs)})"
    key = ", ".join(f"{alias}.{c}" for c in columns)
    on = " AND ".join(f"t.{tc} = b.{c}" for c, tc in pairs)
    named = f"SELECT ({', '.join(f't.{c}' for c in table_columns)}) FROM {table} t SEMI JOIN {among} b ON {on}"
    return f"coalesce(({key}) IN ({named}), false)"  # like EXISTS: false, not null, for a null key
