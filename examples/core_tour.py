"""A tour of what OqronKit does today: the Rust core behind every delivery.

Routes events to the endpoints of the original example app, signs a body the way each endpoint
will receive it, verifies it as a receiver would, and trips a circuit breaker.
Run it with `.venv/bin/python examples/core_tour.py`.
"""

from __future__ import annotations

import json

from oqronkit import (
    CircuitOpenError,
    create_circuit_breaker,
    sign_standard_webhook,
    sign_webhook_payload,
    verify_standard_webhook,
    verify_webhook_signature,
)
from oqronkit._core import Matcher

ENDPOINTS = {
    "AcmeCorp Integration": ["order.**", "user.signup"],
    "Internal Analytics": ["user.*.activated", "system.health"],
    "Partner": ["order.payment.*", "subscription.*"],
}
EVENTS = [
    "order.payment.completed",
    "user.signup",
    "user.onboarding.activated",
    "subscription.renewed",
    "audit.login",
]


def route() -> None:
    names = list(ENDPOINTS)
    matcher = Matcher(list(ENDPOINTS.values()))
    print("Fan-out (one Rust call for the whole batch):")
    for event, ids in zip(EVENTS, matcher.match_many(EVENTS), strict=True):
        targets = ", ".join(names[i] for i in ids) or "(no endpoint: nothing is stored)"
        print(f"  {event:28} -> {targets}")


def sign_and_verify() -> None:
    body = json.dumps({"orderId": "ord_123", "amount": 4200}, separators=(",", ":"))
    header = sign_webhook_payload(body, ["acme-new-secret", "acme-old-secret"])
    print("\nX-Oqron-Signature while rotating secrets:")
    print(f"  {header[:60]}...")
    print(
        f"  receiver with the old secret verifies: "
        f"{verify_webhook_signature(header, body, 'acme-old-secret')}"
    )
    print(
        f"  tampered body verifies: "
        f"{verify_webhook_signature(header, body.replace('4200', '1'), 'acme-old-secret')}"
    )
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = sign_standard_webhook("msg_2Lx1", body, secret)
    print(f"\nStandard Webhooks headers: {headers}")
    print(f"  verifies: {verify_standard_webhook(headers, body, secret)}")


def breaker() -> None:
    now = [0.0]
    guard = create_circuit_breaker(failure_threshold=3, reset_timeout=30.0, clock=lambda: now[0])
    print("\nCircuit breaker around a failing call:")
    for attempt in range(1, 6):
        try:
            with guard:
                raise ConnectionError("receiver down")
        except ConnectionError:
            print(f"  attempt {attempt}: failed, breaker {guard.state}")
        except CircuitOpenError as refused:
            print(f"  attempt {attempt}: refused, retry in {refused.retry_after:.0f}s")
    now[0] += 30
    with guard:
        pass
    print(f"  30 s later a probe succeeds: breaker {guard.state}")


if __name__ == "__main__":
    route()
    sign_and_verify()
    breaker()
