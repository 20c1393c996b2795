"""Acceptance sampling by ANSI/ASQ Z1.4 (= ISO 2859-1): general inspection level II, single sampling, normal
inspection. The tables are data (`z14_*.csv`, next to this module); this module looks them up and follows the
arrows.

A lot is one receipt line. Its sample size comes from the lot size (Table I -> code letter); each defect
severity has its own AQL, hence its own plan (Table II-A). An arrow sends the lookup to the first plan below
or above, whose sample size then applies; the lot is inspected with the largest sample size its severities
need, and never more units than the lot holds (then every unit is inspected). AQL 0 means no defect of that
severity is accepted (Ac 0, Re 1).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SEVERITIES = ("critical", "major", "minor")
DEFAULT_AQL = {"critical": 0.0, "major": 2.5, "minor": 4.0}
CODE_LETTERS_FILE = Path(__file__).with_name("z14_code_letters.csv")
PLANS_FILE = Path(__file__).with_name("z14_single_normal.csv")


class AqlError(ValueError):
    """An AQL the tables do not hold, or a lot size that is not a positive whole number."""


@dataclass(frozen=True)
class Plan:
    code_letter: str
    sample_size: int
    accept: int  # Ac: accept the lot with this many defects or fewer
    reject: int  # Re: reject it with this many or more


@dataclass(frozen=True)
class LotPlan:
    lot_size: int
    code_letter: str  # of the lot size (the plans of some severities may have moved along an arrow)
    sample_size: int  # units to inspect: the largest any severity needs, at most the lot size
    plans: dict[str, Plan]  # per severity

    def verdict(self, defects: dict[str, int]) -> dict[str, str]:
        """`accept` or `reject` per severity, and overall (`lot`): one rejected severity rejects the lot."""
        verdicts = {s: "reject" if defects.get(s, 0) >= p.reject else "accept" for s, p in self.plans.items()}
        verdicts["lot"] = "reject" if "reject" in verdicts.values() else "accept"
        return verdicts


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as file:
        return list(csv.DictReader(line for line in file if not line.startswith("#")))


@cache
def _tables() -> tuple[list[tuple[int, int | None, str]], list[str], dict[str, int], dict[str, dict[str, str]]]:
    """Table I as (from, to, letter) rows, and Table II-A as letter order, sample sizes and cells."""
    letters = [
        (int(r["lot_size_from"]), int(r["lot_size_to"]) if r["lot_size_to"] else None, r["code_letter"])
        for r in _rows(CODE_LETTERS_FILE)
    ]
    plans = _rows(PLANS_FILE)
    order = [r["code_letter"] for r in plans]
    sizes = {r["code_letter"]: int(r["sample_size"]) for r in plans}
    cells = {r["code_letter"]: {k: v for k, v in r.items() if k not in ("code_letter", "sample_size")} for r in plans}
    return letters, order, sizes, cells


def aql_values() -> list[float]:
    """The AQLs the tables hold (plus 0, for no defect accepted)."""
    _, order, _, cells = _tables()
    return [0.0, *(float(a) for a in cells[order[0]])]


def code_letter(lot_size: int) -> str:
    if not isinstance(lot_size, int) or lot_size < 1:
        raise AqlError(f"a lot size is a whole number of units >= 1, got {lot_size!r}")
    letters, *_ = _tables()
    # Rows ascend; a lot of 1 (below Table I's first row) is inspected whole anyway.
    return next(letter for _, high, letter in letters if high is None or lot_size <= high)


def plan(lot_size: int, aql: float) -> Plan:
    """The single sampling plan for `aql` at this lot size, arrows followed."""
    letter = code_letter(lot_size)
    _, order, sizes, cells = _tables()
    if aql == 0:
        return Plan(letter, sizes[letter], 0, 1)
    column = next((c for c in cells[letter] if float(c) == float(aql)), None)
    if column is None:
        raise AqlError(f"AQL {aql} is not in the Z1.4 table; use one of {', '.join(map(str, aql_values()))}")
    row = order.index(letter)
    while (cell := cells[order[row]][column]) in ("up", "down"):
        row += 1 if cell == "down" else -1
        if not 0 <= row < len(order):
            raise AqlError(f"the Z1.4 table has no plan for AQL {aql} at code letter {letter}")
    accept, reject = (int(x) for x in cell.split("/"))
    return Plan(order[row], sizes[order[row]], accept, reject)


def lot_plan(lot_size: int, aqls: dict[str, float] | None = None) -> LotPlan:
    """Sample size and per-severity plans for a lot (default AQLs: critical 0, major 2.5, minor 4.0)."""
    plans = {severity: plan(lot_size, aql) for severity, aql in (aqls or DEFAULT_AQL).items()}
    sample = min(max(p.sample_size for p in plans.values()), lot_size)
    return LotPlan(lot_size, code_letter(lot_size), sample, plans)
