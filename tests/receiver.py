"""A real HTTP/1.1 receiver on loopback for the tests: a threaded stdlib server whose answers
are scripted per path, recording every request it gets."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio


@dataclass(frozen=True)
class Reply:
    status: int = 204
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (real time: it is a real socket)
    body_delay: float = 0.0  # seconds between the head and the body
    length: int | None = None  # a Content-Length to claim instead (more: the body breaks off)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    raw_headers: tuple[tuple[str, str], ...] = ()  # as sent, repeats included


class Receiver:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._defaults: dict[str, Reply] = {}
        self.requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = receiver._record(
                    Received(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        tuple(self.headers.items()),
                    )
                )
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                length = len(reply.body) if reply.length is None else reply.length
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if reply.body_delay:
                    self.wfile.flush()
                    time.sleep(reply.body_delay)
                if reply.body:
                    self.wfile.write(reply.body)
                if length > len(reply.body):  # hang up mid-body
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hangs up mid-request (a killed worker) is part of the test

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        # A short poll interval: `close()` waits for one.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def respond(self, path: str, *replies: Reply | int, then: Reply | int = 204) -> None:
        """Answers the next requests to `path` with `replies` in order, then with `then`."""
        with self._lock:
            self._scripts[path].extend(r if isinstance(r, Reply) else Reply(r) for r in replies)
            self._defaults[path] = then if isinstance(then, Reply) else Reply(then)

    def _record(self, request: Received) -> Reply:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()
            script = self._scripts.get(request.path)
            if script:
                return script.popleft()
            return self._defaults.get(request.path, Reply())

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for_blocking(self, count: int, path: str | None, timeout: float) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received(path)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"expected {count} requests to {path or 'any path'}, "
                        f"got {len(self.received(path))}"
                    )
                self._lock.wait(left)
            return self.received(path)

    async def wait_for(
        self, count: int, path: str | None = None, timeout: float = 10.0
    ) -> list[Received]:
        return await anyio.to_thread.run_sync(self.wait_for_blocking, count, path, timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
