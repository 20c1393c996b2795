"""Great Expectations 1.x suites for the raw feeds, and a runner that names the offending rows."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no phoning home from a batch pipeline

import duckdb
import great_expectations as gx
import great_expectations.expectations as gxe
from duckdb_engine import ConnectionWrapper
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.execution_engine.sqlalchemy_execution_engine import SqlAlchemyExecutionEngine
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from cx_pipeline.core.sql import first_row
from cx_pipeline.ingest.feeds import Feed

# GX pins this logger to INFO and announces a temporary docs directory for every ephemeral context:
# one line per check in every run log, about a directory it has already removed.
logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
CLOCK_SKEW = timedelta(minutes=5)  # tolerated lead of a row's timestamp over the source's clock
# A suite is judged first for pass or fail alone, then its broken expectations again with every offending row by
# `_row` (on SQL, GX lists at most `partial_unexpected_count`, 20, even when COMPLETE). Most batches pass, and
# the offending rows cost each expectation two more queries (a passing 20,000-row batch: 0.14 s, judged only 0.07 s).
JUDGED = {"result_format": "BOOLEAN_ONLY"}
NAMED = {"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"], "partial_unexpected_count": 2**31 - 1}


def _fetch_before_release(self: SqlAlchemyExecutionEngine, query: object) -> object:
    """GX reads a query's rows after handing its connection back, and DuckDB drops a result with its
    connection, so every metric came back empty (great_expectations#11579). Buffer the rows first."""
    with self.get_connection() as connection:
        return self._execute_query_with_recovery(connection, query).freeze()()


if not hasattr(SqlAlchemyExecutionEngine, "_execute_query_with_recovery"):  # the private method the fix wraps
    raise ImportError("this Great Expectations release changed its SQL engine; cx_pipeline/suites.py needs a look")
SqlAlchemyExecutionEngine.execute_query = _fetch_before_release


@dataclass(frozen=True)
class Violation:
    """One broken expectation: what it demanded, how many rows broke it, and which (by frame index)."""

    expectation: str
    unexpected_count: int
    row_index: list[int]  # the offending rows' `_row`; empty for table-level expectations such as volume
    observed: object = None


def build_suite(feed: Feed, now: datetime, min_rows: int) -> gx.ExpectationSuite:
    """The contract of one landed batch of `feed`.

    `now` is the source's clock when the batch was read; `min_rows` comes from the volume history.
    Flag columns are computed in SQL before validation (see `cx_pipeline.ingest.contracts.staged`): `_known_*` per
    reference, since a set of every SKU would be slow to check in pandas; `_key_format` (keys are short and
    printable); `_unparsed` (the columns whose value is not a value of their type, e.g. 5.7 for an integer).
    """
    expectations: list[gxe.Expectation] = [gxe.ExpectTableRowCountToBeBetween(min_value=min_rows)]
    # The key as one column (`_row_key`): on SQL, GX names the rows of a single column's duplicates but only
    # counts those of a compound key, and every offending row must be quarantined.
    expectations.append(gxe.ExpectColumnValuesToBeUnique(column="_row_key"))
    expectations += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in feed.columns if c not in feed.nullable]
    # every value sent is exactly a value of its column's type: a whole number, a timestamp with its zone...
    expectations.append(gxe.ExpectColumnValuesToBeNull(column="_unparsed"))
    expectations.append(gxe.ExpectColumnValuesToBeInSet(column="_key_format", value_set=[True]))
    expectations += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in feed.quantities]
    expectations += [
        gxe.ExpectColumnValuesToBeBetween(column=c, max_value=now + CLOCK_SKEW) for c in feed.past_timestamps
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeInSet(column=c, value_set=list(values)) for c, values in feed.enums.items()
    ]
    expectations += [gxe.ExpectColumnValuesToBeInSet(column=r.flag, value_set=[True]) for r in feed.references]
    return gx.ExpectationSuite(name=f"raw_{feed.name}_contract", expectations=expectations)


