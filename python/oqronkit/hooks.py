"""User hooks (`on_success`, `on_failure`, `on_dead`, the kit's `on_event`): run under a
timeout; an exception is logged and never changes the delivery."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import anyio

from oqronkit.models import Delivery
from oqronkit.scopes import cancel_scope

log = logging.getLogger("oqronkit")

Hook: TypeAlias = Callable[[Delivery], None] | Callable[[Delivery], Awaitable[None]]


async def run_hook(hook: Callable[[Any], Any], subject: Any, *, timeout: float) -> None:
    """Calls `hook(subject)`: a coroutine function on the loop, anything else in a thread."""
    try:
        with cancel_scope(deadline=anyio.current_time() + timeout) as deadline:
            if inspect.iscoroutinefunction(hook):
                await hook(subject)
            else:
                result = await anyio.to_thread.run_sync(hook, subject, abandon_on_cancel=True)
                if inspect.isawaitable(result):
                    await result
        if deadline.cancelled_caught:
            log.error("hook %s timed out after %gs (%s)", *_labels(hook, subject, timeout))
    except Exception:
        log.exception("hook %s raised (%s); nothing is changed by it", *_labels(hook, subject))


def _labels(hook: Callable[[Any], Any], subject: Any, *more: Any) -> tuple[Any, ...]:
    """The hook's name and what it was called about, for a log line (made only when one is)."""
    name = getattr(hook, "__qualname__", None) or repr(hook)
    about = getattr(subject, "id", None) or getattr(subject, "kind", "")
    return (name, *more, about)
