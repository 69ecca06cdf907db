"""`memory://`: everything in this process, lost at exit. For tests and quick experiments.

Operations are plain synchronous code under one lock (they never wait), so they are atomic
with respect to both tasks and threads (`fire_sync` may call from another thread).
"""

from __future__ import annotations

import heapq
import threading
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import anyio.lowlevel

from oqronkit.backends.base import Backend, StateUpdate, T, glob_predicate
from oqronkit.gc_pause import gc_paused
from oqronkit.models import (
    CANCELLED,
    DELETED,
    QUEUED,
    REMOVED,
    TERMINAL,
    WEBHOOK,
    Attempt,
    CancelOutcome,
    Claim,
    Definitions,
    Delivery,
    Document,
    Message,
    NewDelivery,
    Settlement,
    Status,
)

_Heap = list[tuple[float, str]]  # (due or lease expiry, delivery id): ids are unique and ordered


class _Row:
    """A delivery as stored: mutable, and cheap to create (a queue may hold millions)."""

    __slots__ = (
        "attempts",
        "cancel_requested",
        "created_at",
        "error",
        "lease_owner",
        "lease_until",
        "new",
        "next_attempt_at",
        "status",
        "updated_at",
    )

    def __init__(self, new: NewDelivery) -> None:
        self.new = new  # the immutable part
        self.status: Status = "waiting"
        self.attempts: tuple[Attempt, ...] = ()
        self.error: str | None = None
        self.next_attempt_at: float | None = new.created_at
        self.updated_at = new.created_at
        self.lease_owner: str | None = None
        self.lease_until = 0.0
        self.cancel_requested = False

    def delivery(self) -> Delivery:
        new = self.new
        return Delivery(
            id=new.id,
            webhook=new.webhook,
            endpoint_name=new.endpoint_name,
            event=new.event,
            status=self.status,
            attempts=self.attempts,
            error=self.error,
            idempotency_key=new.idempotency_key,
            next_attempt_at=self.next_attempt_at,
            created_at=new.created_at,
            updated_at=self.updated_at,
            message_id=new.message_id,
            resent_from=new.resent_from,
        )


