"""Required catalog attributes per product family (`catalog_families.yaml`, next to this module), which the
business edits; the loader validates the whole file, naming every entry at fault."""

from __future__ import annotations

from pathlib import Path

from cx_pipeline.core.rule_files import RulesError, read_yaml

FAMILIES_FILE = Path(__file__).with_name("catalog_families.yaml")


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
