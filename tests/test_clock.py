"""The injectable clock the tests (and users' tests) drive time with."""

from __future__ import annotations

import anyio
import pytest

from oqronkit import FakeClock

pytestmark = pytest.mark.anyio


async def test_a_fake_clock_wakes_sleepers_when_due_and_forgets_those_woken_early() -> None:
    clock = FakeClock()
    woken: list[float] = []

    async def sleeper(event: anyio.Event, seconds: float) -> None:
        await clock.wait(event, clock.now() + seconds)
        woken.append(seconds)

    async with anyio.create_task_group() as tg:
        for _ in range(1000):  # a dispatcher woken by new work, over and over
            early = anyio.Event()
            tg.start_soon(sleeper, early, 60.0)
            await anyio.wait_all_tasks_blocked()
            early.set()
        tg.start_soon(sleeper, anyio.Event(), 5.0)
        await anyio.wait_all_tasks_blocked()
        assert clock.next_wakeup() == clock.now() + 5.0
        clock.advance(5.0)
    assert len(woken) == 1001 and woken[-1] == 5.0
    assert len(clock._sleepers) < 100  # not a thousand woken ones kept for ever
