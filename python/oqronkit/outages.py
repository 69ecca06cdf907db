"""How the background loops (claiming, renewing leases, watching the backend) log their failures.

A backend out of reach is expected now and then (a restart, a failover, a dropped route) and the
loops try again by themselves: each loop says so in one warning line, repeated at most once a
minute while it lasts, and says when it works again. A traceback every few seconds from every
loop would bury the one line that matters. Any other failure is a bug or a misconfiguration: an
error with its traceback, every time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from oqronkit.errors import describe

log = logging.getLogger("oqronkit")

REPEAT_AFTER = 60.0  # seconds between warnings about one loop's unreachable backend


class LoopFailures:
    """The failures of one background loop, named `what` ("webhook w: claiming")."""

    __slots__ = ("_clock", "_expected", "_repeats", "_warned_at", "what")

    def __init__(
        self,
        what: str,
        expected: tuple[type[BaseException], ...],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self._expected = expected  # the backend's `connection_errors`
        self._clock = clock  # real time: how often a person reads the same line
        self._warned_at: float | None = None  # the last warning, while the trouble lasts
        self._repeats = 0  # failures since that warning

    def failed(self, exc: Exception) -> None:
        if not isinstance(exc, self._expected):
            log.error("%s failed; trying again", self.what, exc_info=exc)
            return
        now = self._clock()
        if self._warned_at is not None and now - self._warned_at < REPEAT_AFTER:
            self._repeats += 1
            log.debug("%s failed again: %s", self.what, describe(exc))
            return
        since = f" ({self._repeats} more failures since the last warning)" if self._repeats else ""
        log.warning("%s failed: %s; trying again%s", self.what, describe(exc), since)
        self._warned_at, self._repeats = now, 0

    def succeeded(self) -> None:
        if self._warned_at is not None:
            self._warned_at, self._repeats = None, 0
            log.info("%s works again", self.what)
