"""Many workers on one shared backend (Redis, PostgreSQL): circuit breakers and rate limits are
cluster-wide and take the Rust core's steps; a worker killed mid-run loses nothing."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oqronkit import CircuitBreaker, Endpoint, OqronKit, RateLimit, Retries
from oqronkit.backends import Backend
from oqronkit.clock import FakeClock
from oqronkit.events import LifecycleEvent
from oqronkit.guards import Guards
from oqronkit.models import Delivery
from tests.conftest import BackendFactory, backend_url, namespace, two_processes
from tests.crash_worker import define
from tests.receiver import Receiver, Reply
from tests.test_crash import start_worker, stop_gracefully

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["redis", "postgresql"])
def cluster_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, request, tmp_path)


# ---------------------------------------------------------------- the Rust model, step by step

POLICY = CircuitBreaker(failure_threshold=3, reset_timeout=5.0, half_open_max=2)
LIMIT = RateLimit(max=3, per=2.0)
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["admit", "admit_limited", "success", "failure", "release", "take"]),
        st.sampled_from([0.0, 0.1, 0.7, 2.5, 6.0]),  # seconds since the previous step
        st.integers(0, 1),  # which of the two processes takes the step
        st.integers(1, 4),  # tokens, for `take`
    ),
    max_size=25,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_shared_guards_take_the_rust_models_steps(
    make_backend: BackendFactory, anyio_backend: str, steps: list[tuple[str, float, int, int]]
) -> None:
    """Two processes share guard state through the backend; every answer and every state is
    the one a single in-process Rust machine gives for the same steps."""

    async def run() -> None:
        backends = two_processes(make_backend)
        for backend in backends:
            await backend.open()
        try:
            await check(backends)
        finally:
            for backend in backends:
                await backend.close()

    async def check(backends: list[Backend]) -> None:
        shared = [Guards(backend, shared=True) for backend in backends]
        model = Guards(backends[0], shared=False)
        key, now = namespace(), 1_000.0
        admitted: list[int | None] = []  # what `admit` made of each attempt let through
        for action, dt, process, tokens in steps:
            now += dt
            guards = shared[process]
            if action.startswith("admit"):
                limit = LIMIT if action == "admit_limited" else None
                got = await guards.admit(key, POLICY, limit, now)
                assert got == await model.admit(key, POLICY, limit, now)
                retry_at, probe = got
                if retry_at is None:
                    admitted.append(probe)
            elif action == "take":
                got_tokens = await guards.take(key, LIMIT, tokens, now)
                assert got_tokens == await model.take(key, LIMIT, tokens, now)
            else:
                # The latest attempt admitted ends this way (a stray one if there is none).
                probe = admitted.pop() if admitted else None
                verdict = await guards.record(key, POLICY, action, now, probe)  # type: ignore[arg-type]
                assert verdict == await model.record(key, POLICY, action, now, probe)  # type: ignore[arg-type]
            assert await stored(backends[1 - process], key) == (
                model.breaker(key, POLICY).snapshot(),
                model.bucket(key, LIMIT).snapshot(),
            )

    anyio.run(run, backend=anyio_backend)


async def stored(backend: Backend, key: str) -> tuple[object, object]:
    """The breaker and bucket state of `key` as the backend holds it (unused ones as new)."""
    new = [POLICY.new_state_machine().snapshot(), (float(LIMIT.max), None)]

    def read(states: list[str | None]) -> tuple[list[str], tuple[object, object]]:
        found = [tuple(json.loads(s)) if s else n for s, n in zip(states, new, strict=True)]
        return [json.dumps(f) for f in found], (found[0], found[1])

    return await backend.update_state([f"breaker:{key}", f"bucket:{key}"], read)


@pytest.mark.anyio
async def test_a_new_breaker_policy_keeps_counting_half_open_periods(
    make_backend: BackendFactory,
) -> None:
    """A policy change keeps the breaker's state and counts its half-open periods on; a probe
    let through under the old policy and cut short later must not free a slot of the new
    one's first half-open period."""
    backend = make_backend()
    await backend.open()
    try:
        guards, key = Guards(backend), namespace()
        old, new = POLICY, CircuitBreaker(failure_threshold=1, reset_timeout=5.0, half_open_max=1)
        for _ in range(old.failure_threshold):
            await guards.record(key, old, "failure", 0.0)
        _, old_probe = await guards.admit(key, old, None, 5.0)
        await guards.record(key, new, "failure", 6.0)  # the probe failed: open again
        retry_at, new_probe = await guards.admit(key, new, None, 11.0)
        assert retry_at is None and new_probe is not None and new_probe != old_probe
        await guards.record(key, new, "release", 12.0, old_probe)
        assert await guards.admit(key, new, None, 12.0) == (16.0, None)  # one probe at a time
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_changing_a_policy_at_runtime_neither_closes_a_breaker_nor_refills_a_bucket(
    make_backend: BackendFactory,
) -> None:
    """An open breaker stays open under a longer reset_timeout, and a rate limit lowered
    after its tokens were spent has none to give (before, on memory, both started afresh)."""
    backend = make_backend()
    await backend.open()
    try:
        guards, key = Guards(backend), namespace()
        breaker = CircuitBreaker(failure_threshold=1, reset_timeout=300.0)
        await guards.record(key, breaker, "failure", 0.0)
        longer = CircuitBreaker(failure_threshold=1, reset_timeout=600.0)
        assert await guards.admit(key, longer, None, 1.0) == (600.0, None)
        limit, lower = RateLimit(max=3, per=60.0), RateLimit(max=2, per=60.0)
        open_ = CircuitBreaker()
        for _ in range(3):
            assert (await guards.admit(f"{key}-rate", open_, limit, 10.0))[0] is None
        retry_at, _ = await guards.admit(f"{key}-rate", open_, lower, 10.0)
        assert retry_at is not None and retry_at > 10.0  # nothing left to give
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_a_breaker_state_stored_before_periods_were_counted_still_works(
    make_backend: BackendFactory,
) -> None:
    backend = make_backend()
    await backend.open()
    try:
        guards, key = Guards(backend, shared=True), namespace()

        def store_old(states: list[str | None]) -> tuple[list[str], None]:
            return [json.dumps(["open", 0, 10.0])], None  # (state, count, at): no periods

        await backend.update_state([f"breaker:{key}"], store_old)
        assert await guards.admit(key, POLICY, None, 12.0) == (15.0, None)  # still open
        assert await guards.admit(key, POLICY, None, 15.0) == (None, 1)  # the first period
        assert (await stored(backend, key))[0] == ("half_open", 1, 15.0, 1)
    finally:
        await backend.close()