def describe(config: gxe.Expectation | object) -> str:
    """A readable one-line name for an expectation, e.g. `expect_column_values_to_be_between(qty, min 0)`."""
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id" and v is not None}
    target = kwargs.pop("column", None) or ",".join(kwargs.pop("column_list", []) or [])
    details = ", ".join(
        f"{k} {v if not isinstance(v, list) or len(v) <= 6 else f'{len(v)} values'}"
        for k, v in kwargs.items()
        if k not in ("mostly", "result_format")
    )
    return f"{config.type}({', '.join(filter(None, [target, details]))})"


def validate(con: duckdb.DuckDBPyConnection, table: str, suite: gx.ExpectationSuite) -> list[Violation]:
    """Run `suite` on warehouse table or view `table` (which has a `_row` column); return the broken expectations.

    GX runs its expectations as SQL in the warehouse (through duckdb-engine), so a batch of millions of
    rows is judged where it lies instead of being copied into pandas. Every expectation is judged first (a
    uniqueness expectation by its proof, `_proof`); only those broken are run again, to name their rows.
    """
    judged = [_proof(e) or e for e in suite.expectations]
    results = _run(con, table, gx.ExpectationSuite(name=suite.name, expectations=judged), JUDGED)
    broken = [e for e, r in zip(suite.expectations, results, strict=True) if not r.success]
    if not broken:
        return []
    named = _run(con, table, gx.ExpectationSuite(name=f"{suite.name}_rows", expectations=broken), NAMED)
    return [
        Violation(
            expectation=describe(r.expectation_config),
            unexpected_count=int(r.result.get("unexpected_count") or 0),
            row_index=[int(i["_row"]) for i in r.result.get("unexpected_index_list") or []],
            observed=r.result.get("observed_value") or _error(r.exception_info),
        )
        for r in named
        if not r.success
    ]


def _proof(expectation: gxe.Expectation) -> gxe.Expectation | None:
    """A table-level expectation that holds exactly when `expectation` holds on every row, for one aggregate
    query instead of its row-level ones; None when there is none.

    Every value of a column is unique exactly when its distinct values are as many as its values (nulls left out
    by both). GX judges row-level uniqueness with a window over the whole batch, three times (the count, the
    values and their rows): 20 s of a 20 M-row first load, where one count of distinct values takes 3.
    """
    unique = isinstance(expectation, gxe.ExpectColumnValuesToBeUnique)
    if not unique or expectation.mostly != 1 or expectation.row_condition:
        return None
    return gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(column=expectation.column, min_value=1)


def _run(
    con: duckdb.DuckDBPyConnection, table: str, suite: gx.ExpectationSuite, result_format: dict[str, object]
) -> list[gx.core.ExpectationValidationResult]:
    """GX's results of `suite` on `table` in `result_format`, one per expectation in the suite's order."""
    (path,) = first_row(con, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    # A cursor is a second connection to the same open database: another duckdb.connect() of the file
    # with a different configuration would be refused.
    source = context.data_sources.add_sql(
        "warehouse", connection_string=f"duckdb:///{path}", kwargs={"creator": lambda: ConnectionWrapper(con.cursor())}
    )
    batch = source.add_table_asset(table, table_name=table).add_batch_definition_whole_table("batch").get_batch()
    try:
        results = batch.validate(suite, result_format=result_format).results
    finally:
        source.get_execution_engine().engine.dispose()  # release the file: other processes may open it next
    # GX answers column by column, not in the suite's order: each expectation's result is found by its signature
    found = {_signature(r.expectation_config): r for r in results}
    missing = [_signature(e.configuration) for e in suite.expectations if _signature(e.configuration) not in found]
    if missing:
        raise RuntimeError(f"GX answered suite {suite.name} without a result for: {'; '.join(missing)}")
    return [found[_signature(e.configuration)] for e in suite.expectations]


def _signature(config: ExpectationConfiguration) -> str:
    """An expectation's type and arguments (GX adds the batch's id to a result's)."""
    return f"{config.type}{sorted((k, v) for k, v in config.kwargs.items() if k != 'batch_id')!r}"


def _error(info: dict) -> str | None:
    """The message of an expectation that could not be evaluated (GX nests it per metric)."""
    messages = [i.get("exception_message") for i in info.values() if isinstance(i, dict)]
    return "; ".join(filter(None, messages)) or info.get("exception_message") or None
