"""Calls run on reused tasks.

Starting an anyio task costs a task, a cancel scope and a handle, and its end costs their
teardown; a delivery attempt and its hook would pay both every time. A `TaskPool` hands a call
to a worker that is waiting for one, and starts a new worker only when none is: its workers
are as many as the most calls ever running at once, and they wait for more until it is closed.

A worker runs its calls inside one cancel scope of its own and hands it to each call, which may
cancel it, or arm a `Watchdog` timer on it, to be cut short; the worker then goes on in a fresh
scope. A scope per call would cost ~49 k instructions on Trio (counted with callgrind), a
deadline moved there and back ~33 k, and an attempt and its hook are a call each.

A worker woken for a call costs a task switch (~20 k). Calls that seldom wait, such as hooks,
can share one: in a `burst` pool, calls given while a worker is already on its way wait for
it, and a worker that takes a call with more still queued sends one more worker, so a call
that does wait holds up none of the others for longer than a scheduler pass.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import trio
from anyio.abc import TaskGroup

from oqronkit.scopes import cancel_scope, in_trio_task

Call = tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]


class TaskPool:
    """`start_soon` for calls that handle their own exceptions (one that raises ends its worker
    and, as any task would, fails the task group). Calls start in the order given. A call
    still waiting when the task group is cancelled never starts: the owner must see to it.
    Unlike tasks, calls on one worker share its context: a context variable one call sets is
    seen by the next.

    `start_soon(fn, *args)` calls `fn(scope, *args)`, where `scope` is the worker's cancel
    scope: cancelling it cuts the call short (the Cancelled ends the call; the worker catches it
    and renews its scope before it takes another call). Only the call may cancel it, and only
    while it runs: a reference kept past the call could cut another one short.

    With `burst`, calls given together run one after another on one worker for as long as
    they do not wait (see the module's docstring); without it, each call gets a worker at
    once, which suits calls that always wait, such as requests."""

    def __init__(self, task_group: TaskGroup, *, burst: bool = False) -> None:
        self._task_group = task_group
        self._burst = burst
        self._calls: deque[Call] = deque()
        self._idle: list[Callable[[], None]] = []  # one per parked worker: wakes it for work
        self._coming = 0  # workers woken or started that have not yet looked at `_calls`
        self._closed = False

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._calls.append((fn, args))
        if not (self._burst and self._coming):
            self._send_worker()

    def start_next(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """From within one of this pool's calls: `fn(scope, *args)` is the next call to start,
        on this call's worker once the call returns (or on one that gets there first). No
        worker is sent for it, so it costs no task switch."""
        self._calls.appendleft((fn, args))

    def close(self) -> None:
        """Lets the workers end once the calls given so far are done."""
        self._closed = True
        while self._idle:
            self._send_worker()

    def _send_worker(self) -> None:
        if self._idle:
            self._idle.pop()()
        else:
            self._task_group.start_soon(self._work)  # raises if the group has ended
        self._coming += 1

    async def _work(self) -> None:
        # On Trio, its own primitives: a hand-off through anyio's Event costs an event object,
        # a parking lot and anyio's wrappers, on every call (two per delivery).
        on_trio = in_trio_task()
        checkpoint = (
            trio.lowlevel.checkpoint_if_cancelled
            if on_trio
            else anyio.lowlevel.checkpoint_if_cancelled
        )
        park = self._park_on_trio if on_trio else self._park
        self._coming -= 1
        while True:
            with cancel_scope() as scope:  # renewed only after it cut a call short
                while True:
                    # Each call was matched to a woken or new worker, but any worker drains
                    # the queue: one woken for a call another already took just waits again.
                    if not self._calls:
                        if self._closed:
                            return
                        await park()
                        continue
                    await checkpoint()  # a cancelled pool starts none
                    fn, args = self._calls.popleft()
                    if self._burst and self._calls and not self._coming:
                        self._send_worker()  # in case this call waits
                    await fn(scope, *args)

    async def _park(self) -> None:
        ready = anyio.Event()
        wake = ready.set
        self._idle.append(wake)
        try:
            await ready.wait()
        finally:
            if ready.is_set():
                self._coming -= 1
            else:
                # Cancelled (a call may leave its worker's scope cancelled): a waker left
                # behind would be given the next call, and no worker would take it.
                self._idle.remove(wake)

    async def _park_on_trio(self) -> None:
        # The waker is taken off `_idle` before it is called, and a cancelled worker takes it
        # off itself: a task is never rescheduled twice.
        wake = functools.partial(trio.lowlevel.reschedule, trio.lowlevel.current_task())
        self._idle.append(wake)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._idle.remove(wake)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        self._coming -= 1
