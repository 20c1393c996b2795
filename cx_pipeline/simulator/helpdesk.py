"""What the demo world's inquiries look like in a real helpdesk, and the HTTP scaffolding of the vendor test servers
(`zendesk.py`, `gorgias.py`).

Real tickets do not arrive labelled: each inquiry is written the way customers and agents write them, in turn
tagged (in English or German), given a contact-reason field, described only by its subject in English or in
German, or (the world's `other` inquiries) about something else entirely. Every ticket also carries what the
pipeline must never land: a message body and the customer's name and email address.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import orjson
import pandas as pd

from cx_pipeline.simulator.world import World

# How a reason is written, per style of ticket: (tag, subject) in English and German.
TAGS = {
    "en": {"delivery_delay": "delivery_delay", "cancellation": "cancellation", "return": "return"},
    "de": {"delivery_delay": "wo-ist-meine-bestellung", "cancellation": "storno", "return": "retoure"},
}
SUBJECTS = {
    "en": {
        "delivery_delay": "Where is my order? It has not arrived",
        "cancellation": "Please cancel my order",
        "return": "I would like to return the jacket",
        "other": "Question about sizing",
    },
    "de": {
        "delivery_delay": "Wo ist meine Bestellung?",
        "cancellation": "Bitte Bestellung stornieren",
        "return": "Rücksendung der Jacke",
        "other": "Frage zur Rechnung",
    },
}
NEUTRAL_SUBJECT = {"en": "Your shop", "de": "Ihr Shop"}
STYLES = ("tag_en", "tag_de", "field", "subject_en", "subject_de")


@dataclass(frozen=True)
class Inquiry:
    """A world inquiry as a helpdesk sees it: its number, how it is written, and what it must not leak."""

    number: int
    reason: str
    order_id: str | None
    sku: str | None
    created_at: pd.Timestamp
    updated_at: pd.Timestamp
    style: str

    @property
    def language(self) -> str:
        return "de" if self.style.endswith("_de") else "en"

    @property
    def tags(self) -> list[str]:
        names = ["web"] if self.number % 3 else ["vip", "web"]  # tags that say nothing of the reason
        if self.style.startswith("tag_") and self.reason in TAGS[self.language]:
            names.append(TAGS[self.language][self.reason])
        return names

    @property
    def contact_reason(self) -> str | None:
        return self.reason if self.style == "field" and self.reason != "other" else None

    @property
    def subject(self) -> str:
        if self.style.startswith("subject_") or self.reason == "other":
            return SUBJECTS[self.language][self.reason]
        return NEUTRAL_SUBJECT[self.language]

    @property
    def customer_name(self) -> str:
        return f"Erika Muster{self.number}" if self.language == "de" else f"Jane Doe{self.number}"

    @property
    def customer_email(self) -> str:
        return f"customer{self.number}@example.com"

    @property
    def body(self) -> str:
        if self.language == "de":
            return f"Hallo, hier ist {self.customer_name}, erreichbar unter {self.customer_email}. Danke!"
        return f"Hello, this is {self.customer_name}, you can reach me at {self.customer_email}. Thanks!"


def inquiries(world: World) -> list[Inquiry]:
    """Every inquiry of the world's timeline (visible or not yet), written as a ticket."""
    frame = world.inquiries
    return [
        Inquiry(
            number=int(row.inquiry_id.removeprefix("INQ-")),
            reason=row.reason,
            order_id=row.order_id if isinstance(row.order_id, str) else None,
            sku=row.sku if isinstance(row.sku, str) else None,
            created_at=row.created_at,
            updated_at=row.updated_at,
            style=STYLES[int(row.inquiry_id.removeprefix("INQ-")) % len(STYLES)],
        )
        for row in frame.itertuples(index=False)
    ]


def iso(moment: datetime) -> str:
    return pd.Timestamp(moment).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


Reply = tuple[int, Any, dict[str, str]]


class VendorServer:
    """A vendor's API on 127.0.0.1: a stdlib `ThreadingHTTPServer` on a background thread that hands each GET to
    `answer` and stamps every answer with a `Date` from `now` (the world's clock by default). `requests` counts
    requests per path, `throttled` the 429 answers."""

    name = "vendor"

    def __init__(self, world: World, now: Callable[[], datetime] | None = None, host: str = "127.0.0.1") -> None:
        self.world = world
        self.now = now or (lambda: world.clock)
        self.host = host
        self.requests: Counter[str] = Counter()
        self.throttled = 0
        self.lock = threading.Lock()  # one request at a time touches the tickets and the rate limit
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"the {self.name} simulator is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> Self:
        if self._server is None:
            self._server = _Server((self.host, 0), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"{self.name}-sim", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join()
            self._server, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:  # never shows a credential
        return f"{type(self).__name__}(url={self.url if self._server else None!r})"

    def serve(self, method: str, target: str, headers: dict[str, str]) -> Reply:
        parts = urlsplit(target)
        with self.lock:
            self.requests[parts.path] += 1
            status, body, extra = self.answer(method, parts.path, dict(parse_qsl(parts.query)), headers)
            if status == HTTPStatus.TOO_MANY_REQUESTS:
                self.throttled += 1
            return (
                status,
                body,
                {"Date": format_datetime(pd.Timestamp(self.now()).to_pydatetime(), usegmt=True)} | extra,
            )

    def answer(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> Reply:
        raise NotImplementedError


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], vendor: VendorServer) -> None:
        self.vendor = vendor
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add 40 ms per answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no access log on stderr
        return

    def do_GET(self) -> None:
        self.reply(*self.server.vendor.serve("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "read-only simulator"}, {})

    def reply(self, status: int, body: Any, headers: dict[str, str]) -> None:
        payload = orjson.dumps(body)
        self.send_response_only(status)  # not send_response: its Date is this machine's, the helpdesk's is in `headers`
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
