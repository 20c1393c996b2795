"""Rule files that the business edits (YAML): read them, and report every problem at once."""

from __future__ import annotations

from pathlib import Path

import yaml


class RulesError(ValueError):
    """A rule file breaks its contract; the message lists every problem."""


def read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RulesError(f"{path}: no such file") from exc
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from exc
