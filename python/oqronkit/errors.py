"""The exceptions OqronKit raises. Catch `OqronKitError` for all of them.

The Rust core raises these same classes (it imports them from here), so an invalid pattern is an
`InvalidPattern` whether it was caught in Python or in Rust.
"""

from __future__ import annotations

import re


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


class InvalidPayload(OqronKitError, ValueError):
    """A fired payload cannot be serialised to JSON; nothing was stored."""


class PayloadTooLarge(InvalidPayload):
    """A fired payload serialises to more than the kit's `max_payload_bytes`; nothing was stored."""


class EgressDenied(OqronKitError):
    """A request was refused because its host resolves to a private, loopback, link-local,
    multicast or unspecified address (pass `allow_private_networks=True` or an allow-list)."""


class BackendUnavailable(OqronKitError, ConnectionError):
    """The backend could not be opened: its server is down or refuses the connection."""


class KitNotRunning(OqronKitError, RuntimeError):
    """An operation needs the kit to be open (`async with kit:`)."""


class DeliveryNotFound(OqronKitError, LookupError):
    """No delivery has that id."""


class DeliveryStateError(OqronKitError):
    """The operation does not apply to the delivery in its current status."""


def describe(exc: BaseException) -> str:
    """An exception as logs and delivery records show it: its type and message (a group of
    them, by the first it holds: task groups wrap what failed in one)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# Query parameters whose values messages never show: passwords, tokens, keys, signatures.
_SECRET_PARAMETER = re.compile(r"pass|token|secret|key|sig|auth|credential|code", re.IGNORECASE)
# Path segments that look like a token: Slack (`/services/T…/B…/<24 chars>`), Discord
# (`/api/webhooks/<id>/<68 chars>`), Telegram (`/bot<id>:<token>/…`) and many others put the
# credential in the path. 16+ URL-safe characters mixing letters and digits, or 20+ letters
# and digits mixing cases, read as a token; words and numeric ids do not.
_TOKEN_SEGMENT = re.compile(
    r"(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_~.%+=:-]{16,}|(?=.*[a-z])(?=.*[A-Z])[A-Za-z0-9]{20,}"
)


def shown_url(url: str) -> str:
    """A URL (an endpoint's, a backend's) as reprs, logs and messages may show it: no password,
    no token-like path segment (but in a SQLite file's path) and no secret-looking query or
    fragment value. Everything from `//` to the last `@` is the user info: a password may hold
    `/`, `?` or `#`, which libpq accepts and a URL parser would take for the path, query or
    fragment, so no parser is asked. A user name stays when a password follows it (alone, the
    user info may be a token)."""
    scheme, slashes, rest = url.partition("//")
    if slashes and "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{rest}" if colon else f"***@{rest}"
    rest, hash_, fragment = rest.partition("#")
    head, question, query = rest.partition("?")
    if not scheme.startswith("sqlite"):
        host, *segments = head.split("/")
        head = "/".join([host, *("***" if _TOKEN_SEGMENT.fullmatch(s) else s for s in segments)])
    shown = f"{scheme}{slashes}{head}{question}{query}{hash_}{fragment}"
    # Parameters anywhere after a `?`, `&` or `#`: in the query and the fragment, and past an
    # `@` of a query (`?email=a@b&token=…`) taken for the end of the user info above.
    return _PARAMETER.sub(_masked, shown)


_PARAMETER = re.compile(r"(?<=[?&#])([^=&#?/]*)=([^&#]*)")


def _masked(parameter: re.Match[str]) -> str:
    name = parameter[1]
    return f"{name}=***" if _SECRET_PARAMETER.search(name) else parameter[0]
