"""What users define: endpoints and the policies around them. Every object is immutable and
validated on construction, so a bad definition fails where it is written, with a typed error.
The Rust core validates what it owns (patterns, limits, breaker policy, backoff, secrets)."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Literal, TypeAlias
from urllib.parse import urlsplit

import httpx

from oqronkit import _core
from oqronkit.errors import ConfigurationError, shown_url
from oqronkit.signing import signers_for, standard_signers_for

Secret: TypeAlias = str | bytes
Strategy: TypeAlias = Literal["fixed", "exponential"]
Algorithm: TypeAlias = Literal["sha256", "sha512"]
Method: TypeAlias = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name (RFC 9110 token)
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF, NUL and other controls

# Headers OqronKit sets itself on every request; an endpoint may not override them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "idempotency-key",
        "user-agent",
        "x-oqron-event",
        "x-oqron-delivery",
        "x-oqron-attempt",
        "x-oqron-signature",
        "x-oqron-timestamp",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "transfer-encoding",
        "connection",
    }
)
# The defaults of `Security.signing_header` and `timestamp_header`: reserved for them alone.
_SIGNATURE_HEADERS = frozenset({"x-oqron-signature", "x-oqron-timestamp"})


def check_header(name: str, value: str) -> None:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ConfigurationError(f"invalid HTTP header name {name!r}")
    if not isinstance(value, str):
        raise ConfigurationError(f"header {name!r} needs a str value, not {type(value).__name__}")
    if _BAD_VALUE.search(value):
        raise ConfigurationError(f"header {name!r} has a control character (CR/LF injection?)")
    if value != value.strip(" \t"):  # HTTP has no such value (RFC 9110 5.5); h11 refuses it
        raise ConfigurationError(f"header {name!r} has whitespace at its start or end")
    if not value.isascii():
        raise ConfigurationError(f"header {name!r} must be ASCII (HTTP header values are bytes)")


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Headers a user adds to every request: valid, none of OqronKit's own, and no two names
    that differ only in letter case (HTTP names are case-insensitive: both would be sent)."""
    checked = dict(headers or {})
    seen: set[str] = set()
    for name, value in checked.items():
        check_header(name, value)
        if name.lower() in RESERVED_HEADERS:
            raise ConfigurationError(f"header {name!r} is set by OqronKit and cannot be overridden")
        if name.lower() in seen:
            raise ConfigurationError(f"header {name!r} is given twice (names ignore case)")
        seen.add(name.lower())
    return checked


def _check_numbers(policy: object, whole: tuple[str, ...], real: tuple[str, ...] = ()) -> None:
    """The named settings of a policy are numbers (`whole` ones ints that fit the core's 32
    bits) before the Rust core checks their ranges. A bool is not one: Python and the core
    would read True as 1."""
    for names, kinds in ((whole, int), (real, int | float)):
        for name in names:
            value = getattr(policy, name)
            what = "a whole number from 0 to 2**32 - 1" if kinds is int else "a finite number"
            if (
                isinstance(value, bool)
                or not isinstance(value, kinds)
                or (kinds is int and not 0 <= value < 2**32)
                or (kinds is not int and not _finite(value))
            ):
                raise ConfigurationError(
                    f"{type(policy).__name__}.{name} must be {what}, not {value!r}"
                )


def check_count(name: str, value: int) -> None:
    """A count: a whole number >= 1 (a bool is not one, though Python says it is an int)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1, not {value!r}")


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def check_seconds(name: str, value: float | None, *, allow_none: bool = False) -> None:
    """A duration: a positive, finite number of seconds (a bool is not one)."""
    if value is None and allow_none:
        return
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0 < value < float("inf")
    ):
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}")


@dataclass(frozen=True, slots=True)
class Retries:
    """`max` retries after the first attempt (so `max + 1` attempts), spaced by backoff:
    exponential `base_delay · 2^(attempt-1) · U(1-jitter, 1+jitter)` capped at `max_delay`."""

    max: int = 3
    strategy: Strategy = "exponential"
    base_delay: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        _check_numbers(self, ("max",), ("base_delay", "max_delay", "jitter"))
        if self.max < 0:
            raise ConfigurationError(f"Retries.max must be a whole number >= 0, not {self.max!r}")
        self.backoff()

    def backoff(self) -> _core.Backoff:
        return _core.Backoff(self.strategy, self.base_delay, self.max_delay, self.jitter)


def _check_limit(limit: RateLimit | Throttle) -> None:
    _check_numbers(limit, (), ("max", "per"))
    if limit.max < 1:  # every request takes a whole token: none would ever go
        raise ConfigurationError(f"{type(limit).__name__}.max must be at least 1, not {limit.max}")
    _core.TokenBucket(limit.max, limit.per)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `max` requests per `per` seconds to one endpoint (a token bucket)."""

    max: int
    per: float

    def __post_init__(self) -> None:
        _check_limit(self)


