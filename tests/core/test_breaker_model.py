"""The Rust breaker, step by step, against a small Python model of DESIGN.md's rules."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from oqronkit import ConfigurationError
from oqronkit._core import CircuitBreaker


@dataclass
class BreakerModel:
    """Closed → open at `threshold` consecutive failures; open → half-open after `reset`;
    half-open lets `half_open_max` probes through (lost probes expire after `reset`, and a new
    half-open period begins); a probe success closes, a probe failure reopens with a fresh
    timer; a call cut short gives back its slot only if it is a probe of the running period."""

    threshold: int
    reset: float
    half_open_max: int
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probes: int = 0
    since: float = 0.0
    periods: int = 0  # half-open periods begun

    def allow(self, now: float) -> float | None:
        if self.state == "open":
            if now < self.opened_at + self.reset:
                return self.opened_at + self.reset
            self.state, self.probes, self.since = "half_open", 1, now
            self.periods += 1
            return None
        if self.state == "half_open":
            if self.probes < self.half_open_max:
                self.probes, self.since = self.probes + 1, now
                return None
            if now >= self.since + self.reset:  # the probes are presumed lost
                self.probes, self.since = 1, now
                self.periods += 1
                return None
            return self.since + self.reset
        return None

    def probe(self) -> int | None:
        """What the call `allow` just let through is: a probe of this period, or None."""
        return self.periods if self.state == "half_open" else None

    def success(self) -> None:
        if self.state != "open":
            self.state, self.failures = "closed", 0

    def failure(self, now: float) -> None:
        if self.state == "half_open" or (
            self.state == "closed" and self.failures + 1 >= self.threshold
        ):
            self.state, self.opened_at, self.failures = "open", now, 0
        elif self.state == "closed":
            self.failures += 1

    def release(self, probe: int | None) -> None:
        if self.state == "half_open" and probe == self.periods:
            self.probes = max(0, self.probes - 1)

    def snapshot(self) -> tuple[str, int, float, int]:
        if self.state == "closed":
            return ("closed", self.failures, 0.0, self.periods)
        if self.state == "open":
            return ("open", 0, self.opened_at, self.periods)
        return ("half_open", self.probes, self.since, self.periods)


class BreakerMachine(RuleBasedStateMachine):
    calls = Bundle("calls")  # let through, no outcome recorded yet: what `allow` made of each

    @initialize(
        threshold=st.integers(1, 4),
        reset=st.sampled_from([0.0, 1.0, 5.0, 30.0]),
        half_open_max=st.integers(1, 3),
    )
    def setup(self, threshold: int, reset: float, half_open_max: int) -> None:
        self.now = 1000.0
        self.real = CircuitBreaker(threshold, reset, half_open_max)
        self.model = BreakerModel(threshold, reset, half_open_max)
        self.granted_since_open: list[float] = []

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 4.99, 5.0, 30.0, 31.0]))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(target=calls)
    def allow(self) -> object:
        retry_at, probe = self.real.allow(self.now)
        assert retry_at == self.model.allow(self.now)
        if retry_at is not None:
            assert probe is None
            return multiple()  # refused: there is no call to end
        assert probe == self.model.probe()
        return probe

    @rule()
    def success(self) -> None:
        self.real.record_success(self.now)
        self.model.success()

    @rule()
    def failure(self) -> None:
        self.real.record_failure(self.now)
        self.model.failure(self.now)

    @rule(probe=consumes(calls))
    def release(self, probe: int | None) -> None:
        self.real.release(self.now, probe)
        self.model.release(probe)

    @rule()
    def round_trip_state(self) -> None:
        copy = CircuitBreaker(
            self.real.failure_threshold, self.real.reset_timeout, self.real.half_open_max
        )
        copy.restore(self.real.snapshot())
        assert copy.snapshot() == self.real.snapshot()
        self.real = copy

    @invariant()
    def same_state(self) -> None:
        assert self.real.snapshot() == self.model.snapshot()
        assert self.real.state == self.model.state

    @invariant()
    def open_always_refuses_before_its_timer(self) -> None:
        state, _, opened_at, _ = self.real.snapshot()
        if state == "open" and self.now < opened_at + self.real.reset_timeout:
            probe = CircuitBreaker(
                self.real.failure_threshold, self.real.reset_timeout, self.real.half_open_max
            )
            probe.restore(self.real.snapshot())
            assert probe.allow(self.now) == (opened_at + self.real.reset_timeout, None)


TestBreaker = BreakerMachine.TestCase


def test_policy_is_validated() -> None:
    with pytest.raises(ConfigurationError):
        CircuitBreaker(0)
    with pytest.raises(ConfigurationError):
        CircuitBreaker(1, -1.0)
    with pytest.raises(ConfigurationError):
        CircuitBreaker(1, 1.0, 0)
    with pytest.raises(ValueError, match="unknown breaker state"):
        CircuitBreaker().restore(("ajar", 0, 0.0, 0))
