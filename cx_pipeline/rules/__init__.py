"""Rule files that the business edits (YAML, next to this module): required catalog attributes per family and
inspection checklists per category; and the acceptance sampling tables (CSV) the checklists' AQLs refer to.

Each loader validates the whole file and reports every problem at once, naming the entry at fault.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

RULES_DIR = Path(__file__).parent
FAMILIES_FILE = RULES_DIR / "catalog_families.yaml"


class RulesError(ValueError):
    """A rule file breaks its contract; the message lists every problem."""


def read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RulesError(f"{path}: no such file") from exc
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from exc


def load_families(path: str | Path | None = None) -> dict[str, list[str]]:
    """Required attributes per product family (category), e.g. `{"apparel": ["color", "size"]}`."""
    path = Path(path) if path else FAMILIES_FILE
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise RulesError(f"{path}: expected a mapping of family -> list of required attributes")
    problems = []
    for family, attributes in data.items():
        if not isinstance(attributes, list) or not all(isinstance(a, str) and a.strip() for a in attributes):
            problems.append(f"{family}: expected a list of attribute names, got {attributes!r}")
        elif len(set(attributes)) != len(attributes):
            problems.append(f"{family}: an attribute is listed twice")
    if problems:
        raise RulesError(f"{path}: " + "; ".join(problems))
    return {str(family): list(attributes) for family, attributes in data.items()}


CHECKLISTS_FILE = RULES_DIR / "inspection_checklists.yaml"
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
    from cx_pipeline.aql import SEVERITIES, aql_values  # the AQL module reads its tables from this package

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
