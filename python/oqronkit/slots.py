"""A count of slots, for the kit's `max_connections`.

`anyio.CapacityLimiter` tracks which task holds each slot and, on Trio, wraps Trio's limiter,
which tracks them again: taking and giving back a slot cost ~2.5% of a delivery's CPU. A
request needs only the count, and a wait when none is free.
"""

from __future__ import annotations

from collections import deque

import anyio


class Slots:
    """At most `total` held at once. `acquire` returns at once, with no checkpoint, while a slot
    is free; otherwise it waits its turn (first come, first served)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._waiting: deque[anyio.Event] = deque()

    def __repr__(self) -> str:
        return f"Slots({self.held}/{self.total} held, {self.waiting} waiting)"

    @property
    def held(self) -> int:
        return self.total - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def acquire(self) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        handed = anyio.Event()  # set by `release`, which hands over its slot with it
        self._waiting.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():  # cancelled after the slot was handed over: pass it on
                self.release()
            else:
                self._waiting.remove(handed)
            raise

    def release(self) -> None:
        if self._waiting:
            self._waiting.popleft().set()
        else:
            self._free += 1
