"""The backend contract. Every backend (memory, SQLite, and later Redis and PostgreSQL) passes
the one suite in tests/contract/.

Rules every backend keeps:
- a delivery's state and its place in the queue change in one atomic step;
- `claim` hands a ready delivery to one owner at a time, under a lease; a delivery whose lease
  expired is ready again (a crashed worker's work is picked up: at-least-once);
- `settle` applies only while the caller still holds the lease;
- a delivery of a paused webhook or endpoint is never queued: whatever would queue it (enqueue,
  settle, resend, a lease expiring) makes it `held` instead, keeping its due time, in the same
  step; resuming releases it with that due time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from oqronkit import _core
from oqronkit.models import (
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

T = TypeVar("T")
#: What `Backend.update_state` applies: from the states stored under its keys (None where none
#: is) to the states to store and a result.
StateUpdate = Callable[[list[str | None]], tuple[list[str], T]]

#: The arguments of one `Backend.settle`: delivery id, owner, settlement, now.
SettleRequest = tuple[str, str, Settlement, float]


def glob_predicate(pattern: str | None) -> Callable[[str], bool]:
    """Whether an event name matches `pattern` (None matches all), by the Rust matcher."""
    if pattern is None:
        return lambda _: True
    _core.validate_pattern(pattern)  # a typed error for a bad one (a lone surrogate, say)
    matcher = _core.Matcher([[pattern]])
    return lambda event: bool(matcher.match(event))


class Backend(ABC):
    #: Seconds between checks for work added by other processes; None when no other process
    #: can add work (memory).
    poll_interval: float | None = None
    #: Whether circuit breakers and rate limits live here, shared by every process using this
    #: backend (Redis, PostgreSQL). Otherwise each process keeps its own, in memory.
    shares_guards: bool = False
    #: Whether an operation is a round trip (to a server, or a writer thread), so that calls
    #: arriving together are worth sending together (group commits). Not in memory, whose
    #: operations never wait (settles then run unshielded: they cannot be interrupted).
    round_trips: bool = True

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connects and creates the schema; idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections; the backend can be opened again."""

    async def watch(  # noqa: B027 - optional
        self, wake: Callable[[str], None], ready: Callable[[], None] = lambda: None
    ) -> None:
        """Calls `wake(webhook)` whenever some process makes a delivery of `webhook` ready now
        (a fire, a resend, a release, a requeue), until cancelled, so dispatchers elsewhere
        start it at once; `ready()` once it listens. A backend without notifications returns
        at once and is polled every `poll_interval` instead."""

    def unreachable(self, exc: BaseException) -> bool:
        """Whether `exc` says the server could not be reached (a lost connection, a timeout, a
        restart, a failover) rather than a bug: background loops then log it in a line and
        try again (`outages`). A group of exceptions does when everything in it does."""
        if isinstance(exc, BaseExceptionGroup):
            return all(map(self.unreachable, exc.exceptions))
        return isinstance(exc, OSError)

    @abstractmethod
    async def enqueue(
        self,
        messages: Sequence[Message],
        deliveries: Sequence[NewDelivery],
        *,
        idempotency_since: float | None = None,
    ) -> list[str] | None:
        """Stores messages and their deliveries (ready now) in one atomic step.

        With `idempotency_since`, a single message carrying an `idempotency_key` is a repeat if
        a message of the same webhook and key was stored at or after that time: then nothing
        is stored and the earlier fire's delivery ids are returned. Otherwise returns None.
        """

    @abstractmethod
    async def claim(
        self,
        webhook: str,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        room: Mapping[str, int] | None = None,
    ) -> list[Claim]:
        """Leases up to `limit` ready deliveries of `webhook`, earliest due first, marking them
        active; at most `room[e]` of them for endpoint `e` (endpoints not in `room`: no cap).
        Deliveries whose lease expired are ready again first, `owner`'s own too: an owner renews
        the leases of what it still tracks before it claims, so an expired one of its own is a
        claim it lost (a reply that never came back, a step after the claim that failed)."""

    @abstractmethod
    async def next_due(self, webhook: str, skip_endpoints: Collection[str] = ()) -> float | None:
        """When the next delivery of `webhook`, other than those of `skip_endpoints`, becomes
        ready (a due time or a lease expiry)."""

    @abstractmethod
    async def renew(self, owner: str, ids: Collection[str], lease_until: float) -> set[str]:
        """Extends the leases `owner` still holds; returns the ids it still holds."""

    @abstractmethod
    async def settle(
        self, delivery_id: str, owner: str, settlement: Settlement, now: float
    ) -> Delivery | None:
        """Applies the outcome of a claim if `owner` still holds it and returns the delivery as
        it now stands; None if the lease was lost."""

    async def settle_many(self, settles: Sequence[SettleRequest]) -> list[Delivery | None]:
        """Applies several `settle`s, each as `settle` would (each on its own lease), in as few
        round trips as the backend can; results in order."""
        return [await self.settle(*request) for request in settles]

    @abstractmethod
    async def cancel(self, delivery_id: str, now: float) -> CancelOutcome:
        """Cancels a delivery: a queued or held one becomes `cancelled` ("cancelled"); an
        active one is flagged for its worker to abort ("requested"); a finished one is left
        as it is ("finished"); "missing" if there is none. Settling clears the flag."""

    @abstractmethod
    async def cancel_requested(self, owner: str, ids: Collection[str]) -> set[str]:
        """Which of `owner`'s active deliveries among `ids` have been asked to cancel."""

    @abstractmethod
    async def resend(self, delivery_id: str, new_id: str, now: float) -> Delivery | None:
        """Queues a copy of a finished delivery (completed, dead or cancelled) as `new_id`: the
        same message, endpoint and idempotency key, no attempts, ready at `now`, linked by
        `resent_from`. None if there is no such delivery or it has not finished."""

    @abstractmethod
    async def resent(self, delivery_ids: Sequence[str]) -> set[str]:
        """Those of the deliveries that were resent since: a newer delivery of the same message
        goes to the same endpoint (a resend of it, or of a copy of it)."""

    @abstractmethod
    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    @abstractmethod
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
        """Newest first; `before` is the id to continue after (a cursor). `event` is a glob
        (`order.**`); `since` (inclusive) and `until` (exclusive) bound the creation time."""

    # ---------------------------------------------------------------- runtime definitions

    @abstractmethod
    async def definitions(self, known_version: int | None = None) -> Definitions | None:
        """Every stored definition and pause flag; None if `known_version` is still current."""

    @abstractmethod
    async def write_definition(
        self, webhook: str, endpoint: str, changes: Mapping[str, Any] | None, *, replace: bool
    ) -> Document | None:
        """Changes one definition document in one atomic step and returns it: `replace` stores
        `changes` as the whole document; otherwise they are merged into it at the top level
        (a None value removes that key). `changes=None` deletes the document."""

    @abstractmethod
    async def set_paused(self, webhook: str, endpoint: str, paused: bool, now: float) -> int:
        """Pauses or resumes a webhook (`endpoint=WEBHOOK`) or one endpoint, in one atomic step
        with its deliveries: pausing holds every queued one; resuming releases every held one
        no longer under a pause, due when it was due. Returns how many were held or released."""

    @abstractmethod
    async def release(self, webhook: str, endpoint: str, now: float) -> int:
        """Releases held deliveries of a webhook or endpoint that are under no pause (those held
        while it was disabled or removed), due when they were due; pause flags are untouched."""

    @abstractmethod
    async def discard(self, webhook: str, endpoint: str, now: float, reason: str) -> int:
        """Cancels every unfinished delivery of a webhook (`endpoint=WEBHOOK`) or of one
        endpoint: queued and held ones at once, with `reason` as their error; active ones as
        `cancel` does (their workers abort them; a retry they would ask for is cancelled).
        Their definition is gone, so a later one of the same name must not receive them.
        Returns how many."""

    @abstractmethod
    async def create_webhook(
        self, webhook: str, documents: Mapping[str, Document], now: float, reason: str
    ) -> bool:
        """Stores a webhook's definition documents (by endpoint name, `WEBHOOK` for its own) in
        one atomic step, if no webhook of the name is stored (a deleted one's tombstone does
        not count), and returns whether it did. What a deleted one of the name left goes in
        the same step: the tombstone, pause flags, and deliveries (discarded, as `discard`
        does, with `reason`)."""

    @abstractmethod
    async def create_endpoint(
        self, webhook: str, endpoint: str, document: Document, now: float, reason: str
    ) -> bool:
        """Stores an endpoint's definition document in one atomic step, if no endpoint of the
        name is stored (a removed one's tombstone does not count), and returns whether it did.
        What a removed one of the name left goes in the same step: its pause flag, and the
        deliveries stale processes fired to it (discarded, as `discard` does, with `reason`)."""

    @abstractmethod
    async def delete_webhook(self, webhook: str, now: float, reason: str) -> int:
        """Deletes a webhook's definitions and its endpoints' pause flags, leaving a tombstone:
        the document `{DELETED: true}` and a pause, and discards its unfinished deliveries,
        in one atomic step. Anything that would queue one later (a fire from a
        process that has not seen the delete yet, a retry of an attempt in flight) is held by
        the tombstone's pause. Returns how many were discarded."""

    # ---------------------------------------------------------------- shared guard state

    @abstractmethod
    async def update_state(self, keys: Sequence[str], update: StateUpdate[T]) -> T:
        """Reads the states (opaque text: breaker and bucket snapshots) stored under `keys`,
        None where none is, and stores the states `update` returns for them, in one atomic step
        against every process sharing the backend; returns `update`'s result. `update` is pure
        and quick, and may run more than once (an optimistic backend retries it on conflict)."""
