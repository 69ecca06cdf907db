"""Time for the whole kit: timestamps, due times, leases, breaker and bucket `now`, and the
dispatcher's sleeps all come from one `Clock`, so tests can replace it with a `FakeClock` and run a
60-second backoff or a 30-second breaker timer instantly.

I/O deadlines (an HTTP attempt's timeout, the shutdown grace period) stay on real time: they guard
real sockets, which a fake clock cannot speed up.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Protocol

import anyio
import anyio.lowlevel


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    async def wait(self, event: anyio.Event, until: float | None) -> None:
        """Returns when `event` is set or the clock reaches `until` (None: only the event)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def wait(self, event: anyio.Event, until: float | None) -> None:
        if until is None:
            await event.wait()
            return
        with anyio.move_on_after(max(0.0, until - time.time())):
            await event.wait()


class FakeClock:
    """A clock that moves only when told to: `advance(seconds)` wakes every sleeper now due."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()
        self._prune_at = 64

    def now(self) -> float:
        return self._now

    async def wait(self, event: anyio.Event, until: float | None) -> None:
        if until is not None:
            if until <= self._now:
                await anyio.lowlevel.checkpoint()  # still a scheduling point, as a real sleep is
                return
            heapq.heappush(self._sleepers, (until, next(self._order), event))
            if len(self._sleepers) >= self._prune_at:
                # Sleepers woken by their event (a wake-up, not the clock) never leave by
                # themselves: drop them, amortised over the pushes since the last time.
                self._sleepers = [s for s in self._sleepers if not s[2].is_set()]
                heapq.heapify(self._sleepers)
                self._prune_at = max(64, 2 * len(self._sleepers))
        await event.wait()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            heapq.heappop(self._sleepers)[2].set()

    def next_wakeup(self) -> float | None:
        """When the earliest sleeper is due, if any (for tests that jump straight to it)."""
        while self._sleepers and self._sleepers[0][2].is_set():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None


async def sleep(clock: Clock, seconds: float) -> None:
    await clock.wait(anyio.Event(), clock.now() + seconds)
