"""TaskPool: calls run on reused workers, no more workers than calls ever running at once; a
call that cancels its worker's scope is cut short, and the worker goes on in a fresh one."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from oqronkit.scopes import CancelScope
from oqronkit.taskpool import TaskPool

pytestmark = pytest.mark.anyio


class Worker:
    """Records which task ran each call, and how many ran at once."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, object]] = []
        self.running = 0
        self.most = 0

    async def call(self, scope: CancelScope, n: int, gate: anyio.Event | None = None) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        self.runs.append((n, anyio.get_current_task().id))
        if gate is not None:
            await gate.wait()
        await anyio.lowlevel.checkpoint()
        self.running -= 1


async def test_calls_one_after_another_share_one_worker() -> None:
    worker = Worker()
    async with anyio.create_task_group() as tg:
        pool = TaskPool(tg)
        for n in range(5):
            pool.start_soon(worker.call, n)
            await anyio.wait_all_tasks_blocked()
        pool.close()
    assert [n for n, _ in worker.runs] == [0, 1, 2, 3, 4]
    assert len({task for _, task in worker.runs}) == 1


async def test_calls_at_once_get_a_worker_each_and_later_calls_reuse_them() -> None:
    worker = Worker()
    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        pool = TaskPool(tg)
        for n in range(3):
            pool.start_soon(worker.call, n, gate)
        await anyio.wait_all_tasks_blocked()
        assert worker.running == 3
        gate.set()
        await anyio.wait_all_tasks_blocked()
        for n in range(3, 6):
            pool.start_soon(worker.call, n)
        pool.close()
    assert sorted(n for n, _ in worker.runs) == list(range(6))
    assert worker.most == 3
    assert len({task for _, task in worker.runs}) == 3


async def test_close_lets_calls_under_way_and_queued_finish() -> None:
    worker = Worker()
    gate = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool = TaskPool(tg)
            pool.start_soon(worker.call, 0, gate)
            await anyio.wait_all_tasks_blocked()
            pool.start_soon(worker.call, 1)
            pool.close()
            gate.set()
    assert sorted(n for n, _ in worker.runs) == [0, 1]


async def test_a_cancelled_group_ends_its_idle_workers() -> None:
    worker = Worker()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool = TaskPool(tg)
            pool.start_soon(worker.call, 0)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert [n for n, _ in worker.runs] == [0]


async def test_a_call_that_cancels_its_scope_is_cut_short_and_its_worker_goes_on() -> None:
    worker = Worker()
    cut_on: list[object] = []
    scopes: list[CancelScope] = []

    async def cut_short(scope: CancelScope) -> None:
        cut_on.append(anyio.get_current_task().id)
        scopes.append(scope)
        scope.cancel()
        await anyio.sleep_forever()

    async def note_scope(scope: CancelScope) -> None:
        scopes.append(scope)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool = TaskPool(tg)
            pool.start_soon(cut_short)
            while not pool._idle:  # cut short, its worker waits for more
                await anyio.lowlevel.checkpoint()
            pool.start_soon(worker.call, 1)  # the worker that was cut short takes it...
            await anyio.wait_all_tasks_blocked()
            pool.start_soon(note_scope)  # ...in a fresh scope, not cancelled
            pool.close()
    assert worker.runs == [(1, cut_on[0])]
    assert scopes[0] is not scopes[1] and not scopes[1].cancel_called


@pytest.mark.parametrize("burst", [False, True], ids=["eager", "burst"])
async def test_a_call_returning_with_its_scope_cancelled_leaves_no_dead_waker(burst: bool) -> None:
    """The worker parks in its cancelled scope, is cut short at once and renews the scope: the
    waker it had left must go with it, or a later call would be handed to nobody."""
    release, quick_started = anyio.Event(), anyio.Event()

    async def cancels_and_returns(scope: CancelScope) -> None:
        scope.cancel()  # cut short too late: it returns normally

    async def slow(scope: CancelScope) -> None:
        await release.wait()

    async def quick(scope: CancelScope) -> None:
        quick_started.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool = TaskPool(tg, burst=burst)
            pool.start_soon(cancels_and_returns)
            for _ in range(3):  # on asyncio the cancellation lands a pass or two later
                await anyio.wait_all_tasks_blocked()
            assert len(pool._idle) == 1
            pool.start_soon(slow)
            pool.start_soon(quick)  # a worker of its own, while `slow` holds the first
            await quick_started.wait()
            release.set()
            pool.close()


