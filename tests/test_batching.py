"""GroupCommit: calls made while a round trip is on its way share the next one."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from oqronkit.batching import GroupCommit

pytestmark = pytest.mark.anyio


class Backend:
    """Records each round trip's batch; a trip takes a few scheduler passes."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.trips: list[list[int]] = []
        self.fail_on = fail_on

    async def run(self, items: list[int]) -> list[int]:
        self.trips.append(items)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        if self.fail_on in items:
            raise RuntimeError(f"trip with {self.fail_on} failed")
        return [item * 10 for item in items]


async def test_one_caller_alone_is_one_trip_of_one() -> None:
    backend = Backend()
    commit = GroupCommit(backend.run)
    assert await commit(1) == 10
    assert await commit(2) == 20
    assert backend.trips == [[1], [2]]


async def test_callers_arriving_during_a_trip_share_the_next_and_each_get_their_result() -> None:
    backend = Backend()
    commit = GroupCommit(backend.run)
    results: dict[int, int] = {}

    async def call(item: int) -> None:
        results[item] = await commit(item)

    async with anyio.create_task_group() as tg:
        for item in range(6):
            tg.start_soon(call, item)
    assert results == {item: item * 10 for item in range(6)}
    assert len(backend.trips[0]) == 1  # the first caller leads alone; the rest queue behind
    assert sorted(i for trip in backend.trips for i in trip) == list(range(6))
    assert len(backend.trips) < 6


async def test_a_failed_trip_fails_every_caller_in_it_and_the_next_trip_still_runs() -> None:
    backend = Backend(fail_on=2)
    commit = GroupCommit(backend.run)
    outcomes: dict[int, object] = {}

    async def call(item: int) -> None:
        try:
            outcomes[item] = await commit(item)
        except RuntimeError as exc:
            outcomes[item] = str(exc)

    async with anyio.create_task_group() as tg:
        for item in range(4):
            tg.start_soon(call, item)
    failed_trip = next(trip for trip in backend.trips if 2 in trip)
    for item in range(4):
        expected = "trip with 2 failed" if item in failed_trip else item * 10
        assert outcomes[item] == expected
    assert await commit(7) == 70


async def test_a_cancelled_caller_is_still_committed() -> None:
    backend = Backend()
    commit = GroupCommit(backend.run)
    with anyio.CancelScope() as scope:
        scope.cancel()
        assert await commit(5) == 50  # shielded: the item is seen through
    assert backend.trips == [[5]]


async def test_a_backend_answering_the_wrong_number_of_results_fails_the_trip() -> None:
    """Not a hang: every caller of that trip hears of it, and the next trip runs."""

    async def short(items: list[int]) -> list[int]:
        await anyio.lowlevel.checkpoint()
        return [item * 10 for item in items][1:]

    commit = GroupCommit(short)
    errors: list[BaseException] = []

    async def call(item: int) -> None:
        try:
            await commit(item)
        except ValueError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for item in range(4):
                tg.start_soon(call, item)
    assert len(errors) == 4
