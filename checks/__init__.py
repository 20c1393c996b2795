"""Asset checks and the Great Expectations suites behind them."""
