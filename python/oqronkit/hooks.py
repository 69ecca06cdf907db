"""User hooks (`on_success`, `on_failure`, `on_dead`): run under a timeout; an exception is
logged and never changes the delivery."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import anyio

from oqronkit.models import Delivery

log = logging.getLogger("oqronkit")

Hook: TypeAlias = Callable[[Delivery], None] | Callable[[Delivery], Awaitable[None]]


async def run_hook(hook: Hook, delivery: Delivery, *, timeout: float) -> None:
    name = getattr(hook, "__qualname__", repr(hook))
    try:
        with anyio.fail_after(timeout):
            if inspect.iscoroutinefunction(hook):
                await hook(delivery)
            else:
                result = await anyio.to_thread.run_sync(hook, delivery, abandon_on_cancel=True)
                if inspect.isawaitable(result):
                    await result
    except TimeoutError:
        log.error("hook %s timed out after %gs (delivery %s)", name, timeout, delivery.id)
    except Exception:
        log.exception("hook %s raised (delivery %s); the delivery is unchanged", name, delivery.id)
