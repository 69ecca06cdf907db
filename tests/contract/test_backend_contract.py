"""The backend contract: every backend passes this suite unchanged (memory and SQLite here;
Redis and PostgreSQL plug into `make_backend`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from oqronkit.backends import Backend
from oqronkit.backends.base import StateUpdate
from oqronkit.ids import new_id
from oqronkit.models import DELETED, REMOVED, WEBHOOK, Attempt, Message, NewDelivery, Settlement
from tests.conftest import BackendFactory, two_processes

pytestmark = pytest.mark.anyio
T0 = 1_000_000.0


@pytest.fixture
async def backend(make_backend: BackendFactory) -> AsyncIterator[Backend]:
    store = make_backend()
    await store.open()
    yield store
    await store.close()


async def fire(
    backend: Backend,
    endpoints: list[str],
    *,
    webhook: str = "hooks",
    event: str = "order.created",
    at: float = T0,
    key: str | None = None,
    since: float | None = None,
) -> tuple[list[str], list[str] | None]:
    message = Message(new_id("msg"), webhook, event, b'{"n":1}', at, key)
    deliveries = []
    for endpoint in endpoints:
        delivery_id = new_id("dlv")
        deliveries.append(
            NewDelivery(delivery_id, message.id, webhook, endpoint, event, delivery_id, at)
        )
    repeat = await backend.enqueue([message], deliveries, idempotency_since=since)
    return [d.id for d in deliveries], repeat


async def test_enqueue_then_claim_hands_out_each_delivery_once(backend: Backend) -> None:
    ids, _ = await fire(backend, ["a", "b", "c"])
    first = await backend.claim("hooks", "w1", T0, T0 + 30, limit=2)
    second = await backend.claim("hooks", "w2", T0, T0 + 30, limit=10)
    assert len(first) == 2 and len(second) == 1
    assert sorted(c.id for c in first + second) == sorted(ids)
    assert await backend.claim("hooks", "w3", T0, T0 + 30, limit=10) == []
    claim = first[0]
    assert claim.body == b'{"n":1}' and claim.attempts_made == 0 and claim.event == "order.created"
    assert (await backend.get_delivery(claim.id)).status == "active"  # type: ignore[union-attr]


async def test_claims_are_per_webhook_and_respect_endpoint_room(backend: Backend) -> None:
    await fire(backend, ["a", "b"], webhook="one")
    await fire(backend, ["a"], webhook="two")
    claims = await backend.claim("one", "w", T0, T0 + 30, limit=10, room={"a": 0})
    assert [(c.webhook, c.endpoint_name) for c in claims] == [("one", "b")]
    assert await backend.next_due("one", ["a"]) == T0 + 30  # only b's lease is left
    assert await backend.next_due("one") == T0


async def test_room_caps_each_endpoint_within_one_claim(backend: Backend) -> None:
    for _ in range(4):
        await fire(backend, ["slow", "fast"])
    claims = await backend.claim("hooks", "w", T0, T0 + 30, limit=6, room={"slow": 2})
    endpoints = sorted(c.endpoint_name for c in claims)
    assert endpoints == ["fast"] * 4 + ["slow"] * 2


async def test_claims_come_earliest_due_first_across_endpoints(backend: Backend) -> None:
    for offset, endpoint in [(3, "a"), (1, "b"), (4, "c"), (0, "a"), (2, "c"), (5, "b")]:
        await fire(backend, [endpoint], at=T0 + offset)
    claims = await backend.claim("hooks", "w", T0 + 10, T0 + 40, limit=4, room={"b": 1})
    assert [(c.endpoint_name, c.created_at - T0) for c in claims] == [
        ("a", 0),
        ("b", 1),
        ("c", 2),
        ("a", 3),
    ]
    rest = await backend.claim("hooks", "w", T0 + 10, T0 + 40, limit=4)
    assert [(c.endpoint_name, c.created_at - T0) for c in rest] == [("c", 4), ("b", 5)]


async def test_settle_completed_records_the_attempt(backend: Backend) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "w", T0, T0 + 30, limit=1)
    attempt = Attempt(at=T0, duration=0.01, status=204)
    assert await backend.settle(delivery_id, "w", Settlement("completed", attempt=attempt), T0 + 1)
    d = await backend.get_delivery(delivery_id)
    assert d is not None
    assert (d.status, d.attempts, d.next_attempt_at) == ("completed", (attempt,), None)
    assert await backend.claim("hooks", "w", T0 + 100, T0 + 130, limit=1) == []


async def test_delayed_delivery_is_ready_at_its_due_time_only(backend: Backend) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "w", T0, T0 + 30, limit=1)
    failed = Attempt(at=T0, duration=0.1, status=500, response_body="oops")
    await backend.settle(delivery_id, "w", Settlement("delayed", T0 + 10, failed, "HTTP 500"), T0)
    assert await backend.next_due("hooks") == T0 + 10
    assert await backend.claim("hooks", "w", T0 + 9.9, T0 + 40, limit=1) == []
    [again] = await backend.claim("hooks", "w", T0 + 10, T0 + 40, limit=1)
    assert again.attempts_made == 1
    d = await backend.get_delivery(delivery_id)
    assert d is not None and d.error == "HTTP 500" and d.attempts == (failed,)
    # Delivered at last: the earlier failure is history in its attempt, not the error.
    ok = Attempt(at=T0 + 10, duration=0.1, status=204)
    assert await backend.settle(delivery_id, "w", Settlement("completed", attempt=ok), T0 + 10)
    d = await backend.get_delivery(delivery_id)
    assert d is not None and (d.status, d.error, d.attempts) == ("completed", None, (failed, ok))


async def test_deferral_without_an_attempt_keeps_the_count(backend: Backend) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "w", T0, T0 + 30, limit=1)
    await backend.settle(delivery_id, "w", Settlement("delayed", T0 + 5), T0)
    [claim] = await backend.claim("hooks", "w", T0 + 5, T0 + 35, limit=1)
    assert claim.attempts_made == 0


async def test_expired_lease_makes_the_delivery_ready_again(backend: Backend) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "crashed", T0, T0 + 30, limit=1)
    assert await backend.next_due("hooks") == T0 + 30
    assert await backend.claim("hooks", "w2", T0 + 29, T0 + 59, limit=1) == []
    [reclaimed] = await backend.claim("hooks", "w2", T0 + 31, T0 + 61, limit=1)
    assert reclaimed.id == delivery_id
    # The crashed owner has lost it: its late result is refused.
    late = Settlement("completed", attempt=Attempt(at=T0, duration=1, status=200))
    assert not await backend.settle(delivery_id, "crashed", late, T0 + 32)
    assert await backend.settle(delivery_id, "w2", late, T0 + 32)


async def test_an_owner_takes_back_its_own_expired_lease(backend: Backend) -> None:
    # What an owner still tracks it renews before claiming; an expired lease of its own is a
    # claim it lost (the reply never came back), which nobody else may be there to take.
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "me", T0, T0 + 30, limit=1)
    assert await backend.claim("hooks", "me", T0 + 29, T0 + 59, limit=1) == []
    assert await backend.renew("me", [delivery_id], T0 + 70) == {delivery_id}
    assert await backend.claim("hooks", "other", T0 + 69, T0 + 99, limit=1) == []
    [again] = await backend.claim("hooks", "me", T0 + 71, T0 + 101, limit=1)
    assert again.id == delivery_id


async def test_renew_extends_only_the_owners_leases(backend: Backend) -> None:
    ids, _ = await fire(backend, ["a", "b"])
    [mine] = await backend.claim("hooks", "me", T0, T0 + 30, limit=1)
    await backend.claim("hooks", "other", T0, T0 + 30, limit=1)
    assert await backend.renew("me", ids, T0 + 60) == {mine.id}
    reclaimed = await backend.claim("hooks", "w", T0 + 45, T0 + 75, limit=5)
    assert [c.id for c in reclaimed] == [i for i in ids if i != mine.id]


async def test_release_on_shutdown_requeues_without_an_attempt(backend: Backend) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "w", T0, T0 + 30, limit=1)
    assert await backend.settle(delivery_id, "w", Settlement("waiting", T0 + 1), T0 + 1)
    [claim] = await backend.claim("hooks", "w2", T0 + 1, T0 + 31, limit=1)
    assert claim.attempts_made == 0


async def test_a_keyed_fire_that_matched_nothing_still_holds_its_key(backend: Backend) -> None:
    # A repeat returns the first fire's ids whatever it matches now (its endpoints disabled,
    # say), and a first fire that matched nothing holds the key too: its repeat returns none.
    first, _ = await fire(backend, ["a", "b"], key="order-1", since=T0 - 60)
    _, repeat = await fire(backend, [], key="order-1", since=T0 - 60)
    assert sorted(repeat or []) == sorted(first)
    _, none_first = await fire(backend, [], key="order-2", since=T0 - 60)
    assert none_first is None
    _, repeat = await fire(backend, ["a"], key="order-2", since=T0 - 60)
    assert repeat == []
    assert len(await backend.list_deliveries()) == 2


async def test_idempotent_fire_returns_the_first_ids_within_the_window(backend: Backend) -> None:
    first, repeat = await fire(backend, ["a", "b"], key="order-1", since=T0 - 60)
    assert repeat is None
    _, repeat = await fire(backend, ["a", "b"], key="order-1", since=T0 - 60)
    assert sorted(repeat or []) == sorted(first)
    assert len(await backend.list_deliveries()) == 2
    # Another webhook, or outside the window, is a new fire.
    _, other = await fire(backend, ["a"], webhook="other", key="order-1", since=T0 - 60)
    _, later = await fire(backend, ["a"], key="order-1", at=T0 + 100, since=T0 + 50)
    assert other is None and later is None


async def test_list_is_newest_first_filtered_and_paginated(backend: Backend) -> None:
    ids = []
    for endpoint in ["a", "b", "a", "b", "a"]:
        fired, _ = await fire(backend, [endpoint])
        ids += fired
    page = await backend.list_deliveries(limit=2)
    assert [d.id for d in page] == ids[::-1][:2]
    rest = await backend.list_deliveries(limit=10, before=page[-1].id)
    assert [d.id for d in rest] == ids[::-1][2:]
    only_a = await backend.list_deliveries(endpoint="a")
    assert [d.id for d in only_a] == [ids[4], ids[2], ids[0]]
    [claimed] = await backend.claim("hooks", "w", T0, T0 + 30, limit=1)
    assert [d.id for d in await backend.list_deliveries(status="active")] == [claimed.id]
    assert await backend.list_deliveries(webhook="nope") == []


async def test_definitions_are_versioned_documents(backend: Backend) -> None:
    first = await backend.definitions()
    assert first is not None and first.documents == {} and first.paused == frozenset()
    assert await backend.definitions(first.version) is None  # nothing changed
    doc = {"url": "https://a.example/", "events": ["a.*"], "enabled": True}
    assert await backend.write_definition("hooks", "a", doc, replace=True) == doc
    merged = await backend.write_definition(
        "hooks", "a", {"enabled": False, "url": None}, replace=False
    )
    assert merged == {"events": ["a.*"], "enabled": False}  # merged; None removes a key
    await backend.write_definition("hooks", WEBHOOK, {"concurrency": 4}, replace=True)
    now = await backend.definitions(first.version)
    assert now is not None and now.version != first.version
    assert now.documents == {("hooks", "a"): merged, ("hooks", WEBHOOK): {"concurrency": 4}}
    await backend.write_definition("hooks", "a", None, replace=True)
    later = await backend.definitions(now.version)
    assert later is not None and later.documents == {("hooks", WEBHOOK): {"concurrency": 4}}


async def test_pause_holds_queued_and_new_deliveries_and_resume_keeps_their_schedule(
    backend: Backend,
) -> None:
    (ready, later), _ = await fire(backend, ["a", "b"])
    [claim] = await backend.claim("hooks", "w1", T0, T0 + 30, limit=1, room={"a": 0})
    await backend.settle(claim.id, "w1", Settlement("delayed", next_attempt_at=T0 + 600), T0)
    (in_flight,), _ = await fire(backend, ["c"])
    [active] = await backend.claim("hooks", "w1", T0, T0 + 30, limit=1, room={"a": 0, "b": 0})
    assert active.id == in_flight and claim.id == later
    assert await backend.set_paused("hooks", WEBHOOK, True, T0 + 1) == 2  # ready and later
    defs = await backend.definitions()
    assert defs is not None and defs.is_paused("hooks", "a") and not defs.is_paused("other", "a")
    fired, _ = await fire(backend, ["a", "b"], at=T0 + 2)  # fired while paused: kept, held
    # An attempt in flight that ends in a retry is held too, due when the retry was due.
    await backend.settle(active.id, "w1", Settlement("delayed", next_attempt_at=T0 + 5), T0 + 3)
    held = {d.id: d for d in await backend.list_deliveries(status="held")}
    assert set(held) == {ready, later, active.id, *fired}
    assert held[later].next_attempt_at == T0 + 600 and held[active.id].next_attempt_at == T0 + 5
    assert await backend.claim("hooks", "w2", T0 + 700, T0 + 730, limit=10) == []
    assert await backend.next_due("hooks") is None

    assert await backend.set_paused("hooks", WEBHOOK, False, T0 + 4) == 5
    after = {d.id: d for d in await backend.list_deliveries()}
    assert after[later].status == "delayed" and after[later].next_attempt_at == T0 + 600
    assert after[active.id].status == "delayed" and after[ready].status == "waiting"
    claimed = await backend.claim("hooks", "w2", T0 + 10, T0 + 40, limit=10)
    assert {c.id for c in claimed} == {ready, active.id, *fired}  # `later` is not due yet


async def test_endpoint_pause_holds_only_that_endpoint(backend: Backend) -> None:
    (a, b), _ = await fire(backend, ["a", "b"])
    assert await backend.set_paused("hooks", "a", True, T0) == 1
    [claim] = await backend.claim("hooks", "w1", T0, T0 + 30, limit=10)
    assert claim.id == b
    await backend.settle(b, "w1", Settlement("completed"), T0)
    # Resuming the webhook (not paused) leaves the paused endpoint's deliveries held.
    assert await backend.set_paused("hooks", WEBHOOK, False, T0) == 0
    assert (await backend.get_delivery(a)).status == "held"  # type: ignore[union-attr]
    # An expired lease of a paused endpoint's delivery comes back held, not queued.
    await fire(backend, ["c"])
    [claim_c] = await backend.claim("hooks", "w1", T0, T0 + 30, limit=10)
    await backend.set_paused("hooks", "c", True, T0)
    assert await backend.claim("hooks", "w2", T0 + 31, T0 + 60, limit=10) == []
    assert (await backend.get_delivery(claim_c.id)).status == "held"  # type: ignore[union-attr]
    assert await backend.set_paused("hooks", "a", False, T0 + 1) == 1
    [again] = await backend.claim("hooks", "w2", T0 + 1, T0 + 30, limit=10)
    assert again.id == a


async def test_resend_while_paused_is_held(backend: Backend) -> None:
    (delivery_id,), _ = await fire(backend, ["a"])
    [claim] = await backend.claim("hooks", "w1", T0, T0 + 30, limit=1)
    await backend.settle(claim.id, "w1", Settlement("dead", error="HTTP 400"), T0)
    await backend.set_paused("hooks", "a", True, T0)
    copy = await backend.resend(delivery_id, new_id("dlv"), T0 + 1)
    assert copy is not None and copy.status == "held"


async def test_delete_webhook_discards_its_queue_and_leaves_a_tombstone_that_holds_the_rest(
    backend: Backend,
) -> None:
    await backend.write_definition("hooks", WEBHOOK, {"concurrency": 2}, replace=True)
    await backend.write_definition("hooks", "a", {"url": "https://a.example/"}, replace=True)
    await backend.write_definition("other", WEBHOOK, {"concurrency": 3}, replace=True)
    await backend.set_paused("hooks", "a", True, T0)
    (a, b, c), _ = await fire(backend, ["a", "b", "c"])
    (other,), _ = await fire(backend, ["a"], webhook="other")
    [in_flight] = await backend.claim("hooks", "w1", T0, T0 + 30, limit=1, room={"a": 0, "b": 0})
    assert in_flight.id == c
    assert await backend.delete_webhook("hooks", T0, "gone") == 3  # a (held), b, c (active)
    defs = await backend.definitions()
    assert defs is not None and defs.paused == frozenset({("hooks", WEBHOOK)})
    assert defs.documents == {
        ("hooks", WEBHOOK): {DELETED: True},
        ("other", WEBHOOK): {"concurrency": 3},
    }
    for discarded in (a, b):
        d = await backend.get_delivery(discarded)
        assert d is not None and (d.status, d.error, d.next_attempt_at) == (
            "cancelled",
            "gone",
            None,
        )
    # The attempt in flight is asked to stop: the retry it asks for is cancelled. A fire from
    # a process that has not seen the delete is held by the tombstone's pause.
    assert await backend.cancel_requested("w1", [c]) == {c}
    await backend.settle(c, "w1", Settlement("delayed", next_attempt_at=T0 + 5), T0 + 2)
    (late,), _ = await fire(backend, ["b"], at=T0 + 1)
    statuses = {d.id: d.status for d in await backend.list_deliveries(webhook="hooks")}
    assert statuses == {a: "cancelled", b: "cancelled", c: "cancelled", late: "held"}
    # Created again: tombstone and pause go, the straggler is discarded, in one step; a second
    # creation of the name is refused.
    new = {WEBHOOK: {"concurrency": 4}, "a": {"url": "https://a2.example/"}}
    assert await backend.create_webhook("hooks", new, T0 + 3, "gone")
    assert not await backend.create_webhook("hooks", {WEBHOOK: {}}, T0 + 3, "gone")
    defs = await backend.definitions()
    assert defs is not None and not defs.paused
    assert {k: v for k, v in defs.documents.items() if k[0] == "hooks"} == {
        ("hooks", WEBHOOK): {"concurrency": 4},
        ("hooks", "a"): {"url": "https://a2.example/"},
    }
    assert {d.status for d in await backend.list_deliveries(webhook="hooks")} == {"cancelled"}
    assert await backend.claim("hooks", "w1", T0 + 10, T0 + 40, limit=10) == []
    assert (await backend.get_delivery(other)).status == "waiting"  # type: ignore[union-attr]


async def test_create_endpoint_stores_a_new_name_once_and_replaces_a_removed_ones_remains(
    backend: Backend,
) -> None:
    assert await backend.create_endpoint("hooks", "a", {"url": "https://a.example/"}, T0, "gone")
    assert not await backend.create_endpoint("hooks", "a", {"url": "https://b.example/"}, T0, "x")
    # Removed (a tombstone), paused, and fired to by a process that had not seen the removal.
    await backend.write_definition("hooks", "a", {REMOVED: True}, replace=True)
    await backend.set_paused("hooks", "a", True, T0)
    (straggler, kept), _ = await fire(backend, ["a", "b"], at=T0 + 1)
    assert await backend.create_endpoint(
        "hooks", "a", {"url": "https://c.example/"}, T0 + 2, "gone"
    )
    defs = await backend.definitions()
    assert defs is not None and not defs.paused
    assert defs.documents[("hooks", "a")] == {"url": "https://c.example/"}
    d = await backend.get_delivery(straggler)
    assert d is not None and (d.status, d.error) == ("cancelled", "gone")
    # Another endpoint's deliveries, and a name never stored, are not touched.
    (other,), _ = await fire(backend, ["c"], at=T0 + 3)
    assert await backend.create_endpoint("hooks", "c", {"url": "https://d.example/"}, T0 + 4, "x")
    assert {d.id for d in await backend.claim("hooks", "w1", T0 + 5, T0 + 30, limit=9)} == {
        kept,
        other,
    }


async def test_discard_cancels_one_endpoints_queued_and_held_deliveries(backend: Backend) -> None:
    (a, a2, b), _ = await fire(backend, ["a", "a", "b"])
    [claim] = await backend.claim("hooks", "w1", T0, T0 + 30, limit=1, room={"b": 0})
    await backend.settle(claim.id, "w1", Settlement("held", error="disabled"), T0)
    [active] = await backend.claim("hooks", "w1", T0, T0 + 30, limit=1, room={"b": 0})
    assert await backend.discard("hooks", "a", T0 + 1, "removed") == 2  # one held, one active
    d = await backend.get_delivery(claim.id)
    assert d is not None and (d.status, d.error) == ("cancelled", "removed")
    assert await backend.cancel_requested("w1", [active.id]) == {active.id}
    dead = await backend.settle(active.id, "w1", Settlement("dead", error="HTTP 500"), T0 + 2)
    assert dead is not None and dead.status == "cancelled"  # its last attempt failed: no matter
    [left] = await backend.claim("hooks", "w1", T0 + 2, T0 + 30, limit=10)
    assert left.id == b
    assert await backend.discard("hooks", "a", T0 + 3, "removed") == 0
    assert {a, a2} == {claim.id, active.id}


async def test_release_frees_what_no_pause_holds_and_keeps_the_flags(backend: Backend) -> None:
    (a, b), _ = await fire(backend, ["a", "b"])
    for claim in await backend.claim("hooks", "w1", T0, T0 + 30, limit=2):
        # held at attempt time, as for a disabled endpoint, due when it was due
        await backend.settle(claim.id, "w1", Settlement("held", error="disabled"), T0)
    await backend.set_paused("hooks", "b", True, T0)
    assert await backend.release("hooks", "a", T0 + 1) == 1
    assert await backend.release("hooks", WEBHOOK, T0 + 1) == 0  # b is paused
    defs = await backend.definitions()
    assert defs is not None and defs.paused == frozenset({("hooks", "b")})
    [claim] = await backend.claim("hooks", "w2", T0 + 1, T0 + 30, limit=10)
    assert claim.id == a and (await backend.get_delivery(b)).status == "held"  # type: ignore[union-attr]


async def test_unknown_delivery(backend: Backend) -> None:
    assert await backend.get_delivery("dlv_missing") is None
    assert not await backend.settle("dlv_missing", "w", Settlement("completed"), T0)


async def test_list_filters_by_event_glob_and_time(backend: Backend) -> None:
    [created], _ = await fire(backend, ["a"], event="order.created", at=T0)
    [paid], _ = await fire(backend, ["a"], event="order.payment.completed", at=T0 + 10)
    [signup], _ = await fire(backend, ["a"], event="user.signup", at=T0 + 20)
    ids = lambda found: [d.id for d in found]  # noqa: E731
    assert ids(await backend.list_deliveries(event="order.**")) == [paid, created]
    assert ids(await backend.list_deliveries(event="order.*")) == [created]
    assert ids(await backend.list_deliveries(event="*")) == [signup, paid, created]
    assert ids(await backend.list_deliveries(since=T0 + 10)) == [signup, paid]
    assert ids(await backend.list_deliveries(until=T0 + 10)) == [created]
    assert ids(await backend.list_deliveries(event="order.**", since=T0 + 5, until=T0 + 15)) == [
        paid
    ]


async def test_resend_queues_a_copy_of_a_finished_delivery(backend: Backend) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    assert await backend.resend(delivery_id, "dlv_copy_early", T0) is None  # not finished
    await backend.claim("hooks", "w", T0, T0 + 30, limit=1)
    dead = Settlement("dead", attempt=Attempt(at=T0, duration=0.1, status=400), error="HTTP 400")
    original = await backend.settle(delivery_id, "w", dead, T0 + 1)
    assert original is not None
    copy = await backend.resend(delivery_id, "dlv_copy", T0 + 50)
    assert copy is not None
    assert (copy.id, copy.status, copy.attempts, copy.resent_from) == (
        "dlv_copy",
        "waiting",
        (),
        delivery_id,
    )
    assert copy.idempotency_key == original.idempotency_key
    assert copy.message_id == original.message_id and copy.endpoint_name == "a"
    [claim] = await backend.claim("hooks", "w", T0 + 50, T0 + 80, limit=1)
    assert claim.id == "dlv_copy" and claim.body == b'{"n":1}' and claim.attempts_made == 0
    assert await backend.resend("dlv_missing", "dlv_x", T0) is None


async def test_resent_tells_which_deliveries_have_a_newer_copy(backend: Backend) -> None:
    (first, other), _ = await fire(backend, ["a", "b"])
    for claim in await backend.claim("hooks", "w", T0, T0 + 30, limit=2):
        await backend.settle(claim.id, "w", Settlement("dead", error="HTTP 400"), T0 + 1)
    assert await backend.resent([first, other, "dlv_missing"]) == set()
    copy = await backend.resend(first, new_id("dlv"), T0 + 2)
    assert copy is not None
    assert await backend.resent([first, other, copy.id]) == {first}
    [claim] = await backend.claim("hooks", "w", T0 + 2, T0 + 30, limit=1)
    await backend.settle(claim.id, "w", Settlement("dead", error="HTTP 400"), T0 + 3)
    # A second copy of the original (by hand): the first copy is superseded too.
    second = await backend.resend(first, new_id("dlv"), T0 + 4)
    assert second is not None
    assert await backend.resent([first, copy.id, second.id, other]) == {first, copy.id}
    assert await backend.resent([]) == set()


async def test_cancel_by_status(backend: Backend) -> None:
    queued, active = (await fire(backend, ["a", "b"]))[0]
    [claim] = await backend.claim("hooks", "w", T0, T0 + 30, limit=1, room={"a": 0})
    assert claim.id == active
    assert await backend.cancel(queued, T0 + 1) == "cancelled"
    assert (await backend.get_delivery(queued)).status == "cancelled"  # type: ignore[union-attr]
    assert await backend.claim("hooks", "w", T0 + 2, T0 + 32, limit=5) == []
    assert await backend.cancel_requested("w", [active]) == set()
    assert await backend.cancel(active, T0 + 1) == "requested"
    assert await backend.cancel_requested("w", [active, queued]) == {active}
    assert await backend.cancel_requested("someone-else", [active]) == set()
    await backend.settle(active, "w", Settlement("cancelled", error="cancelled"), T0 + 2)
    assert await backend.cancel_requested("w", [active]) == set()
    assert await backend.cancel(active, T0 + 3) == "finished"
    assert await backend.cancel("dlv_missing", T0) == "missing"


@pytest.mark.parametrize(
    "requeue",
    [
        Settlement("delayed", T0 + 5, Attempt(T0, 0.1, status=500), "HTTP 500"),  # a retry
        Settlement("waiting", T0 + 2),  # a deferral, or a shutdown, with no attempt
        Settlement("held", error="paused"),
    ],
)
async def test_a_cancel_asked_during_an_attempt_wins_over_its_requeue(
    backend: Backend, requeue: Settlement
) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "w", T0, T0 + 30, limit=1)
    assert await backend.cancel(delivery_id, T0 + 1) == "requested"
    settled = await backend.settle(delivery_id, "w", requeue, T0 + 2)
    assert settled is not None and settled.status == "cancelled"
    assert settled.error == "cancelled" and settled.next_attempt_at is None
    assert len(settled.attempts) == (requeue.attempt is not None)  # the attempt made is kept
    assert await backend.claim("hooks", "w", T0 + 10, T0 + 40, limit=5) == []
    assert await backend.next_due("hooks") is None


async def test_an_attempt_that_delivered_is_completed_even_when_a_cancel_was_asked(
    backend: Backend,
) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "w", T0, T0 + 30, limit=1)
    assert await backend.cancel(delivery_id, T0 + 1) == "requested"
    done = Settlement("completed", attempt=Attempt(T0, 0.1, status=204))
    settled = await backend.settle(delivery_id, "w", done, T0 + 2)
    assert settled is not None and settled.status == "completed"


async def test_a_cancel_of_a_delivery_whose_worker_is_gone_takes_effect_at_once(
    backend: Backend,
) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "crashed", T0, T0 + 30, limit=1)
    assert await backend.cancel(delivery_id, T0 + 31) == "cancelled"  # its lease ran out
    assert (await backend.get_delivery(delivery_id)).status == "cancelled"  # type: ignore[union-attr]
    assert await backend.claim("hooks", "w2", T0 + 32, T0 + 62, limit=5) == []
    assert await backend.settle(delivery_id, "crashed", Settlement("completed"), T0 + 33) is None
    assert await backend.next_due("hooks") is None


async def test_a_delivery_taken_over_from_an_expired_lease_is_due_when_taken(
    backend: Backend,
) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "crashed", T0, T0 + 30, limit=1)
    [claim] = await backend.claim("hooks", "w2", T0 + 100, T0 + 130, limit=1)
    assert claim.id == delivery_id
    delivery = await backend.get_delivery(delivery_id)
    assert delivery is not None and delivery.next_attempt_at == T0 + 100


async def test_a_lease_that_runs_out_after_a_cancel_was_asked_is_cancelled_not_sent_again(
    backend: Backend,
) -> None:
    [delivery_id], _ = await fire(backend, ["a"])
    await backend.claim("hooks", "crashed", T0, T0 + 30, limit=1)
    assert await backend.cancel(delivery_id, T0 + 1) == "requested"  # then its worker died
    assert await backend.claim("hooks", "w2", T0 + 31, T0 + 61, limit=5) == []
    delivery = await backend.get_delivery(delivery_id)
    assert delivery is not None and delivery.status == "cancelled"
    assert delivery.next_attempt_at is None
    assert await backend.next_due("hooks") is None


# ---------------------------------------------------------------- shared guard state


def _increment(by: int) -> StateUpdate[list[int]]:
    def update(states: list[str | None]) -> tuple[list[str], list[int]]:
        values = [int(s or 0) + by for s in states]
        return [str(v) for v in values], values

    return update


async def test_update_state_starts_empty_and_keeps_what_was_stored(
    make_backend: BackendFactory,
) -> None:
    first, second = two_processes(make_backend)
    await first.open()
    await second.open()
    try:
        seen: list[list[str | None]] = []

        def record(stored: list[str]) -> StateUpdate[None]:
            def update(states: list[str | None]) -> tuple[list[str], None]:
                seen.append(list(states))
                return stored, None

            return update

        await first.update_state(["a", "b"], record(["one", "two"]))
        await second.update_state(["b", "c", "a"], record(["2", "3", "1"]))
        await first.update_state(["c", "a"], record(["3", "1"]))
        assert seen == [[None, None], ["two", None, "one"], ["3", "1"]]
    finally:
        await first.close()
        await second.close()


async def test_update_state_is_atomic_across_instances(make_backend: BackendFactory) -> None:
    backends = two_processes(make_backend)
    for backend in backends:
        await backend.open()
    try:
        async with anyio.create_task_group() as tasks:
            for i in range(40):
                tasks.start_soon(backends[i % 2].update_state, ["n", "m"], _increment(1))
        assert await backends[0].update_state(["m", "n"], _increment(0)) == [40, 40]
    finally:
        for backend in backends:
            await backend.close()


async def test_settle_many_settles_each_on_its_own_lease(backend: Backend) -> None:
    ids, _ = await fire(backend, ["a", "b", "c"])
    claims = await backend.claim("hooks", "w", T0, T0 + 30, limit=3)
    by_id = {c.id: c for c in claims}
    attempt = Attempt(at=T0, duration=0.1, status=204)
    settled = await backend.settle_many(
        [
            (ids[0], "w", Settlement("completed", attempt=attempt), T0 + 1),
            (ids[1], "someone else", Settlement("completed", attempt=attempt), T0 + 1),
            (ids[2], "w", Settlement("delayed", next_attempt_at=T0 + 60), T0 + 2),
        ]
    )
    assert set(by_id) == set(ids)
    assert [None if d is None else d.status for d in settled] == ["completed", None, "delayed"]
    assert settled[2] is not None and settled[2].next_attempt_at == T0 + 60
    assert (await backend.get_delivery(ids[1])).status == "active"  # type: ignore[union-attr]