class MemoryBackend(Backend):
    poll_interval = 1.0  # other kits in this process may share it and add work
    round_trips = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, Message] = {}
        self._rows: dict[str, _Row] = {}  # in creation order
        self._keyed: dict[str, list[str]] = {}  # delivery ids of messages fired with a key
        self._fire_keys: dict[tuple[str, str], str] = {}  # (webhook, key) -> message id
        self._resends: dict[tuple[str, str], str] = {}  # (message, endpoint) -> newest copy
        # Heaps of (due, id) of queued deliveries, per webhook and endpoint (so a full endpoint
        # can be skipped cheaply), and of (lease_until, id) of active ones, per webhook. Entries
        # go stale when a row changes; stale tops are dropped when seen.
        self._ready: dict[str, dict[str, _Heap]] = defaultdict(lambda: defaultdict(list))
        self._leases: dict[str, _Heap] = defaultdict(list)
        self._documents: dict[tuple[str, str], Document] = {}
        self._paused: set[tuple[str, str]] = set()
        self._version = 0
        self._states: dict[str, str] = {}

    def __repr__(self) -> str:
        return "MemoryBackend()"

    async def enqueue(
        self,
        messages: Sequence[Message],
        deliveries: Sequence[NewDelivery],
        *,
        idempotency_since: float | None = None,
    ) -> list[str] | None:
        # A schedule point, as every other backend's write is: a loop of fires would otherwise
        # never let the dispatcher (or anything else on the loop) run.
        await anyio.lowlevel.checkpoint()
        with self._lock, gc_paused():
            if idempotency_since is not None and len(messages) == 1:
                repeat = self._repeat_of(messages[0], idempotency_since)
                if repeat is not None:
                    return repeat
            for message in messages:
                self._messages[message.id] = message
                if message.idempotency_key is not None:
                    self._fire_keys[(message.webhook, message.idempotency_key)] = message.id
                    self._keyed[message.id] = []
            rows, ready, keyed, paused = self._rows, self._ready, self._keyed, self._paused
            for new in deliveries:
                row = rows[new.id] = _Row(new)
                if paused and self._is_paused(new):
                    row.status = "held"
                else:
                    heapq.heappush(ready[new.webhook][new.endpoint_name], (new.created_at, new.id))
                if keyed and new.message_id in keyed:
                    keyed[new.message_id].append(new.id)
            return None

    def _repeat_of(self, message: Message, since: float) -> list[str] | None:
        if message.idempotency_key is None:
            return None
        earlier_id = self._fire_keys.get((message.webhook, message.idempotency_key))
        earlier = self._messages.get(earlier_id) if earlier_id else None
        if earlier is None or earlier.created_at < since:
            return None
        return list(self._keyed[earlier.id])

    async def claim(
        self,
        webhook: str,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        room: Mapping[str, int] | None = None,
    ) -> list[Claim]:
        claims: list[Claim] = []
        left = dict(room or {})
        with self._lock:
            self._reclaim_expired(webhook, now)
            ready = self._ready[webhook]
            # A merge of the endpoints' due heads, earliest first: one pass over the
            # endpoints per claim, not one per delivery claimed.
            heads: list[tuple[tuple[float, str], str]] = []
            for endpoint, heap in ready.items():
                if left.get(endpoint, 1) > 0:
                    self._prune_ready(heap)
                    if heap and heap[0][0] <= now:
                        heads.append((heap[0], endpoint))
            heapq.heapify(heads)
            while heads and len(claims) < limit:
                endpoint = heads[0][1]
                heap = ready[endpoint]
                row = self._rows[heapq.heappop(heap)[1]]
                row.status, row.updated_at = "active", now
                row.lease_owner, row.lease_until = owner, lease_until
                new = row.new
                heapq.heappush(self._leases[webhook], (lease_until, new.id))
                claims.append(
                    Claim(
                        id=new.id,
                        message_id=new.message_id,
                        webhook=new.webhook,
                        endpoint_name=new.endpoint_name,
                        event=new.event,
                        body=self._messages[new.message_id].body,
                        attempts_made=len(row.attempts),
                        idempotency_key=new.idempotency_key,
                        created_at=new.created_at,
                    )
                )
                if endpoint in left:
                    left[endpoint] -= 1
                self._prune_ready(heap)
                if heap and heap[0][0] <= now and left.get(endpoint, 1) > 0:
                    heapq.heapreplace(heads, (heap[0], endpoint))
                else:
                    heapq.heappop(heads)
        return claims

    def _earliest(self, webhook: str, skip: Collection[str]) -> _Heap | None:
        """The ready heap, among `webhook`'s endpoints not in `skip`, with the earliest head."""
        best: _Heap | None = None
        for endpoint, heap in self._ready[webhook].items():
            if endpoint in skip:
                continue
            self._prune_ready(heap)
            if heap and (best is None or heap[0] < best[0]):
                best = heap
        return best

    def _prune_ready(self, heap: _Heap) -> None:
        # Entries go stale when a delivery is claimed or rescheduled; drop them from the top.
        while heap:
            row = self._rows[heap[0][1]]
            if row.status in QUEUED and row.next_attempt_at == heap[0][0]:
                return
            heapq.heappop(heap)

    def _prune_leases(self, heap: _Heap) -> None:
        while heap:
            row = self._rows[heap[0][1]]
            if row.status == "active" and row.lease_until == heap[0][0]:
                return
            heapq.heappop(heap)

    def _reclaim_expired(self, webhook: str, now: float) -> None:
        leases = self._leases[webhook]
        self._prune_leases(leases)
        while leases and leases[0][0] <= now:
            row = self._rows[heapq.heappop(leases)[1]]
            if row.cancel_requested:  # asked to cancel, then its worker was gone
                self._cancel(row, now)
            else:
                self._requeue(row, now, now)
            self._prune_leases(leases)

    def _cancel(self, row: _Row, now: float) -> None:
        row.status, row.next_attempt_at, row.updated_at = "cancelled", None, now
        row.lease_owner, row.cancel_requested = None, False

    def _is_paused(self, new: NewDelivery) -> bool:
        paused = self._paused
        return (new.webhook, WEBHOOK) in paused or (new.webhook, new.endpoint_name) in paused

    def _requeue(self, row: _Row, due: float, now: float, status: Status = "waiting") -> None:
        """Queues `row` due at `due`, or holds it there while it is paused."""
        new = row.new
        if self._paused and self._is_paused(new):
            status = "held"
        else:
            heapq.heappush(self._ready[new.webhook][new.endpoint_name], (due, new.id))
        row.status, row.next_attempt_at, row.updated_at = status, due, now
        row.lease_owner = None

    async def next_due(self, webhook: str, skip_endpoints: Collection[str] = ()) -> float | None:
        with self._lock:
            times = []
            heap = self._earliest(webhook, skip_endpoints)
            if heap:
                times.append(heap[0][0])
            leases = self._leases[webhook]
            self._prune_leases(leases)
            if leases:
                times.append(leases[0][0])
            return min(times) if times else None

    async def renew(self, owner: str, ids: Collection[str], lease_until: float) -> set[str]:
        held = set()
        with self._lock:
            for delivery_id in ids:
                row = self._rows.get(delivery_id)
                if row and row.status == "active" and row.lease_owner == owner:
                    row.lease_until = lease_until
                    heapq.heappush(self._leases[row.new.webhook], (lease_until, delivery_id))
                    held.add(delivery_id)
        return held

    async def settle(
        self, delivery_id: str, owner: str, settlement: Settlement, now: float
    ) -> Delivery | None:
        with self._lock:
            row = self._rows.get(delivery_id)
            if row is None or row.status != "active" or row.lease_owner != owner:
                return None
            if row.cancel_requested and settlement.status not in ("completed", "cancelled"):
                # The cancel wins over anything but a delivery (a failed last attempt too).
                settlement = CANCELLED._replace(attempt=settlement.attempt)
            row.cancel_requested = False
            if settlement.attempt is not None:
                row.attempts += (settlement.attempt,)
            if settlement.status == "completed":  # an earlier failure is in its attempts
                row.error = None
            elif settlement.error is not None:
                row.error = settlement.error
            if settlement.status in QUEUED:
                due = settlement.next_attempt_at if settlement.next_attempt_at is not None else now
                self._requeue(row, due, now, settlement.status)
            else:
                row.status, row.updated_at, row.lease_owner = settlement.status, now, None
                if settlement.status != "held":  # held keeps its schedule for its release
                    row.next_attempt_at = None
            return row.delivery()

    async def cancel(self, delivery_id: str, now: float) -> CancelOutcome:
        with self._lock:
            row = self._rows.get(delivery_id)
            if row is None:
                return "missing"
            if row.status in TERMINAL:
                return "finished"
            if row.status == "active" and row.lease_until > now:
                row.cancel_requested = True  # its worker stops the attempt
                return "requested"
            self._cancel(row, now)  # queued, held, or its worker is gone
            return "cancelled"

    async def cancel_requested(self, owner: str, ids: Collection[str]) -> set[str]:
        with self._lock:
            return {
                i
                for i in ids
                if (row := self._rows.get(i)) is not None
                and row.status == "active"
                and row.lease_owner == owner
                and row.cancel_requested
            }

    async def resend(self, delivery_id: str, new_id: str, now: float) -> Delivery | None:
        with self._lock:
            row = self._rows.get(delivery_id)
            if row is None or row.status not in TERMINAL:
                return None
            copy = _Row(row.new._replace(id=new_id, created_at=now, resent_from=delivery_id))
            self._rows[new_id] = copy
            self._resends[(row.new.message_id, row.new.endpoint_name)] = new_id
            self._requeue(copy, now, now)
            return copy.delivery()

    async def resent(self, delivery_ids: Sequence[str]) -> set[str]:
        with self._lock:
            found = set()
            for delivery_id in delivery_ids:
                row = self._rows.get(delivery_id)
                if row is not None:
                    key = (row.new.message_id, row.new.endpoint_name)
                    if self._resends.get(key, delivery_id) != delivery_id:
                        found.add(delivery_id)
            return found

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        with self._lock:
            row = self._rows.get(delivery_id)
            return row.delivery() if row else None

    async def list_deliveries(
        self,
        *,
        webhook: str | None = None,
        endpoint: str | None = None,
        status: Status | None = None,
        event: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[Delivery]:
        found: list[Delivery] = []
        event_matches = glob_predicate(event)
        with self._lock:
            for delivery_id in reversed(self._rows):
                if before is not None and delivery_id >= before:
                    continue
                row = self._rows[delivery_id]
                new = row.new
                if (
                    (webhook is None or new.webhook == webhook)
                    and (endpoint is None or new.endpoint_name == endpoint)
                    and (status is None or row.status == status)
                    and (since is None or new.created_at >= since)
                    and (until is None or new.created_at < until)
                    and event_matches(new.event)
                ):
                    found.append(row.delivery())
                    if len(found) >= limit:
                        break
        return found

    async def definitions(self, known_version: int | None = None) -> Definitions | None:
        with self._lock:
            if known_version == self._version:
                return None
            return Definitions(self._version, dict(self._documents), frozenset(self._paused))

    async def write_definition(
        self, webhook: str, endpoint: str, changes: Mapping[str, Any] | None, *, replace: bool
    ) -> Document | None:
        key = (webhook, endpoint)
        with self._lock:
            self._version += 1
            if changes is None:
                self._documents.pop(key, None)
                return None
            merged = {} if replace else dict(self._documents.get(key, {}))
            merged.update(changes)
            document = self._documents[key] = {k: v for k, v in merged.items() if v is not None}
            return document

    async def set_paused(self, webhook: str, endpoint: str, paused: bool, now: float) -> int:
        key = (webhook, endpoint)
        with self._lock:
            self._version += 1
            if paused:
                self._paused.add(key)
                return self._hold(webhook, endpoint, now)
            self._paused.discard(key)
            return self._release(webhook, endpoint, now)

    async def release(self, webhook: str, endpoint: str, now: float) -> int:
        with self._lock:
            return self._release(webhook, endpoint, now)

    def _release(self, webhook: str, endpoint: str, now: float) -> int:
        released = 0
        for row in self._rows.values():
            new = row.new
            if (
                row.status == "held"
                and new.webhook == webhook
                and endpoint in (WEBHOOK, new.endpoint_name)
                and not self._is_paused(new)
            ):
                due = row.next_attempt_at if row.next_attempt_at is not None else now
                self._requeue(row, due, now, "delayed" if due > now else "waiting")
                released += 1
        return released

    def _hold(self, webhook: str, endpoint: str, now: float) -> int:
        held = 0
        for row in self._rows.values():
            new = row.new
            if (
                row.status in QUEUED
                and new.webhook == webhook
                and endpoint in (WEBHOOK, new.endpoint_name)
            ):
                row.status, row.updated_at = "held", now  # its heap entry goes stale
                held += 1
        return held

    async def discard(self, webhook: str, endpoint: str, now: float, reason: str) -> int:
        with self._lock:
            return self._discard(webhook, endpoint, now, reason)

    def _discard(self, webhook: str, endpoint: str, now: float, reason: str) -> int:
        discarded = 0
        for row in self._rows.values():
            new = row.new
            if new.webhook != webhook or endpoint not in (WEBHOOK, new.endpoint_name):
                continue
            if row.status in QUEUED or row.status == "held":
                self._cancel(row, now)  # its heap entry goes stale
                row.error = reason
                discarded += 1
            elif row.status == "active":
                row.cancel_requested = True  # its worker stops the attempt
                discarded += 1
        return discarded

    def _forget(self, webhook: str) -> None:
        """Removes a webhook's definitions and pause flags, its endpoints' too."""
        for key in [k for k in self._documents if k[0] == webhook]:
            del self._documents[key]
        self._paused = {k for k in self._paused if k[0] != webhook}

    async def create_webhook(
        self, webhook: str, documents: Mapping[str, Document], now: float, reason: str
    ) -> bool:
        with self._lock:
            stored = self._documents.get((webhook, WEBHOOK))
            if stored is not None and not stored.get(DELETED):
                return False
            self._version += 1
            self._forget(webhook)
            self._discard(webhook, WEBHOOK, now, reason)
            for endpoint, document in documents.items():
                self._documents[(webhook, endpoint)] = dict(document)
            return True

    async def create_endpoint(
        self, webhook: str, endpoint: str, document: Document, now: float, reason: str
    ) -> bool:
        key = (webhook, endpoint)
        with self._lock:
            stored = self._documents.get(key)
            if stored is not None and not stored.get(REMOVED):
                return False
            self._version += 1
            self._paused.discard(key)
            if stored is not None:
                self._discard(webhook, endpoint, now, reason)
            self._documents[key] = dict(document)
            return True

    async def delete_webhook(self, webhook: str, now: float, reason: str) -> int:
        with self._lock:
            self._version += 1
            self._forget(webhook)
            self._documents[(webhook, WEBHOOK)] = {DELETED: True}
            self._paused.add((webhook, WEBHOOK))
            return self._discard(webhook, WEBHOOK, now, reason)

    async def update_state(self, keys: Sequence[str], update: StateUpdate[T]) -> T:
        with self._lock:
            states, result = update([self._states.get(key) for key in keys])
            self._states.update(zip(keys, states, strict=True))
            return result
