"""The circuit breakers and rate limits a kit's dispatchers consult, by key.

Their transitions are always the Rust core's state machines. Where the backend shares them
(`Backend.shares_guards`: Redis, PostgreSQL) the state lives in the backend and steps are
applied inside `Backend.update_state`: the stored snapshots are restored into the machines, the
steps taken, the new snapshots stored, in one atomic step for every process. Steps asked for
while one such update is on its way to the backend go together in the next one (a group
commit), so under load a round trip carries many attempts' steps, in the order they were asked.
Otherwise (memory, SQLite) the machines live in this process and steps are plain calls.

Either way this process keeps one machine per key as a mirror of the last state it saw, which
is what the claim loop reads to plan how much room each endpoint has (cheap, possibly stale); the
decisions that matter (`admit`, `take`) are always made on the authoritative state.
"""

from __future__ import annotations

import json
from typing import Any, Literal, NamedTuple, TypeAlias

from oqronkit import _core
from oqronkit.backends import Backend
from oqronkit.batching import GroupCommit
from oqronkit.config import CircuitBreaker, RateLimit, Throttle

Limit: TypeAlias = RateLimit | Throttle
Verdict: TypeAlias = Literal["success", "failure", "release"]
BreakerState: TypeAlias = str  # "closed" | "open" | "half_open"
# An admitted attempt is a probe of the breaker's half-open period of this number, or None (let
# through while closed); a `release` gives back only a probe of the period still running.
Probe: TypeAlias = int | None


class _Step(NamedTuple):
    """One step on the machines of `key` (a tuple: two are made per attempt)."""

    kind: Literal["admit", "record", "take"]
    key: str
    now: float
    policy: CircuitBreaker | None = None
    limit: Limit | None = None
    verdict: Verdict = "success"
    tokens: int = 0  # for `take`
    probe: Probe = None  # for a `release`