# ---------------------------------------------------------------- two workers, one breaker


def worker_kit(
    url: str,
    clock: FakeClock,
    endpoint: Endpoint,
    on_event: Callable[[LifecycleEvent], None] | None = None,
) -> OqronKit:
    kit = OqronKit(url, allow_private_networks=True, clock=clock, on_event=on_event)
    kit.webhook("w", concurrency=1, retries=Retries(max=0), endpoints=[endpoint])
    return kit


async def wait_for_status(kit: OqronKit, ids: list[str], status: str) -> list[Delivery]:
    with anyio.fail_after(10):
        while True:
            found = [await kit.get_delivery(i) for i in ids]
            if all(d is not None and d.status == status for d in found):
                return [d for d in found if d is not None]
            await anyio.sleep(0.02)


async def test_failures_on_two_workers_open_one_breaker(
    cluster_url: str, receiver: Receiver
) -> None:
    receiver.respond("/down", then=Reply(500))
    clock = FakeClock()
    policy = CircuitBreaker(failure_threshold=4, reset_timeout=30.0)
    endpoint = Endpoint("e", receiver.url("/down"), ["**"], circuit_breaker=policy)
    opened: list[LifecycleEvent] = []
    a, b = (
        worker_kit(cluster_url, clock, endpoint),
        worker_kit(cluster_url, clock, endpoint, opened.append),
    )

    async def failures_on(kit: OqronKit, count: int) -> None:
        async with kit:
            ids = [i for _ in range(count) for i in await kit.get_webhook("w").fire("e", {})]
            await wait_for_status(kit, ids, "dead")

    await failures_on(a, 2)
    await failures_on(b, 2)  # 2 + 2: the threshold, counted across the two workers
    assert len(receiver.received()) == 4
    assert [e.kind for e in opened if e.kind.startswith("breaker")] == ["breaker.opened"]
    # Both respect it, and no attempt is used: `a`, which never saw it open, is refused at the
    # attempt and defers to the moment it half-opens; `b`, which saw it, does not even claim.
    async with a:
        [deferred] = await a.get_webhook("w").fire("e", {})
        [d] = await wait_for_status(a, [deferred], "delayed")
        assert d.attempts == () and d.next_attempt_at == clock.now() + 30.0
    async with b:
        [waiting] = await b.get_webhook("w").fire("e", {})
        await anyio.sleep(0.3)
        d = await b.get_delivery(waiting)  # type: ignore[assignment]
        assert d.status == "waiting" and d.attempts == ()
    assert len(receiver.received()) == 4


