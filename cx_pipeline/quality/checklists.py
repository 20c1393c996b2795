"""Inspection checklists per category and the AQL per defect severity (`inspection_checklists.yaml`, next
to this module), which the business edits; the loader validates the whole file, naming every entry at fault."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cx_pipeline.core.rule_files import RulesError, read_yaml
from cx_pipeline.quality.aql import SEVERITIES, aql_values

CHECKLISTS_FILE = Path(__file__).with_name("inspection_checklists.yaml")
ITEM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class Checklists:
    """Inspection items per category (item -> what good looks like) and the AQL per defect severity."""

    aql: dict[str, float]
    categories: dict[str, dict[str, str]]

    def items(self, category: str) -> list[str]:
        return list(self.categories.get(category, {}))


def load_checklists(path: str | Path | None = None) -> Checklists:
    """The inspection checklists file (`path`, else env CX_CHECKLISTS, else the bundled one), validated whole."""
    path = Path(path or os.environ.get("CX_CHECKLISTS") or CHECKLISTS_FILE)
    data = read_yaml(path)
    if not isinstance(data, dict) or set(data) != {"aql", "categories"}:
        raise RulesError(f"{path}: expected two sections, `aql` and `categories`")
    problems = []
    aql = data["aql"]
    if not isinstance(aql, dict) or set(aql) != set(SEVERITIES):
        problems.append(f"aql: give one AQL for each of {', '.join(SEVERITIES)}")
    else:
        problems += [
            f"aql: {severity} {value!r} is not a Z1.4 AQL (choose from {', '.join(map(str, aql_values()))})"
            for severity, value in aql.items()
            if not isinstance(value, int | float) or float(value) not in aql_values()
        ]
    categories = data["categories"]
    if not isinstance(categories, dict) or not categories:
        problems.append("categories: expected a mapping of category -> items")
        categories = {}
    for category, items in categories.items():
        if not isinstance(items, dict) or not items:
            problems.append(f"{category}: expected a mapping of item -> what good looks like")
            continue
        problems += [
            f"{category}.{item}: an item name is lower-case letters, digits and _ (at most 40)"
            for item in items
            if not isinstance(item, str) or not ITEM_NAME.match(item)
        ]
        problems += [f"{category}.{item}: describe what good looks like" for item, text in items.items() if not text]
    if problems:
        raise RulesError(f"{path}: " + "; ".join(problems))
    return Checklists(
        aql={s: float(v) for s, v in aql.items()},
        categories={str(c): {str(i): str(t) for i, t in items.items()} for c, items in categories.items()},
    )
