"""The core below every room: the DuckDB file, SQL helpers, transactions, the app store, rule files, charts."""
