"""Type stubs for the Rust core. Everything here is pure: time is always a parameter."""

from collections.abc import Sequence
from typing import Self, final

__version__: str
__all__ = [
    "Backoff",
    "CircuitBreaker",
    "KeyedBuckets",
    "Matcher",
    "Signer",
    "TokenBucket",
    "__version__",
    "encode_json",
    "parse_response_head",
    "parse_retry_after",
    "sequential_ids",
    "signature_header",
    "standard_signature_header",
    "validate_event",
    "validate_pattern",
    "verify_signature_header",
    "verify_standard",
    "write_request",
]

@final
class Matcher:
    """The event globs of many endpoints compiled into one trie; endpoint ids are positions."""

    # Lists or tuples, not any Sequence: a str is a Sequence[str], and is refused.
    def __new__(cls, endpoints: Sequence[list[str] | tuple[str, ...]]) -> Self: ...
    @property
    def endpoint_count(self) -> int: ...
    def match(self, event: str) -> tuple[int, ...]:
        """Ids of the endpoints with a pattern matching `event`, ascending."""
    def match_many(self, events: list[str] | tuple[str, ...]) -> list[tuple[int, ...]]:
        """`match` for each event, in one call (releases the GIL)."""

def validate_event(event: str) -> None: ...
def validate_pattern(pattern: str) -> None: ...
def encode_json(value: object) -> bytes | None:
    """Compact UTF-8 JSON of a payload of exact dict (str keys), list, tuple, str, int, finite
    float, bool and None, byte for byte as the stdlib writes it; None for anything else."""

def sequential_ids(head: str, first: int, count: int, tail: str) -> list[str]:
    """`head + 16 hex digits + tail` for the stamps `first .. first + count - 1`."""

@final
class Signer:
    """One HMAC secret with its key schedule done, reusable for any number of bodies."""

    def __new__(cls, secret: str | bytes, algorithm: str = "sha256") -> Self: ...
    @staticmethod
    def standard(secret: str) -> Signer:
        """A Standard Webhooks signer (HMAC-SHA256) from a `whsec_<base64>` secret."""
    @property
    def algorithm(self) -> str: ...
    def sign(self, body: str | bytes, timestamp_ms: int) -> str:
        """Lowercase hex HMAC of `"<timestamp_ms>.<body>"`."""

def signature_header(body: str | bytes, timestamp_ms: int, signers: Sequence[Signer]) -> str:
    """`t=<timestamp_ms>,v1=<hex>` with one `v1=` per signer."""

def verify_signature_header(
    header: str, body: str | bytes, signers: Sequence[Signer], now_ms: int, tolerance_ms: int
) -> bool: ...
def standard_signature_header(
    msg_id: str, timestamp_s: int, body: str | bytes, signers: Sequence[Signer]
) -> str:
    """The Standard Webhooks `webhook-signature` value: `v1,<base64>` per signer."""

def verify_standard(
    msg_id: str,
    timestamp: str,
    signature: str,
    body: str | bytes,
    signers: Sequence[Signer],
    now_ms: int,
    tolerance_ms: int,
) -> bool: ...

@final
class TokenBucket:
    """Holds up to `max` tokens, refilling at `max / per` a second; starts full."""

    def __new__(cls, max: float, per: float) -> Self: ...
    @property
    def capacity(self) -> float: ...
    @property
    def per(self) -> float: ...
    @property
    def rate(self) -> float: ...
    def try_acquire(self, now: float, n: float = 1.0) -> float | None:
        """Takes `n` tokens and returns None, or returns the seconds until they are due."""
    def available(self, now: float) -> float: ...
    def allowance(self, now: float) -> int:
        """How many whole tokens `try_acquire` would grant at `now`."""
    def snapshot(self) -> tuple[float, float | None]: ...
    def restore(self, state: tuple[float, float | None]) -> None: ...

@final
class KeyedBuckets:
    """One token bucket per key, each with its own limit; unknown keys are unlimited."""

    def __new__(cls) -> Self: ...
    def configure(self, key: str, max: float, per: float) -> None: ...
    def remove(self, key: str) -> bool: ...
    def try_acquire(self, key: str, now: float, n: float = 1.0) -> float | None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: str, /) -> bool: ...

@final
class CircuitBreaker:
    """Closed / open / half-open state machine. `allow` answers `(None, probe)` (go ahead; a
    probe of half-open period `probe`, or None while closed) or `(retry_at, None)`."""

    def __new__(
        cls, failure_threshold: int = 5, reset_timeout: float = 30.0, half_open_max: int = 1
    ) -> Self: ...
    @property
    def failure_threshold(self) -> int: ...
    @property
    def reset_timeout(self) -> float: ...
    @property
    def half_open_max(self) -> int: ...
    @property
    def state(self) -> str: ...
    def allow(self, now: float) -> tuple[float | None, int | None]: ...
    def record_success(self, now: float) -> None: ...
    def record_failure(self, now: float) -> None: ...
    def release(self, now: float, probe: int | None) -> None: ...
    def snapshot(self) -> tuple[str, int, float, int]: ...
    def restore(self, snapshot: tuple[str, int, float, int]) -> None: ...

@final
class Backoff:
    """Retry delays: fixed or exponential, jittered by `unit` in [0, 1), capped."""

    def __new__(
        cls,
        strategy: str = "exponential",
        base_delay: float = 2.0,
        max_delay: float = 60.0,
        jitter: float = 0.2,
    ) -> Self: ...
    def delay(self, attempt: int, unit: float) -> float: ...
    def retry_delay(
        self,
        attempt: int,
        unit: float,
        retry_after: float | None = None,
        retry_after_cap: float = 3600.0,
    ) -> float: ...

def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds from `now` (Unix time) asked for by a `Retry-After` value, or None if unparsable."""

def write_request(
    method: str,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes | None = None,
) -> bytes:
    """An HTTP/1.1 request head, then `body`: one buffer for one write. Raises ValueError for a
    method, target or header that would break the message (CR, LF, NUL, a bad name)."""

def parse_response_head(
    buf: bytes, head_request: bool
) -> tuple[int, int, bytes, list[tuple[bytes, bytes]], int, bool] | None:
    """`(consumed, status, reason, headers, length, keep_alive)` of the response head at the
    start of `buf`, or None while it is incomplete. `length`: the body's size, -1 chunked, -2
    until the connection closes. Raises ValueError for a malformed or oversized head."""
