"""The source systems' clock, as the pipeline measures against it."""

from __future__ import annotations

from datetime import datetime

import duckdb

from cx_pipeline.core.sql import first_row


def wms_clock(con: duckdb.DuckDBPyConnection) -> datetime:
    """Now, on the WMS's clock: its `as_of` at the latest receipts pull plus the time since that pull.

    Measuring on the source's clock keeps the cycle honest when the pipeline host's clock drifts.
    """
    row = first_row(
        con,
        """SELECT as_of + (now() - fetched_at) FROM ingest_batches
        WHERE feed = 'receipts' AND as_of IS NOT NULL ORDER BY fetched_at DESC LIMIT 1""",
    )
    if row is None:
        raise RuntimeError("no receipts have been pulled yet: materialize raw_receipts first")
    return row[0]