@dataclass(frozen=True, slots=True)
class Throttle:
    """At most `max` attempts per `per` seconds across a whole webhook (a token bucket)."""

    max: int
    per: float

    def __post_init__(self) -> None:
        _check_limit(self)


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Breaker policy: open after `failure_threshold` consecutive failed attempts, half-open
    after `reset_timeout` seconds, letting `half_open_max` probes through at a time."""

    failure_threshold: int = 5
    reset_timeout: float = 30.0
    half_open_max: int = 1

    def __post_init__(self) -> None:
        _check_numbers(self, ("failure_threshold", "half_open_max"), ("reset_timeout",))
        self.new_state_machine()

    def new_state_machine(self) -> _core.CircuitBreaker:
        return _core.CircuitBreaker(self.failure_threshold, self.reset_timeout, self.half_open_max)


@dataclass(frozen=True, slots=True)
class Security:
    """How requests are signed. A list of secrets signs with each (rotation). Secrets never
    appear in the repr."""

    signing_secret: Secret | Sequence[Secret] = field(repr=False)
    signing_algorithm: Algorithm = "sha256"
    signing_header: str = "X-Oqron-Signature"
    timestamp_header: str = "X-Oqron-Timestamp"
    include_timestamp: bool = True

    def __post_init__(self) -> None:
        given = self.signing_secret
        # A set has no rotation order; a bytearray is a sequence of ints, not of secrets.
        if not isinstance(given, str | bytes | Sequence) or isinstance(given, bytearray):
            kind = type(given).__name__
            raise ConfigurationError(f"signing_secret is a secret or a list of them, not a {kind}")
        secrets = (given,) if isinstance(given, str | bytes) else tuple(given)
        if not secrets or any(not s for s in secrets):
            raise ConfigurationError("Security needs a non-empty signing_secret")
        for secret in secrets:
            if not isinstance(secret, str | bytes):
                kind = type(secret).__name__
                raise ConfigurationError(f"a signing secret is a str or bytes, not a {kind}")
        object.__setattr__(self, "signing_secret", secrets)
        if not isinstance(self.include_timestamp, bool):
            raise ConfigurationError(
                f"include_timestamp must be True or False, not {self.include_timestamp!r}"
            )
        for header in (self.signing_header, self.timestamp_header):
            check_header(header, "")
            if header.lower() in RESERVED_HEADERS - _SIGNATURE_HEADERS:
                raise ConfigurationError(
                    f"header {header!r} is set by OqronKit and cannot carry the signature"
                )
        if self.signing_header.lower() == self.timestamp_header.lower():
            raise ConfigurationError("signing_header and timestamp_header must differ")
        _core.Signer(secrets[0], self.signing_algorithm)  # validates the algorithm

    @property
    def secrets(self) -> tuple[Secret, ...]:
        return self.signing_secret  # type: ignore[return-value]  # normalised in __post_init__

    def signers(self, scheme: str) -> list[_core.Signer]:
        if scheme == "standard":
            # The spec fixes the algorithm and the headers: a setting it would ignore is refused.
            changed = [
                f"{setting.name}={getattr(self, setting.name)!r}"
                for setting in fields(self)
                if setting.name != "signing_secret"
                and getattr(self, setting.name) != setting.default
            ]
            if changed:
                raise ConfigurationError(
                    "the standard scheme signs with HMAC-SHA256 in its own webhook-* headers: "
                    f"drop {', '.join(changed)}"
                )
            # A str, as `verify_standard_webhook` takes: the `standardwebhooks` package reads
            # bytes as the raw key, so reading them as text here would sign with another key.
            return standard_signers_for(self.secrets)  # type: ignore[arg-type]  # checked there
        return signers_for(self.secrets, self.signing_algorithm)


SecuritySource: TypeAlias = (
    Security | Callable[[], Security | None] | Callable[[], Awaitable[Security | None]] | None
)


@dataclass(frozen=True, slots=True, repr=False)
class Endpoint:
    """One receiver: where to send, which events, and how. Settings left as None fall back to
    the webhook's."""

    name: str
    url: str
    events: Sequence[str]
    method: Method | None = None
    headers: Mapping[str, str] | None = field(default=None, repr=False)  # may hold credentials
    security: SecuritySource = field(default=None, repr=False)
    retries: Retries | None = None
    rate_limit: RateLimit | None = None
    circuit_breaker: CircuitBreaker | None = None
    timeout: float | None = None
    enabled: bool = True
    max_in_flight: int | None = None
    """At most this many requests in flight to this endpoint from one process (default: half the
    webhook's concurrency, at least 1), so one slow receiver cannot take every slot. N worker
    processes may have N times as many open; a `RateLimit` is the cluster-wide bound."""

    def __repr__(self) -> str:
        # The URL as messages show it (a ?token= masked); headers and security never.
        shown = (
            f"{f.name}={shown_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr
        )
        return f"Endpoint({', '.join(shown)})"

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str) or _BAD_VALUE.search(self.name):
            raise ConfigurationError(f"an endpoint needs a printable name, not {self.name!r}")
        check_url(self.url)
        if not isinstance(self.events, str | Sequence):
            kind = type(self.events).__name__
            raise ConfigurationError(f"events is a pattern or a list of them, not a {kind}")
        events = (self.events,) if isinstance(self.events, str) else tuple(self.events)
        if not all(isinstance(pattern, str) for pattern in events):
            raise ConfigurationError(f"event patterns are strings: {list(events)!r}")
        if not events:
            raise ConfigurationError(f"endpoint {self.name!r} subscribes to no events")
        for pattern in events:
            _core.validate_pattern(pattern)
        object.__setattr__(self, "events", events)
        if self.method is not None and self.method not in METHODS:
            raise ConfigurationError(f"method must be one of {', '.join(METHODS)}")
        object.__setattr__(self, "headers", MappingProxyType(check_headers(self.headers)))
        check_security_source(self.security)
        policies: tuple[tuple[type, object], ...] = (
            (Retries, self.retries),
            (RateLimit, self.rate_limit),
            (CircuitBreaker, self.circuit_breaker),
        )
        for kind, policy in policies:
            check_policy(kind, policy)
        check_seconds("timeout", self.timeout, allow_none=True)
        if not isinstance(self.enabled, bool):
            raise ConfigurationError(f"enabled must be True or False, not {self.enabled!r}")
        if self.max_in_flight is not None:
            check_count("max_in_flight", self.max_in_flight)


