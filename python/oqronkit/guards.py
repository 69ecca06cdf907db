"""The circuit breakers and rate limits a kit's dispatchers consult, by key.

Their transitions are always the Rust core's state machines. Where the backend shares them
(`Backend.shares_guards`: Redis, PostgreSQL) the state lives in the backend and every transition
is applied inside `Backend.update_state`: the stored snapshot is restored into the machine, the
step is taken, the new snapshot stored, in one atomic step for every process. Otherwise (memory,
SQLite) the machines live in this process and steps are plain calls.

Either way this process keeps one machine per key as a mirror of the last state it saw, which
is what the claim loop reads to plan how much room each endpoint has (cheap, possibly stale); the
decisions that matter (`admit`, `take`) are always made on the authoritative state.
"""

from __future__ import annotations

import json
from typing import Literal, TypeAlias

from oqronkit import _core
from oqronkit.backends import Backend
from oqronkit.config import CircuitBreaker, RateLimit, Throttle

Limit: TypeAlias = RateLimit | Throttle
Verdict: TypeAlias = Literal["success", "failure", "release"]
BreakerState: TypeAlias = str  # "closed" | "open" | "half_open"


class Guards:
    def __init__(self, backend: Backend, *, shared: bool | None = None) -> None:
        self._backend = backend
        self.shared = backend.shares_guards if shared is None else shared
        self._breakers: dict[str, tuple[CircuitBreaker, _core.CircuitBreaker]] = {}
        self._buckets: dict[str, tuple[Limit, _core.TokenBucket]] = {}

    # ---------------------------------------------------------------- the mirrors

    def breaker(self, key: str, policy: CircuitBreaker) -> _core.CircuitBreaker:
        """The breaker of `key` as this process last saw it (a new policy starts it afresh)."""
        entry = self._breakers.get(key)
        if entry is None or entry[0] != policy:
            entry = self._breakers[key] = (policy, policy.new_state_machine())
        return entry[1]

    def bucket(self, key: str, limit: Limit) -> _core.TokenBucket:
        """The token bucket of `key` as this process last saw it."""
        entry = self._buckets.get(key)
        if entry is None or entry[0] != limit:
            entry = self._buckets[key] = (limit, _core.TokenBucket(limit.max, limit.per))
        return entry[1]

    # ---------------------------------------------------------------- decisions

    async def admit(
        self, key: str, policy: CircuitBreaker, limit: Limit | None, now: float
    ) -> float | None:
        """Asks to send one attempt for `key` now: a token from its rate limit (if any), then the
        breaker's leave (a half-open probe counts as in flight from here). None: go ahead;
        otherwise the moment to try again. A refused attempt takes nothing."""
        breaker = self.breaker(key, policy)
        bucket = self.bucket(key, limit) if limit is not None else None

        def step() -> float | None:
            if bucket is not None:
                tokens = bucket.snapshot()
                wait = bucket.try_acquire(now)
                if wait is not None:
                    return now + wait
                retry_at = breaker.allow(now)
                if retry_at is not None:
                    bucket.restore(tokens)  # the token goes back: nothing was sent
                return retry_at
            return breaker.allow(now)

        if not self.shared:
            return step()
        keys = [_breaker_key(key)] + ([_bucket_key(key)] if bucket is not None else [])

        def update(states: list[str | None]) -> tuple[list[str], float | None]:
            _restore_breaker(breaker, states[0])
            if bucket is not None:
                _restore_bucket(bucket, states[1])
            retry_at = step()
            stored = [json.dumps(breaker.snapshot())]
            if bucket is not None:
                stored.append(json.dumps(bucket.snapshot()))
            return stored, retry_at

        return await self._backend.update_state(keys, update)

    async def record(
        self, key: str, policy: CircuitBreaker, verdict: Verdict, now: float
    ) -> tuple[BreakerState, BreakerState]:
        """Records how an admitted attempt went (`release`: it never reached the receiver, no
        verdict). Returns the breaker's state before and after."""
        breaker = self.breaker(key, policy)

        def step() -> tuple[BreakerState, BreakerState]:
            was = breaker.state
            if verdict == "success":
                breaker.record_success(now)
            elif verdict == "failure":
                breaker.record_failure(now)
            else:
                breaker.release(now)
            return was, breaker.state

        if not self.shared:
            return step()

        def update(states: list[str | None]) -> tuple[list[str], tuple[str, str]]:
            _restore_breaker(breaker, states[0])
            change = step()
            return [json.dumps(breaker.snapshot())], change

        return await self._backend.update_state([_breaker_key(key)], update)

    async def take(self, key: str, limit: Limit, count: int, now: float) -> int:
        """Takes up to `count` tokens from the bucket of `key` (a webhook throttle) at once;
        returns how many it got."""
        bucket = self.bucket(key, limit)

        def step() -> int:
            granted = min(count, bucket.allowance(now))
            if granted > 0:
                bucket.try_acquire(now, float(granted))
            return granted

        if not self.shared:
            return step()

        def update(states: list[str | None]) -> tuple[list[str], int]:
            _restore_bucket(bucket, states[0])
            granted = step()
            return [json.dumps(bucket.snapshot())], granted

        return await self._backend.update_state([_bucket_key(key)], update)


def _breaker_key(key: str) -> str:
    return f"breaker:{key}"


def _bucket_key(key: str) -> str:
    return f"bucket:{key}"


def _restore_breaker(breaker: _core.CircuitBreaker, state: str | None) -> None:
    state_name, count, at = json.loads(state) if state is not None else ("closed", 0, 0.0)
    breaker.restore((state_name, int(count), float(at)))


def _restore_bucket(bucket: _core.TokenBucket, state: str | None) -> None:
    if state is None:  # a bucket never used is full
        tokens, last = bucket.capacity, None
    else:
        tokens, last = json.loads(state)
    bucket.restore((float(tokens), None if last is None else float(last)))
