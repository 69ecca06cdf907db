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
from oqronkit.scopes import CancelScope, Watchdog
from oqronkit.taskpool import TaskPool

log = logging.getLogger("oqronkit")

Hook: TypeAlias = Callable[[Delivery], None] | Callable[[Delivery], Awaitable[None]]


class HookPool:
    """Where hooks run: beside the work that fired them (a slow hook holds no delivery's slot),
    each cut off after `timeout` seconds by `watchdog`. Hooks fired together run one after
    another on one task while none of them waits (a `burst` pool): most hooks are quick, and a
    task switch each would cost more than many of them. After `close`, hooks already started
    or given may still finish, within their timeout."""

    def __init__(self, task_group: TaskGroup, timeout: float, watchdog: Watchdog) -> None:
        self._pool = TaskPool(task_group, burst=True)
        self._timeout = timeout
        self._watchdog = watchdog

    def start_soon(self, hook: Callable[[Any], Any], subject: Any) -> None:
        self._pool.start_soon(self._run, hook, subject)

    def close(self) -> None:
        self._pool.close()

    async def _run(self, scope: CancelScope, hook: Callable[[Any], Any], subject: Any) -> None:
        timer = self._watchdog.arm(scope, self._watchdog.clock() + self._timeout)
        try:
            await _call(hook, subject)
        except anyio.get_cancelled_exc_class():
            if scope.cancel_called:  # only its timer cancels a hook's scope
                log.error(
                    "hook %s timed out after %gs (%s)", *_labels(hook, subject, self._timeout)
                )
            raise
        finally:
            timer.disarm()


async def _call(hook: Callable[[Any], Any], subject: Any) -> None:
    """Calls `hook(subject)`: a coroutine function on the loop, anything else in a thread."""
    try:
        if inspect.iscoroutinefunction(hook):
            await hook(subject)
        else:
            result = await anyio.to_thread.run_sync(
                hook, subject, abandon_on_cancel=True, limiter=_hook_threads()
            )
            if inspect.isawaitable(result):
                await result
    except Exception:
        log.exception("hook %s raised (%s); nothing is changed by it", *_labels(hook, subject))


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