def check_security_source(security: object) -> None:
    """None, a `Security`, or a callable giving one (checked when it is called)."""
    if security is not None and not isinstance(security, Security) and not callable(security):
        raise ConfigurationError(
            f"security must be a Security or a callable returning one, not a "
            f"{type(security).__name__} (a bare secret goes in Security(signing_secret=...))"
        )


def check_policy(kind: type, policy: object) -> None:
    if policy is not None and not isinstance(policy, kind):
        raise ConfigurationError(f"expected a {kind.__name__}, not {policy!r}")


def check_url(url: str) -> None:
    if not isinstance(url, str):
        raise ConfigurationError(f"an endpoint URL is a str, not a {type(url).__name__}")
    shown = shown_url(url)  # what errors may show of it
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"invalid endpoint URL {shown!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"endpoint URL must be http:// or https:// with a host: {shown!r}")
    if "@" in parts.netloc:
        # Requests never send a URL's user:password, and reprs and logs show URLs.
        raise ConfigurationError(
            f"endpoint URL {shown!r} carries credentials: send them in a header "
            "(headers={'Authorization': ...}), which stays out of reprs"
        )
    if _BAD_VALUE.search(url) or " " in url:
        raise ConfigurationError(f"endpoint URL has whitespace or control characters: {shown!r}")
    try:
        httpx.URL(url)  # what the request will use: IDNA host names, percent-encoding
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ConfigurationError(f"invalid endpoint URL {shown!r}: {exc}") from None
