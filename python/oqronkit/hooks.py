"""User hooks (`on_success`, `on_failure`, `on_dead`, the kit's `on_event`): run on a pool of
reused tasks, each under the hook timeout; an exception is logged and never changes the
delivery."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import RunVar

from oqronkit.models import Delivery
from oqronkit.scopes import CancelScope, Timer, Watchdog
from oqronkit.taskpool import TaskPool

log = logging.getLogger("oqronkit")

Hook: TypeAlias = Callable[[Delivery], None] | Callable[[Delivery], Awaitable[None]]


_NOT_RUN = "hook %s was not run (%s): no hook thread came free in time (hung plain hooks?)"
# Seconds a plain hook may wait for a thread (the hook timeout, if longer): a burst queues,
# but behind hung hooks (which keep their threads on Trio) the queue must not grow for ever.
THREAD_PATIENCE = 60.0


class HookPool:
    """Where hooks run: beside the work that fired them (a slow hook holds no delivery's slot),
    each cut off after `timeout` seconds by `watchdog`. Hooks fired together run one after
    another on one task while none of them waits (a `burst` pool): most hooks are quick, and a
    task switch each would cost more than many of them. A plain hook's timeout starts with its
    thread: a burst of them waits its turn for one of the `HOOK_THREADS`, up to
    `THREAD_PATIENCE`. After `close`, hooks already given may still finish, within their
    timeout, and wait for a thread no longer than that."""

    def __init__(self, task_group: TaskGroup, timeout: float, watchdog: Watchdog) -> None:
        self._pool = TaskPool(task_group, burst=True)
        self._timeout = timeout
        self._watchdog = watchdog
        # Plain hooks waiting for a thread, with the timer that gives up the wait.
        self._waiting: dict[CancelScope, Timer] = {}
        self._closed = False

    def start_soon(self, hook: Callable[[Any], Any], subject: Any) -> None:
        self._pool.start_soon(self._run, hook, subject)

    def close(self) -> None:
        self._closed = True
        self._pool.close()
        for scope in list(self._waiting):
            self._wait_for_thread(scope, self._timeout)

    def _wait_for_thread(self, scope: CancelScope, patience: float) -> None:
        self._stop_waiting(scope)
        self._waiting[scope] = self._watchdog.arm(scope, self._watchdog.clock() + patience)

    def _stop_waiting(self, scope: CancelScope) -> None:
        waited = self._waiting.pop(scope, None)
        if waited is not None:
            waited.disarm()

    async def _run(self, scope: CancelScope, hook: Callable[[Any], Any], subject: Any) -> None:
        timer: Timer | None = None

        def start() -> bool:  # on the loop, as the hook begins: its timeout starts
            nonlocal timer
            if scope not in self._waiting:
                return False  # given up meanwhile: its scope may be another call's by now
            self._stop_waiting(scope)
            timer = self._watchdog.arm(scope, self._watchdog.clock() + self._timeout)
            return True

        def in_thread() -> Any:
            return hook(subject) if anyio.from_thread.run_sync(start) else None

        try:
            if inspect.iscoroutinefunction(hook):
                timer = self._watchdog.arm(scope, self._watchdog.clock() + self._timeout)
                await hook(subject)
            else:
                patience = self._timeout if self._closed else max(self._timeout, THREAD_PATIENCE)
                self._wait_for_thread(scope, patience)
                result = await anyio.to_thread.run_sync(
                    in_thread, abandon_on_cancel=True, limiter=_hook_threads()
                )
                if inspect.isawaitable(result):
                    await result
        except anyio.get_cancelled_exc_class():
            if timer is not None and scope.cancel_called:  # its timer, once it had begun
                log.error(
                    "hook %s timed out after %gs (%s)", *_labels(hook, subject, self._timeout)
                )
            elif timer is None and scope.cancel_called:
                log.error(_NOT_RUN, *_labels(hook, subject))
            raise
        except Exception:
            log.exception("hook %s raised (%s); nothing is changed by it", *_labels(hook, subject))
        finally:
            self._stop_waiting(scope)
            if timer is not None:
                timer.disarm()


# Sync hooks' threads: their own, per event loop. A hook that hangs is abandoned at its timeout
# but keeps its thread; on the shared default limiter (40 on Trio, which also serves DNS
# lookups) enough of them would stall every later hook, and new connections.
HOOK_THREADS = 32
_HOOK_THREADS: RunVar[anyio.CapacityLimiter] = RunVar("oqronkit_hook_threads")


def _hook_threads() -> anyio.CapacityLimiter:
    try:
        return _HOOK_THREADS.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(HOOK_THREADS)
        _HOOK_THREADS.set(limiter)
        return limiter


def _labels(hook: Callable[[Any], Any], subject: Any, *more: Any) -> tuple[Any, ...]:
    """The hook's name and what it was called about, for a log line (made only when one is)."""
    name = getattr(hook, "__qualname__", None) or repr(hook)
    about = getattr(subject, "id", None) or getattr(subject, "kind", "")
    return (name, *more, about)
