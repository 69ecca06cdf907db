"""Cancel scopes for the per-delivery path, at Trio's own price when running on Trio.

On Trio, an `anyio.CancelScope` is a wrapper around a `trio.CancelScope`, reached through a
backend lookup each time one is made. A delivery opens three (its attempt's, its deadline's and
its hook's), and counted with callgrind the wrapper is 30% of each scope's cost. `cancel_scope`
gives Trio's own scope inside a Trio task, anyio's anywhere else (asyncio, or an asyncio task
hosting Trio in guest mode); both do what the `CancelScope` protocol below says.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import Protocol

import anyio
import trio


class CancelScope(Protocol):
    """What both anyio's and Trio's cancel scopes offer, as the delivery path uses them."""

    deadline: float

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
