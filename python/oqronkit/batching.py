"""Group commit: calls that arrive while one is on its way to the backend go together in the
next one. Under load a round trip then carries many attempts' work; with one caller at a time
it costs nothing but a flag.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # its result


class _Call(Generic[I, R]):
    __slots__ = ("error", "finished", "item", "result", "wake")

    def __init__(self, item: I) -> None:
        self.item = item
        self.result: R | None = None
        self.error: BaseException | None = None
        self.finished = False
        # Set once finished, or to hand this call the lead; made only by a call that waits.
        self.wake: anyio.Event | None = None


class GroupCommit(Generic[I, R]):
    """`await commit(item)` runs `run([item, ...])` (results in the items' order) with every
    item asked for meanwhile. Each caller leads at most one round trip, so no caller waits
    behind an endless stream of others; a call asked for is always seen through (shielded)."""

    def __init__(self, run: Callable[[list[I]], Awaitable[Sequence[R]]]) -> None:
        self._run = run
        self._pending: list[_Call[I, R]] = []
        self._busy = False

    async def __call__(self, item: I) -> R:
        call: _Call[I, R] = _Call(item)
        self._pending.append(call)
        with anyio.CancelScope(shield=True):
            if self._busy:  # finished by another caller's round trip, or handed the lead
                call.wake = anyio.Event()
                await call.wake.wait()
            if not call.finished:
                self._busy = True
                batch, self._pending = self._pending, []
                await self._commit(batch)
                if self._pending:  # asked for meanwhile: the first of them leads the next trip
                    self._wake(self._pending[0])
                else:
                    self._busy = False
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]  # set by _commit

    async def _commit(self, batch: list[_Call[I, R]]) -> None:
        try:
            results = await self._run([call.item for call in batch])
            # A backend answering with the wrong number of results fails the trip, here:
            # outside, the batch would never be finished and every caller would wait forever.
            paired = list(zip(batch, results, strict=True))
        except BaseException as error:  # every caller of this batch hears of it
            for call in batch:
                call.error = error
        else:
            for call, result in paired:
                call.result = result
        for call in batch:
            call.finished = True
            self._wake(call)

    @staticmethod
    def _wake(call: _Call[I, R]) -> None:
        # Every call queued while a trip was busy made its event before it waited.
        if call.wake is not None:
            call.wake.set()
