"""cancel_scope: Trio's own scope in a Trio task, anyio's elsewhere, and both behave alike."""

from __future__ import annotations

import anyio
import pytest
import trio

from oqronkit.scopes import cancel_scope, in_trio_task

pytestmark = pytest.mark.anyio


async def test_the_scope_is_the_running_loops_own(anyio_backend: str) -> None:
    scope = cancel_scope()
    assert in_trio_task() is (anyio_backend == "trio")
    assert isinstance(scope, trio.CancelScope) is (anyio_backend == "trio")
    if anyio_backend != "trio":
        assert isinstance(scope, anyio.CancelScope)


async def test_a_deadline_cancels_and_is_caught() -> None:
    with cancel_scope(deadline=anyio.current_time() + 0.01) as scope:
        await anyio.sleep_forever()
    assert scope.cancel_called and scope.cancelled_caught


async def test_cancel_before_entering_cancels_at_the_first_checkpoint() -> None:
    scope = cancel_scope()
    scope.cancel()
    reached = False
    with scope:
        await anyio.lowlevel.checkpoint()
        reached = True
    assert not reached and scope.cancelled_caught


async def test_a_scope_left_alone_catches_nothing() -> None:
    with cancel_scope(deadline=anyio.current_time() + 60) as scope:
        await anyio.lowlevel.checkpoint()
    assert not scope.cancel_called and not scope.cancelled_caught
