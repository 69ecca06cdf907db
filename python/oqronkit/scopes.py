"""Cancel scopes for the per-delivery path, at Trio's own price when running on Trio, and the
watchdog that gives them their deadlines.

On Trio, an `anyio.CancelScope` is a wrapper around a `trio.CancelScope`, reached through a
backend lookup each time one is made, and counted with callgrind the wrapper is 30% of a
scope's cost. `cancel_scope` gives Trio's own scope inside a Trio task, anyio's anywhere else
(asyncio, or an asyncio task hosting Trio in guest mode); both do what the `CancelScope`
protocol below says.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

import anyio
import anyio.abc
import trio


class CancelScope(Protocol):
    """What both anyio's and Trio's cancel scopes offer, as the delivery path uses them."""

    @property
    def cancel_called(self) -> bool: ...

    @property
    def cancelled_caught(self) -> bool: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> CancelScope: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None: ...


def in_trio_task() -> bool:
    """Whether the calling task is a Trio task (checked per task: guest mode mixes both)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def cancel_scope(*, deadline: float = math.inf) -> CancelScope:
    """A cancel scope for the running event loop, cancelled at `deadline` (its clock)."""
    if in_trio_task():
        return trio.CancelScope(deadline=deadline)
    return anyio.CancelScope(deadline=deadline)


class Watchdog:
    """Cancels each armed scope whose deadline passes, from one task of its own (run it with
    `async with`). A delivery's request and its hook each get a deadline for part of a
    scope's life; moving a Trio scope's deadline there and back costs ~33 k instructions (a
    generator context manager and the runner's deadline heap each way), arming a timer here
    one heap push. The task sleeps until the earliest deadline and is woken only when a new
    one comes before it (when busy, about once per shortest timeout). A disarmed timer waits
    in the heap until it reaches the top, or until most of the heap is disarmed and it is
    rebuilt, so the heap stays about as large as the calls in flight."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # ties in the heap never compare timers
        self._armed = 0
        self._wakes_at = math.inf  # the task's next wake-up
        self._wake: anyio.Event | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        # The event loop's clock, which deadlines count on: Trio's own on Trio (anyio's costs
        # three times as much, with its backend lookup), set for each run.
        self.clock: Callable[[], float] = anyio.current_time

    def arm(self, scope: CancelScope, deadline: float) -> Timer:
        """Cancels `scope` at `deadline` (the event loop's clock) unless disarmed first."""
        timer = Timer(self, scope)
        heap = self._heap
        while heap and heap[0][2].scope is None:  # calls done since: nothing to watch
            heapq.heappop(heap)
        heapq.heappush(heap, (deadline, next(self._order), timer))
        self._armed += 1
        if deadline < self._wakes_at:
            self._wakes_at = deadline
            if self._wake is not None:
                self._wake.set()
        return timer

    def _disarmed(self) -> None:
        self._armed -= 1
        if len(self._heap) > 4 * self._armed + 64:  # mostly done calls behind a slow one
            self._heap = [entry for entry in self._heap if entry[2].scope is not None]
            heapq.heapify(self._heap)

    async def _watch(self) -> None:
        while True:
            heap, now = self._heap, self.clock()
            while heap and (heap[0][2].scope is None or heap[0][0] <= now):
                timer = heapq.heappop(heap)[2]
                if timer.scope is not None:
                    timer.scope.cancel()
                    timer.disarm()
            if self._wakes_at <= now:  # its time came: on to the earliest deadline left
                self._wakes_at = heap[0][0] if heap else math.inf
            # Otherwise it was woken for an earlier deadline, `arm`'s `_wakes_at`: it waits
            # for that even if its call is done by now (short calls, hooks, are usually done
            # before this task runs, and looking past them would have the next one wake it).
            self._wake = anyio.Event()
            with anyio.CancelScope(deadline=self._wakes_at):
                await self._wake.wait()

    async def __aenter__(self) -> Watchdog:
        # A run of its own: deadlines from an earlier one count on another loop's clock.
        self._heap, self._armed, self._wakes_at = [], 0, math.inf
        self.clock = trio.current_time if in_trio_task() else anyio.current_time
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._watch, name="oqronkit watchdog")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        try:
            await self._task_group.__aexit__(None, None, None)
        finally:
            # Its event belongs to this run's event loop; a later run (the kit's next `async
            # with`, maybe on another loop) makes its own.
            self._task_group = self._wake = None


class Timer:
    """A scope's deadline, armed with a `Watchdog`."""

    __slots__ = ("_watchdog", "scope")

    def __init__(self, watchdog: Watchdog, scope: CancelScope) -> None:
        self._watchdog = watchdog
        self.scope: CancelScope | None = scope  # None once disarmed or fired

    def disarm(self) -> None:
        """The call is done: its scope is not to be cancelled (a second call does nothing)."""
        if self.scope is not None:
            self.scope = None
            self._watchdog._disarmed()
