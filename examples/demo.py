"""The demo: OqronKit delivering webhooks on its embedded SQLite backend.

Starts receivers on loopback (healthy, flaky, gone, down), defines the original's example app
(AcmeCorp, Internal Analytics, Partner), fires a stream of events, and prints what happened to
every delivery. Receivers verify every signature. Run it with `make demo`.
"""

from __future__ import annotations

import random
import tempfile
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio

from oqronkit import (
    CircuitBreaker,
    Endpoint,
    OqronKit,
    Retries,
    Security,
    verify_webhook_signature,
)

SECRET, ACME_SECRET = "platform-secret", "acme-secret"
# Held: queued for an endpoint that was disabled (here by a 410); kept until it is resumed.
SETTLED = ("completed", "dead", "held")
EVENTS = [
    "order.created",
    "order.payment.completed",
    "user.signup",
    "user.onboarding.activated",
    "subscription.renewed",
    "system.health",
]


class Receivers:
    """One loopback HTTP server; each path behaves like a different kind of receiver."""

    def __init__(self) -> None:
        self.verified = Counter[str]()
        self.rejected = Counter[str]()
        self.calls = Counter[str]()
        lock, receivers = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                path = self.path.strip("/")
                secret = ACME_SECRET if path == "acme" else SECRET
                header = self.headers.get("x-acme-signature") or self.headers.get(
                    "x-oqron-signature", ""
                )
                with lock:
                    receivers.calls[path] += 1
                    calls = receivers.calls[path]
                    ok = verify_webhook_signature(header, body, secret)
                    (receivers.verified if ok else receivers.rejected)[path] += 1
                status = {"flaky": 500 if calls % 3 else 204, "partner": 410, "down": 503}
                self.send_response(status.get(path, 204) if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def define(kit: OqronKit, url: str) -> None:
    kit.webhook(
        "platform-events",
        concurrency=16,
        security=Security(signing_secret=SECRET),
        retries=Retries(max=2, base_delay=0.1, max_delay=0.5),
        circuit_breaker=CircuitBreaker(failure_threshold=3, reset_timeout=0.5),
        endpoints=[
            Endpoint(
                "AcmeCorp Integration",
                f"{url}/acme",
                ["order.**", "user.signup"],
                security=Security(signing_secret=ACME_SECRET, signing_header="x-acme-signature"),
            ),
            Endpoint("Internal Analytics", f"{url}/flaky", ["user.*.activated", "system.health"]),
            Endpoint("Partner", f"{url}/partner", ["order.payment.*", "subscription.*"]),
            Endpoint("Legacy CRM", f"{url}/down", ["user.signup"]),
        ],
    )


async def main(count: int = 60) -> None:
    receivers = Receivers()
    with tempfile.TemporaryDirectory() as folder:
        backend = f"sqlite:///{Path(folder) / 'oqronkit.db'}"
        kit = OqronKit(backend, allow_private_networks=True)  # the receivers are on loopback
        define(kit, receivers.url)
        hook = kit.get_webhook("platform-events")
        async with kit:
            rng = random.Random(1)
            fired = await hook.fire_many(
                [
                    (rng.choice(EVENTS), {"n": i, "amount": rng.randint(1, 500)})
                    for i in range(count)
                ]
            )
            ids = [i for batch in fired for i in batch]
            print(f"fired {count} events -> {len(ids)} deliveries on {backend}")
            with anyio.fail_after(60):
                while True:
                    deliveries = [await kit.get_delivery(i) for i in ids]
                    pending = [d for d in deliveries if d and d.status not in SETTLED]
                    if not pending:
                        break
                    await anyio.sleep(0.2)
    outcome = Counter((d.endpoint_name, d.status) for d in deliveries if d)
    attempts = Counter()
    for d in deliveries:
        if d:
            attempts[d.endpoint_name] += len(d.attempts)
    print(f"\n{'endpoint':22} {'delivered':>9} {'dead':>5} {'held':>5} {'attempts':>8}  signatures")
    for name in sorted({d.endpoint_name for d in deliveries if d}):
        path = {
            "AcmeCorp Integration": "acme",
            "Internal Analytics": "flaky",
            "Partner": "partner",
            "Legacy CRM": "down",
        }[name]
        print(
            f"{name:22} {outcome[(name, 'completed')]:>9} {outcome[(name, 'dead')]:>5} "
            f"{outcome[(name, 'held')]:>5} "
            f"{attempts[name]:>8}  {receivers.verified[path]} verified, "
            f"{receivers.rejected[path]} rejected"
        )
    delivered = sum(n for (_, status), n in outcome.items() if status == "completed")
    dead = sum(n for (_, status), n in outcome.items() if status == "dead")
    held = sum(n for (_, status), n in outcome.items() if status == "held")
    total = delivered + dead + held
    print(
        f"\nfired x matched = {len(ids)} = {delivered} delivered + {dead} dead + {held} held"
        f"{'' if total == len(ids) else '  (MISMATCH)'}"
    )
    print("Partner answers 410 Gone: the deliveries already sent are dead, the endpoint is")
    print("  disabled, and the rest are held (kept, not dropped) until it is resumed.")
    print("Legacy CRM is down (503): retried with backoff, its breaker opens, then dead letters.")


if __name__ == "__main__":
    anyio.run(main, backend="trio")
