"""What does guarding one call cost: a circuit breaker pass and a token-bucket acquire?

Ours: `_core.CircuitBreaker` `allow(now)` + `record_success(now)`, `_core.TokenBucket(1e12, 1.0)
.try_acquire(now)`, and the Python wrapper `create_circuit_breaker()` used as `with breaker:`.
Peers: pybreaker `CircuitBreaker().call(noop)`, and limits' `MovingWindowRateLimiter` over
`MemoryStorage` hitting a 10**9/second item. The moving window keeps one entry per hit and
prepends to a list, so its cost grows with the hits in the window: each timed batch starts from
a fresh storage and is kept small (the label says how many hits).

Targets: breaker >= 3x pybreaker, token bucket >= 3x limits, wrapper >= 1x (informational).
"""

from __future__ import annotations

import pybreaker
from _harness import Row, Settings, compare, main, speed_row
from limits import RateLimitItemPerSecond, storage, strategies

from oqronkit import _core, create_circuit_breaker

NOW = 1_000.0


def noop() -> None:
    pass


def bench_core_breaker(calls: int, settings: Settings) -> tuple[float, float]:
    breaker = _core.CircuitBreaker()
    peer_breaker = pybreaker.CircuitBreaker()
    loop = range(calls)

    def ours() -> None:
        allow, record_success, now = breaker.allow, breaker.record_success, NOW
        for _ in loop:
            allow(now)
            record_success(now)

    def peer() -> None:
        call = peer_breaker.call
        for _ in loop:
            call(noop)

    result = compare(ours, peer, repeat=settings.repeat, ops=calls)
    assert breaker.state == "closed" and peer_breaker.current_state == "closed"
    return result


def bench_wrapper(calls: int, settings: Settings) -> tuple[float, float]:
    breaker = create_circuit_breaker()
    peer_breaker = pybreaker.CircuitBreaker()
    loop = range(calls)

    def ours() -> None:
        for _ in loop:
            with breaker:
                pass

    def peer() -> None:
        call = peer_breaker.call
        for _ in loop:
            call(noop)

    return compare(ours, peer, repeat=settings.repeat, ops=calls)


def bench_bucket(calls: int, settings: Settings) -> tuple[float, float]:
    bucket = _core.TokenBucket(1e12, 1.0)
    item = RateLimitItemPerSecond(10**9)
    loop = range(calls)

    def ours() -> None:
        try_acquire, now = bucket.try_acquire, NOW
        for _ in loop:
            if try_acquire(now) is not None:
                raise AssertionError("the bucket ran dry")

    def peer() -> None:
        hit = strategies.MovingWindowRateLimiter(storage.MemoryStorage()).hit
        for _ in loop:
            if not hit(item, "key"):
                raise AssertionError("the moving window refused a hit")

    return compare(ours, peer, repeat=settings.repeat, ops=calls)


def run(settings: Settings) -> list[Row]:
    calls = 5_000 if settings.quick else 100_000
    bucket_calls = 2_000 if settings.quick else 10_000
    return [
        speed_row(
            "breaker allow+record_success vs pybreaker call(noop)",
            *bench_core_breaker(calls, settings),
            3.0,
        ),
        speed_row(
            f"TokenBucket.try_acquire vs limits MovingWindow hit ({bucket_calls:,} hits/window)",
            *bench_bucket(bucket_calls, settings),
            3.0,
        ),
        speed_row(
            "create_circuit_breaker() `with breaker:` vs pybreaker call(noop)",
            *bench_wrapper(calls, settings),
            1.0,
            informational=True,
        ),
    ]


if __name__ == "__main__":
    main(run, __doc__)
