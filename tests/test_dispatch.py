"""End to end on memory and SQLite, Trio and asyncio: fire → fan-out → signed HTTP to a real
receiver on loopback → outcome. Time-dependent behaviour runs on a FakeClock."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from standardwebhooks.webhooks import Webhook as StandardVerifier

from oqronkit import (
    CircuitBreaker,
    Delivery,
    DeliveryNotFound,
    DeliveryStateError,
    Endpoint,
    FakeClock,
    Http1Transport,
    InvalidEventName,
    InvalidPayload,
    LifecycleEvent,
    OqronKit,
    PayloadTooLarge,
    RateLimit,
    Retries,
    Security,
    Throttle,
    verify_standard_webhook,
    verify_webhook_signature,
)
from oqronkit.backends import MemoryBackend, SQLiteBackend
from oqronkit.backends.base import SettleRequest
from oqronkit.config import METHODS
from oqronkit.dispatcher import RETRY_AFTER_ERROR
from oqronkit.egress import EgressPolicy
from oqronkit.models import Claim, Settlement
from oqronkit.webhooks import Scheme, Webhook
from tests.conftest import BackendFactory
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.anyio
NO_JITTER = Retries(max=3, base_delay=2.0, jitter=0.0)


# The delivery suite runs on OqronKit's transport (the default) and again on httpx's own.
TRANSPORTS: dict[str, Callable[[], httpx.AsyncBaseTransport] | None] = {
    "oqronkit": None,
    "httpx": lambda: httpx.AsyncHTTPTransport(retries=0),
}
transport_under_test: Callable[[], httpx.AsyncBaseTransport] | None = None


@pytest.fixture(params=sorted(TRANSPORTS), autouse=True)
def delivery_transport(request: pytest.FixtureRequest) -> Iterator[None]:
    global transport_under_test
    transport_under_test = TRANSPORTS[request.param]
    yield
    transport_under_test = None


def make_kit(
    make_backend: BackendFactory, clock: FakeClock | None = None, **options: Any
) -> OqronKit:
    if transport_under_test is not None:
        options.setdefault("transport", transport_under_test())
    return OqronKit(
        make_backend(),
        allow_private_networks=True,
        clock=clock or FakeClock(),
        random=random.Random(7),
        **options,
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Waits for a condition the system will reach (a state change, not a duration)."""
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.005)


async def status_of(kit: OqronKit, delivery_id: str, *statuses: str) -> Delivery:
    found: list[Delivery] = []

    async def reached() -> bool:
        d = await kit.get_delivery(delivery_id)
        if d is not None and d.status in statuses:
            found.append(d)
            return True
        return False

    await eventually(reached)
    return found[-1]


async def test_fan_out_signs_each_request(make_backend: BackendFactory, receiver: Receiver) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "platform-events",
        security=Security(signing_secret="platform-secret"),
        endpoints=[
            Endpoint(
                "acme",
                receiver.url("/acme"),
                ["order.**", "user.signup"],
                security=Security(
                    signing_secret="acme-secret",
                    signing_algorithm="sha512",
                    signing_header="x-acme-signature",
                ),
            ),
            Endpoint("analytics", receiver.url("/analytics"), ["user.*.activated"]),
            Endpoint(
                "partner",
                receiver.url("/partner"),
                ["order.payment.*"],
                headers={"X-Partner": "p1"},
            ),
        ],
    )
    async with kit:
        ids = await hook.fire("order.payment.completed", {"orderId": "ord_123", "total": 4.5})
        assert len(ids) == 2
        requests = await receiver.wait_for(2)
        for delivery_id in ids:
            d = await status_of(kit, delivery_id, "completed")
            assert d.attempts[0].status == 204
    by_path = {r.path: r for r in requests}
    acme, partner = by_path["/acme"], by_path["/partner"]
    assert acme.body == b'{"orderId":"ord_123","total":4.5}'
    assert verify_webhook_signature(
        acme.headers["x-acme-signature"], acme.body, "acme-secret", "sha512", now=kit.clock.now()
    )
    assert not verify_webhook_signature(
        acme.headers["x-acme-signature"],
        acme.body,
        "platform-secret",
        "sha512",
        now=kit.clock.now(),
    )
    assert verify_webhook_signature(
        partner.headers["x-oqron-signature"], partner.body, "platform-secret", now=kit.clock.now()
    )
    assert partner.headers["x-oqron-timestamp"] == partner.headers["x-oqron-signature"][2:15]
    assert partner.headers["x-partner"] == "p1"
    for request in (acme, partner):
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-oqron-event"] == "order.payment.completed"
        assert request.headers["x-oqron-attempt"] == "1"
        assert request.headers["idempotency-key"] == request.headers["x-oqron-delivery"]
        assert request.headers["idempotency-key"] in ids
        assert request.headers["user-agent"].startswith("oqronkit-python/")


async def test_a_header_named_like_the_signature_header_gives_way_to_it(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        security=Security(signing_secret="s3cret", signing_header="X-Sig"),
        headers={"X-Team": "payments"},
        endpoints=[Endpoint("e", receiver.url("/e"), ["**"], headers={"X-Sig": "mine"})],
    )
    async with kit:
        [delivery_id] = await hook.fire("order.created", {"n": 1})
        await status_of(kit, delivery_id, "completed")
    [request] = receiver.received("/e")
    signatures = [v for k, v in request.raw_headers if k.lower() == "x-sig"]
    assert len(signatures) == 1
    assert verify_webhook_signature(signatures[0], request.body, "s3cret", now=kit.clock.now())
    assert request.headers["x-team"] == "payments"


