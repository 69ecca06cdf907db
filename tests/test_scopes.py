"""cancel_scope: Trio's own scope in a Trio task, anyio's elsewhere, and both behave alike.
Watchdog: cancels the scopes whose armed deadline passed, and only those."""

from __future__ import annotations

import anyio
import pytest
import trio

from oqronkit.scopes import Watchdog, cancel_scope, in_trio_task

pytestmark = pytest.mark.anyio


async def test_the_scope_is_the_running_loops_own(anyio_backend: str) -> None:
    scope = cancel_scope()
    assert in_trio_task() is (anyio_backend == "trio")
    assert isinstance(scope, trio.CancelScope) is (anyio_backend == "trio")
    if anyio_backend != "trio":
        assert isinstance(scope, anyio.CancelScope)


async def test_a_deadline_cancels_and_is_caught() -> None:
    with cancel_scope(deadline=anyio.current_time() + 0.01) as scope:
        await anyio.sleep_forever()
    assert scope.cancel_called and scope.cancelled_caught


async def test_cancel_before_entering_cancels_at_the_first_checkpoint() -> None:
    scope = cancel_scope()
    scope.cancel()
    reached = False
    with scope:
        await anyio.lowlevel.checkpoint()
        reached = True
    assert not reached and scope.cancelled_caught


async def test_a_scope_left_alone_catches_nothing() -> None:
    with cancel_scope(deadline=anyio.current_time() + 60) as scope:
        await anyio.lowlevel.checkpoint()
    assert not scope.cancel_called and not scope.cancelled_caught


async def test_the_watchdog_cancels_a_scope_at_its_deadline() -> None:
    with anyio.fail_after(5):
        async with Watchdog() as watchdog:
            with cancel_scope() as scope:
                watchdog.arm(scope, anyio.current_time() + 0.01)
                await anyio.sleep_forever()
    assert scope.cancelled_caught


async def test_a_disarmed_timer_cancels_nothing() -> None:
    async with Watchdog() as watchdog:
        with cancel_scope() as spared:
            watchdog.arm(spared, anyio.current_time() + 0.01).disarm()
            # A later deadline on another scope: once it fires, the first one's has passed.
            with cancel_scope() as sentinel:
                watchdog.arm(sentinel, anyio.current_time() + 0.02)
                await anyio.sleep_forever()
            await anyio.lowlevel.checkpoint()
    assert sentinel.cancelled_caught and not spared.cancel_called


async def test_an_earlier_deadline_wakes_the_watchdog() -> None:
    with anyio.fail_after(5):
        async with Watchdog() as watchdog:
            with cancel_scope() as late:
                watchdog.arm(late, anyio.current_time() + 3600)
                await anyio.wait_all_tasks_blocked()  # the watchdog sleeps until then
                with cancel_scope() as soon:
                    watchdog.arm(soon, anyio.current_time() + 0.01)
                    await anyio.sleep_forever()
    assert soon.cancelled_caught and not late.cancel_called


async def test_done_calls_behind_a_slow_one_do_not_pile_up() -> None:
    async with Watchdog() as watchdog:
        slow = watchdog.arm(cancel_scope(), anyio.current_time() + 3600)
        for _ in range(10_000):
            watchdog.arm(cancel_scope(), anyio.current_time() + 60).disarm()
        assert len(watchdog._heap) <= 4 * 1 + 64 + 1
        slow.disarm()
