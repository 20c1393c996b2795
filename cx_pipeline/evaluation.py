"""`cx-pipeline evaluate-returns`: the return-risk model against the demo world's planted truth.

Runs the whole pipeline on a demo world, then sets the model's held-out figures (the last 30 days, never seen
in training) next to the oracle's: the world's expected return inquiries per SKU. The bars: top-decile
capture at least 90 % of the oracle's, calibration within 10 % of the oracle per decile of predicted risk,
and the planted driving segments ranked first in their category.

The figures are the model's at the world's own clock (`evaluate_at`), not at the pipeline run's: the run's
clock is the WMS's plus the seconds the run took before `return_risk`, which moved the cutoffs, and so the
figures, from one run to the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from sklearn.metrics import mean_poisson_deviance

from cx_pipeline.quality import returns
from cx_pipeline.quality.checklists import load_checklists
from cx_pipeline.simulator.quality import RETURN_DRIVERS

CAPTURE_BAR, CALIBRATION_BAR = 0.90, 0.10
TINY = 0.01  # return inquiries per SKU: below this a decile is judged by its absolute error, not its ratio


@dataclass(frozen=True)
class Report:
    figures: pd.DataFrame  # metric x (model, baseline, oracle)
    calibration: pd.DataFrame  # decile: predicted, oracle, actual, ratio
    drivers: pd.DataFrame  # category: planted, found (the model's top k)
    capture_ratio: float

    @property
    def calibrated(self) -> bool:
        close = (self.calibration["ratio"] - 1).abs() <= CALIBRATION_BAR
        tiny = (self.calibration["oracle"] < TINY) & (
            (self.calibration["predicted"] - self.calibration["oracle"]).abs() < TINY
        )
        return bool((close | tiny).all())

    @property
    def drivers_found(self) -> bool:
        return bool((self.drivers["planted"] == self.drivers["found"]).all())

    @property
    def passed(self) -> bool:
        return self.capture_ratio >= CAPTURE_BAR and self.calibrated and self.drivers_found


def report(warehouse_path: Path, world: object) -> Report:
    """Compare the model's held-out predictions in the warehouse (the latest run's) with the world's truth."""
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        holdout = con.sql("SELECT * FROM return_risk_holdout").df()
        (test_cutoff,) = con.execute(
            "SELECT test_cutoff FROM return_risk_metrics ORDER BY scored_at DESC LIMIT 1"
        ).fetchall()[0]
        coefficients = con.sql("SELECT * FROM return_risk_drivers").df()
    return compare(holdout, coefficients, test_cutoff, world)


def evaluate_at(warehouse_path: Path, world: object, now: datetime) -> Report:
    """Train and evaluate the model on the warehouse as the pipeline does, with `now` as the clock, and
    compare its held-out predictions with the world's truth."""
    checklists = load_checklists()
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        data = returns.cutoffs(con, now, checklists)
        evaluation, scores = returns.evaluate(data, checklists), returns.score(data, checklists)
    return compare(evaluation.holdout, scores.coefficients, evaluation.test_cutoff, world)


def compare(holdout: pd.DataFrame, coefficients: pd.DataFrame, test_cutoff: datetime, world: object) -> Report:
    """The model's held-out predictions (`returns.Evaluation.holdout`) and driver coefficients
    (`returns.Scores.coefficients`) next to the world's truth over the 30 days after `test_cutoff`."""
    holdout = holdout.copy()
    oracle = world.quality.expected_returns(test_cutoff, pd.Timestamp(test_cutoff) + returns.HORIZON)
    holdout["oracle"] = holdout["sku"].map(oracle).fillna(0.0)
    actual = holdout["actual"].to_numpy()
    columns = {"model": "predicted", "baseline": "baseline", "oracle": "oracle"}
    figures = pd.DataFrame(
        {
            name: {
                "poisson deviance": mean_poisson_deviance(actual, np.maximum(holdout[c].to_numpy(), 1e-9)),
                "top-decile capture": returns.top_decile_capture(holdout[c].to_numpy(), actual),
                "return inquiries (sum)": float(holdout[c].sum()),
            }
            for name, c in columns.items()
        }
    )
    figures.loc["return inquiries (sum)", "actual"] = float(actual.sum())
    holdout["decile"] = pd.qcut(holdout["predicted"].rank(method="first"), 10, labels=range(1, 11))
    calibration = holdout.groupby("decile", observed=True).agg(
        skus=("sku", "size"), predicted=("predicted", "mean"), oracle=("oracle", "mean"), actual=("actual", "mean")
    )
    calibration["ratio"] = calibration["predicted"] / calibration["oracle"].where(calibration["oracle"] > 0)
    drivers = pd.DataFrame(
        [
            (
                category,
                ", ".join(sorted(planted)),
                ", ".join(sorted(coefficients[(coefficients["category"] == category)
                                              & (coefficients["rank"] <= len(planted))]["item"])),
            )
            for category, planted in RETURN_DRIVERS.items()
        ],
        columns=["category", "planted", "found"],
    )  # fmt: skip
    capture = figures.loc["top-decile capture"]
    return Report(figures, calibration.reset_index(), drivers, float(capture["model"] / capture["oracle"]))


def print_report(result: Report) -> None:
    print("\nReturn-risk model on the held-out last 30 days, next to the oracle (the world's expected returns):\n")
    print(result.figures.round(3).to_string())
    print(
        f"\nTop-decile capture, model / oracle: {result.capture_ratio:.1%} (bar: >= {CAPTURE_BAR:.0%}) "
        + ("MET" if result.capture_ratio >= CAPTURE_BAR else "MISSED")
    )
    print(f"\nCalibration by decile of predicted risk (bar: within {CALIBRATION_BAR:.0%} of the oracle; deciles "
          f"whose expectation is below {TINY} per SKU within {TINY} absolute):")  # fmt: skip
    print(result.calibration.round(4).to_string(index=False))
    print("MET" if result.calibrated else "MISSED")
    print("\nDriving segments (planted vs the model's top of each category):")
    print(result.drivers.to_string(index=False))
    print("MET" if result.drivers_found else "MISSED")


def evaluate_returns(data_dir: Path, seed: int, skus: int, history_days: int, now: datetime) -> int:
    from cx_pipeline.demo import run_on_world
    from cx_pipeline.simulator import build_world

    marker = data_dir / ".cx-evaluation"
    if (any(data_dir.glob("*.sqlite")) or any(data_dir.glob("*.duckdb"))) and not marker.exists():
        print(f"{data_dir} holds a warehouse or an app store that is not an evaluation's; choose another --data-dir")
        return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    for old in data_dir.glob("app.sqlite*"):
        old.unlink()  # the evaluation's own store, fresh each time
    print(f"Generating a demo world for the evaluation (seed {seed}, {skus:,} SKUs, {history_days} days)...")
    world = build_world(seed=seed, n_skus=skus, history_days=history_days, now=now)
    result, elapsed = run_on_world(world, data_dir)
    if not result.success:
        print("The pipeline run failed; see the log above.")
        return 2
    print(f"Pipeline run: {elapsed:.0f} s")
    outcome = evaluate_at(data_dir / "warehouse.duckdb", world, world.now)
    print_report(outcome)
    return 0 if outcome.passed else 1
