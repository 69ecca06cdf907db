"""Runtime operations on a running kit, end to end against a real receiver on loopback, on
memory and SQLite: pause/resume, runtime webhooks and endpoints (also seen by a second kit),
replay, lifecycle events and the module-level functions."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

import oqronkit
from oqronkit import (
    CircuitBreaker,
    ConfigurationError,
    Endpoint,
    FakeClock,
    LifecycleEvent,
    OqronKit,
    Retries,
    Security,
    verify_webhook_signature,
)
from oqronkit.backends import SQLiteBackend
from oqronkit.models import ENDPOINT_REMOVED, WEBHOOK_DELETED
from tests.conftest import BackendFactory, two_processes
from tests.receiver import Receiver, Reply
from tests.test_dispatch import NO_JITTER, make_kit, status_of

pytestmark = pytest.mark.anyio
URL = "https://example.com/hooks"


def clock_of(kit: OqronKit) -> FakeClock:
    assert isinstance(kit.clock, FakeClock)
    return kit.clock


async def within_a_second(clock: FakeClock, check: Callable[[], Awaitable[bool]]) -> None:
    """Lets up to a second of time pass (plus the worker's poll interval), a tenth at a time,
    until `check` holds; then the clock stops, and only real time (a networked backend's round
    trips) may pass: a change that needs more of the clock fails the test."""
    start = clock.now()
    with anyio.fail_after(10):
        while not await check():
            if clock.now() - start < 1.5 - 1e-6:
                clock.advance(0.1)
            await anyio.sleep(0.002)


async def test_pause_fire_50_resume_delivers_each_once(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook("w", concurrency=20, endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    async with kit:
        assert await kit.pause_webhook("w") == 0
        batches = await hook.fire_many([("order.created", {"n": n}) for n in range(50)])
        ids = [i for batch in batches for i in batch]
        assert len(ids) == 50  # kept while paused, not dropped
        assert len(await kit.list_deliveries(status="held")) == 50
        clock_of(kit).advance(3600)  # nothing becomes due while paused
        assert receiver.received() == []
        assert await kit.resume_webhook("w") == 50
        for delivery_id in ids:
            await status_of(kit, delivery_id, "completed")
    keys = sorted(r.headers["idempotency-key"] for r in receiver.received())
    assert keys == sorted(ids)  # each delivered exactly once


async def test_resume_keeps_each_delivery_s_schedule(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/a", Reply(503, headers={"Retry-After": "600"}))  # then 204
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w", retries=NO_JITTER, endpoints=[Endpoint("a", receiver.url("/a"), ["**"])]
    )
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        retry = await status_of(kit, delivery_id, "delayed")
        assert retry.next_attempt_at == pytest.approx(clock_of(kit).now() + 600, abs=1)
        assert await kit.pause_webhook("w") == 1
        held = await kit.get_delivery(delivery_id)
        assert held is not None and held.status == "held"
        assert held.next_attempt_at == retry.next_attempt_at
        clock_of(kit).advance(60)
        assert await kit.resume_webhook("w") == 1
        released = await kit.get_delivery(delivery_id)
        assert released is not None and released.status == "delayed"
        assert released.next_attempt_at == retry.next_attempt_at  # still due in 9 minutes
        assert len(receiver.received()) == 1
        clock_of(kit).advance(540)
        await status_of(kit, delivery_id, "completed")
    assert len(receiver.received()) == 2


async def test_endpoint_pause_holds_only_that_endpoint(
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
        assert await hook.pause_endpoint("a") == 0
        a_id, b_id = await hook.fire("e", {})
        await status_of(kit, b_id, "completed")
        assert (await status_of(kit, a_id, "held")).attempts == ()
        assert receiver.received("/a") == []
        assert await hook.resume_endpoint("a") == 1
        await status_of(kit, a_id, "completed")
        with pytest.raises(ConfigurationError, match="no endpoint 'nope'"):
            await hook.pause_endpoint("nope")
        with pytest.raises(ConfigurationError, match="no webhook"):
            await kit.pause_webhook("nope")


async def test_runtime_webhook_and_endpoint_crud_on_a_running_kit(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    async with kit:
        hook = await kit.create_webhook(
            "rt",
            security=Security(signing_secret="rt-secret"),
            retries=NO_JITTER,
            endpoints=[Endpoint("a", receiver.url("/a"), ["order.*"])],
        )
        assert hook.runtime and kit.get_webhook("rt") is hook
        [first] = await hook.fire("order.created", {"n": 1})
        await status_of(kit, first, "completed")
        [request] = receiver.received("/a")
        now = clock_of(kit).now()
        assert verify_webhook_signature(
            request.headers["x-oqron-signature"], request.body, "rt-secret", now=now
        )

        # A new endpoint is a fan-out target from the next fire on.
        await hook.add_endpoint(
            Endpoint("b", receiver.url("/b"), ["order.**"], headers={"X-Token": "t0ken"})
        )
        for delivery_id in await hook.fire("order.paid", {}):
            await status_of(kit, delivery_id, "completed")
        [to_b] = receiver.received("/b")
        assert to_b.headers["x-token"] == "t0ken"

        updated = await hook.update_endpoint("b", url=receiver.url("/b2"))
        assert updated.url == receiver.url("/b2") and updated.headers == {"X-Token": "t0ken"}
        await hook.remove_endpoint("a")
        [only_b] = await hook.fire("order.shipped", {})
        await status_of(kit, only_b, "completed")
        assert len(receiver.received("/b2")) == 1 and len(receiver.received("/a")) == 2

        await kit.update_webhook("rt", security=Security(signing_secret="rotated"), concurrency=3)
        assert hook.concurrency == 3
        [signed] = await hook.fire("order.refunded", {})
        await status_of(kit, signed, "completed")
        last = receiver.received("/b2")[-1]
        assert verify_webhook_signature(
            last.headers["x-oqron-signature"], last.body, "rotated", now=clock_of(kit).now()
        )

        # Bad input is refused before anything is stored.
        with pytest.raises(ConfigurationError, match="already defined"):
            await kit.create_webhook("rt")
        with pytest.raises(ConfigurationError, match="already has an endpoint"):
            await hook.add_endpoint(Endpoint("b", receiver.url("/x"), ["**"]))
        with pytest.raises(ConfigurationError, match="no setting nope"):
            await hook.update_endpoint("b", nope=1)
        with pytest.raises(ConfigurationError, match="http:// or https://"):
            await hook.update_endpoint("b", url="ftp://example.com/")
        with pytest.raises(ConfigurationError, match="callable cannot be stored"):
            await hook.update_endpoint("b", security=lambda: None)
        with pytest.raises(ConfigurationError, match="concurrency"):
            await kit.update_webhook("rt", concurrency=0)
        assert hook.concurrency == 3
        assert [e.url for e in await hook.endpoints()] == [receiver.url("/b2")]

        # Deleting it cancels what is still queued (never dead), and keeps its record.
        receiver.respond("/b2", Reply(503, headers={"Retry-After": "600"}))
        [queued] = await hook.fire("order.lost", {})
        await status_of(kit, queued, "delayed")
        assert await kit.delete_webhook("rt") == 1
        discarded = await status_of(kit, queued, "cancelled")
        assert discarded.error == WEBHOOK_DELETED and discarded.attempts[0].status == 503
        assert "rt" not in [w.name for w in await kit.webhooks()]
        with pytest.raises(ConfigurationError, match="no webhook"):
            kit.get_webhook("rt")


async def test_raised_concurrency_takes_effect_at_once(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    """Not when the attempt holding the only slot ends: the change wakes the dispatcher."""
    receiver.respond("/slow", Reply(204, delay=3.0))
    kit = make_kit(make_backend, shutdown_grace=0.1)
    async with kit:
        hook = await kit.create_webhook(
            "rt",
            concurrency=1,
            endpoints=[
                Endpoint("slow", receiver.url("/slow"), ["slow.*"]),
                Endpoint("fast", receiver.url("/fast"), ["fast.*"]),
            ],
        )
        await hook.fire("slow.x", {})
        await receiver.wait_for(1, "/slow")
        [waiting] = await hook.fire("fast.x", {})
        await anyio.wait_all_tasks_blocked()  # the dispatcher has seen it, and has no room
        queued = await kit.get_delivery(waiting)
        assert queued is not None and queued.status == "waiting"  # no free slot
        await kit.update_webhook("rt", concurrency=2)
        await receiver.wait_for(1, "/fast", timeout=2.0)  # well before /slow answers


async def test_code_endpoints_change_at_runtime_but_code_webhooks_do_not(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    async with kit:
        await hook.update_endpoint("a", url=receiver.url("/moved"))
        [moved] = await hook.fire("e", {})
        await status_of(kit, moved, "completed")
        assert len(receiver.received("/moved")) == 1
        await hook.update_endpoint("a", enabled=False)
        assert await hook.fire("e", {}) == []
        await hook.update_endpoint("a", enabled=True, url=None)  # None: back to the code's URL
        [back] = await hook.fire("e", {})
        await status_of(kit, back, "completed")
        assert len(receiver.received("/a")) == 1
        with pytest.raises(ConfigurationError, match="defined in code"):
            await kit.update_webhook("w", concurrency=2)
        with pytest.raises(ConfigurationError, match="defined in code"):
            await kit.delete_webhook("w")


async def test_crud_on_one_kit_is_seen_by_a_second_kit(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    shared, other = two_processes(make_backend)
    operator = OqronKit(shared, dispatch=False, clock=clock)
    worker = OqronKit(other, allow_private_networks=True, clock=clock)
    async with operator, worker:
        hook = await operator.create_webhook(
            "rt",
            security=Security(signing_secret="stored-secret"),
            endpoints=[Endpoint("a", receiver.url("/a"), ["**"])],
        )
        [first] = await hook.fire("e", {"n": 1})

        async def delivered(delivery_id: str) -> bool:
            delivery = await worker.get_delivery(delivery_id)
            return delivery is not None and delivery.status == "completed"

        # The worker reads the stored definitions every second.
        await within_a_second(clock, lambda: delivered(first))
        [request] = receiver.received("/a")
        assert verify_webhook_signature(
            request.headers["x-oqron-signature"], request.body, "stored-secret", now=clock.now()
        )

        await hook.pause_endpoint("a")
        [paused] = await hook.fire("e", {})
        await hook.add_endpoint(Endpoint("b", receiver.url("/b"), ["**"]))
        seen = worker.get_webhook("rt")

        async def worker_sees_b() -> bool:
            return [e.name for e in await seen.endpoints()] == ["a", "b"]

        await within_a_second(clock, worker_sees_b)
        assert (await worker.get_delivery(paused)).status == "held"  # type: ignore[union-attr]
        await hook.resume_endpoint("a")
        await within_a_second(clock, lambda: delivered(paused))

        await operator.delete_webhook("rt")

        async def worker_forgot() -> bool:
            return "rt" not in [w.name for w in await worker.webhooks()]

        await within_a_second(clock, worker_forgot)
        listing = repr(await worker.list_deliveries()) + repr(await seen.endpoints())
    shown = repr(hook) + repr(operator) + repr(worker.definitions) + listing
    assert "stored-secret" not in shown


async def test_replay_resends_dead_deliveries_at_the_given_rate(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/a", *[400] * 6)  # then 204
    kit = make_kit(make_backend)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["order.*", "user.*"])])
    async with kit:
        dead = [(await hook.fire("order.created", {"n": n}))[0] for n in range(5)]
        [other] = await hook.fire("user.created", {})
        for delivery_id in [*dead, other]:
            await status_of(kit, delivery_id, "dead")
        assert await kit.replay(rate=2.0, event="order.*", dry_run=True) == 5
        assert len(receiver.received()) == 6  # a dry run sends nothing

        clock = clock_of(kit)
        start, done = clock.now(), anyio.Event()
        counted: list[int] = []

        async def replay() -> None:
            counted.append(await kit.replay(rate=2.0, event="order.*"))
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(replay)
            while not done.is_set():
                clock.advance(0.1)
                await anyio.sleep(0.002)
        assert counted == [5]
        assert clock.now() - start >= 5 / 2.0  # N deliveries at rate R take at least N / R
        copies = [d for d in await kit.list_deliveries() if d.resent_from is not None]
        assert sorted(c.resent_from for c in copies) == sorted(dead)  # type: ignore[type-var]
        created = sorted(c.created_at for c in copies)
        # The k-th resend waits for its slot: never more than R in any second.
        assert all(at - start >= k / 2.0 - 1e-6 for k, at in enumerate(created))
        for copy in copies:
            await status_of(kit, copy.id, "completed")
        # Replayed once: the dead originals are not resent again (their copies were).
        assert await kit.replay(rate=2.0, dry_run=True) == 1  # `other` only
        with pytest.raises(ConfigurationError, match="rate"):
            await kit.replay(rate=0)


async def test_lifecycle_events_reach_subscribers_and_the_hook(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/gone", then=410)
    receiver.respond("/down", 503)  # then 204
    hooked: list[LifecycleEvent] = []
    kit = make_kit(make_backend, on_event=hooked.append)
    hook = kit.webhook(
        "w",
        retries=Retries(max=0),
        circuit_breaker=CircuitBreaker(failure_threshold=1, reset_timeout=30.0),
        endpoints=[
            Endpoint("gone", receiver.url("/gone"), ["gone"]),
            Endpoint("down", receiver.url("/down"), ["down"]),
        ],
    )
    wanted = [
        ("endpoint.disabled", "gone"),
        ("delivery.dead", "gone"),
        ("breaker.opened", "down"),
        ("delivery.dead", "down"),
        ("webhook.paused", None),
        ("webhook.resumed", None),
        ("breaker.closed", "down"),
    ]
    seen: list[tuple[str, str | None]] = []
    async with kit, kit.events() as events:
        [gone] = await hook.fire("gone", {})
        await status_of(kit, gone, "dead")
        [down] = await hook.fire("down", {})
        await status_of(kit, down, "dead")
        await kit.pause_webhook("w")
        await kit.resume_webhook("w")
        clock_of(kit).advance(30.0)  # half-open: the next attempt is a probe, and it succeeds
        await status_of(kit, (await hook.fire("down", {}))[0], "completed")
        with anyio.fail_after(5):
            async for event in events:
                seen.append((event.kind, event.endpoint))
                if len(seen) == len(wanted):
                    break
        assert sorted(seen, key=str) == sorted(wanted, key=str)
        assert hook.endpoint_named("gone").enabled is False  # type: ignore[union-attr]

    assert sorted(((e.kind, e.endpoint) for e in hooked), key=str) == sorted(wanted, key=str)


async def test_an_event_per_change_not_per_call(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # Five deliveries in flight answered 410: one endpoint.disabled. Pausing twice, resuming
    # what was never paused: one event per change of state, none for no change.
    receiver.respond("/gone", *[Reply(410, delay=0.3)] * 5)
    kit = make_kit(make_backend)
    hook = kit.webhook(
        "w",
        concurrency=5,
        endpoints=[Endpoint("gone", receiver.url("/gone"), ["**"], max_in_flight=5)],
    )
    seen: list[str] = []
    async with kit, kit.events() as events:
        await kit.resume_webhook("w")
        ids = [(await hook.fire("e", {"n": n}))[0] for n in range(5)]
        await receiver.wait_for(5)
        for delivery_id in ids:
            await status_of(kit, delivery_id, "dead")
        await kit.pause_webhook("w")
        await kit.pause_webhook("w")
        await kit.resume_webhook("w")
        await hook.resume_endpoint("gone")
        await kit.pause_webhook("w")  # a last one, to know every event before it is in
        with anyio.fail_after(5):
            async for event in events:
                seen.append(event.kind)
                if len(seen) == 1 + 5 + 3:
                    break
    assert sorted(seen) == sorted(
        [
            "endpoint.disabled",
            *["delivery.dead"] * 5,
            "webhook.paused",
            "webhook.resumed",
            "webhook.paused",
        ]
    )


async def test_module_level_functions_use_the_default_kit(receiver: Receiver) -> None:
    kit = OqronKit(allow_private_networks=True, clock=FakeClock())
    oqronkit.set_default_kit(kit)
    try:
        assert oqronkit.default_kit() is kit
        hook = oqronkit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
        async with kit:
            [first] = await hook.fire("e", {})
            await status_of(kit, first, "completed")
            assert (await oqronkit.get_delivery(first)).status == "completed"  # type: ignore[union-attr]
            assert len(await oqronkit.list_deliveries(status="completed")) == 1
            await oqronkit.pause_webhook("w")
            [held] = await hook.fire("e", {})
            assert await oqronkit.cancel_delivery(held) == "cancelled"
            assert await oqronkit.resume_webhook("w") == 0
            copy = await oqronkit.resend_webhook(first)
            await status_of(kit, copy, "completed")
            runtime = await oqronkit.create_webhook(
                "rt", endpoints=[Endpoint("b", receiver.url("/b"), ["**"])]
            )
            await oqronkit.update_webhook("rt", concurrency=3)
            assert runtime.concurrency == 3
            assert await oqronkit.replay(rate=10.0, dry_run=True) == 0
            assert await oqronkit.delete_webhook("rt") == 0
    finally:
        oqronkit.set_default_kit(None)
    assert oqronkit.default_kit() is not kit
    oqronkit.set_default_kit(None)


async def test_a_kit_exits_even_if_a_webhook_appears_while_it_drains(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/gone", Reply(410, delay=0.5))  # read again at the 410, mid-shutdown
    clock = FakeClock()
    worker = make_kit(make_backend, clock)
    operator = OqronKit(worker.backend, dispatch=False, clock=clock)
    hook = worker.webhook("w", endpoints=[Endpoint("gone", receiver.url("/gone"), ["**"])])
    async with operator:
        with anyio.fail_after(10):
            async with worker:
                [delivery_id] = await hook.fire("e", {})
                await status_of(worker, delivery_id, "active")
                await operator.create_webhook(
                    "rt", endpoints=[Endpoint("x", receiver.url("/x"), ["**"])]
                )
                clock.advance(1.0)  # the worker's copy of the definitions is now stale
    assert "rt" not in worker._dispatchers


async def test_a_worker_restarted_over_a_stored_webhook_runs_one_dispatcher_and_stops(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # Its first refresh starts the stored webhook's dispatcher; the start must not add another
    # (the first then ran on unstopped, and the kit never left `async with`).
    backend = make_backend()
    async with OqronKit(backend, dispatch=False) as operator:
        await operator.create_webhook("rt", endpoints=[Endpoint("x", receiver.url("/x"), ["**"])])
    worker = OqronKit(backend, allow_private_networks=True, shutdown_grace=0.1)
    with anyio.fail_after(10):
        async with worker:
            dispatchers = [task for task in _tasks() if task.name == "oqronkit dispatcher rt"]
            [delivery_id] = await worker.get_webhook("rt").fire("e", {})
            await status_of(worker, delivery_id, "completed")
    assert len(dispatchers) == 1


def _tasks() -> list[anyio.TaskInfo]:
    return [t for t in anyio.get_running_tasks() if t.name is not None]


async def test_a_webhook_defined_while_the_kit_drains_does_not_hold_it_open(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/slow", Reply(204, delay=0.5))
    kit = make_kit(make_backend, shutdown_grace=3.0)
    hook = kit.webhook("w", endpoints=[Endpoint("slow", receiver.url("/slow"), ["**"])])

    async def define_while_draining() -> None:
        while not kit._stopping:
            await anyio.sleep(0.005)
        kit.webhook("late", endpoints=[Endpoint("x", receiver.url("/x"), ["**"])])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(define_while_draining)
            async with kit:  # left within its grace, not held open by "late"'s dispatcher
                await hook.fire("e", {})
                await receiver.wait_for(1, "/slow")


async def test_updates_are_validated_against_what_they_change(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    async with kit:
        hook = await kit.create_webhook(
            "rt",
            endpoints=[
                Endpoint(
                    "a", receiver.url("/a"), ["order"], security=Security(signing_secret="plain")
                )
            ],
        )
        with pytest.raises(ConfigurationError, match="base64"):  # its endpoint's secret
            await kit.update_webhook("rt", scheme="standard")
        assert hook.scheme == "oqron" and len(await hook.endpoints()) == 1
        assert (await hook.update_endpoint("a", events="order.*")).events == ("order.*",)
        with pytest.raises(ConfigurationError, match="enabled must be True or False"):
            await hook.update_endpoint("a", enabled="false")

        # Disabled: its queued delivery is held at its attempt; enabled again, it is released.
        receiver.respond("/a", Reply(503, headers={"Retry-After": "60"}))
        [queued] = await hook.fire("order.created", {})
        await status_of(kit, queued, "delayed")
        await hook.update_endpoint("a", enabled=False)
        clock_of(kit).advance(60)
        await status_of(kit, queued, "held")
        await hook.update_endpoint("a", enabled=None)  # back to the default: enabled
        await status_of(kit, queued, "completed")


async def test_a_deleted_webhook_holds_what_a_stale_kit_fires(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    shared, other = two_processes(make_backend)
    a = OqronKit(shared, dispatch=False, clock=clock)
    b = OqronKit(other, dispatch=False, clock=clock)
    async with a, b:
        await a.create_webhook("rt", endpoints=[Endpoint("x", receiver.url("/x"), ["**"])])
        await b.refresh_definitions()
        stale = b.get_webhook("rt")
        await a.delete_webhook("rt")
        [late] = await stale.fire("e", {})  # b has not seen the delete yet
        assert (await a.get_delivery(late)).status == "held"  # type: ignore[union-attr]
        # A webhook created again under the name never receives it: it was meant for the old.
        await a.create_webhook("rt", endpoints=[Endpoint("x", receiver.url("/new"), ["**"])])
        await a.pause_webhook("rt")
        await a.resume_webhook("rt")
        discarded = await a.get_delivery(late)
        assert discarded is not None and discarded.error == WEBHOOK_DELETED
        # A webhook defined in code may take the name back; it is not held.
        code = b.webhook("rt2", endpoints=[Endpoint("x", receiver.url("/x"), ["**"])])
        await a.create_webhook("rt2", endpoints=[Endpoint("x", receiver.url("/x"), ["**"])])
        await a.delete_webhook("rt2")
        await b.refresh_definitions()
        [fresh] = await code.fire("e", {})
        assert (await a.get_delivery(fresh)).status == "waiting"  # type: ignore[union-attr]


async def test_what_was_held_while_an_endpoint_was_off_goes_once_it_is_back_by_any_route(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # Held while disabled in code, released by a redeploy that enables it again; held while
    # an endpoints callable left it out, released when the callable lists it again.
    shared, other = two_processes(make_backend)
    on = Endpoint("a", receiver.url("/a"), ["**"])
    off = Endpoint("a", receiver.url("/a"), ["**"], enabled=False)
    listed = [on]
    clock = FakeClock()
    producer = make_kit(lambda: shared, clock, dispatch=False)
    async with producer:
        ids = await producer.webhook("w", endpoints=[on]).fire("e", {})
        ids += await producer.webhook("cb", endpoints=lambda: listed).fire("e", {})

    def deploy(endpoint: Endpoint) -> OqronKit:
        kit = make_kit(lambda: other, clock)
        kit.webhook("w", endpoints=[endpoint])
        kit.webhook("cb", endpoints=lambda: listed)
        return kit

    listed = []
    async with deploy(off) as old_deploy:
        for delivery_id in ids:
            await status_of(old_deploy, delivery_id, "held")
    listed = [on]
    async with deploy(on) as new_deploy:
        for delivery_id in ids:
            await status_of(new_deploy, delivery_id, "completed")
    assert len(receiver.received("/a")) == 2


async def test_an_attempt_in_flight_at_a_removal_never_reaches_what_takes_the_name(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # Its retry would have gone to the endpoint (or webhook) added next under the same name.
    receiver.respond("/old", *[Reply(503, delay=5.0)] * 2)
    kit = make_kit(make_backend)
    async with kit:
        for remove in ("endpoint", "webhook"):
            old = Endpoint("x", receiver.url("/old"), ["**"])
            hook = await kit.create_webhook(f"rt-{remove}", retries=NO_JITTER, endpoints=[old])
            [in_flight] = await hook.fire("e", {})
            await receiver.wait_for(1 + (remove == "webhook"), "/old")
            with anyio.fail_after(2.0):  # aborted at once, not when the receiver answers
                if remove == "endpoint":
                    assert await hook.remove_endpoint("x") == 1
                    await hook.add_endpoint(Endpoint("x", receiver.url("/new"), ["**"]))
                else:
                    assert await kit.delete_webhook(hook.name) == 1
                    await kit.create_webhook(
                        hook.name, endpoints=[Endpoint("x", receiver.url("/new"), ["**"])]
                    )
                await status_of(kit, in_flight, "cancelled")
            clock_of(kit).advance(600)  # any retry would be due
            [fresh] = await kit.get_webhook(hook.name).fire("e", {})
            await status_of(kit, fresh, "completed")
            assert (await kit.get_delivery(in_flight)).status == "cancelled"  # type: ignore[union-attr]
    assert len(receiver.received("/new")) == 2  # the two fresh ones only


async def test_a_worker_notices_an_endpoints_callable_listing_an_endpoint_again(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # Nothing is claimable (it is all held), so no claim asks the callable: the worker does.
    listed: list[Endpoint] = []
    clock = FakeClock()
    shared, other = two_processes(make_backend)
    on = Endpoint("a", receiver.url("/a"), ["**"])
    producer = make_kit(lambda: shared, clock, dispatch=False)
    async with producer:
        [delivery_id] = await producer.webhook("cb", endpoints=[on]).fire("e", {})
    worker = make_kit(lambda: other, clock)
    worker.webhook("cb", endpoints=lambda: listed)
    async with worker:
        await status_of(worker, delivery_id, "held")
        listed.append(on)
        clock.advance(1.0)  # within a second, as definitions: not at the next poll
        await status_of(worker, delivery_id, "completed")


async def test_enabling_an_endpoint_releases_what_another_process_held_a_moment_ago(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    # The operator's copy of the definitions still shows it enabled: it releases anyway.
    shared, other = two_processes(make_backend)
    clock = FakeClock()
    worker = make_kit(lambda: shared, clock)
    operator = make_kit(lambda: other, clock, dispatch=False)
    endpoint = Endpoint("a", receiver.url("/a"), ["**"])
    on_worker = worker.webhook("w", endpoints=[endpoint])
    on_operator = operator.webhook("w", endpoints=[endpoint])
    async with worker, operator:
        await operator.current_definitions()
        await on_worker.update_endpoint("a", enabled=False)
        [delivery_id] = await on_operator.fire("e", {})  # its copy: still enabled
        await status_of(worker, delivery_id, "held")
        await on_operator.update_endpoint("a", enabled=True)
        clock.advance(5.0)  # a poll of the backends that cannot tell the worker at once
        await status_of(worker, delivery_id, "completed")


async def test_operations_read_the_definitions_and_take_only_str_ids(
    make_backend: BackendFactory,
) -> None:
    # A webhook created in another process can be paused here once the copy here is stale;
    # a delivery id that is not a str is refused alike on every backend, and an empty cursor
    # is the first page.
    clock = FakeClock()
    shared, other = two_processes(make_backend)
    a = make_kit(lambda: shared, clock, dispatch=False)
    b = make_kit(lambda: other, clock, dispatch=False)
    async with a, b:
        hook = await a.create_webhook("rt", endpoints=[Endpoint("x", URL, ["**"])])
        [queued] = await hook.fire("e", {})
        clock.advance(2.0)
        assert await b.pause_webhook("rt") == 1
        assert await b.resume_webhook("rt") == 1
        for operation in (b.get_delivery, b.cancel_delivery, b.resend_webhook):
            with pytest.raises(ConfigurationError, match="a delivery id is a str, not a int"):
                await operation(5)  # type: ignore[arg-type]
        assert [d.id for d in await b.list_deliveries(cursor="")] == [queued]


async def one_wins(
    kits: tuple[OqronKit, OqronKit], attempt: Callable[[OqronKit, str], Awaitable[object]]
) -> str:
    """Runs `attempt(kit, "a")` and `attempt(kit, "b")` on the two kits at once: one must
    succeed and the other be refused. Returns the winner's tag."""
    outcomes: dict[str, bool] = {}

    async def run(kit: OqronKit, tag: str) -> None:
        try:
            await attempt(kit, tag)
            outcomes[tag] = True
        except ConfigurationError:
            outcomes[tag] = False

    async with anyio.create_task_group() as tg:
        for kit, tag in zip(kits, "ab", strict=True):
            tg.start_soon(run, kit, tag)
    [winner] = [tag for tag, won in outcomes.items() if won]
    assert len(outcomes) == 2
    return winner


async def test_two_processes_creating_one_name_at_once_one_wins_whole(
    make_backend: BackendFactory,
) -> None:
    # Both pass their own check; the backend lets one in, with its endpoints only.
    shared, other = two_processes(make_backend)
    first, second = OqronKit(shared, dispatch=False), OqronKit(other, dispatch=False)
    async with first, second:
        winner = await one_wins(
            (first, second),
            lambda kit, tag: kit.create_webhook("rt", endpoints=[Endpoint(tag, URL, ["**"])]),
        )
        await first.refresh_definitions()
        assert [e.name for e in await first.get_webhook("rt").endpoints()] == [winner]


async def test_two_processes_adding_one_endpoint_name_at_once_one_wins(
    make_backend: BackendFactory,
) -> None:
    shared, other = two_processes(make_backend)
    first, second = OqronKit(shared, dispatch=False), OqronKit(other, dispatch=False)
    async with first, second:
        await first.create_webhook("rt", endpoints=[Endpoint("a", URL, ["**"])])
        await second.refresh_definitions()
        winner = await one_wins(
            (first, second),
            lambda kit, tag: kit.get_webhook("rt").add_endpoint(
                Endpoint("x", f"https://{tag}.example/", ["**"])
            ),
        )
        await first.refresh_definitions()
        [x] = [e for e in await first.get_webhook("rt").endpoints() if e.name == "x"]
        assert x.url == f"https://{winner}.example/"


async def test_an_endpoint_added_again_never_gets_what_a_stale_kit_fired_to_the_removed_one(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    clock = FakeClock()
    shared, other = two_processes(make_backend)
    a = OqronKit(shared, dispatch=False, clock=clock)
    b = OqronKit(other, dispatch=False, clock=clock)
    async with a, b:
        hook = await a.create_webhook("rt", endpoints=[Endpoint("x", receiver.url("/x"), ["**"])])
        await b.refresh_definitions()
        stale = b.get_webhook("rt")
        await hook.remove_endpoint("x")
        [late] = await stale.fire("e", {})  # b has not seen the removal yet
        # An endpoint added under the name is another tenant's, say: the old payload is not
        # released to it, it is cancelled with the removal's reason.
        await hook.add_endpoint(Endpoint("x", receiver.url("/new"), ["**"]))
        discarded = await a.get_delivery(late)
        assert discarded is not None and discarded.status == "cancelled"
        assert discarded.error == ENDPOINT_REMOVED
        [fresh] = await hook.fire("e", {})
        assert (await a.get_delivery(fresh)).status == "waiting"  # type: ignore[union-attr]


async def test_a_second_process_cannot_create_over_what_the_first_just_created(
    make_backend: BackendFactory,
) -> None:
    """Its copy of the definitions may be a second old: it reads them again first, so it is
    refused instead of overwriting the webhook's settings and merging the endpoint sets."""
    shared, other = two_processes(make_backend)
    first, second = OqronKit(shared, dispatch=False), OqronKit(other, dispatch=False)
    async with first, second:
        await second.current_definitions()  # a copy from before the creation
        hook = await first.create_webhook(
            "rt", security=Security("s"), endpoints=[Endpoint("a", URL, ["a.*"])]
        )
        with pytest.raises(ConfigurationError, match="already defined"):
            await second.create_webhook("rt", endpoints=[Endpoint("b", URL, ["b.*"])])
        await hook.add_endpoint(Endpoint("x", URL, ["x.*"]))
        with pytest.raises(ConfigurationError, match="already has an endpoint 'x'"):
            await second.get_webhook("rt").add_endpoint(Endpoint("x", "https://b.example/", ["*"]))
        await first.refresh_definitions()
        endpoints = await first.get_webhook("rt").endpoints()
        assert [(e.name, e.url) for e in endpoints] == [("a", URL), ("x", URL)]


def test_a_webhook_defined_from_another_thread_is_dispatched_on_the_kits_loop(
    receiver: Receiver, tmp_path: Path
) -> None:
    # The kit runs in a thread of its own (beside a web app, say); the app's thread defines a
    # webhook and fires: its dispatcher starts on the kit's loop, not the caller's (or none).
    kit = OqronKit(SQLiteBackend(tmp_path / "oqronkit.db"), allow_private_networks=True)
    running, stop = threading.Event(), threading.Event()

    async def run_kit() -> None:
        async with kit:
            running.set()
            await anyio.to_thread.run_sync(stop.wait)

    thread = threading.Thread(target=anyio.run, args=(run_kit,))
    thread.start()
    try:
        assert running.wait(10)
        hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
        [delivery_id] = hook.fire_sync("e", {})
        deadline = time.monotonic() + 10
        while not receiver.received("/a") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r.headers["x-oqron-delivery"] for r in receiver.received("/a")] == [delivery_id]
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
