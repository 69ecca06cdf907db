"""How the background loops (claiming, renewing leases, watching the backend) log their failures.

A backend out of reach is expected now and then (a restart, a failover, a dropped route) and the
loops try again by themselves: each loop says so in a one-line warning at most once a minute,
counting the failures in between, and says when it works again. A traceback every few seconds
from every loop would bury the one line that matters. Any other failure is a bug or a
misconfiguration: an error with its traceback, every time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from oqronkit.errors import describe

log = logging.getLogger("oqronkit")

REPEAT_AFTER = 60.0  # seconds between warnings from one loop


class LoopFailures:
    """The failures of one background loop, named `what` ("webhook w: claiming").
    `unreachable` tells an unreachable backend from a bug (`Backend.unreachable`)."""

    __slots__ = ("_clock", "_owes_recovery", "_unreachable", "_unsaid", "_warned_at", "what")

    def __init__(
        self,
        what: str,
        unreachable: Callable[[BaseException], bool],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self._unreachable = unreachable
        self._clock = clock  # real time: how often a person reads the same line
        self._warned_at: float | None = None
        self._unsaid = 0  # failures since the last warning
        # A warning was logged and no success since: the next success is said. A link that
        # keeps failing and working again still warns at most once a minute.
        self._owes_recovery = False

    def failed(self, exc: Exception) -> None:
        if not self._unreachable(exc):
            log.error("%s failed; trying again", self.what, exc_info=exc)
            return
        reason = " ".join(describe(exc).split())  # libpq's reasons span lines
        now = self._clock()
        if self._warned_at is not None and now - self._warned_at < REPEAT_AFTER:
            self._unsaid += 1
            log.debug("%s failed again: %s", self.what, reason)
            return
        n = self._unsaid
        since = f" ({n} more failure{'s' * (n != 1)} since the last warning)" if n else ""
        log.warning("%s failed: %s; trying again%s", self.what, reason, since)
        self._warned_at, self._unsaid, self._owes_recovery = now, 0, True

    def succeeded(self) -> None:
        if self._owes_recovery:
            self._owes_recovery = False
            log.info("%s works again", self.what)
