"""The Rust circuit breaker around the caller's own calls: a context manager (sync or async)
and a decorator.

    breaker = create_circuit_breaker(failure_threshold=5, reset_timeout=30.0)

    async with breaker:            # raises CircuitOpenError while open
        await client.post(...)

    @breaker
    def fetch(): ...
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from oqronkit import _core
from oqronkit.errors import CircuitOpenError

P = ParamSpec("P")
R = TypeVar("R")
Clock = Callable[[], float]

# The probes in progress in this task (or thread), innermost last, each with the number of the
# half-open period it probes: a call cut short gives back a slot only if it is a probe of the
# period still running. Per context, so concurrent tasks and nested blocks each find their own.
# Calls let through while closed hold no slot and are not kept (most calls: no cost). A probe
# that ends in another context than it began in (an async generator closed by another task)
# finds no entry and gives back nothing: its slot comes back when it is presumed lost.
_probes: ContextVar[tuple[tuple[Breaker, int], ...]] = ContextVar(
    "oqronkit_breaker_probes", default=()
)


def _end_probe(breaker: Breaker) -> int | None:
    """The period of the innermost probe of `breaker` in progress here, which ends: None if
    there is none (the call was let through while closed, or began in another context)."""
    probes = _probes.get()
    if not probes:  # the usual case: no breaker half-open
        return None
    for i in reversed(range(len(probes))):
        if probes[i][0] is breaker:
            _probes.set(probes[:i] + probes[i + 1 :])
            return probes[i][1]
    return None


class Breaker:
    """A circuit breaker for any call.

    An exception of a type in `failure_on` counts as a failure; any other `Exception` shows the
    service answered, so it counts as a success; a `BaseException` that is not an `Exception`
    (cancellation, KeyboardInterrupt) is no verdict: a probe of the half-open period still
    running gives its slot back, and any other call changes nothing.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        *,
        half_open_max: int = 1,
        failure_on: tuple[type[BaseException], ...] = (Exception,),
        clock: Clock = time.monotonic,
    ) -> None:
        self._core = _core.CircuitBreaker(failure_threshold, reset_timeout, half_open_max)
        self._failure_on = failure_on
        self._clock = clock

    @property
    def state(self) -> str:
        """`"closed"`, `"open"` or `"half_open"`."""
        return self._core.state

    def __repr__(self) -> str:
        return (
            f"Breaker(state={self.state!r}, failure_threshold={self._core.failure_threshold}, "
            f"reset_timeout={self._core.reset_timeout}, half_open_max={self._core.half_open_max})"
        )

    def _enter(self) -> None:
        now = self._clock()
        retry_at, probe = self._core.allow(now)
        if retry_at is not None:
            raise CircuitOpenError(max(0.0, retry_at - now))
        if probe is not None:
            _probes.set((*_probes.get(), (self, probe)))

    def _exit(self, exc: BaseException | None) -> None:
        probe = _end_probe(self)
        now = self._clock()
        if exc is None:
            self._core.record_success(now)
        elif isinstance(exc, self._failure_on):
            self._core.record_failure(now)
        elif isinstance(exc, Exception):
            self._core.record_success(now)
        else:
            self._core.release(now, probe)

    def __enter__(self) -> Breaker:
        self._enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)

    async def __aenter__(self) -> Breaker:
        self._enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorates a sync or async function so every call goes through the breaker."""
        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self:
                    return await async_fn(*args, **kwargs)

            return cast(Callable[P, R], guarded_async)

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return fn(*args, **kwargs)

        return guarded


def create_circuit_breaker(
    failure_threshold: int = 5,
    reset_timeout: float = 30.0,
    *,
    half_open_max: int = 1,
    failure_on: tuple[type[BaseException], ...] = (Exception,),
    clock: Clock = time.monotonic,
) -> Breaker:
    """A circuit breaker for the caller's own calls (see `Breaker`)."""
    return Breaker(
        failure_threshold,
        reset_timeout,
        half_open_max=half_open_max,
        failure_on=failure_on,
        clock=clock,
    )
