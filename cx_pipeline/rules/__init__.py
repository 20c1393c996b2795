"""Rule files that the business edits (YAML, next to this module): required catalog attributes per family.

Each loader validates the whole file and reports every problem at once, naming the entry at fault.
"""

from __future__ import annotations

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
