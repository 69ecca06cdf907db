"""The demo's receivers: one loopback HTTP server whose paths behave like different kinds of
real receivers. Every request's signature is verified, as a real receiver would."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from oqronkit.signing import verify_webhook_signature

SECRET, ACME_SECRET = "platform-secret", "acme-secret"

BEHAVIOURS = {
    "healthy": "answers 204",
    "flaky": "500 to every other first attempt; retries get through",
    "limited": "5 requests/s; beyond that 429 with Retry-After: 1",
    "down": "503 on every call",
    "slow": "answers 204 after 250 ms",
}


class DemoReceivers:
    def __init__(self) -> None:
        self.verified = Counter[str]()
        self.rejected = Counter[str]()
        self.calls = Counter[str]()
        self._lock = threading.Lock()
        self._limited_tokens, self._limited_at = 5.0, time.monotonic()
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.strip("/")
                status, headers = receivers.answer(path, self.headers, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def answer(self, path: str, headers: object, body: bytes) -> tuple[int, dict[str, str]]:
        get = headers.get  # type: ignore[attr-defined]
        acme = get("x-acme-signature")
        signature = acme or get("x-oqron-signature", "")
        secret = ACME_SECRET if acme else SECRET
        ok = verify_webhook_signature(signature, body, secret)
        with self._lock:
            self.calls[path] += 1
            (self.verified if ok else self.rejected)[path] += 1
            if not ok:
                return 401, {}
            if path == "flaky":
                first_attempt = get("x-oqron-attempt") == "1"
                return (500 if first_attempt and self.calls[path] % 2 else 204), {}
            if path == "down":
                return 503, {}
            if path == "limited":
                now = time.monotonic()
                self._limited_tokens = min(5.0, self._limited_tokens + 5 * (now - self._limited_at))
                self._limited_at = now
                if self._limited_tokens < 1:
                    return 429, {"Retry-After": "1"}
                self._limited_tokens -= 1
        if path == "slow":
            time.sleep(0.25)
        return 204, {}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
