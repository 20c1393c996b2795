"""Upstream faults to inject into the simulator's answers, switchable at run time per endpoint path."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

# What each kind does to a matching request, and the parameters it takes (with defaults).
FAULT_KINDS: dict[str, dict[str, Any]] = {
    "latency": {"seconds": 1.0},  # wait, then answer normally
    "error": {"status": 503},  # answer with this status
    "throttle": {"retry_after": 1},  # 429 with a Retry-After header
    "drop": {},  # close the connection without answering
    "truncate": {},  # 200 with the full Content-Length but half the body, then close
    "malformed": {},  # 200 with a complete body that is not valid JSON
    "duplicate": {"rows": 5},  # the page repeats its first n rows at its end
    "empty": {},  # an empty last page
    "partial": {},  # a batch write applies its first half and refuses the rest
    "corrupt": {
        "field": None,
        "value": None,
        "rows": 3,
    },  # set `field` (dotted: lines.qty) in the first n rows
    "trickle": {"bytes": 16, "interval": 0.5},  # the body in pieces of `bytes`, one every `interval` seconds
    "cursor_loop": {"to": "self"},  # next_cursor repeats the cursor asked for ("self") or goes back to page 1
    "redirect": {"to": None, "status": 307},  # redirect to the same path and query at origin `to` (None: here)
    "echo": {"status": 500},  # a debug error page quoting the request line and headers, credentials included
}
DATA_FAULTS = frozenset({"duplicate", "empty", "corrupt", "cursor_loop"})  # they alter GET pages only
ROW_FAULTS = frozenset({"duplicate", "corrupt"})  # they edit a page's rows
WRITE_FAULTS = frozenset({"partial"})  # they alter how a write is applied
ANSWER_FAULTS = ("drop", "error", "throttle", "redirect", "echo")  # they replace the answer; the first queued wins
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass
class Fault:
    path: str  # an endpoint path, or "*" for every endpoint
    kind: str
    times: int | None  # requests left to affect; None = until cleared
    params: dict[str, Any] = field(default_factory=dict)

    def matches(self, path: str, paged_get: bool) -> bool:
        return self.path in ("*", path) and (paged_get or self.kind not in DATA_FAULTS)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "times": self.times, **self.params}


class FaultBook:
    """The faults queued for injection. Thread-safe: the server takes from it on every request thread."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, path: str, kind: str, times: int | None = 1, **params: Any) -> Fault:
        """Affect the next `times` requests to `path` (or "*"); raises ValueError on a bad fault."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if path != "*" and not path.startswith("/"):
            raise ValueError(f"fault path must be an endpoint path such as /wms/receipts or '*', got {path!r}")
        if times is not None and times < 1:
            raise ValueError("times must be a positive count, or None for every request until cleared")
        unknown = set(params) - set(FAULT_KINDS[kind])
        if unknown:
            raise ValueError(f"fault {kind!r} takes no parameter {', '.join(sorted(unknown))}")
        if kind == "corrupt" and not params.get("field"):
            raise ValueError("fault 'corrupt' needs a field")
        check_params(kind, {**FAULT_KINDS[kind], **params})
        fault = Fault(path, kind, times, {**FAULT_KINDS[kind], **params})
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> int:
        """Remove every fault; returns how many were queued."""
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
        return count

    def take(self, path: str, paged_get: bool) -> list[Fault]:
        """The faults that apply to one request, each counted as used once."""
        with self._lock:
            taken = [f for f in self._faults if f.matches(path, paged_get)]
            for fault in taken:
                if fault.times is not None:
                    fault.times -= 1
            self._faults = [f for f in self._faults if f.times is None or f.times > 0]
        return taken

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.as_dict() for f in self._faults]


def check_params(kind: str, params: dict[str, Any]) -> None:
    """Refuse parameters a fault cannot work with (raises ValueError), before it is queued."""
    if kind == "trickle" and not (int(params["bytes"]) >= 1 and float(params["interval"]) >= 0):
        raise ValueError("fault 'trickle' needs bytes >= 1 and interval >= 0")
    if kind == "cursor_loop" and params["to"] not in ("self", "start"):
        raise ValueError("fault 'cursor_loop' takes to='self' (repeat the cursor) or to='start' (back to page 1)")
    if kind == "redirect":
        if params["status"] not in REDIRECT_STATUSES:
            raise ValueError(f"fault 'redirect' needs a redirect status, one of {sorted(REDIRECT_STATUSES)}")
        if params["to"] is not None and not str(params["to"]).startswith(("http://", "https://")):
            raise ValueError("fault 'redirect' takes to=<an origin such as http://127.0.0.1:8766>, or none for here")


def apply_data_faults(rows: list[dict[str, Any]], faults: list[Fault]) -> list[dict[str, Any]]:
    """Alter a page's rows (already parsed) by its data faults, in the order they were queued."""
    for fault in faults:
        if fault.kind == "duplicate":
            rows = rows + [dict(r) for r in rows[: fault.params["rows"]]]
        elif fault.kind == "corrupt":
            head, _, leaf = fault.params["field"].rpartition(".")
            for row in rows[: fault.params["rows"]]:
                target = row
                if head:  # a nested list such as `lines`: corrupt each row's first line
                    nested = row.get(head)
                    if not nested:
                        continue
                    target = nested[0]
                target[leaf] = fault.params["value"]
    return rows
