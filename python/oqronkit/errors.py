"""The exceptions OqronKit raises. Catch `OqronKitError` for all of them.

The Rust core raises these same classes (it imports them from here), so an invalid pattern is an
`InvalidPattern` whether it was caught in Python or in Rust.
"""

from __future__ import annotations


class OqronKitError(Exception):
    """Base class of every OqronKit error."""


class ConfigurationError(OqronKitError, ValueError):
    """A definition is invalid: bad limits, an unknown algorithm, an empty secret, ..."""


class InvalidPattern(ConfigurationError):
    """An endpoint's event pattern breaks the glob rules (empty segment, whitespace, too long)."""


class InvalidEventName(OqronKitError, ValueError):
    """A fired event name breaks the naming rules (empty segment, whitespace, too long)."""


class CircuitOpenError(OqronKitError):
    """A call was refused because its circuit breaker is open.

    `retry_after` is how many seconds until the breaker lets a probe through.
    """

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"circuit breaker is open; retry in {retry_after:.3f}s")
        self.retry_after = retry_after