async def test_a_burst_pool_runs_calls_given_together_on_one_worker_while_none_waits() -> None:
    ran_on: list[object] = []

    async def quick(scope: CancelScope, n: int) -> None:
        ran_on.append((n, anyio.get_current_task().id))

    async with anyio.create_task_group() as tg:
        pool = TaskPool(tg, burst=True)
        for n in range(5):
            pool.start_soon(quick, n)
        await anyio.wait_all_tasks_blocked()
        # The first worker ran them all; the one it sent in case a call waited found none.
        assert len(pool._idle) == 2 and pool._coming == 0
        pool.close()
    assert [n for n, _ in ran_on] == [0, 1, 2, 3, 4]
    assert len({task for _, task in ran_on}) == 1


async def test_in_a_burst_pool_a_call_that_waits_holds_up_none_of_the_others() -> None:
    gate = anyio.Event()
    ran: list[str] = []

    async def waits(scope: CancelScope) -> None:
        await gate.wait()
        ran.append("waited")

    async def quick(scope: CancelScope, name: str) -> None:
        ran.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool = TaskPool(tg, burst=True)
            for _ in range(2):  # twice: from new workers, then from parked ones
                pool.start_soon(waits)
                pool.start_soon(waits)
                pool.start_soon(quick, "a")
                pool.start_soon(quick, "b")
                await anyio.wait_all_tasks_blocked()
                assert ran == ["a", "b"]
                gate.set()
                await anyio.wait_all_tasks_blocked()
                assert ran == ["a", "b", "waited", "waited"]
                gate, ran[:] = anyio.Event(), []
            pool.close()


@pytest.mark.parametrize("burst", [False, True], ids=["eager", "burst"])
async def test_a_worker_cut_short_while_others_are_queued_loses_none(burst: bool) -> None:
    """A worker whose scope is cancelled renews it and counts itself as arrived: the calls
    queued behind it still get workers."""
    ran: list[int] = []

    async def cut_short(scope: CancelScope) -> None:
        scope.cancel()
        await anyio.sleep_forever()

    async def note(scope: CancelScope, n: int) -> None:
        await anyio.lowlevel.checkpoint()
        ran.append(n)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            pool = TaskPool(tg, burst=burst)
            for round_ in range(3):
                pool.start_soon(cut_short)
                pool.start_soon(note, round_ * 2)
                pool.start_soon(note, round_ * 2 + 1)
                while len(ran) < round_ * 2 + 2:
                    await anyio.lowlevel.checkpoint()
            pool.close()
    assert sorted(ran) == list(range(6))


async def test_start_next_runs_on_the_calling_worker_once_its_call_returns() -> None:
    ran: list[tuple[str, object]] = []

    async def first(scope: CancelScope, pool: TaskPool) -> None:
        ran.append(("first", anyio.get_current_task().id))
        pool.start_next(second)
        assert pool._coming == 0 and not pool._idle  # nobody was sent or woken for it
        await anyio.lowlevel.checkpoint()

    async def second(scope: CancelScope) -> None:
        ran.append(("second", anyio.get_current_task().id))

    async with anyio.create_task_group() as tg:
        pool = TaskPool(tg)
        pool.start_soon(first, pool)
        await anyio.wait_all_tasks_blocked()
        assert len(pool._idle) == 1  # one worker ran both
        pool.close()
    assert [name for name, _ in ran] == ["first", "second"]
    assert ran[0][1] == ran[1][1]


async def test_a_pool_whose_group_has_ended_refuses_every_call_not_just_the_first() -> None:
    async with anyio.create_task_group() as tg:
        pool = TaskPool(tg, burst=True)
    for _ in range(2):  # a worker counted as on its way would make the second one queue
        with pytest.raises(RuntimeError):
            pool.start_soon(anyio.lowlevel.checkpoint)
    assert pool._coming == 0