class TracingTransport(Http1Transport):
    """A user's subclass that handles requests its own way too."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["X-Trace"] = "t1"
        return await super().handle_async_request(request)


async def test_a_subclass_of_the_transport_handles_requests_its_own_way(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    transport = TracingTransport(egress=EgressPolicy(allow_private_networks=True))
    kit = make_kit(make_backend, transport=transport)
    hook = kit.webhook("w", endpoints=[Endpoint("e", receiver.url("/e"), ["**"])])
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        await status_of(kit, delivery_id, "completed")
    assert receiver.received("/e")[0].headers["x-trace"] == "t1"


async def test_nothing_matches_nothing_stored(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["order.*"])])
    async with kit:
        assert await hook.fire("user.created", {}) == []
        assert await kit.list_deliveries() == []


async def test_disabled_endpoints_get_nothing(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        endpoints=[
            Endpoint("on", receiver.url("/on"), ["**"]),
            Endpoint("off", receiver.url("/off"), ["**"], enabled=False),
        ],
    )
    async with kit:
        [delivery_id] = await hook.fire("a.b", {})
        assert (await status_of(kit, delivery_id, "completed")).endpoint_name == "on"


async def test_retryable_failures_back_off_then_succeed(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    receiver.respond("/flaky", 500, 503)
    kit = make_kit(make_backend, clock)
    hook = kit.webhook(
        "w",
        retries=NO_JITTER,
        security=Security(signing_secret="s"),
        endpoints=[Endpoint("a", receiver.url("/flaky"), ["**"])],
    )
    async with kit:
        [delivery_id] = await hook.fire("e.x", {"n": 1})
        d = await status_of(kit, delivery_id, "delayed")
        assert d.next_attempt_at == pytest.approx(clock.now() + 2.0, abs=0.01)
        clock.advance(1.9)
        await anyio.sleep(0.05)
        assert len(receiver.received()) == 1  # not due yet
        clock.advance(0.1)
        await eventually(lambda: _attempts(kit, delivery_id, 2))
        d = await status_of(kit, delivery_id, "delayed")
        assert d.next_attempt_at == pytest.approx(clock.now() + 4.0, abs=0.01)
        clock.advance(4.0)
        d = await status_of(kit, delivery_id, "completed")
    assert [a.status for a in d.attempts] == [500, 503, 204]
    assert [r.headers["x-oqron-attempt"] for r in receiver.received()] == ["1", "2", "3"]
    keys = {r.headers["idempotency-key"] for r in receiver.received()}
    assert keys == {delivery_id}
    # Each attempt is signed at its own time, so a late retry still verifies.
    last = receiver.received()[-1]
    assert int(last.headers["x-oqron-timestamp"]) == int(clock.now() * 1000)


async def _attempts(kit: OqronKit, delivery_id: str, n: int) -> bool:
    d = await kit.get_delivery(delivery_id)
    return d is not None and len(d.attempts) >= n


async def test_retries_exhausted_is_dead_with_hooks(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    receiver.respond("/down", then=Reply(500, b"boom"))
    seen: dict[str, list[str]] = {"failure": [], "dead": [], "success": []}
    kit = make_kit(make_backend, clock)

    async def on_dead(d: Delivery) -> None:
        seen["dead"].append(d.status)

    hook = kit.webhook(
        "w",
        retries=Retries(max=2, base_delay=1.0, jitter=0.0),
        circuit_breaker=CircuitBreaker(failure_threshold=100),
        on_failure=lambda d: seen["failure"].append(d.status),
        on_dead=on_dead,
        on_success=lambda d: seen["success"].append(d.status),
        endpoints=[Endpoint("a", receiver.url("/down"), ["**"])],
    )
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        for n in (1, 2):
            await eventually(lambda n=n: _attempts(kit, delivery_id, n))
            await status_of(kit, delivery_id, "delayed")
            clock.advance(60)
        d = await status_of(kit, delivery_id, "dead")
        await eventually(lambda: _true(len(seen["dead"]) == 1))
    assert len(d.attempts) == 3 and d.error == "HTTP 500"
    assert d.attempts[-1].response_body == "boom"
    assert seen == {"failure": ["delayed", "delayed", "dead"], "dead": ["dead"], "success": []}


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, "dead"), (404, "dead"), (302, "dead"), (408, "delayed"), (429, "delayed")],
)
async def test_outcome_classes(
    make_backend: BackendFactory, receiver: Receiver, status: int, expected: str
) -> None:
    receiver.respond("/x", Reply(status, headers={"Location": receiver.url("/elsewhere")}))
    kit = make_kit(make_backend)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/x"), ["**"])])
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        d = await status_of(kit, delivery_id, expected)
    assert d.attempts[0].status == status
    assert receiver.received("/elsewhere") == []  # redirects are never followed


async def test_gone_kills_the_delivery_and_disables_the_endpoint(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/gone", 410)
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        endpoints=[
            Endpoint("a", receiver.url("/gone"), ["**"]),
            Endpoint("b", receiver.url("/b"), ["**"]),
        ],
    )
    async with kit:
        first = await hook.fire("e", {})
        for delivery_id in first:
            await status_of(kit, delivery_id, "dead", "completed")
        later = await hook.fire("e", {})
        assert len(later) == 1
        assert (await status_of(kit, later[0], "completed")).endpoint_name == "b"


async def test_connection_errors_and_timeouts_are_retried(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    closed = Receiver()
    closed.close()  # nothing listens on this port any more
    receiver.respond("/slow", then=Reply(204, delay=2.0))
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        endpoints=[
            Endpoint("refused", closed.url("/"), ["**"]),
            Endpoint("slow", receiver.url("/slow"), ["**"], timeout=0.2),
        ],
    )
    async with kit:
        ids = await hook.fire("e", {})
        refused, slow = [await status_of(kit, i, "delayed") for i in ids]
    assert refused.attempts[0].status is None and "Connect" in (refused.error or "")
    assert slow.error == "timed out after 0.2s"


async def test_an_answer_stands_when_its_body_breaks_off_or_outlives_the_deadline(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # The status is the receiver's answer; the body is only kept for the record. A 200 whose
    # body breaks off was received (retrying it sent it again, and dead-lettered it).
    receiver.respond("/broken", Reply(200, b"partial", length=1000))
    receiver.respond("/gone", Reply(410, b"partial", length=1000))
    receiver.respond("/slow-body", Reply(200, b"late", body_delay=2.0))
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        retries=Retries(max=3),
        endpoints=[
            Endpoint("broken", receiver.url("/broken"), ["**"]),
            Endpoint("gone", receiver.url("/gone"), ["**"]),
            Endpoint("slow-body", receiver.url("/slow-body"), ["**"], timeout=0.2),
        ],
    )
    async with kit:
        broken, gone, slow = await hook.fire("e", {})
        broken_d = await status_of(kit, broken, "completed")
        gone_d = await status_of(kit, gone, "dead")
        slow_d = await status_of(kit, slow, "completed")
        [gone_endpoint] = [e for e in await hook.endpoints() if e.name == "gone"]
        assert not gone_endpoint.enabled
    for d, status in ((broken_d, 200), (gone_d, 410), (slow_d, 200)):
        [attempt] = d.attempts
        assert attempt.status == status
        assert (attempt.error or "").startswith("the response body was cut short: ")
    assert slow_d.attempts[0].error == "the response body was cut short: timed out after 0.2s"
    assert (broken_d.error, gone_d.error) == (None, "HTTP 410")
    assert len(receiver.requests) == 3


async def test_a_hung_security_callable_fails_the_attempt_at_its_deadline(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    async def secret_lookup() -> Security:
        await anyio.sleep_forever()
        raise AssertionError

    events: list[LifecycleEvent] = []
    kit = make_kit(make_backend, on_event=events.append)
    hook = kit.webhook(
        "w",
        security=secret_lookup,
        circuit_breaker=CircuitBreaker(failure_threshold=1),
        endpoints=[Endpoint("a", receiver.url("/a"), ["**"], timeout=0.2)],
    )
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        d = await status_of(kit, delivery_id, "delayed")
    assert d.error == "could not prepare the request: TimeoutError"
    assert receiver.requests == [] and events == []  # not the receiver's failure: no breaker.opened


async def test_a_stored_response_body_is_capped_in_bytes(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # Invalid UTF-8 is stored as U+FFFD, three bytes for one: cut again to the cap, on a
    # character's edge. (Bodies within the cap: httpx's streams, left unfinished, warn.)
    receiver.respond("/bytes", Reply(200, b"\xff" * 5000))
    receiver.respond("/text", Reply(200, "é".encode() * 2000))
    kit = make_kit(make_backend, response_body_cap=5002)
    hook = kit.webhook(
        "w",
        endpoints=[
            Endpoint("bytes", receiver.url("/bytes"), ["**"]),
            Endpoint("text", receiver.url("/text"), ["**"]),
        ],
    )
    async with kit:
        ids = await hook.fire("e", {})
        bodies = [(await status_of(kit, i, "completed")).attempts[0].response_body for i in ids]
    assert bodies == ["\ufffd" * 1667, "é" * 2000]


async def test_retry_after_is_a_floor(make_backend: BackendFactory, receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.respond("/limited", Reply(429, headers={"Retry-After": "30"}))
    kit = make_kit(make_backend, clock)
    hook = kit.webhook(
        "w", retries=NO_JITTER, endpoints=[Endpoint("a", receiver.url("/limited"), ["**"])]
    )
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        d = await status_of(kit, delivery_id, "delayed")
        assert d.next_attempt_at == pytest.approx(clock.now() + 30, abs=0.01)
        clock.advance(30)
        await status_of(kit, delivery_id, "completed")


async def test_breaker_defers_without_using_attempts(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    receiver.respond("/down", 500, 500)
    kit = make_kit(make_backend, clock)
    hook = kit.webhook(
        "w",
        retries=Retries(max=5, base_delay=100.0, max_delay=100.0, jitter=0.0),
        circuit_breaker=CircuitBreaker(failure_threshold=2, reset_timeout=30.0),
        endpoints=[Endpoint("a", receiver.url("/down"), ["**"])],
    )
    async with kit:
        failing = [*await hook.fire("e", {}), *await hook.fire("e", {})]
        for delivery_id in failing:
            await status_of(kit, delivery_id, "delayed")
        [deferred] = await hook.fire("e", {})  # the breaker is open now: it waits queued
        await anyio.sleep(0.1)
        d = await kit.get_delivery(deferred)
        assert d is not None and d.status in ("waiting", "delayed") and d.attempts == ()
        assert len(receiver.received()) == 2
        clock.advance(29.9)
        await anyio.sleep(0.1)
        assert len(receiver.received()) == 2
        clock.advance(0.1)
        # half-open: exactly one probe, which succeeds and closes
        await status_of(kit, deferred, "completed")
        assert len(receiver.received()) == 3
        clock.advance(70)  # the two failed deliveries' retries are due, breaker closed
        for delivery_id in failing:
            d = await status_of(kit, delivery_id, "completed")
            assert len(d.attempts) == 2


async def test_a_half_open_breaker_is_sent_its_probes_only_and_the_rest_right_after_one_succeeds(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # Claiming the endpoint's full room when its breaker half-opens would have the breaker turn
    # all but the probe away, to wait a whole reset more after the probe closed it.
    clock = FakeClock()
    receiver.respond("/a", 503)  # then 204s
    kit = make_kit(make_backend, clock)
    hook = kit.webhook(
        "w",
        retries=Retries(max=3, base_delay=1.0, jitter=0.0),
        circuit_breaker=CircuitBreaker(failure_threshold=1, reset_timeout=30.0),
        endpoints=[Endpoint("a", receiver.url("/a"), ["**"], max_in_flight=5)],
    )
    async with kit:
        [first] = await hook.fire("e", {})
        await status_of(kit, first, "delayed")  # and the breaker is open
        waiting = [i for _ in range(4) for i in await hook.fire("e", {})]
        clock.advance(30.0)  # half-open: one probe, then the breaker closes
        for delivery_id in [first, *waiting]:
            d = await status_of(kit, delivery_id, "completed")
            assert d.attempts[-1].status == 204
    assert len(receiver.received("/a")) == 6


async def test_rate_limit_defers_without_using_attempts(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    kit = make_kit(make_backend, clock)
    hook = kit.webhook(
        "w",
        concurrency=4,
        endpoints=[
            Endpoint(
                "a",
                receiver.url("/a"),
                ["**"],
                rate_limit=RateLimit(max=2, per=10.0),
                max_in_flight=4,
            )
        ],
    )
    async with kit:
        ids = [i for _ in range(3) for i in await hook.fire("e", {})]
        await receiver.wait_for(2)
        await anyio.sleep(0.1)
        assert len(receiver.received()) == 2  # the third waits for a token, queued
        pending = [d for d in [await kit.get_delivery(i) for i in ids] if d and not d.attempts]
        assert len(pending) == 1 and pending[0].status in ("waiting", "delayed")
        clock.advance(4.9)
        await anyio.sleep(0.1)
        assert len(receiver.received()) == 2
        clock.advance(0.1)  # a token every 5 s
        d = await status_of(kit, pending[0].id, "completed")
        assert len(d.attempts) == 1


async def _statuses(kit: OqronKit, ids: list[str], want: dict[str, int]) -> bool:
    counts: dict[str, int] = {}
    for delivery_id in ids:
        d = await kit.get_delivery(delivery_id)
        if d is not None:
            counts[d.status] = counts.get(d.status, 0) + 1
    return counts == want


async def test_throttle_paces_the_whole_webhook(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    kit = make_kit(make_backend, clock)
    hook = kit.webhook(
        "w",
        throttle=Throttle(max=3, per=60.0),
        endpoints=[
            Endpoint("a", receiver.url("/a"), ["**"]),
            Endpoint("b", receiver.url("/b"), ["**"]),
        ],
    )
    async with kit:
        ids = [i for _ in range(3) for i in await hook.fire("e", {})]
        await receiver.wait_for(3)
        await anyio.sleep(0.1)
        assert len(receiver.received()) == 3
        clock.advance(20)  # one more token
        await receiver.wait_for(4)
        clock.advance(40)
        for delivery_id in ids:
            d = await status_of(kit, delivery_id, "completed")
            assert len(d.attempts) == 1


async def test_a_slow_endpoint_cannot_take_every_slot(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/slow", then=Reply(204, delay=1.0))
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        concurrency=4,
        endpoints=[
            Endpoint("slow", receiver.url("/slow"), ["slow"]),
            Endpoint("fast", receiver.url("/fast"), ["fast"]),
        ],
    )
    async with kit:
        for _ in range(6):
            await hook.fire("slow", {})
        await receiver.wait_for(2, "/slow")  # half of the webhook's slots, no more
        fast = await hook.fire("fast", {})
        await status_of(kit, fast[0], "completed")
        assert len(receiver.received("/slow")) == 2


def _one_slot(
    make_backend: BackendFactory, receiver: Receiver, **options: Any
) -> tuple[OqronKit, Webhook]:
    receiver.respond("/slow", Reply(204, delay=0.5))
    kit = make_kit(make_backend, **options)
    # Claims ahead count against max_in_flight (by default half of concurrency).
    endpoint = Endpoint("e", receiver.url("/slow"), ["x"], max_in_flight=2)
    return kit, kit.webhook("w", concurrency=1, endpoints=[endpoint])


async def _one_under_way_one_ahead(hook: Webhook, receiver: Receiver, count: int) -> list[str]:
    """Fires `count`: the first is in flight at the slow endpoint, the second is claimed
    ahead, waiting for the only slot, and the rest are queued."""
    # As when attempts end faster than the claim loop comes round: it claims one ahead.
    hook.kit._dispatchers[hook.name]._ahead_wanted = lambda: 1  # type: ignore[method-assign]
    ids = [
        i for batch in await hook.fire_many([("x", {"n": n}) for n in range(count)]) for i in batch
    ]
    await receiver.wait_for(1, "/slow")
    found = [await hook.kit.get_delivery(i) for i in ids]
    assert [d and d.status for d in found] == ["active", "active"] + ["waiting"] * (count - 2)
    return ids


async def test_a_claim_ahead_waits_for_a_slot_and_a_pause_sends_it_back(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit, hook = _one_slot(make_backend, receiver)
    async with kit:
        first, second, third = await _one_under_way_one_ahead(hook, receiver, 3)
        assert await kit.pause_webhook("w") == 1  # the queued one; the other two are claimed
        await status_of(kit, first, "completed")  # under way: it finishes
        ahead = await status_of(kit, second, "held")  # paused before it began: not sent
        assert ahead.attempts == () and len(receiver.received("/slow")) == 1
        assert await kit.resume_webhook("w") == 2
        for delivery_id in (second, third):
            await status_of(kit, delivery_id, "completed")
    keys = [r.headers["idempotency-key"] for r in receiver.received("/slow")]
    assert keys == [first, second, third]  # one at a time, in order, each once


async def test_a_claim_ahead_goes_back_to_the_queue_at_shutdown(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit, hook = _one_slot(make_backend, receiver, shutdown_grace=5.0)
    async with kit:
        first, second = await _one_under_way_one_ahead(hook, receiver, 2)
    # The attempt under way finished within the grace; the one ahead never began.
    done, back = await kit.get_delivery(first), await kit.get_delivery(second)
    assert done is not None and done.status == "completed"
    assert back is not None and back.status == "waiting" and back.attempts == ()
    assert len(receiver.received("/slow")) == 1


async def test_a_cancelled_claim_ahead_is_cancelled_at_once_not_when_a_slot_frees(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit, hook = _one_slot(make_backend, receiver)
    async with kit:
        first, second = await _one_under_way_one_ahead(hook, receiver, 2)
        assert await kit.cancel_delivery(second) == "aborted"
        cancelled = await status_of(kit, second, "cancelled")
        assert (await kit.get_delivery(first)).status == "active"  # type: ignore[union-attr]
        await status_of(kit, first, "completed")
    assert cancelled.attempts == () and len(receiver.received("/slow")) == 1


class GatedRequeue(MemoryBackend):
    """Memory, where sending `gated` back to the queue waits for the test to open `gate`."""

    def __init__(self) -> None:
        super().__init__()
        self.gated = ""
        self.requeueing = anyio.Event()
        self.gate = anyio.Event()

    async def settle(
        self, delivery_id: str, owner: str, settlement: Settlement, now: float
    ) -> Delivery | None:
        if delivery_id == self.gated and settlement.status == "waiting":
            self.requeueing.set()
            await self.gate.wait()
        return await super().settle(delivery_id, owner, settlement, now)


class FailingSettles(SQLiteBackend):
    """A SQLite file whose next `failures` settles fail, as a full disk would fail them."""

    def __init__(self, path: Path, failures: int, error: Exception | None = None) -> None:
        super().__init__(path)
        self.failures = failures
        self.error = error or sqlite3.OperationalError("database or disk is full")
        self.claims = 0

    async def claim(self, *args: Any, **kwargs: Any) -> list[Claim]:
        self.claims += 1
        return await super().claim(*args, **kwargs)

    async def settle_many(self, settles: Sequence[SettleRequest]) -> list[Delivery | None]:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return await super().settle_many(settles)


async def test_a_backend_out_of_reach_when_settling_is_a_warning_not_a_traceback_each_time(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lost = ConnectionResetError("connection reset by peer")  # an OSError: out of reach
    backend = FailingSettles(tmp_path / "oqronkit.db", failures=4, error=lost)
    clock = FakeClock()
    kit = OqronKit(backend, allow_private_networks=True, clock=clock)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    with anyio.fail_after(10), caplog.at_level(logging.INFO, logger="oqronkit"):
        async with kit:
            ids = await hook.fire_many([("a.b", {}), ("a.c", {})])
            await eventually(lambda: _true(backend.failures == 0))
            clock.advance(RETRY_AFTER_ERROR)
            for delivery_id in [i for per_event in ids for i in per_event]:
                await status_of(kit, delivery_id, "completed")
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert "webhook w: settling attempts failed: ConnectionResetError" in caplog.records[0].message
    assert caplog.records[1].message == "webhook w: settling attempts works again"


async def test_a_requeue_the_backend_refused_is_tried_again_not_left_leased(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The attempt's outcome cannot be stored, nor its requeue: the delivery stays leased to
    this worker. It must be requeued once the backend works again, with its retry's schedule
    (and nothing may spin meanwhile), not stay `active` for good."""
    backend = FailingSettles(tmp_path / "oqronkit.db", failures=2)
    clock = FakeClock()
    kit = OqronKit(backend, allow_private_networks=True, clock=clock)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    with anyio.fail_after(10), caplog.at_level(logging.ERROR, logger="oqronkit"):
        async with kit:
            [delivery_id] = await hook.fire("a.b", {})
            broken = await status_of(kit, delivery_id, "delayed")  # requeued on the next try
            assert broken.attempts == () and "could not requeue; will try again" in caplog.text
            clock.advance(RETRY_AFTER_ERROR)
            await status_of(kit, delivery_id, "completed")
    assert len(receiver.received("/a")) == 2  # at least once: the first answer was lost
    assert backend.claims < 20


