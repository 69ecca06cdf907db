"""Backoff delays and Retry-After parsing."""

from __future__ import annotations

import email.utils
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oqronkit import ConfigurationError
from oqronkit._core import Backoff, parse_retry_after


@given(
    attempt=st.integers(1, 2000),
    unit=st.floats(0.0, 1.0),
    base=st.floats(0.0, 100.0),
    jitter=st.floats(0.0, 1.0),
)
def test_exponential_follows_the_formula(
    attempt: int, unit: float, base: float, jitter: float
) -> None:
    cap = 3600.0
    backoff = Backoff("exponential", base, max(cap, base), jitter)
    raw = min(base * 2.0 ** min(attempt - 1, 1023), sys.float_info.max)
    expected = min(raw * (1 - jitter + 2 * jitter * unit), max(cap, base))
    assert backoff.delay(attempt, unit) == pytest.approx(expected, rel=1e-12)
    assert 0 <= backoff.delay(attempt, unit) <= max(cap, base)


def test_design_defaults() -> None:
    backoff = Backoff()  # Retries(max=3, exponential, base 2 s, cap 60 s, jitter 0.2)
    assert [backoff.delay(a, 0.5) for a in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff.delay(1, 0.0) == pytest.approx(1.6)
    assert backoff.delay(1, 1.0) == pytest.approx(2.4)
    assert backoff.delay(10, 1.0) == 60.0
    assert Backoff("fixed", 5.0, 5.0, 0.0).delay(7, 0.9) == 5.0


def test_retry_after_is_a_floor_with_a_cap() -> None:
    backoff = Backoff(jitter=0.0)
    assert backoff.retry_delay(1, 0.5, 30.0) == 30.0
    assert backoff.retry_delay(1, 0.5, 0.5) == 2.0
    assert backoff.retry_delay(1, 0.5, 10**9) == 3600.0
    assert backoff.retry_delay(1, 0.5, 10**9, retry_after_cap=90.0) == 90.0
    assert backoff.retry_delay(1, 0.5, None) == 2.0


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    date = email.utils.formatdate(now + 45, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(45.0)
    assert parse_retry_after(email.utils.formatdate(now - 45, usegmt=True), now) == 0.0
    for junk in ["", "soon", "-1", "1.5", "12 s"]:
        assert parse_retry_after(junk, now) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "linear"},
        {"base_delay": -1.0},
        {"base_delay": 10.0, "max_delay": 5.0},
        {"jitter": 1.5},
        {"base_delay": float("nan")},
    ],
)
def test_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(**kwargs)  # type: ignore[arg-type]
