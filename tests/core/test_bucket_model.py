"""The Rust token bucket against a Python model, and the rate bound it must never break."""

from __future__ import annotations

import math

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from oqronkit import ConfigurationError
from oqronkit._core import KeyedBuckets, TokenBucket

SLACK_SECONDS = 1e-6  # a deficit refilled within a microsecond counts as paid,
MAX_SLACK_TOKENS = 1e-3  # up to this many tokens, owed to the next refill


class BucketModel:
    """Starts full; refills at max/per a second up to max; a clock going back refills nothing."""

    def __init__(self, max: float, per: float) -> None:
        self.max, self.rate = max, max / per
        self.tokens, self.updated_at = max, None

    def try_acquire(self, now: float, n: float) -> float | None:
        if self.updated_at is not None and now > self.updated_at:
            self.tokens = min(self.max, self.tokens + (now - self.updated_at) * self.rate)
        self.updated_at = now if self.updated_at is None else max(self.updated_at, now)
        if self.tokens + min(self.rate * SLACK_SECONDS, MAX_SLACK_TOKENS) >= n:
            self.tokens -= n
            return None
        return self.updated_at - now + (n - self.tokens) / self.rate


class BucketMachine(RuleBasedStateMachine):
    @initialize(max=st.sampled_from([1.0, 3.0, 100.0]), per=st.sampled_from([0.5, 1.0, 60.0]))
    def setup(self, max: float, per: float) -> None:
        self.now = 50.0
        self.real = TokenBucket(max, per)
        self.model = BucketModel(max, per)
        self.grants: list[tuple[float, float]] = []

    @rule(dt=st.floats(0.0, 5.0))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(dt=st.floats(0.0, 5.0))
    def clock_steps_back(self, dt: float) -> None:
        self.now -= dt

    @rule(fraction=st.sampled_from([0.25, 0.5, 1.0]))
    def acquire(self, fraction: float) -> None:
        n = max(1.0, math.floor(self.real.capacity * fraction))
        got = self.real.try_acquire(self.now, n)
        expected = self.model.try_acquire(self.now, n)
        if expected is None:
            assert got is None
            self.record_grant(n)
        else:
            assert got is not None and math.isclose(got, expected, rel_tol=1e-9)
            assert got > 0

    @rule()
    def wait_as_told_then_acquire(self) -> None:
        wait = self.real.try_acquire(self.now, 1.0)
        self.model.try_acquire(self.now, 1.0)
        if wait is None:
            self.record_grant(1.0)
            return
        self.now += wait
        assert self.real.try_acquire(self.now, 1.0) is None
        assert self.model.try_acquire(self.now, 1.0) is None
        self.record_grant(1.0)

    def record_grant(self, n: float) -> None:
        # On the bucket's own time line, which never runs backwards even when the clock does.
        _, counted_at = self.real.snapshot()
        assert counted_at is not None
        self.grants.append((counted_at, n))

    @invariant()
    def allowance_is_what_acquire_grants(self) -> None:
        whole = self.real.allowance(self.now)
        probe = TokenBucket(self.real.capacity, self.real.per)
        probe.restore(self.real.snapshot())
        for _ in range(whole):
            assert probe.try_acquire(self.now) is None
        assert probe.try_acquire(self.now) is not None

    @invariant()
    def same_tokens(self) -> None:
        tokens, updated_at = self.real.snapshot()
        assert math.isclose(tokens, self.model.tokens, rel_tol=1e-9, abs_tol=1e-9)
        assert updated_at == self.model.updated_at

    @invariant()
    def never_more_than_burst_plus_rate(self) -> None:
        # In any time interval [a, b], grants <= capacity + rate * (b - a).
        times = sorted(self.grants)
        for i, (start, _) in enumerate(times):
            taken = 0.0
            for end, n in times[i:]:
                taken += n
                bound = self.real.capacity + self.real.rate * (end - start)
                assert taken <= bound + 1e-6


TestBucket = BucketMachine.TestCase


def test_keyed_buckets() -> None:
    buckets = KeyedBuckets()
    buckets.configure("acme", 2, 1.0)
    assert "acme" in buckets and len(buckets) == 1
    assert buckets.try_acquire("acme", 0.0) is None
    assert buckets.try_acquire("acme", 0.0) is None
    assert buckets.try_acquire("acme", 0.0) == pytest.approx(0.5)
    assert buckets.try_acquire("no-limit", 0.0) is None
    assert buckets.remove("acme") and not buckets.remove("acme")


def test_bad_limits() -> None:
    with pytest.raises(ConfigurationError):
        TokenBucket(0, 1.0)
    with pytest.raises(ConfigurationError):
        TokenBucket(1, float("inf"))
    with pytest.raises(ValueError, match="holds"):
        TokenBucket(2, 1.0).try_acquire(0.0, 3)


def test_state_round_trips() -> None:
    bucket = TokenBucket(10, 1.0)
    bucket.try_acquire(5.0, 4)
    copy = TokenBucket(10, 1.0)
    copy.restore(bucket.snapshot())
    assert copy.snapshot() == (6.0, 5.0)
    assert copy.available(5.5) == 10.0