class LostClaimReplies(SQLiteBackend):
    """A SQLite file whose first claims are made but their replies lost (a network timeout
    after the server did the work), or whose shared throttle's tokens cannot be taken."""

    shares_guards = True  # breakers and buckets in the file, as Redis and PostgreSQL keep them

    def __init__(self, path: Path, lost: int) -> None:
        super().__init__(path)
        self.lost = lost
        self.claims = 0
        self.broken_updates = 0

    async def claim(self, *args: Any, **kwargs: Any) -> list[Claim]:
        self.claims += 1
        claims = await super().claim(*args, **kwargs)
        if claims and self.lost > 0:
            self.lost -= 1
            raise ConnectionError("the reply was lost")
        return claims

    async def update_state(self, *args: Any, **kwargs: Any) -> Any:
        if self.broken_updates > 0:
            self.broken_updates -= 1
            raise sqlite3.OperationalError("database is locked")
        return await super().update_state(*args, **kwargs)


async def test_a_claim_whose_reply_was_lost_is_taken_back_after_its_lease(
    receiver: Receiver, tmp_path: Path
) -> None:
    # One worker alone: nobody else would ever take the delivery, and it must not spin.
    backend = LostClaimReplies(tmp_path / "oqronkit.db", lost=1)
    clock = FakeClock()
    kit = OqronKit(backend, allow_private_networks=True, clock=clock, lease=30.0)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    with anyio.fail_after(10):
        async with kit:
            [delivery_id] = await hook.fire("a.b", {})
            await eventually(lambda: _true(backend.lost == 0))
            clock.advance(30.0)
            await status_of(kit, delivery_id, "completed")
    assert len(receiver.received("/a")) == 1
    assert backend.claims < 20


