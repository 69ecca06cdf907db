"""User hooks (`on_success`, `on_failure`, `on_dead`, the kit's `on_event`): run on a pool of
reused tasks, each under the hook timeout; an exception is logged and never changes the
delivery."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import anyio
from anyio.abc import TaskGroup

from oqronkit.models import Delivery
from oqronkit.scopes import Watchdog
from oqronkit.taskpool import TaskPool

log = logging.getLogger("oqronkit")

Hook: TypeAlias = Callable[[Delivery], None] | Callable[[Delivery], Awaitable[None]]


def hook_pool(task_group: TaskGroup, timeout: float, watchdog: Watchdog) -> TaskPool:
    """Where hooks run: beside the work that fired them, each cut off after `timeout`."""
    return TaskPool(
        task_group,
        timeout=timeout,
        watchdog=watchdog,
        on_timeout=functools.partial(_timed_out, timeout),
    )


async def run_hook(hook: Callable[[Any], Any], subject: Any) -> None:
    """Calls `hook(subject)`: a coroutine function on the loop, anything else in a thread.
    Its timeout is the `hook_pool`'s."""
    try:
        if inspect.iscoroutinefunction(hook):
            await hook(subject)
        else:
            result = await anyio.to_thread.run_sync(hook, subject, abandon_on_cancel=True)
            if inspect.isawaitable(result):
                await result
    except Exception:
        log.exception("hook %s raised (%s); nothing is changed by it", *_labels(hook, subject))


def _timed_out(timeout: float, call: Callable[..., Any], args: tuple[Any, ...]) -> None:
    hook, subject = args
    log.error("hook %s timed out after %gs (%s)", *_labels(hook, subject, timeout))


def _labels(hook: Callable[[Any], Any], subject: Any, *more: Any) -> tuple[Any, ...]:
    """The hook's name and what it was called about, for a log line (made only when one is)."""
    name = getattr(hook, "__qualname__", None) or repr(hook)
    about = getattr(subject, "id", None) or getattr(subject, "kind", "")
    return (name, *more, about)
