"""The simulator's HTTP server: the demo world's upstream APIs on 127.0.0.1, with fault injection.

It is a stdlib `ThreadingHTTPServer` rather than a framework because faults need the raw socket: a
dropped connection, or a body cut off after a full Content-Length, cannot be produced by a framework
that insists on finishing every response.
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import orjson

from cx_pipeline.simulator.api import Api, Response, iso
from cx_pipeline.simulator.faults import (
    ANSWER_FAULTS,
    DATA_FAULTS,
    ROW_FAULTS,
    WRITE_FAULTS,
    Fault,
    FaultBook,
    apply_data_faults,
)
from cx_pipeline.simulator.paging import looped
from cx_pipeline.simulator.world import World, build_world

log = logging.getLogger(__name__)


class Simulator:
    """Serves a `World` over HTTP. Use as a context manager, or `start()`/`stop()`; `serve_forever()`
    blocks (for the CLI). Every endpoint wants `Authorization: Bearer <token>`."""

    def __init__(
        self, world: World | None = None, token: str = "demo-token", host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.world = world if world is not None else build_world()
        self.token = token
        self.host = host
        self.port = port
        self.faults = FaultBook()
        self.requests: Counter[str] = Counter()
        self.api = Api(self.world, self.faults)
        self.api.routes[("GET", "/_sim/requests")] = lambda *_: Response(200, {"requests": dict(self.requests)})
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the token
        return f"Simulator(url={self.url if self._server else None!r}, clock={iso(self.world.clock)})"

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def _bind(self) -> _Server:
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
        return self._server

    def start(self) -> Self:
        """Listen and serve on a background thread (idempotent)."""
        if self._thread is None:
            server = self._bind()
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="simulator", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Block serving requests until interrupted (or until `stop()` from another thread)."""
        if self._thread is None:
            self._bind().serve_forever(poll_interval=0.1)
            return
        while self._thread.is_alive():  # already serving in the background: wait, staying interruptible
            self._thread.join(0.5)

    def stop(self) -> None:
        if self._server is None:
            return
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self._server, self._thread = None, None

    def advance(self, hours: float) -> None:
        """Move the world's clock forward."""
        self.world.advance(hours)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def count(self, path: str) -> None:
        with self._count_lock:
            self.requests[path] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer is routine under fault injection; anything else is worth a log line.
        log.debug("simulator: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs and the clients' connection pools expect
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add 40 ms per answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no access log on stderr
        return

    def dispatch(self, method: str) -> None:
        sim = self.server.sim
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        sim.count(path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.authorised(sim.token):
            self.send(Response(401, {"error": "missing or invalid bearer token"}))
            return
        admin = path.startswith("/_sim/")
        faults = [] if admin or not sim.api.knows(path) else sim.faults.take(path, sim.api.is_paged(method, path))
        for fault in faults:
            if fault.kind == "latency":
                time.sleep(float(fault.params["seconds"]))
        answer = next((f for f in faults if f.kind in ANSWER_FAULTS), None)
        if answer is not None and answer.kind == "drop":
            self.drop()
            return
        if answer is not None and answer.kind == "echo":
            self.echo(int(answer.params["status"]))
            return
        if answer is not None:
            status = 429 if answer.kind == "throttle" else int(answer.params["status"])
            headers = {"Retry-After": str(answer.params["retry_after"])} if answer.kind == "throttle" else {}
            if answer.kind == "redirect":  # the same path and query, here or at another origin
                headers = {"Location": (answer.params["to"] or "").rstrip("/") + self.path}
            self.send(Response(status, {"error": f"injected fault: {answer.kind}"}, headers=headers))
            return
        query = dict(parse_qsl(url.query))
        headers = {k.lower(): v for k, v in self.headers.items()}
        headers["x-sim-faults"] = ",".join(f.kind for f in faults if f.kind in WRITE_FAULTS)
        response = sim.api.handle(method, path, query, body, headers)
        loop = next((f for f in faults if f.kind == "cursor_loop"), None)
        if loop is not None and response.page is not None:
            response.page = looped(response.page, path, query.get("cursor"), loop.params["to"])
        self.send(response, faults)

    def authorised(self, token: str) -> bool:
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    def send(self, response: Response, faults: list[Fault] = ()) -> None:
        kinds = {f.kind for f in faults}
        payload = (
            page_body(response, [f for f in faults if f.kind in DATA_FAULTS])
            if response.page is not None
            else orjson.dumps(response.body)
        )
        if "malformed" in kinds:
            payload = payload[: len(payload) // 2] or b"{"
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if "truncate" in kinds:
            self.send_header("Connection", "close")
        self.end_headers()
        if "truncate" in kinds:
            self.wfile.write(payload[: len(payload) // 2])
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_WR)
            return
        trickle = next((f for f in faults if f.kind == "trickle"), None)
        if trickle is not None:
            self.trickle(payload, int(trickle.params["bytes"]), float(trickle.params["interval"]))
            return
        self.wfile.write(payload)

    def trickle(self, payload: bytes, size: int, interval: float) -> None:
        """Send `payload` a few bytes at a time: every read succeeds, so only an overall deadline ends it."""
        for start in range(0, len(payload), size):
            if start:
                time.sleep(interval)
            try:
                self.wfile.write(payload[start : start + size])
            except OSError:  # the client gave up and hung up
                self.close_connection = True
                return

    def echo(self, status: int) -> None:
        """A debug error page quoting the request as received, credentials included (fault `echo`)."""
        lines = [self.requestline, *(f"{name}: {value}" for name, value in self.headers.items())]
        payload = ("Internal error while serving:\r\n" + "\r\n".join(lines)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def drop(self) -> None:
        """Hang up without a word; the client sees the connection closed before any response."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def page_body(response: Response, faults: list[Fault]) -> bytes:
    """The envelope of a page, spliced from pre-rendered rows unless a data fault must edit them."""
    page = response.page
    rows, cursor = page.rows, page.next_cursor
    if any(f.kind == "empty" for f in faults):
        rows, cursor = [], None
    elif any(f.kind in ROW_FAULTS for f in faults):
        rows = [orjson.dumps(r) for r in apply_data_faults([orjson.loads(r) for r in rows], faults)]
    tail = orjson.dumps({"next_cursor": cursor, "as_of": iso_seconds(page.as_of)})
    return b'{"data":[' + b",".join(rows) + b"]," + tail[1:]


def iso_seconds(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
