"""The dispatcher of one webhook in one process: claims ready deliveries, runs their attempts
concurrently, and settles each outcome in the backend.

- A claim is made as soon as a slot frees and work is ready; with nothing ready it sleeps until
  the next due time, the moment a closed endpoint opens, a wake-up from `fire`, or the backend's
  poll interval (work added by other processes).
- `concurrency` bounds attempts in flight for the webhook and `max_in_flight` for each endpoint;
  an endpoint that is full, rate-limited or behind an open breaker gets no room in the claim, so
  its deliveries wait in the queue instead of being claimed only to be deferred.
- When attempts end faster than the claim loop comes round (more than one since it last
  looked: on a busy event loop it runs once per scheduler pass), that many more are claimed
  ahead, up to `concurrency`, and the worker of a finishing attempt starts the next one at
  once instead of parking until the claim loop has run and woken it (a task switch per
  attempt). Attempts that end one at a time (slow receivers) get nothing claimed ahead, so
  their deliveries stay in the queue for any process. Claims ahead count against
  `max_in_flight` and hold leases like any other; one whose webhook or endpoint is paused by
  the time it would begin goes back to the queue, as they all do when the dispatcher stops.
- Claims hold a lease that a heartbeat renews; a crashed process's deliveries are claimed again
  once their leases expire.
- A deferral (rate limit, open breaker) re-queues a delivery without using an attempt; so does a
  shutdown or a cancellation at any point of an attempt, and an unexpected error only delays it.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from oqronkit import delivery
from oqronkit._core import TokenBucket, parse_retry_after
from oqronkit.clock import sleep
from oqronkit.config import CircuitBreaker, Endpoint
from oqronkit.delivery import Verdict
from oqronkit.events import EventKind, LifecycleEvent
from oqronkit.guards import Probe
from oqronkit.guards import Verdict as GuardVerdict
from oqronkit.hooks import Hook, HookPool
from oqronkit.models import (
    CANCELLED,
    DEFINITIONS_TTL,
    WEBHOOK,
    Attempt,
    Claim,
    Delivery,
    Settlement,
)
from oqronkit.scopes import CancelScope
from oqronkit.taskpool import TaskPool

if TYPE_CHECKING:
    from oqronkit.kit import OqronKit
    from oqronkit.webhooks import Webhook

log = logging.getLogger("oqronkit")

RETRY_AFTER_ERROR = 5.0  # seconds before a delivery whose attempt broke unexpectedly is retried
CANCEL_POLL = 1.0  # seconds between checks for cancellations asked for by other processes


class Dispatcher:
    def __init__(self, kit: OqronKit, webhook: Webhook) -> None:
        self.kit = kit
        self.webhook = webhook
        self.owner = kit.worker_id
        self._settling = kit.loop_failures(f"webhook {webhook.name}: settling attempts")
        self._wake = anyio.Event()
        self._stopping = False
        # Attempts running in this process, by a token of their own: the same delivery may be
        # claimed again (a fast retry) before the task that settled it has quite finished.
        self._in_flight: dict[int, Claim] = {}
        self._ahead: deque[tuple[int, Claim]] = deque()  # in flight, attempt not yet started
        self._ended = 0  # attempts ended since the claim loop last looked
        self._settled: set[int] = set()
        # Claims whose requeue failed (the backend erred) or that the throttle turned back:
        # still leased to this worker, kept renewed and requeued by the claim loop.
        self._unrequeued: dict[str, Settlement] = {}
        self._cancelled: set[int] = set()  # by cancel_delivery, not by a deadline
        # The scopes of attempts that cancel_delivery may still cut short (until the answer).
        self._scopes: dict[int, CancelScope] = {}
        self._tokens = itertools.count()
        self._per_endpoint: dict[str, int] = {}
        self._idle = anyio.Event()
        self._idle.set()
        self._attempts_scope = anyio.CancelScope()
        self._startup_scope = anyio.CancelScope()
        self._claiming = anyio.CancelScope()  # the claim under way
        self._claims_end = math.inf
        # Backend steps that must outlive a cancellation (settles, requeues) are shielded, but
        # a shutdown waits for them one grace period more at most: a backend down or silent
        # would hold the exit for minutes (a command's timeout, step after step), and leases
        # take back whatever could not be handed back.
        self._wrap_up_end = math.inf
        self._renewed_at = kit.clock.now()
        self._renewing = anyio.Lock()
        # In flight here but not yet let through by the breaker: what it will count as probes.
        self._unadmitted: dict[int, str] = {}
        self._held_for_probes = False
        # Endpoints seen enabled here: what was held while one was disabled or missing is
        # released when this dispatcher first sees it enabled, by whatever route it came back.
        self._enabled: set[str] = set()
        self._hooks: HookPool
        self._attempts: TaskPool

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Claims and runs attempts until `stop` is called; then drains within the grace period."""
        with self._startup_scope:  # a slow endpoints callable must not hold up a shutdown
            try:
                await self.webhook.endpoints()  # so the first claim knows every endpoint's room
            except Exception:
                log.exception("webhook %s: the endpoints callable failed", self.webhook.name)
        # Hooks run beside the attempts, so a slow hook holds no slot and no lease; they are
        # bounded by their own timeout and allowed to finish at shutdown.
        async with anyio.create_task_group() as hooks, anyio.create_task_group() as tg:
            self._hooks = HookPool(hooks, self.kit.hook_timeout, self.kit.watchdog)
            tg.start_soon(self._heartbeat)
            tg.start_soon(self._watch_cancels)
            tg.start_soon(self._watch_endpoints)
            try:
                with self._attempts_scope:
                    async with anyio.create_task_group() as attempts:
                        self._attempts = TaskPool(attempts)
                        await self._claim_loop()
                        await self._drain()
            finally:  # after a drain, or when the kit itself is cancelled
                name = self.webhook.name
                self._stopping = True  # the attempts' task group is gone: nothing starts now
                await self._requeue_unstarted()
                with self._shielded():
                    try:
                        await self._requeue_again(self.kit.clock.now())
                    except Exception as exc:
                        if not self.kit.backend.unreachable(exc):
                            log.exception("webhook %s: could not requeue", name)
                if self._unrequeued:  # a line, as the loops say an outage
                    log.warning(
                        "webhook %s: could not requeue %d deliveries in time: they stay "
                        "leased here, and another worker takes them once their leases run out",
                        name,
                        len(self._unrequeued),
                    )
            tg.cancel_scope.cancel()
            self._hooks.close()  # hooks under way may finish, within their timeout

    def _shielded(self) -> anyio.CancelScope:
        return anyio.CancelScope(shield=True, deadline=self._wrap_up_end)

    def stop(self) -> None:
        self._stopping = True
        self._startup_scope.cancel()
        # A claim waiting on its backend (a SQLite file another process holds locked) may
        # take the grace period, no more: cut short then, what it claimed (if the backend
        # did claim) is taken back when its lease expires.
        self._claims_end = anyio.current_time() + self.kit.shutdown_grace
        self._claiming.deadline = self._claims_end
        self._wrap_up_end = self._claims_end + self.kit.shutdown_grace
        self.wake()

    async def _drain(self) -> None:
        while self._ahead:  # not begun: back to the queue now, no attempt used
            await self._return_unbegun(*self._ahead.popleft())
        with anyio.move_on_after(self.kit.shutdown_grace):
            await self._idle.wait()
        self._attempts_scope.cancel()  # the rest go back to the queue, no attempt used

    async def _requeue_unstarted(self) -> None:
        """Claims whose attempt had not begun when the attempts were cancelled go back too."""
        self._ahead.clear()
        for token, claim in list(self._in_flight.items()):
            await self._return_unbegun(token, claim)

    async def _return_unbegun(self, token: int, claim: Claim) -> None:
        """Back to the queue, no attempt used; or, if `cancel_delivery` reached it before or
        while it went back, cancelled."""
        with self._shielded():
            if token in self._cancelled:
                await self._settle(token, claim, CANCELLED)
            else:
                await self._requeue_unsettled(token, claim, 0.0)
                if token in self._cancelled:
                    try:
                        await self.kit.backend.cancel(claim.id, self.kit.clock.now())
                    except Exception:
                        log.exception("delivery %s: could not cancel it", claim.id)
        self._release(token, claim)

    # ---------------------------------------------------------------- claiming

    def _room(self, now: float) -> tuple[dict[str, int], float | None]:
        """How many attempts each endpoint may start now, and the earliest moment an endpoint
        closed by its rate limit or breaker opens again."""
        room: dict[str, int] = {}
        opens: list[float] = []
        unadmitted = Counter(self._unadmitted.values())
        for name in self.webhook.endpoint_names():
            free = self.webhook.max_in_flight(name) - self._per_endpoint.get(name, 0)
            closed_until, probes = self._breaker_gate(name, now, unadmitted[name])
            if closed_until is not None:
                free = 0
                opens.append(closed_until)
            else:
                if probes is not None:  # half-open: no more than its probes, or the breaker
                    free = min(free, probes)  # turns the rest away for a whole reset
                if (bucket := self._rate_limit(name)) is not None:  # as last seen here
                    free = min(free, bucket.allowance(now))
                    if free <= 0:
                        opens.append(now + _refill_time(bucket, now))
            room[name] = free
        return room, min(opens, default=None)

    def _rate_limit(self, name: str) -> TokenBucket | None:
        endpoint = self.webhook.endpoint_named(name)
        if endpoint is None or endpoint.rate_limit is None:
            return None
        return self.kit.guards.bucket(self._key(name), endpoint.rate_limit)

    def _breaker_gate(
        self, name: str, now: float, unadmitted: int
    ) -> tuple[float | None, int | None]:
        """What the endpoint's breaker (as last seen here) lets through now: nothing until a
        moment (the first value), or at most so many more probes (the second), or anything.
        `unadmitted` are this worker's claims for it not yet let through: probes to be."""
        endpoint = self.webhook.endpoint_named(name)
        policy = (endpoint and endpoint.circuit_breaker) or self.webhook.circuit_breaker
        state, probes, at, _ = self.kit.guards.breaker(self._key(name), policy).snapshot()
        if state == "closed":
            return None, None
        reopens = at + policy.reset_timeout
        if now >= reopens:  # a new half-open period begins (any probes out are presumed lost)
            probes = 0
        elif state == "open" or probes >= policy.half_open_max:
            return reopens, None  # or sooner, when a probe's outcome wakes the claim loop
        # No more than the probes left, less the claims about to probe (the breaker may count
        # one already: once it has, `_admitted` wakes the claim loop held back for it).
        left = policy.half_open_max - probes - unadmitted
        if left <= 0:
            self._held_for_probes = True
        return None, max(0, left)

    def _key(self, endpoint_name: str) -> str:
        return f"{self.webhook.name}\x00{endpoint_name}"

    async def _claim_loop(self) -> None:
        clock, backend, guards = self.kit.clock, self.kit.backend, self.kit.guards
        failures = self.kit.loop_failures(f"webhook {self.webhook.name}: claiming")
        while not self._stopping:
            # A fresh event before looking, so a wake-up during the claim is not lost.
            self._wake = anyio.Event()
            self._start_ahead()  # concurrency may have been raised
            free = self.webhook.concurrency + self._ahead_wanted() - len(self._in_flight)
            now = clock.now()
            throttle = self.webhook.throttle  # may change at runtime (update_webhook)
            bucket = None if throttle is None else guards.bucket(self.webhook.name, throttle)
            wakeup: float | None = None
            # `stop` gives what this round asks of the backend the grace period at most: a
            # claim, and the lease keeping, requeues and next-due look-up around it (each a
            # command's timeout when the backend has gone silent).
            with anyio.CancelScope(deadline=self._claims_end) as self._claiming:
                try:
                    await self._keep_leases(now)
                    await self._requeue_again(now)
                    room, opens = self._room(now)
                    limit = free
                    if bucket is not None:
                        limit = min(free, bucket.allowance(now))  # as last seen here
                        if free > 0 and limit == 0:
                            await clock.wait(self._wake, now + _refill_time(bucket, now))
                            continue
                    claims = []
                    if limit > 0:
                        lease_until = now + self.kit.lease
                        claims = await backend.claim(
                            self.webhook.name, self.owner, now, lease_until, limit, room
                        )
                        failures.succeeded()
                    refused = False
                    if claims and throttle is not None and bucket is not None:
                        # The throttle's tokens are taken for what was claimed; other processes
                        # sharing it may have taken them first: the rest go back, no attempt
                        # used (all of them if taking failed), their leases kept until back.
                        granted, due = 0, now + RETRY_AFTER_ERROR
                        try:
                            granted = await guards.take(
                                self.webhook.name, throttle, len(claims), now
                            )
                            due = now + _refill_time(bucket, now)
                        finally:
                            for claim in claims[granted:]:
                                self._unrequeued[claim.id] = Settlement(
                                    "delayed", next_attempt_at=due
                                )
                            refused, claims = granted < len(claims), claims[:granted]
                    for claim in claims:
                        self._take(claim)
                    self._start_ahead()
                    if refused:
                        await self._requeue_again(now)
                    if claims:
                        continue
                    wakeup = await self._next_wakeup(now, free > 0, room, opens)
                except Exception as exc:  # the backend failed (a locked file, a lost link)
                    failures.failed(exc)
                    wakeup = now + RETRY_AFTER_ERROR
            await clock.wait(self._wake, wakeup)

    async def _watch_endpoints(self) -> None:
        """Releases the deliveries held while an endpoint was disabled or missing (an endpoints
        callable that left it out) once it is enabled: by `update_endpoint`, a redeploy of the
        code, the callable listing it again. The endpoints (the callable too) are read here as
        often as definitions are, not only when a claim needs them: with nothing but held
        deliveries, nothing is claimed. Pauses still hold theirs."""
        failures = self.kit.loop_failures(f"webhook {self.webhook.name}: releasing")
        while True:
            try:
                await self.webhook.endpoints()
            except Exception:  # logged where claims meet it; the last known set serves
                log.debug("webhook %s: the endpoints callable failed", self.webhook.name)
            try:
                await self._release_reenabled(self.kit.clock.now())
                failures.succeeded()
            except Exception as exc:
                failures.failed(exc)
            await sleep(self.kit.clock, DEFINITIONS_TTL)

    async def _release_reenabled(self, now: float) -> None:
        enabled = {e.name for e in self.webhook.current_endpoints() if e.enabled}
        self._enabled &= enabled
        for name in enabled - self._enabled:
            if await self.kit.backend.release(self.webhook.name, name, now):
                self.wake()
            self._enabled.add(name)

    async def _next_wakeup(
        self, now: float, can_claim: bool, room: dict[str, int], opens: float | None
    ) -> float | None:
        if not can_claim:
            return None  # a finishing attempt wakes us
        closed = [name for name, free in room.items() if free <= 0]
        due = await self.kit.backend.next_due(self.webhook.name, closed)
        poll = self.kit.backend.poll_interval
        candidates = [
            t for t in (due, opens, None if poll is None else now + poll) if t is not None
        ]
        return min(candidates) if candidates else None

    def _ahead_wanted(self) -> int:
        """How many to claim ahead, at this look of the claim loop: one fewer than the
        attempts that ended since the last look, up to `concurrency` (module docstring)."""
        ended, self._ended = self._ended, 0
        return max(0, min(ended - 1, self.webhook.concurrency))

    def _take(self, claim: Claim) -> None:
        token = next(self._tokens)
        if not self._in_flight:  # busy from now on
            self._idle = anyio.Event()
        self._in_flight[token] = claim
        self._unadmitted[token] = claim.endpoint_name
        self._per_endpoint[claim.endpoint_name] = self._per_endpoint.get(claim.endpoint_name, 0) + 1
        self._ahead.append((token, claim))

    def _start_ahead(self) -> None:
        if self._stopping:  # a claim that came back after the stop: its claims go back unbegun
            return
        for _ in range(self._startable()):
            self._attempts.start_soon(self._attempt_then_release, *self._ahead.popleft())

    def _startable(self) -> int:
        """How many claims ahead may start now: while fewer than `concurrency` attempts run."""
        running = len(self._in_flight) - len(self._ahead)
        return min(self.webhook.concurrency - running, len(self._ahead))

    def _admitted(self, token: int) -> None:
        """The breaker has had its say on this claim (or never will): no longer a probe to be.
        A claim loop that held back for it looks again."""
        if self._unadmitted.pop(token, None) is not None and self._held_for_probes:
            self._held_for_probes = False
            self.wake()

    def _release(self, token: int, claim: Claim) -> None:
        del self._in_flight[token]
        self._admitted(token)
        self._settled.discard(token)
        self._cancelled.discard(token)
        self._per_endpoint[claim.endpoint_name] -= 1
        if not self._in_flight:
            self._idle.set()

    def cancel(self, delivery_id: str) -> bool:
        """Aborts the attempt in flight for `delivery_id` here, if there is one."""
        tokens = [t for t, claim in self._in_flight.items() if claim.id == delivery_id]
        for token in tokens:
            self._cancelled.add(token)  # an attempt not yet begun sees it when it begins
            scope = self._scopes.get(token)
            if scope is not None:
                scope.cancel()
        if not self._stopping:  # once stopping, the drain settles claims ahead
            for entry in [e for e in self._ahead if e[0] in tokens]:
                # Begun now rather than when a slot frees: it only settles, sending nothing.
                self._ahead.remove(entry)
                self._attempts.start_soon(self._attempt_then_release, *entry)
        return bool(tokens)

    def cancel_endpoint(self, endpoint_name: str) -> None:
        """Aborts the attempts in flight here for an endpoint (`WEBHOOK`: all of them): the
        backend discarded them, and they would learn of it within a second anyway."""
        for claim in list(self._in_flight.values()):
            if endpoint_name in (WEBHOOK, claim.endpoint_name):
                self.cancel(claim.id)

    async def _watch_cancels(self) -> None:
        """Cancellations asked for elsewhere (another process) reach this one within a second."""
        failures = self.kit.loop_failures(
            f"webhook {self.webhook.name}: checking for cancellations"
        )
        while True:
            await sleep(self.kit.clock, CANCEL_POLL)
            if not self._in_flight:
                continue
            try:
                ids = [claim.id for claim in self._in_flight.values()]
                for delivery_id in await self.kit.backend.cancel_requested(self.owner, ids):
                    self.cancel(delivery_id)
                failures.succeeded()
            except Exception as exc:
                failures.failed(exc)

    async def _attempt_then_release(self, scope: CancelScope, token: int, claim: Claim) -> None:
        # `scope` is the pool worker's: while the attempt may be cut short (until its answer is
        # in), cancel_delivery cancels it, and so does the kit's watchdog at the request's
        # deadline. A scope per attempt would cost more than the rest of an attempt's
        # bookkeeping. Cut short, the attempt settles shielded and ends in the Cancelled,
        # which the worker catches.
        sending: _Sending | None = None
        try:
            if token in self._cancelled:  # cancel_delivery before it began: nothing is sent
                await self._settle(token, claim, CANCELLED)
                return
            self._scopes[token] = scope
            try:
                try:
                    sending = await self._prepare(token, claim)
                finally:
                    self._admitted(token)
                if sending is not None:
                    await self._send(sending, claim, scope)
            finally:
                del self._scopes[token]
            if sending is not None:
                assert sending.response is not None
                if scope.cancel_called:  # too late to cut short: the answer is in, and stands
                    with self._shielded():
                        await self._conclude(token, claim, sending)
                else:
                    await self._conclude(token, claim, sending)
            if token in self._cancelled:
                # cancel_delivery came too late to cut the attempt short (after its answer, or
                # while a deferral's settle was on its way): if the attempt put the delivery
                # back in the queue, it is cancelled there.
                with self._shielded():
                    await self.kit.backend.cancel(claim.id, self.kit.clock.now())
        except anyio.get_cancelled_exc_class():
            with self._shielded():
                if scope.cancel_called:
                    await self._cut_short(token, claim, sending)
                else:  # shutdown: back to the queue, no attempt used
                    await self._no_verdict(sending)
                    await self._requeue_unsettled(token, claim, 0.0)
            raise
        except Exception as exc:
            await self._broke(token, claim, sending, exc)
        finally:
            self._release(token, claim)
            self._ended += 1
            if not self._stopping and self._startable() > 0:  # on this worker, at once
                self._attempts.start_next(self._attempt_then_release, *self._ahead.popleft())
            self.wake()

    async def _cut_short(self, token: int, claim: Claim, sending: _Sending | None) -> None:
        """Settles an attempt whose scope was cancelled: by cancel_delivery, or at its
        request's deadline."""
        try:
            cut = sending if sending is not None and sending.response is None else None
            if cut is not None and cut.answer is not None:
                # The answer was in and stands; only its body, kept for the record, was cut
                # short. A retry it asks for after a cancel is cancelled in the backend.
                duration = self.kit.watchdog.clock() - cut.sent_at
                why = (
                    "cancelled" if token in self._cancelled else f"timed out after {cut.timeout:g}s"
                )
                cut.response = delivery.body_cut_short(cut.answer, duration, why)
                await self._conclude(token, claim, cut)
            elif token in self._cancelled:
                # cancel_delivery: no breaker failure, no on_dead, no attempt recorded.
                await self._no_verdict(sending)
                if token not in self._settled:
                    await self._settle(token, claim, CANCELLED)
            elif cut is not None:  # its deadline passed before the answer
                duration = self.kit.watchdog.clock() - cut.sent_at
                cut.response = delivery.timed_out(cut.timeout, duration)
                await self._conclude(token, claim, cut)
        except Exception as exc:
            await self._broke(token, claim, sending, exc)

    async def _broke(
        self, token: int, claim: Claim, sending: _Sending | None, exc: Exception
    ) -> None:
        self._failed(exc, "delivery %s: the attempt broke; it will be retried", claim.id)
        await self._no_verdict(sending)
        await self._requeue_unsettled(token, claim, RETRY_AFTER_ERROR)

    async def _requeue_unsettled(self, token: int, claim: Claim, delay: float) -> None:
        if token in self._settled:
            return
        now = self.kit.clock.now()
        requeue = Settlement("waiting" if delay == 0 else "delayed", next_attempt_at=now + delay)
        with self._shielded() as shield:
            try:
                await self.kit.backend.settle(claim.id, self.owner, requeue, now)
            except Exception as exc:
                self._failed(exc, "delivery %s: could not requeue; will try again", claim.id)
                self._unrequeued[claim.id] = requeue
        if shield.cancelled_caught:  # a shutdown's wrap-up ran out
            self._unrequeued[claim.id] = requeue

    def _failed(self, exc: Exception, message: str, delivery_id: str) -> None:
        """A backend out of reach fails every attempt's settle alike: one line a minute for
        them all (`outages`). Anything else is a bug, with its traceback."""
        if self.kit.backend.unreachable(exc):
            self._settling.failed(exc)
        else:
            log.error(message, delivery_id, exc_info=exc)

    async def _requeue_again(self, now: float) -> None:
        """Requeues what `_requeue_unsettled` could not, oldest first; raises on the first
        failure (the rest wait for the next try)."""
        for delivery_id, requeue in list(self._unrequeued.items()):
            await self.kit.backend.settle(delivery_id, self.owner, requeue, now)
            del self._unrequeued[delivery_id]  # requeued, or no longer this worker's

    async def _heartbeat(self) -> None:
        failures = self.kit.loop_failures(f"webhook {self.webhook.name}: renewing leases")
        while True:
            await sleep(self.kit.clock, self.kit.lease / 3)
            try:
                if await self._keep_leases(self.kit.clock.now()):
                    failures.succeeded()
            except Exception as exc:
                failures.failed(exc)

    async def _keep_leases(self, now: float) -> bool:
        """Renews the leases of attempts in flight once a third of the lease has passed; says
        whether it did. The claim loop calls it too, before claiming, so a stalled heartbeat
        (or a test's jumped clock) never lets a claim, this worker's or another's, take work
        still in flight here. Hence one renewal at a time, and a renewal counts once it is
        stored: the claim loop waits for the heartbeat's, and one that failed is done again."""
        async with self._renewing:
            if (
                not (self._in_flight or self._unrequeued)
                or now < self._renewed_at + self.kit.lease / 3
            ):
                return False
            ids = [claim.id for claim in self._in_flight.values()] + list(self._unrequeued)
            await self.kit.backend.renew(self.owner, ids, now + self.kit.lease)
            self._renewed_at = now
            return True

    # ---------------------------------------------------------------- one attempt

    async def _prepare(self, token: int, claim: Claim) -> _Sending | None:
        """What an attempt needs before its request: its endpoint, and leave from the breaker
        and the rate limit. None when the delivery was settled instead (deferred or held)."""
        kit, webhook, clock = self.kit, self.webhook, self.kit.clock
        if kit.definitions.paused and await self._paused_since_claimed(claim):
            # It may have waited ahead: back to the queue, which holds it; no attempt used.
            await self._settle(token, claim, Settlement("waiting", next_attempt_at=clock.now()))
            return None
        try:
            endpoint = await webhook.endpoint_for_attempt(claim.endpoint_name)
        except Exception:  # the user's endpoints callable failed: try again later
            log.exception("webhook %s: the endpoints callable failed", webhook.name)
            later = clock.now() + RETRY_AFTER_ERROR
            await self._settle(token, claim, Settlement("delayed", next_attempt_at=later))
            return None
        if endpoint is None:
            reason = f"endpoint {claim.endpoint_name!r} is disabled or no longer registered"
            await self._settle(token, claim, Settlement("held", error=reason))
            return None
        now = clock.now()
        key = self._key(endpoint.name)
        policy = endpoint.circuit_breaker or webhook.circuit_breaker
        retry_at, probe = await kit.guards.admit(key, policy, endpoint.rate_limit, now)
        if retry_at is not None:  # rate-limited or the breaker is open: no attempt used
            await self._settle(token, claim, Settlement("delayed", next_attempt_at=retry_at))
            return None
        return _Sending(
            endpoint,
            key,
            policy,
            probe,
            number=claim.attempts_made + 1,
            started_at=now,
            timeout=endpoint.timeout or webhook.timeout,
        )

    async def _paused_since_claimed(self, claim: Claim) -> bool:
        name, endpoint = self.webhook.name, claim.endpoint_name
        if not self.kit.definitions.is_paused(name, endpoint):
            return False
        # Read again before requeueing it: another process may have just resumed it, and
        # the queue would hand it straight back.
        await self.kit.refresh_definitions()
        return self.kit.definitions.is_paused(name, endpoint)

    async def _send(self, sending: _Sending, claim: Claim, scope: CancelScope) -> None:
        """Sets `sending.response`, unless cut short: cancelled, or the exchange outlived its
        deadline (the watchdog then cancels `scope`)."""
        kit, webhook, endpoint = self.kit, self.webhook, sending.endpoint
        try:
            number, at = sending.number, sending.started_at
            headers = await webhook.request_headers(endpoint, claim, number, at)
        except Exception as exc:  # a user's security callable failed: retry later
            log.exception("delivery %s: could not prepare the request", claim.id)
            sending.response = delivery.Response(
                Verdict.RETRY,
                0.0,
                error=f"could not prepare the request: {type(exc).__name__}",
                reached=False,
            )
            return
        await kit.connections.acquire()
        try:
            sending.sent_at = kit.watchdog.clock()
            timer = kit.watchdog.arm(scope, sending.sent_at + sending.timeout)
            try:
                sending.response = await delivery.send(
                    kit.transport,
                    endpoint.method or webhook.method,
                    endpoint.url,
                    headers,
                    claim.body,
                    body_cap=kit.response_body_cap,
                    started=sending.sent_at,
                    clock=kit.watchdog.clock,
                    answered=sending.answered,
                )
            finally:
                timer.disarm()
        finally:
            kit.connections.release()

    async def _no_verdict(self, sending: _Sending | None) -> None:
        """An attempt let through but cut short before its verdict (cancelled, shut down or
        broken) says nothing about the receiver: its breaker probe slot is given back, once.
        An attempt let through while the breaker was closed holds no slot."""
        if sending is not None and not sending.judged:
            sending.judged = True
            if sending.probe is None:
                return
            try:
                now = self.kit.clock.now()
                await self.kit.guards.record(
                    sending.key, sending.policy, "release", now, sending.probe
                )
            except Exception:  # on the way out of a failure already: log, do not mask it
                name = sending.endpoint.name
                log.exception("endpoint %s: giving back its breaker probe failed", name)

    async def _conclude(self, token: int, claim: Claim, sending: _Sending) -> None:
        """Judges the response: the breaker learns of it, and the delivery is settled."""
        kit, webhook, endpoint = self.kit, self.webhook, sending.endpoint
        response = sending.response
        assert response is not None
        now = kit.clock.now()
        verdict: GuardVerdict = (
            "release"  # nothing was sent: no verdict on the receiver
            if not response.reached
            else "failure"
            if response.counts_against_breaker
            else "success"
        )
        sending.judged = True
        was, state = await kit.guards.record(
            sending.key, sending.policy, verdict, now, sending.probe
        )
        if state != was and state in ("open", "closed"):
            kind: EventKind = "breaker.opened" if state == "open" else "breaker.closed"
            kit.publish(LifecycleEvent(kind, webhook.name, now, endpoint.name, claim.id))
        attempt = Attempt(
            at=sending.started_at,
            duration=response.duration,
            status=response.status,
            error=response.error,
            response_body=response.body,
        )
        retries = endpoint.retries or webhook.retries
        failure = None if response.verdict is Verdict.DELIVERED else _describe(response)
        if response.verdict is Verdict.DELIVERED:
            settlement = Settlement("completed", attempt=attempt)
        elif response.verdict is Verdict.RETRY and sending.number <= retries.max:
            retry_after = (
                parse_retry_after(response.retry_after, now) if response.retry_after else None
            )
            delay = webhook.backoff(retries).retry_delay(
                sending.number, kit.random.random(), retry_after, kit.retry_after_cap
            )
            settlement = Settlement(
                "delayed", next_attempt_at=now + delay, attempt=attempt, error=failure
            )
        else:
            settlement = Settlement("dead", attempt=attempt, error=failure)
        if response.verdict is Verdict.GONE:
            await kit.disable_endpoint(webhook.name, endpoint.name, f"{failure} ({claim.id})")
        settled = await self._settle(token, claim, settlement)
        if settled is None:
            return
        if failure is not None:
            self._hook(webhook.on_failure, settled)
        if settled.status == "completed":
            self._hook(webhook.on_success, settled)
        elif settled.status == "dead":
            self._hook(webhook.on_dead, settled)
            kit.publish(
                LifecycleEvent(
                    "delivery.dead", webhook.name, now, endpoint.name, settled.id, settled.error
                )
            )

    async def _settle(self, token: int, claim: Claim, settlement: Settlement) -> Delivery | None:
        now = self.kit.clock.now()
        settled = await self.kit.settles((claim.id, self.owner, settlement, now))
        self._settling.succeeded()
        self._settled.add(token)
        if settled is None:
            log.warning(
                "delivery %s: lease lost before it settled; another worker will retry it", claim.id
            )
        return settled

    def _hook(self, hook: Hook | None, delivery: Delivery) -> None:
        """Runs `hook` beside the attempts, on the delivery as this outcome left it."""
        if hook is not None:
            self._hooks.start_soon(hook, delivery)


def _refill_time(bucket: TokenBucket, now: float) -> float:
    """Seconds until `bucket` holds a whole token again."""
    return (1 - bucket.available(now)) / bucket.rate


def _describe(response: delivery.Response) -> str:
    """Why a delivery failed: the answer's status when there was one (the error then says only
    what became of its body, which the attempt keeps)."""
    return f"HTTP {response.status}" if response.status is not None else str(response.error)


@dataclass(slots=True)
class _Sending:
    """An attempt let through to its request, and what came of it."""

    endpoint: Endpoint
    key: str  # of its breaker and rate limit
    policy: CircuitBreaker
    probe: Probe  # the breaker's half-open period this attempt probes, if any
    number: int  # 1 for the first attempt
    started_at: float  # on the kit's clock: the attempt's record
    timeout: float
    sent_at: float = 0.0  # on the event loop's clock: the deadline's
    answer: delivery.Response | None = None  # the response's head, once in
    response: delivery.Response | None = None
    judged: bool = False  # the breaker has had its verdict, or its slot back

    def answered(self, head: delivery.Response) -> None:
        self.answer = head