async def test_claims_a_throttle_could_not_be_asked_about_go_back_to_the_queue(
    receiver: Receiver, tmp_path: Path
) -> None:
    backend = LostClaimReplies(tmp_path / "oqronkit.db", lost=0)
    clock = FakeClock()
    kit = OqronKit(backend, allow_private_networks=True, clock=clock)
    hook = kit.webhook(
        "w",
        throttle=Throttle(max=10, per=1.0),
        endpoints=[Endpoint("a", receiver.url("/a"), ["**"])],
    )
    with anyio.fail_after(10):
        async with kit:
            backend.broken_updates = 1
            [delivery_id] = await hook.fire("a.b", {})
            waiting = await status_of(kit, delivery_id, "delayed")  # back, no attempt used
            assert waiting.attempts == ()
            clock.advance(RETRY_AFTER_ERROR)
            await status_of(kit, delivery_id, "completed")
    assert len(receiver.received("/a")) == 1


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("exit_by", ["leaving", "cancelling"])
async def test_a_cancel_while_a_claim_ahead_goes_back_to_the_queue_is_not_lost(
    receiver: Receiver, exit_by: str
) -> None:
    backend = GatedRequeue()
    kit, hook = _one_slot(lambda: backend, receiver, shutdown_grace=5.0)
    ids: list[str] = []
    leave = anyio.Event()

    async def run_kit(scope: anyio.CancelScope) -> None:
        with scope:
            async with kit:
                ids.extend(await _one_under_way_one_ahead(hook, receiver, 2))
                await leave.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(run_kit, scope)
            while len(ids) < 2:
                await anyio.sleep(0.005)
            backend.gated = ids[1]
            if exit_by == "leaving":
                leave.set()
            else:
                scope.cancel()
            await backend.requeueing.wait()  # on its way back to the queue, not begun
            assert await kit.cancel_delivery(ids[1]) == "aborted"
            backend.gate.set()
    cancelled = await backend.get_delivery(ids[1])
    assert cancelled is not None and cancelled.status == "cancelled" and cancelled.attempts == ()
    assert len(receiver.received("/slow")) <= 1  # the first, if it was not cut short