class Guards:
    def __init__(self, backend: Backend, *, shared: bool | None = None) -> None:
        self._backend = backend
        self.shared = backend.shares_guards if shared is None else shared
        self._breakers: dict[str, tuple[CircuitBreaker, _core.CircuitBreaker]] = {}
        self._buckets: dict[str, tuple[Limit, _core.TokenBucket]] = {}
        self._store: GroupCommit[_Step, Any] = GroupCommit(self._store_steps)

    # ---------------------------------------------------------------- the mirrors

    def breaker(self, key: str, policy: CircuitBreaker) -> _core.CircuitBreaker:
        """The breaker of `key` as this process last saw it. A new policy (changed at runtime)
        takes over its state, as the stored state of a shared backend does: an open breaker
        stays open, and its half-open periods go on counting."""
        entry = self._breakers.get(key)
        # Policies are frozen dataclasses: the same object, as a rule, whose equality costs a
        # comparison of every field (this runs per attempt and per endpoint per claim).
        if entry is None or (entry[0] is not policy and entry[0] != policy):
            machine = policy.new_state_machine()
            if entry is not None:
                machine.restore(entry[1].snapshot())
            entry = self._breakers[key] = (policy, machine)
        return entry[1]

    def bucket(self, key: str, limit: Limit) -> _core.TokenBucket:
        """The token bucket of `key` as this process last saw it; a new limit takes over its
        tokens (no more than it holds), so changing a limit never refills it."""
        entry = self._buckets.get(key)
        if entry is None or (entry[0] is not limit and entry[0] != limit):
            bucket = _core.TokenBucket(limit.max, limit.per)
            if entry is not None:
                bucket.restore(entry[1].snapshot())
            entry = self._buckets[key] = (limit, bucket)
        return entry[1]

    # ---------------------------------------------------------------- decisions

    async def admit(
        self, key: str, policy: CircuitBreaker, limit: Limit | None, now: float
    ) -> tuple[float | None, Probe]:
        """Asks to send one attempt for `key` now: a token from its rate limit (if any), then the
        breaker's leave (a half-open probe counts as in flight from here). `(None, probe)`: go
        ahead, and hand `probe` to a `release`; `(retry_at, None)`: the moment to try again. A
        refused attempt takes nothing."""
        result: tuple[float | None, Probe] = await self._take_step(
            _Step("admit", key, now, policy=policy, limit=limit)
        )
        return result

    async def record(
        self, key: str, policy: CircuitBreaker, verdict: Verdict, now: float, probe: Probe = None
    ) -> tuple[BreakerState, BreakerState]:
        """Records how an admitted attempt went (`release`: no verdict, as it never reached the
        receiver or was cut short; `probe` is what `admit` said of it). Returns the breaker's
        state before and after."""
        result: tuple[BreakerState, BreakerState] = await self._take_step(
            _Step("record", key, now, policy=policy, verdict=verdict, probe=probe)
        )
        return result

    async def take(self, key: str, limit: Limit, count: int, now: float) -> int:
        """Takes up to `count` tokens from the bucket of `key` (a webhook throttle) at once;
        returns how many it got."""
        result: int = await self._take_step(_Step("take", key, now, limit=limit, tokens=count))
        return result

    # ---------------------------------------------------------------- taking steps

    async def _take_step(self, step: _Step) -> Any:
        return await self._store(step) if self.shared else self._apply(step)

    async def _store_steps(self, batch: list[_Step]) -> list[Any]:
        """Takes `batch`'s steps, in order, on the stored state: one backend round trip."""
        keys = list(dict.fromkeys(k for step in batch for k in self._keys(step)))

        def update(states: list[str | None]) -> tuple[list[str], list[Any]]:
            stored = dict(zip(keys, states, strict=True))
            for step in batch:  # restore every machine involved, then step them in order
                if step.policy is not None:
                    _restore_breaker(self.breaker(step.key, step.policy), stored[_breaker(step)])
                if step.limit is not None:
                    _restore_bucket(self.bucket(step.key, step.limit), stored[_bucket(step)])
            results = [self._apply(step) for step in batch]
            snapshots: dict[str, object] = {}
            for step in batch:
                if step.policy is not None:
                    snapshots[_breaker(step)] = self.breaker(step.key, step.policy).snapshot()
                if step.limit is not None:
                    snapshots[_bucket(step)] = self.bucket(step.key, step.limit).snapshot()
            return [json.dumps(snapshots[key]) for key in keys], results

        return await self._backend.update_state(keys, update)

    def _keys(self, step: _Step) -> list[str]:
        return ([_breaker(step)] if step.policy is not None else []) + (
            [_bucket(step)] if step.limit is not None else []
        )

    def _apply(self, step: _Step) -> Any:
        """One step on the machines (restored already, when shared)."""
        bucket = None if step.limit is None else self.bucket(step.key, step.limit)
        if step.kind == "take":
            assert bucket is not None
            granted = min(step.tokens, bucket.allowance(step.now))
            if granted > 0:
                bucket.try_acquire(step.now, float(granted))
            return granted
        assert step.policy is not None
        breaker = self.breaker(step.key, step.policy)
        if step.kind == "record":
            was = breaker.state
            if step.verdict == "success":
                breaker.record_success(step.now)
            elif step.verdict == "failure":
                breaker.record_failure(step.now)
            else:
                breaker.release(step.now, step.probe)
            return was, breaker.state
        if bucket is None:
            return breaker.allow(step.now)
        tokens = bucket.snapshot()
        wait = bucket.try_acquire(step.now)
        if wait is not None:
            return step.now + wait, None
        leave = breaker.allow(step.now)
        if leave[0] is not None:
            bucket.restore(tokens)  # the token goes back: nothing was sent
        return leave


def _breaker(step: _Step) -> str:
    return f"breaker:{step.key}"


def _bucket(step: _Step) -> str:
    return f"bucket:{step.key}"


def _restore_breaker(breaker: _core.CircuitBreaker, state: str | None) -> None:
    stored = json.loads(state) if state is not None else ("closed", 0, 0.0, 0)
    state_name, count, at, *periods = stored  # stored before periods were counted: none
    breaker.restore((state_name, int(count), float(at), int(periods[0]) if periods else 0))


def _restore_bucket(bucket: _core.TokenBucket, state: str | None) -> None:
    if state is None:  # a bucket never used is full
        tokens, last = bucket.capacity, None
    else:
        tokens, last = json.loads(state)
    bucket.restore((float(tokens), None if last is None else float(last)))
