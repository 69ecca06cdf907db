"""`create_circuit_breaker` around the caller's own calls: sync, async (Trio and asyncio),
decorator, and cancellation that is no verdict."""

from __future__ import annotations

import anyio
import pytest

from oqronkit import Breaker, CircuitOpenError, ConfigurationError, create_circuit_breaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> Breaker:
    return create_circuit_breaker(failure_threshold=2, reset_timeout=10.0, clock=clock)


def fail(breaker: Breaker) -> None:
    with pytest.raises(Boom), breaker:
        raise Boom


def test_opens_after_consecutive_failures_and_recovers(breaker: Breaker, clock: FakeClock) -> None:
    fail(breaker)
    with breaker:
        pass  # a success resets the count
    fail(breaker)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"
    clock.now += 4
    with pytest.raises(CircuitOpenError) as refused, breaker:
        pytest.fail("must not run while open")
    assert refused.value.retry_after == pytest.approx(6.0)
    clock.now += 6
    with breaker:  # the probe
        assert breaker.state == "half_open"
    assert breaker.state == "closed"


def test_probe_failure_reopens_with_a_fresh_timer(breaker: Breaker, clock: FakeClock) -> None:
    fail(breaker)
    fail(breaker)
    clock.now += 10
    fail(breaker)
    assert breaker.state == "open"
    clock.now += 9.9
    with pytest.raises(CircuitOpenError), breaker:
        pass


def test_failure_on_selects_what_counts(clock: FakeClock) -> None:
    breaker = create_circuit_breaker(1, 10.0, failure_on=(ConnectionError,), clock=clock)
    with pytest.raises(KeyError), breaker:
        raise KeyError("the service answered; the caller's bug")
    assert breaker.state == "closed"
    with pytest.raises(ConnectionError), breaker:
        raise ConnectionError
    assert breaker.state == "open"


def test_decorates_sync_functions(breaker: Breaker) -> None:
    calls = []

    @breaker
    def call(x: int) -> int:
        calls.append(x)
        if x < 0:
            raise Boom
        return x * 2

    assert call(2) == 4
    for _ in range(2):
        with pytest.raises(Boom):
            call(-1)
    with pytest.raises(CircuitOpenError):
        call(3)
    assert calls == [2, -1, -1]
    assert call.__name__ == "call"


@pytest.mark.anyio
async def test_async_context_and_decorator(breaker: Breaker, clock: FakeClock) -> None:
    @breaker
    async def call(ok: bool) -> str:
        await anyio.sleep(0)
        if not ok:
            raise Boom
        return "done"

    assert await call(True) == "done"
    for _ in range(2):
        with pytest.raises(Boom):
            await call(False)
    with pytest.raises(CircuitOpenError):
        async with breaker:
            pass
    clock.now += 10
    async with breaker:
        await anyio.sleep(0)
    assert breaker.state == "closed"


@pytest.mark.anyio
async def test_cancelled_probe_is_no_verdict_and_frees_its_slot(
    breaker: Breaker, clock: FakeClock
) -> None:
    fail(breaker)
    fail(breaker)
    clock.now += 10
    with anyio.CancelScope() as scope:
        async with breaker:
            scope.cancel()
            await anyio.sleep(1)
    assert breaker.state == "half_open"
    async with breaker:  # the slot came back, so a new probe may go
        pass
    assert breaker.state == "closed"


@pytest.mark.anyio
async def test_a_call_cut_short_frees_no_probe_slot_unless_it_is_a_probe(
    breaker: Breaker, clock: FakeClock
) -> None:
    """A slow call let through while closed, cancelled once the breaker is half-open, holds no
    probe slot and so frees none: the probe in flight stays the only one."""
    slow_scope = anyio.CancelScope()
    slow_in, probe_in = anyio.Event(), anyio.Event()

    async def slow_call() -> None:
        with slow_scope:
            async with breaker:  # closed: no probe
                slow_in.set()
                await probe_in.wait()
                slow_scope.cancel()
                await anyio.sleep(1)

    async def probe_call() -> None:
        async with breaker:  # half-open: the probe
            probe_in.set()
            await anyio.sleep(0.05)  # in flight while the slow call is cut short
            with pytest.raises(CircuitOpenError):
                async with breaker:  # still only one probe at a time
                    pass

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(slow_call)
        await slow_in.wait()
        fail(breaker)
        fail(breaker)
        clock.now += 10
        tasks.start_soon(probe_call)
    assert breaker.state == "closed"  # the probe succeeded


@pytest.mark.anyio
async def test_a_call_that_ends_in_another_task_is_judged_all_the_same(
    breaker: Breaker, clock: FakeClock
) -> None:
    """`__aexit__` in another task than `__aenter__` (an exit stack handed over, an async
    generator finalised elsewhere): the verdict counts; a call cut short there frees nothing."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(breaker.__aenter__)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(breaker.__aexit__, Boom, Boom(), None)
    fail(breaker)
    assert breaker.state == "open"  # both failures counted
    clock.now += 10
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(breaker.__aenter__)  # the probe
    async with anyio.create_task_group() as tasks:  # as when an async generator is closed
        tasks.start_soon(breaker.__aexit__, GeneratorExit, GeneratorExit(), None)
    with pytest.raises(CircuitOpenError):  # not known to be the probe: no slot given back
        async with breaker:
            pass
    clock.now += 10  # the probe is presumed lost
    async with breaker:
        pass
    assert breaker.state == "closed"


def test_bad_policy_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="failure_threshold"):
        create_circuit_breaker(failure_threshold=0)


def test_repr(breaker: Breaker) -> None:
    assert repr(breaker) == (
        "Breaker(state='closed', failure_threshold=2, reset_timeout=10.0, half_open_max=1)"
    )
