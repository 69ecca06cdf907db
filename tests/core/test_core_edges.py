"""The core's edges, as a review found them: no input may panic across the FFI, stick a NaN in
a state machine, hand out tokens a bucket does not have, or widen a verifier's window."""

from __future__ import annotations

import math

import pytest

from oqronkit import (
    CircuitBreaker,
    ConfigurationError,
    InvalidEventName,
    InvalidPattern,
    RateLimit,
    Throttle,
    _core,
)
from oqronkit.signing import sign_standard_webhook, verify_standard_webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_a_time_that_is_not_finite_is_refused_before_it_sticks(now: float) -> None:
    breaker = _core.CircuitBreaker(1, 30.0, 1)
    bucket = _core.TokenBucket(10, 1.0)
    calls = [
        lambda: breaker.allow(now),
        lambda: breaker.record_failure(now),
        lambda: breaker.record_success(now),
        lambda: breaker.release(now, None),
        lambda: breaker.restore(("open", 0, now, 0)),
        lambda: bucket.try_acquire(now),
        lambda: bucket.available(now),
        lambda: bucket.allowance(now),
        lambda: bucket.restore((1.0, now)),
        lambda: bucket.restore((now, 0.0)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="finite"):
            call()
    assert breaker.allow(100.0) == (None, None) and breaker.state == "closed"
    assert bucket.try_acquire(100.0) is None


def test_a_restored_failure_count_at_its_limit_still_opens_the_breaker() -> None:
    breaker = _core.CircuitBreaker(5, 30.0, 1)
    breaker.restore(("closed", 2**32 - 1, 0.0, 2**64 - 1))
    breaker.record_failure(10.0)  # the count saturates: it does not wrap to 0
    assert breaker.state == "open"
    assert breaker.allow(40.0)[1] is not None  # the period number wraps: a probe all the same


@pytest.mark.parametrize(("max_", "per"), [(1_000_000, 1.0), (1_000, 0.001), (3, 1.0)])
def test_a_fast_bucket_grants_no_more_than_it_holds(max_: int, per: float) -> None:
    bucket = _core.TokenBucket(max_, per)
    assert bucket.allowance(0.0) == max_
    granted = sum(bucket.try_acquire(0.0) is None for _ in range(max_ + 100))
    assert granted == max_


def test_waiting_the_advertised_time_of_a_fast_bucket_still_succeeds() -> None:
    bucket = _core.TokenBucket(1_000_000, 1.0)
    for _ in range(1_000_000):
        bucket.try_acquire(1_700_000_000.0)
    wait = bucket.try_acquire(1_700_000_000.0, 10)
    assert wait is not None and bucket.try_acquire(1_700_000_000.0 + wait, 10) is None


def test_limits_that_could_never_let_a_request_through_are_refused() -> None:
    for limit in (RateLimit, Throttle):
        with pytest.raises(ConfigurationError, match="at least 1"):
            limit(max=0.5, per=1.0)
    for make in (
        lambda: CircuitBreaker(failure_threshold=-1),
        lambda: CircuitBreaker(half_open_max=2**32),
        lambda: RateLimit(max=10**400, per=1.0),
        lambda: RateLimit(max=5, per=math.inf),
    ):
        with pytest.raises(ConfigurationError):  # not OverflowError from the conversion
            make()


@pytest.mark.parametrize(("cap", "delay"), [(math.nan, 30.0), (-1.0, 2.0)])
def test_a_bad_retry_after_cap_does_not_panic(cap: float, delay: float) -> None:
    backoff = _core.Backoff("fixed", 2.0, 60.0, 0.0)
    assert backoff.retry_delay(1, 0.5, 30.0, cap) == delay  # NaN caps nothing; -1 all


def test_asking_for_an_absurd_number_of_ids_is_an_error_not_an_abort() -> None:
    with pytest.raises(ValueError, match="too many"):
        _core.sequential_ids("dlv_", 0, 2**40, "")
    assert len(_core.sequential_ids("dlv_", 0, 3, "x")) == 3


def test_the_standard_verifier_counts_fractions_of_a_second() -> None:
    headers = sign_standard_webhook("msg_1", b"{}", SECRET, timestamp=1_000)
    assert verify_standard_webhook(headers, b"{}", SECRET, now=1_300.0)  # exactly at the edge
    assert not verify_standard_webhook(headers, b"{}", SECRET, now=1_300.9)
    assert not verify_standard_webhook(headers, b"{}", SECRET, now=699.1)


def test_a_lone_surrogate_is_a_bad_name_not_an_encoding_error() -> None:
    with pytest.raises(InvalidEventName, match="not valid Unicode"):
        _core.validate_event("user.\udc80")
    with pytest.raises(InvalidPattern, match="not valid Unicode"):
        _core.validate_pattern("user.\udc80")
