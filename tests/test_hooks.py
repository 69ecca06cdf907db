"""HookPool: hooks run beside the work that fired them, each cut off (and logged) after the
timeout, with the worker going on; exceptions are logged and change nothing."""

from __future__ import annotations

import logging

import anyio
import pytest

from oqronkit.hooks import HookPool
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
