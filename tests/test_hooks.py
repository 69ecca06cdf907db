"""HookPool: hooks run beside the work that fired them, each cut off (and logged) after the
timeout, with the worker going on; exceptions are logged and change nothing."""

from __future__ import annotations

import logging
import threading

import anyio
import pytest

from oqronkit.hooks import HOOK_THREADS, HookPool
from oqronkit.scopes import Watchdog

pytestmark = pytest.mark.anyio


async def test_a_hook_past_the_timeout_is_cut_off_logged_and_its_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[tuple[str, object]] = []

    async def hang(subject: str) -> None:
        ran.append((subject, anyio.get_current_task().id))
        await anyio.sleep_forever()

    async def note(subject: str) -> None:
        ran.append((subject, anyio.get_current_task().id))

    def timed_out() -> list[str]:
        return [r.getMessage() for r in caplog.records if "timed out" in r.getMessage()]

    with anyio.fail_after(5):
        async with Watchdog() as watchdog, anyio.create_task_group() as tg:
            hooks = HookPool(tg, 0.05, watchdog)
            hooks.start_soon(hang, "first")
            while not timed_out():
                await anyio.sleep(0.01)
            hooks.start_soon(note, "second")  # on the worker that was cut off
            hooks.close()
    assert [subject for subject, _ in ran] == ["first", "second"]
    assert ran[0][1] == ran[1][1]
    assert len(timed_out()) == 1 and "hang" in timed_out()[0]


async def test_hooks_within_the_timeout_and_failing_hooks_are_not_timeouts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fails(subject: str) -> None:  # a plain function runs in a thread
        raise ValueError(subject)

    async def note(subject: str) -> None:
        await anyio.lowlevel.checkpoint()

    with caplog.at_level(logging.ERROR, logger="oqronkit"):
        async with Watchdog() as watchdog, anyio.create_task_group() as tg:
            hooks = HookPool(tg, 10.0, watchdog)
            for n in range(3):
                hooks.start_soon(note, str(n))
            hooks.start_soon(fails, "boom")
            hooks.close()
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "timed out" in m]
    assert len([m for m in messages if "raised" in m]) == 1


async def test_plain_hooks_queued_for_a_thread_are_not_timed_out_unrun(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every hook thread is held past the timeout; the hooks behind them run once threads
    # free up: the timeout counts from a hook's start, not from when it was given.
    release, ran = threading.Event(), []

    def slow(subject: int) -> None:
        ran.append(subject)
        release.wait()

    def timed_out() -> int:
        return sum("timed out" in r.getMessage() for r in caplog.records)

    with anyio.fail_after(10):
        async with Watchdog() as watchdog, anyio.create_task_group() as tg:
            hooks = HookPool(tg, 0.05, watchdog)
            for n in range(HOOK_THREADS + 8):
                hooks.start_soon(slow, n)
            while timed_out() < HOOK_THREADS:
                await anyio.sleep(0.01)
            await anyio.sleep(0.1)  # well past the timeout of the hooks still waiting
            release.set()
            while len(ran) < HOOK_THREADS + 8:
                await anyio.sleep(0.01)
            hooks.close()
    assert sorted(ran) == list(range(HOOK_THREADS + 8))
    assert not [r for r in caplog.records if "not run" in r.getMessage()]


async def test_at_close_hooks_waiting_behind_hung_ones_are_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hung = threading.Event()
    try:
        with anyio.fail_after(10):
            async with Watchdog() as watchdog, anyio.create_task_group() as tg:
                hooks = HookPool(tg, 0.05, watchdog)
                for _ in range(HOOK_THREADS + 2):
                    hooks.start_soon(lambda _: hung.wait(), "x")
                while sum("timed out" in r.getMessage() for r in caplog.records) < HOOK_THREADS:
                    await anyio.sleep(0.01)
                hooks.close()  # the two still waiting are given up: the exit is not held
    finally:
        hung.set()
    # On Trio an abandoned thread keeps its token: the two are given up; asyncio's limiter
    # lets them have fresh threads, where they time out. Either way the exit is not held.
    given_up = sum("was not run" in r.getMessage() for r in caplog.records)
    timed_out = sum("timed out" in r.getMessage() for r in caplog.records)
    assert (given_up, timed_out) in ((2, HOOK_THREADS), (0, HOOK_THREADS + 2))
