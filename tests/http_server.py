"""A real HTTP server on 127.0.0.1 whose answer for each path can misbehave on purpose.

Reusable by any test that needs a flaky network: register a body for a path, optionally
with faults, and point the code under test at `server.url(path)`.

    with FaultyServer() as server:
        url = server.serve("/a.tar.gz", data, faults=[Fault.error(500), Fault.truncate(after=100)])
        ...                         # 1st request: 500, 2nd: cut after 100 bytes, then normal
        assert [h.status for h in server.hits("/a.tar.gz")] == [500, 200, 206]

`faults` are used up one per request, in order; `always` applies to every request after
them. `honour_range=False` makes the server ignore `Range` headers (and not advertise
`Accept-Ranges`), like many simple servers do.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

CHUNK = 16 * 1024


@dataclass(frozen=True)
class Fault:
    """One way of answering a request badly."""

    kind: str  # "error", "wrong-bytes", "truncate", "drop", "stall", "slow"
    status: int = 500
    after: int = 0  # body bytes sent before cutting, dropping or stalling
    seconds: float = 0.0  # how long to stall, or how long a slow body takes

    @classmethod
    def error(cls, status: int = 500) -> Fault:
        """Answer with this HTTP error status instead of the body."""
        return cls("error", status=status)

    @classmethod
    def wrong_bytes(cls) -> Fault:
        """Send a body of the right length with every byte changed."""
        return cls("wrong-bytes")

    @classmethod
    def truncate(cls, after: int) -> Fault:
        """Announce the full Content-Length, send `after` bytes, then close cleanly."""
        return cls("truncate", after=after)

    @classmethod
    def drop(cls, after: int) -> Fault:
        """Send `after` bytes, then reset the connection (TCP RST)."""
        return cls("drop", after=after)

    @classmethod
    def stall(cls, after: int, seconds: float) -> Fault:
        """Send `after` bytes, then go silent for `seconds` before sending the rest."""
        return cls("stall", after=after, seconds=seconds)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Send the whole body correctly, spread over `seconds`."""
        return cls("slow", seconds=seconds)


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes
    faults: list[Fault] = field(default_factory=list)
    always: Fault | None = None
    honour_range: bool = True
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Hit:
    """One request the server answered, as the server saw it."""

    path: str
    range: str | None
    status: int
    fault: str | None
    sent: int  # body bytes written to the socket


class FaultyServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 with per-path, scriptable misbehaviour."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._hits: list[Hit | None] = []  # in order of arrival; None while being answered
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        """The full URL of `path` on this server."""
        return self.base_url + quote(path)

    def serve(
        self,
        path: str,
        body: bytes,
        *,
        faults: list[Fault] | tuple[Fault, ...] = (),
        always: Fault | None = None,
        honour_range: bool = True,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Answer `path` with `body` (after the given faults); return its URL."""
        with self._lock:
            self._routes[path] = Route(body, list(faults), always, honour_range, content_type)
        return self.url(path)

    def hits(self, path: str | None = None, *, settle: float = 5.0) -> list[Hit]:
        """The requests answered (for `path`, or all), oldest first.

        Waits up to `settle` seconds for answers still being written (a stalled one, or one
        whose last bytes the client has already read), so counts are not racy.
        """
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=settle)
            done = [h for h in self._hits if h is not None]
            return [h for h in done if path is None or h.path == path]

    def start(self) -> FaultyServer:
        """Start serving in a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, waking any stalled answer."""
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _next(self, path: str) -> tuple[int, Route | None, Fault | None]:
        with self._lock:
            self._in_flight += 1
            self._hits.append(None)
            slot = len(self._hits) - 1
            route = self._routes.get(path)
            if route is None:
                return slot, None, None
            fault = route.faults.pop(0) if route.faults else route.always
            return slot, route, fault

    def _record(self, slot: int, hit: Hit) -> None:
        with self._lock:
            self._hits[slot] = hit
            self._in_flight -= 1
            self._idle.notify_all()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FaultyServer


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, *, head: bool) -> None:
        owner = self.server.owner
        path = unquote(urlsplit(self.path).path)
        asked_range = self.headers.get("Range")
        slot, route, fault = owner._next(path)
        if route is None:
            self._status_only(404)
            owner._record(slot, Hit(path, asked_range, 404, None, 0))
            return
        if fault is not None and fault.kind == "error":
            self._status_only(fault.status)
            owner._record(slot, Hit(path, asked_range, fault.status, fault.kind, 0))
            return
        body = route.body
        if fault is not None and fault.kind == "wrong-bytes":
            body = bytes(b ^ 0xFF for b in body)
        status, start = 200, 0
        if route.honour_range and asked_range:
            start_or_none = _range_start(asked_range)
            if start_or_none is not None and start_or_none >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                owner._record(slot, Hit(path, asked_range, 416, None, 0))
                return
            if start_or_none is not None:
                status, start = 206, start_or_none
        part = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(part)))
        if route.honour_range:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        sent = 0 if head else self._send_body(part, fault, owner._closing)
        owner._record(slot, Hit(path, asked_range, status, fault.kind if fault else None, sent))

    def _send_body(self, part: bytes, fault: Fault | None, closing: threading.Event) -> int:
        kind = fault.kind if fault else None
        sent = 0
        try:
            if kind in ("truncate", "drop", "stall"):
                assert fault is not None
                head = part[: fault.after]
                self.wfile.write(head)
                self.wfile.flush()
                sent = len(head)
                if kind == "truncate":
                    self._close(reset=False)
                    return sent
                if kind == "drop":
                    self._close(reset=True)
                    return sent
                closing.wait(fault.seconds)
                part = part[fault.after :]
            pause = 0.0
            if kind == "slow":
                assert fault is not None
                pause = fault.seconds / max(1, -(-len(part) // CHUNK))
            for offset in range(0, len(part), CHUNK):
                self.wfile.write(part[offset : offset + CHUNK])
                sent += min(CHUNK, len(part) - offset)
                if pause:
                    self.wfile.flush()
                    time.sleep(pause)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        return sent

    def _status_only(self, status: int) -> None:
        text = f"{status} {self.responses.get(status, ('',))[0]}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(text)

    def _close(self, *, reset: bool) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_WR)
            self.connection.close()


def _range_start(header: str) -> int | None:
    """The first byte of a `bytes=N-` / `bytes=N-M` range, or None if it is not one."""
    unit, _, spec = header.partition("=")
    first, dash, _ = spec.partition("-")
    if unit.strip() != "bytes" or not dash or not first.strip().isdigit():
        return None
    return int(first)