async def test_nothing_is_claimed_ahead_of_a_slow_attempt_that_another_process_could_send(
    receiver: Receiver,
) -> None:
    receiver.respond("/slow", Reply(204, delay=2.0))
    backend = MemoryBackend()  # shared by two kits, as by two processes

    def worker() -> OqronKit:
        kit = OqronKit(backend, allow_private_networks=True, clock=FakeClock())
        kit.webhook(
            "w",
            concurrency=1,
            endpoints=[
                Endpoint("slow", receiver.url("/slow"), ["slow"]),
                Endpoint("fast", receiver.url("/fast"), ["fast"]),
            ],
        )
        return kit

    first, second = worker(), worker()
    async with first:
        [slow] = await first.get_webhook("w").fire("slow", {})
        await receiver.wait_for(1, "/slow")
        [fast] = await first.get_webhook("w").fire("fast", {})  # the first worker is busy
        async with second:
            await status_of(second, fast, "completed")
            assert (await second.get_delivery(slow)).status == "active"  # type: ignore[union-attr]
        await status_of(first, slow, "completed")


async def test_max_connections_bounds_requests_across_webhooks(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/slow", then=Reply(204, delay=1.0))
    kit = make_kit(make_backend, max_connections=2)
    hooks = [
        kit.webhook(name, concurrency=4, endpoints=[Endpoint("e", receiver.url("/slow"), ["x"])])
        for name in ("a", "b")
    ]
    async with kit:
        ids = [delivery_id for hook in hooks for delivery_id in await hook.fire("x", {})]
        ids += [delivery_id for hook in hooks for delivery_id in await hook.fire("x", {})]
        await receiver.wait_for(2, "/slow")

        async def two_wait_for_a_slot() -> bool:
            return kit.connections.waiting == 2

        await eventually(two_wait_for_a_slot)
        assert kit.connections.held == 2
        for delivery_id in ids:
            await status_of(kit, delivery_id, "completed")
        assert kit.connections.held == 0


async def test_hook_errors_change_nothing(
    make_backend: BackendFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(_: Delivery) -> None:
        raise RuntimeError("hook bug")

    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w", on_success=explode, endpoints=[Endpoint("a", receiver.url("/a"), ["**"])]
    )
    with caplog.at_level(logging.ERROR, logger="oqronkit"):
        async with kit:
            [delivery_id] = await hook.fire("e", {})
            await status_of(kit, delivery_id, "completed")
            await eventually(lambda: _true("hook bug" in caplog.text))
    assert (await kit.get_delivery(delivery_id)).status == "completed"  # type: ignore[union-attr]


async def test_bad_input_raises_and_stores_nothing(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend, max_payload_bytes=100)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    async with kit:
        with pytest.raises(InvalidEventName):
            await hook.fire("bad..event", {})
        with pytest.raises(InvalidPayload, match="JSON"):
            await hook.fire("e", {"when": object()})
        with pytest.raises(InvalidPayload):
            await hook.fire("e", {"n": float("nan")})
        with pytest.raises(PayloadTooLarge, match="limit is 100"):
            await hook.fire("e", {"blob": "x" * 200})
        with pytest.raises(InvalidEventName):
            await hook.fire_many([("ok", {}), ("bad event", {})])
        with pytest.raises(InvalidPayload):
            await hook.fire_many([("ok", {}), ("ok", {1, 2})])
        assert await kit.list_deliveries() == []


async def test_idempotency_key_dedupes_repeated_fires(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        endpoints=[
            Endpoint("a", receiver.url("/a"), ["**"]),
            Endpoint("b", receiver.url("/b"), ["**"]),
        ],
    )
    async with kit:
        first = await hook.fire("e", {"n": 1}, idempotency_key="order-1")
        again = await hook.fire("e", {"n": 1}, idempotency_key="order-1")
        other = await hook.fire("e", {"n": 1}, idempotency_key="order-2")
        assert sorted(again) == sorted(first) and len(other) == 2
        await receiver.wait_for(4)
        assert len(await kit.list_deliveries()) == 4
        # A repeat is the first fire's ids whatever it would match now.
        await hook.update_endpoint("a", enabled=False)
        await hook.update_endpoint("b", enabled=False)
        assert sorted(await hook.fire("e", {"n": 1}, idempotency_key="order-1")) == sorted(first)
        assert await hook.fire("e", {}, idempotency_key="order-3") == []
        await hook.update_endpoint("a", enabled=True)
        assert await hook.fire("e", {}, idempotency_key="order-3") == []  # held by the first


async def test_fire_many_one_write_for_a_batch(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        endpoints=[
            Endpoint("orders", receiver.url("/o"), ["order.*"]),
            Endpoint("all", receiver.url("/all"), ["**"]),
        ],
    )
    async with kit:
        ids = await hook.fire_many(
            [("order.created", {"n": 1}), ("user.created", {"n": 2}), ("order.paid", {"n": 3})]
        )
        assert [len(i) for i in ids] == [2, 1, 2]
        await receiver.wait_for(5)
    assert sorted(r.body for r in receiver.received("/o")) == [b'{"n":1}', b'{"n":3}']


async def test_fire_sync_from_a_thread_while_the_kit_runs(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    async with kit:
        ids = await anyio.to_thread.run_sync(lambda: hook.fire_sync("e", {"from": "thread"}))
        await status_of(kit, ids[0], "completed")
        with pytest.raises(RuntimeError, match="async method"):
            hook.fire_sync("e", {})
    with pytest.raises(RuntimeError, match="called from a running event loop: use the async"):
        hook.fire_sync("e", {})  # the kit is not running, but this loop is


@pytest.mark.parametrize("scheme", ["oqron", "standard"])
async def test_every_method_signs_the_body_it_sends_and_a_get_sends_none(
    make_backend: BackendFactory, receiver: Receiver, scheme: Scheme
) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        scheme=scheme,
        security=Security(signing_secret=secret),
        endpoints=[Endpoint(m, receiver.url("/" + m), ["**"], method=m) for m in METHODS],
    )
    async with kit:
        await hook.fire("e", {"n": 1})
        requests = await receiver.wait_for(len(METHODS))
    now = kit.clock.now()
    for request in requests:
        assert request.body == (b"" if request.method == "GET" else b'{"n":1}')
        if scheme == "standard":
            assert verify_standard_webhook(request.headers, request.body, secret, now=now)
        else:
            signature = request.headers["x-oqron-signature"]
            assert verify_webhook_signature(signature, request.body, secret, now=now)


async def test_standard_webhooks_scheme(make_backend: BackendFactory, receiver: Receiver) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    kit = OqronKit(make_backend(), allow_private_networks=True)  # real clock: the verifier's
    hook = kit.webhook(
        "w",
        scheme="standard",
        security=Security(signing_secret=secret),
        endpoints=[Endpoint("a", receiver.url("/a"), ["**"])],
    )
    async with kit:
        [delivery_id] = await hook.fire("e", {"type": "e"})
        [request] = await receiver.wait_for(1)
    assert request.headers["webhook-id"] == delivery_id
    assert StandardVerifier(secret).verify(request.body, request.headers) == {"type": "e"}


async def test_egress_guard_refuses_loopback_by_default(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = OqronKit(make_backend(), clock=FakeClock())
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        d = await status_of(kit, delivery_id, "dead")
    assert "non-public address" in (d.error or "") and receiver.received() == []


async def test_graceful_shutdown_requeues_without_burning_an_attempt(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/slow", Reply(204, delay=3.0))
    backend = make_backend()
    kit = OqronKit(backend, allow_private_networks=True, clock=FakeClock(), shutdown_grace=0.1)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/slow"), ["**"])])
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        await receiver.wait_for(1)
    d = await kit.get_delivery(delivery_id)
    assert d is not None and d.status == "waiting" and d.attempts == ()


async def test_endpoints_from_an_async_callable_and_security_callable(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    endpoints = [Endpoint("a", receiver.url("/a"), ["x.*"])]

    async def current() -> list[Endpoint]:
        return endpoints

    kit = make_kit(make_backend)
    hook = kit.webhook("w", endpoints=current, security=lambda: Security(signing_secret="s3"))
    async with kit:
        assert len(await hook.fire("x.y", {})) == 1
        endpoints.append(Endpoint("b", receiver.url("/b"), ["x.*"]))
        assert len(await hook.fire("x.y", {})) == 2
        requests = await receiver.wait_for(3)
    assert all(
        verify_webhook_signature(r.headers["x-oqron-signature"], r.body, "s3", now=kit.clock.now())
        for r in requests
    )


def test_thread_safety_of_fire_sync_without_a_running_kit(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    results: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(hook.fire_sync("e", {}))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [1, 1, 1, 1]
    stored = anyio.run(kit.list_deliveries)
    assert len(stored) == 4 and {d.status for d in stored} == {"waiting"}


async def test_fire_sync_from_threads_while_the_kit_shuts_down(
    make_backend: BackendFactory,
) -> None:
    # On Redis, threads firing while the kit drained ran on loops of their own against the
    # kit's client, bound to the kit's loop: some hung for good, some failed oddly. A fire
    # racing the backend's close may still fail (a connection error), but never hangs.
    kit = make_kit(make_backend, shutdown_grace=0.2)
    hook = kit.webhook("w", endpoints=[Endpoint("a", "http://127.0.0.1:9/a", ["**"])])
    stop, fired, errors = threading.Event(), [], []

    def producer() -> None:
        while not stop.is_set():
            try:
                fired.extend(hook.fire_sync("e", {}))
            except Exception as exc:  # collected, and checked below
                errors.append(exc)
            time.sleep(0.002)

    threads = [threading.Thread(target=producer, daemon=True) for _ in range(4)]
    async with kit:
        await kit.pause_webhook("w")  # nothing to deliver: the exit is the drain alone
        for t in threads:
            t.start()
        await anyio.sleep(0.2)
    await anyio.sleep(0.2)  # and after it, on loops of their own
    stop.set()
    for t in threads:
        await anyio.to_thread.run_sync(t.join, 20)
    assert not any(t.is_alive() for t in threads)
    assert all(kit.backend.unreachable(e) for e in errors), errors  # the close, raced
    stored = {d.id for d in await kit.list_deliveries(limit=5000)}
    assert set(fired) <= stored and 0 < len(fired) < 5000


async def test_an_immediate_retry_is_claimed_again_while_its_task_winds_down(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # A zero backoff makes the delivery ready again the moment it settles, often before the
    # task that settled it has left the dispatcher's books; it must still be attempted.
    receiver.respond("/flaky", 500, 500)
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        retries=Retries(max=3, base_delay=0.0, max_delay=0.0, jitter=0.0),
        circuit_breaker=CircuitBreaker(failure_threshold=100),
        endpoints=[Endpoint("a", receiver.url("/flaky"), ["**"])],
    )
    async with kit:
        ids = [i for _ in range(10) for i in await hook.fire("e", {})]
        for delivery_id in ids:
            await status_of(kit, delivery_id, "completed")


async def test_a_hook_that_hangs_is_cut_off_and_changes_nothing(
    make_backend: BackendFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    async def hang(_: Delivery) -> None:
        await anyio.sleep(60)

    kit = make_kit(make_backend, hook_timeout=0.05)
    hook = kit.webhook("w", on_success=hang, endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    with caplog.at_level(logging.ERROR, logger="oqronkit"):
        async with kit:  # leaving waits for hooks: this returns only because of the timeout
            [delivery_id] = await hook.fire("e", {})
            await status_of(kit, delivery_id, "completed")
    assert "timed out" in caplog.text
    assert (await kit.get_delivery(delivery_id)).status == "completed"  # type: ignore[union-attr]


async def test_resend_sends_a_dead_delivery_again_with_the_same_idempotency_key(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/a", 400)  # then 204
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        security=Security(signing_secret="s"),
        endpoints=[Endpoint("a", receiver.url("/a"), ["**"])],
    )
    async with kit:
        [delivery_id] = await hook.fire("e", {"n": 1})
        await status_of(kit, delivery_id, "dead")
        kit.clock.advance(600)  # type: ignore[attr-defined]
        copy_id = await kit.resend_webhook(delivery_id)
        copy = await status_of(kit, copy_id, "completed")
        with pytest.raises(DeliveryStateError, match="only completed, dead or cancelled"):
            await kit.resend_webhook((await hook.fire("e", {}))[0])
        with pytest.raises(DeliveryNotFound):
            await kit.resend_webhook("dlv_missing")
    first, second = receiver.received()[:2]
    assert copy.resent_from == delivery_id and len(copy.attempts) == 1
    assert second.headers["idempotency-key"] == first.headers["idempotency-key"] == delivery_id
    assert second.headers["x-oqron-delivery"] == copy_id
    assert verify_webhook_signature(
        second.headers["x-oqron-signature"], second.body, "s", now=kit.clock.now()
    )
    assert int(second.headers["x-oqron-timestamp"]) > int(first.headers["x-oqron-timestamp"])


async def test_cancel_aborts_an_in_flight_request_at_once(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/slow", Reply(204, delay=10.0))
    dead: list[Delivery] = []
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        on_dead=dead.append,
        circuit_breaker=CircuitBreaker(failure_threshold=1),
        endpoints=[Endpoint("a", receiver.url("/slow"), ["**"])],
    )
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        await receiver.wait_for(1)
        with anyio.fail_after(1.0):  # aborted at once, not after the receiver's 10 s
            assert await kit.cancel_delivery(delivery_id) == "aborted"
            d = await status_of(kit, delivery_id, "cancelled")
        assert d.attempts == ()
        assert await kit.cancel_delivery(delivery_id) == "finished"
        with pytest.raises(DeliveryNotFound):
            await kit.cancel_delivery("dlv_missing")
        # Not a breaker failure (threshold 1): the next delivery goes straight through.
        receiver.respond("/slow", 204)
        [next_id] = await hook.fire("e", {})
        await status_of(kit, next_id, "completed")
    assert dead == []


async def test_a_cancel_after_a_failing_answer_ends_cancelled_not_dead(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # The 503's head is in, its body is late: the answer is recorded, but the delivery (on its
    # last attempt) ends as the cancel asked, without on_dead.
    receiver.respond("/late", Reply(503, b"late", body_delay=5.0))
    dead: list[Delivery] = []
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        retries=Retries(max=0),
        on_dead=dead.append,
        endpoints=[Endpoint("a", receiver.url("/late"), ["**"])],
    )
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        await receiver.wait_for(1)
        await anyio.sleep(0.2)  # the head crosses loopback; the body waits 5 s
        with anyio.fail_after(2.0):
            assert await kit.cancel_delivery(delivery_id) == "aborted"
            d = await status_of(kit, delivery_id, "cancelled")
    [attempt] = d.attempts
    assert attempt.status == 503 and d.error == "cancelled"
    assert dead == []


async def test_a_cancelled_probe_gives_its_slot_back(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    receiver.respond("/x", 500, Reply(204, delay=10.0), 204)
    kit = make_kit(make_backend, clock)
    hook = kit.webhook(
        "w",
        retries=Retries(max=5, base_delay=100.0, max_delay=100.0, jitter=0.0),
        circuit_breaker=CircuitBreaker(failure_threshold=1, reset_timeout=30.0, half_open_max=1),
        endpoints=[Endpoint("a", receiver.url("/x"), ["**"])],
    )
    async with kit:
        [failed] = await hook.fire("e", {})
        await status_of(kit, failed, "delayed")  # and the breaker is open
        clock.advance(30)
        [probe] = await hook.fire("e", {})  # the one half-open probe: the receiver stalls
        await receiver.wait_for(2)
        assert await kit.cancel_delivery(probe) == "aborted"
        await status_of(kit, probe, "cancelled")
        # No verdict on the receiver, and the probe's slot is free: the next one is let through.
        [after] = await hook.fire("e", {})
        await status_of(kit, after, "completed")


def stalled_probe_kit(
    make_backend: BackendFactory, receiver: Receiver, clock: FakeClock, half_open_max: int
) -> tuple[OqronKit, Webhook, CircuitBreaker]:
    """Webhook "w" to the receiver's /x, behind a breaker that opens at the first failure;
    retries wait 100 s, and the kit stops 0.1 s after it is asked to, stalled probes or not."""
    kit = make_kit(make_backend, clock, shutdown_grace=0.1)
    policy = CircuitBreaker(failure_threshold=1, reset_timeout=30.0, half_open_max=half_open_max)
    hook = kit.webhook(
        "w",
        retries=Retries(max=5, base_delay=100.0, max_delay=100.0, jitter=0.0),
        circuit_breaker=policy,
        endpoints=[Endpoint("a", receiver.url("/x"), ["**"])],
    )
    return kit, hook, policy


async def test_a_cancelled_probe_whose_settle_fails_gives_its_slot_back_once(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    receiver.respond("/x", 500, Reply(204, delay=10.0), Reply(204, delay=10.0))
    kit, hook, policy = stalled_probe_kit(make_backend, receiver, clock, half_open_max=2)
    async with kit:
        [failed] = await hook.fire("e", {})
        await status_of(kit, failed, "delayed")
        clock.advance(30)
        [first, _] = [*await hook.fire("e", {}), *await hook.fire("e", {})]  # two probes
        await receiver.wait_for(3)
        settle = kit.settles

        async def failing_to_cancel(request: Any) -> Delivery | None:
            if request[2].status == "cancelled":
                raise RuntimeError("the backend is away")
            return await settle(request)

        kit.settles = failing_to_cancel
        await kit.cancel_delivery(first)
        await eventually(lambda: _not_in_flight(kit, first))
        kit.settles = settle
        # The other probe is still in flight: the breaker must still count it.
        _, probes, _, _ = kit.guards.breaker("w\x00a", policy).snapshot()
        assert probes == 1


async def test_an_attempt_let_through_while_closed_and_cut_short_frees_no_probe_slot(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    receiver.respond("/x", Reply(204, delay=10.0), 500, Reply(204, delay=10.0))
    kit, hook, policy = stalled_probe_kit(make_backend, receiver, clock, half_open_max=1)
    async with kit:
        [slow] = await hook.fire("e", {})  # let through while closed
        await receiver.wait_for(1)
        [failed] = await hook.fire("e", {})
        await status_of(kit, failed, "delayed")  # the breaker opens
        clock.advance(30)
        await hook.fire("e", {})  # the probe
        await receiver.wait_for(3)
        await kit.cancel_delivery(slow)
        await status_of(kit, slow, "cancelled")
        # The probe is still in flight, and still the only one the breaker lets through.
        _, probes, _, _ = kit.guards.breaker("w\x00a", policy).snapshot()
        assert probes == 1


async def _not_in_flight(kit: OqronKit, delivery_id: str) -> bool:
    dispatcher = kit._dispatchers["w"]
    return all(claim.id != delivery_id for claim in dispatcher._in_flight.values())


class GatedSettles(MemoryBackend):
    """Memory, whose settles go through the kit's group commit (shielded, as on SQLite, Redis
    and PostgreSQL), and whose retries' settles wait for the test to open `gate`."""

    round_trips = True

    def __init__(self) -> None:
        super().__init__()
        self.settling = anyio.Event()
        self.gate = anyio.Event()

    async def settle_many(self, settles: Sequence[SettleRequest]) -> list[Delivery | None]:
        if any(settlement.status == "delayed" for _, _, settlement, _ in settles):
            self.settling.set()
            await self.gate.wait()
        return [await self.settle(*request) for request in settles]


async def test_a_cancel_while_the_attempt_settles_a_retry_is_not_lost(
    receiver: Receiver,
) -> None:
    receiver.respond("/e", 500)
    backend = GatedSettles()
    kit = OqronKit(backend, allow_private_networks=True, clock=FakeClock())
    hook = kit.webhook(
        "w", retries=NO_JITTER, endpoints=[Endpoint("e", receiver.url("/e"), ["**"])]
    )
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        with anyio.fail_after(10):
            await backend.settling.wait()  # the 500 is in; its retry is being settled
        assert await kit.cancel_delivery(delivery_id) == "aborted"  # too late to cut it short
        backend.gate.set()
        cancelled = await status_of(kit, delivery_id, "cancelled")
    assert len(receiver.received("/e")) == 1 and len(cancelled.attempts) == 1


async def test_cancel_a_queued_delivery(make_backend: BackendFactory, receiver: Receiver) -> None:
    clock = FakeClock()
    producer = OqronKit(make_backend(), dispatch=False, clock=clock)
    endpoints = [Endpoint("a", receiver.url("/a"), ["**"])]
    hook = producer.webhook("w", endpoints=endpoints)
    async with producer:
        [delivery_id] = await hook.fire("e", {})
        assert await producer.cancel_delivery(delivery_id) == "cancelled"
    worker = OqronKit(producer.backend, allow_private_networks=True, clock=clock)
    worker.webhook("w", endpoints=endpoints)
    async with worker:
        await anyio.sleep(0.2)
    assert receiver.received() == []
    assert (await worker.get_delivery(delivery_id)).status == "cancelled"  # type: ignore[union-attr]


async def test_hung_sync_hooks_do_not_starve_new_connections(receiver: Receiver) -> None:
    """A sync hook past its timeout is abandoned but keeps its thread. On the shared default
    thread limiter (40 on Trio, which its DNS lookups use too), 40 of them stalled every new
    connection to a host name."""
    hung = threading.Event()
    kit = OqronKit(allow_private_networks=True, hook_timeout=0.05)
    try:
        hook = kit.webhook(
            "w",
            endpoints=[
                Endpoint("a", receiver.url("/a"), ["a"]),
                Endpoint("b", receiver.url("/b").replace("127.0.0.1", "localhost"), ["b"]),
            ],
            on_success=lambda delivery: None if delivery.endpoint_name == "b" else hung.wait(),
        )
        with anyio.fail_after(30):
            async with kit:
                for _ in range(45):
                    [delivery_id] = await hook.fire("a", {})
                    await status_of(kit, delivery_id, "completed")
                await anyio.sleep(0.2)  # every hook has timed out, its thread still held
                [named] = await hook.fire("b", {})  # a new connection: a DNS lookup
                await status_of(kit, named, "completed")
    finally:
        hung.set()