# ---------------------------------------------------------------- wake-ups


async def test_a_fire_in_another_process_wakes_an_idle_worker_at_once(
    cluster_url: str, receiver: Receiver
) -> None:
    """The worker's clock never moves, so its poll (every 5 s) never comes: only the backend's
    notification (pub/sub, LISTEN/NOTIFY) can start the delivery."""
    receiver.respond("/ok", then=Reply(204))
    clock = FakeClock()
    endpoint = Endpoint("e", receiver.url("/ok"), ["**"])
    worker = worker_kit(cluster_url, clock, endpoint)
    producer = OqronKit(cluster_url, dispatch=False, clock=clock)
    producer.webhook("w", endpoints=[endpoint])
    async with worker, producer:
        await anyio.sleep(0.3)  # the worker has claimed nothing and sleeps until woken
        ids = await producer.get_webhook("w").fire("e", {})
        await wait_for_status(worker, ids, "completed")
    assert len(receiver.received()) == 1


# ---------------------------------------------------------------- two workers, one rate limit


async def test_two_workers_never_exceed_a_shared_rate_limit(
    cluster_url: str, receiver: Receiver
) -> None:
    receiver.respond("/ok", then=Reply(204))
    clock = FakeClock()
    limit = RateLimit(max=3, per=6.0)  # a burst of 3, then one every 2 s
    endpoint = Endpoint("e", receiver.url("/ok"), ["**"], rate_limit=limit, max_in_flight=4)
    a, b = (worker_kit(cluster_url, clock, endpoint) for _ in range(2))
    start = clock.now()
    async with a, b:
        ids = [i for n in range(12) for i in await (a, b)[n % 2].get_webhook("w").fire("e", {})]
        with anyio.fail_after(60):
            while len(receiver.received()) < 12:
                await anyio.sleep(0.05)  # both workers settle at this moment of the clock
                clock.advance(0.5)
        delivered = await wait_for_status(a, ids, "completed")
    times = sorted(d.attempts[0].at - start for d in delivered)
    # A token bucket of 3 refilled at 0.5/s: any window of w seconds holds at most 3 + w/2.
    for i, first in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= 3 + (times[j] - first) / 2 + 1e-9, times
    assert times[-1] >= 18.0  # 12 requests: 3 at once, then 9 at 2 s each


# ---------------------------------------------------------------- three workers, one killed


async def all_deliveries(kit: OqronKit) -> list[Delivery]:
    found: list[Delivery] = []
    cursor = None
    while page := await kit.list_deliveries(limit=1000, cursor=cursor):
        found += page
        cursor = page[-1].id
    return found


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_three_workers_one_killed_lose_nothing(cluster_url: str, receiver: Receiver) -> None:
    receiver.respond("/a", then=Reply(204, delay=0.002))
    receiver.respond("/b", then=Reply(204, delay=0.002))
    workers = [start_worker(cluster_url, receiver) for _ in range(3)]
    producer = define(cluster_url, receiver.url(""), dispatch=False)
    try:
        async with producer:
            hook = producer.get_webhook("orders")
            fired = await hook.fire_many([(f"order.n{i}", {"n": i}) for i in range(2000)])
            expected = {delivery_id for ids in fired for delivery_id in ids}
            assert len(expected) == 2000 * 2  # fired x matched
            await receiver.wait_for(600, timeout=60)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait()
            with anyio.fail_after(120):
                while True:
                    keys = {r.headers["idempotency-key"] for r in receiver.received()}
                    if keys >= expected:
                        statuses = {d.status for d in await all_deliveries(producer)}
                        if statuses == {"completed"}:
                            break
                    await anyio.sleep(0.2)
    finally:
        for worker in workers[1:]:
            stop_gracefully(worker)
        assert workers[0].stdout is not None
        workers[0].stdout.close()
    keys = {r.headers["idempotency-key"] for r in receiver.received()}
    assert keys == expected  # none lost; a few sent twice (the killed worker's in flight)
