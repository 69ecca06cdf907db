"""Signing and verifying webhook payloads, for senders and receivers.

Default scheme (compatible with OqronKit for TypeScript): HMAC over `"<timestamp_ms>.<body>"`, sent
as `X-Oqron-Signature: t=<timestamp_ms>,v1=<hex>`; one `v1=` per secret while secrets rotate.
`scheme="standard"` follows the Standard Webhooks spec (`webhook-id`, `webhook-timestamp`,
`webhook-signature`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from oqronkit import _core
from oqronkit.errors import ConfigurationError

Secret = str | bytes
"""One signing secret; `Secrets` also accepts a list of them, for rotation."""
Secrets = Secret | Sequence[Secret]
Body = str | bytes

DEFAULT_TOLERANCE = 300.0
"""Seconds a signature's timestamp may be away from now, either way."""


def _secret_list(secret: Secrets) -> list[str | bytes]:
    """A secret, or a list of them (a rotation, newest first), as a list."""
    if isinstance(secret, str | bytes):
        return [secret]
    # Not any iterable: a dict's keys (the secrets' names) or a bytearray's ints would be
    # taken for the secrets, and every signature would fail to verify without a word.
    if not isinstance(secret, list | tuple):
        raise TypeError(f"secret must be bytes or str, or a list of them, not {_kind(secret)}")
    for s in secret:
        if not isinstance(s, str | bytes):
            raise TypeError(f"secret must be bytes or str, or a list of them, not {_kind(s)}")
    if not secret:
        raise ConfigurationError("at least one signing secret is needed")
    return list(secret)


def _kind(value: object) -> str:
    return type(value).__name__  # never the value: it may be a secret


def signers_for(secret: Secrets, algorithm: str = "sha256") -> list[_core.Signer]:
    """One keyed signer per secret; a list of secrets is a rotation, newest first."""
    return [_core.Signer(s, algorithm) for s in _secret_list(secret)]


def standard_signers_for(secret: str | Sequence[str]) -> list[_core.Signer]:
    """Standard Webhooks signers from `whsec_...` secrets."""
    secrets: list[str] = []
    for s in _secret_list(secret):
        if not isinstance(s, str):
            raise ConfigurationError(
                f"a Standard Webhooks secret is a str (whsec_ and base64), not a {type(s).__name__}"
            )
        secrets.append(s)
    return [_core.Signer.standard(s) for s in secrets]


def _now_ms(now: float | None) -> int:
    if now is None:
        return int(time.time() * 1000)
    if not isinstance(now, int | float) or isinstance(now, bool):
        raise TypeError(f"now must be a number of Unix seconds, not {type(now).__name__}")
    if not 0 <= now < _MAX_SECONDS:
        raise ConfigurationError(f"now must be a Unix time in seconds, not {now!r}")
    return int(now * 1000)


def _timestamp(timestamp: int | None, now: float) -> int:
    """A signature's timestamp, in the unit of its scheme: an int >= 0, `now` by default."""
    if timestamp is None:
        return int(now)
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise TypeError(f"timestamp must be an int, not {type(timestamp).__name__}")
    if not 0 <= timestamp < 2**63:
        raise ConfigurationError(f"timestamp must be >= 0 and fit in 64 bits, not {timestamp}")
    return timestamp


def sign_webhook_payload(
    body: Body,
    secret: Secrets,
    timestamp: int | None = None,
    algorithm: str = "sha256",
) -> str:
    """The `X-Oqron-Signature` value for `body`: `t=<timestamp_ms>,v1=<hex>[,v1=<hex>...]`.

    `timestamp` is epoch milliseconds, now by default. Pass the exact bytes you send.
    """
    ts = _timestamp(timestamp, time.time() * 1000)
    return _core.signature_header(body, ts, signers_for(secret, algorithm))


def verify_webhook_signature(
    header: str | None,
    body: Body,
    secret: Secrets,
    algorithm: str = "sha256",
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> bool:
    """True when `header` (an `X-Oqron-Signature` value) signs `body` with any of `secret`.

    Strict: the timestamp must be an integer within `tolerance` seconds of `now` (Unix seconds,
    the current time by default), and each `v1=` exact lowercase hex; comparison is constant-time.
    Pass the raw request body exactly as received. A missing header (None, as
    `headers.get(...)` gives it) is not authentic.
    """
    # Every argument is checked before the header is looked at, so a receiver deployed with
    # no secret fails on its first request, not on its first signed one.
    signers, now_ms, tolerance_ms = (
        signers_for(secret, algorithm),
        _now_ms(now),
        _tolerance_ms(tolerance),
    )
    if header is None:
        return False
    return _core.verify_signature_header(header, body, signers, now_ms, tolerance_ms)


def sign_standard_webhook(
    msg_id: str, body: Body, secret: str | Sequence[str], timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for `body`; `timestamp` is epoch **seconds**, now by default."""
    if not msg_id:
        raise ConfigurationError("a Standard Webhooks message id must not be empty")
    ts = _timestamp(timestamp, time.time())
    signature = _core.standard_signature_header(msg_id, ts, body, standard_signers_for(secret))
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def verify_standard_webhook(
    headers: Mapping[str, str],
    body: Body,
    secret: str | Sequence[str],
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> bool:
    """True when Standard Webhooks `headers` (any letter case) sign `body` with any of `secret`."""
    signers, now_ms, tolerance_ms = (
        standard_signers_for(secret),
        _now_ms(now),
        _tolerance_ms(tolerance),
    )
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) for k in headers):
        raise TypeError("headers must be a mapping of str names to str values (request.headers)")
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = lowered["webhook-timestamp"]
        signature = lowered["webhook-signature"]
    except KeyError:
        return False
    return _core.verify_standard(msg_id, timestamp, signature, body, signers, now_ms, tolerance_ms)


# A tolerance beyond this (math.inf included) means any timestamp: 100 years.
_MAX_TOLERANCE = 100 * 365 * 24 * 3600.0
# A `now` from this on is no Unix time in seconds (the year 33658; milliseconds by mistake).
_MAX_SECONDS = 1e12


def _tolerance(tolerance: float) -> float:
    """The verifiers' window in seconds: a number >= 0 (NaN and bools are mistakes)."""
    if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not tolerance >= 0:
        raise ConfigurationError(f"tolerance must be a number of seconds >= 0, not {tolerance!r}")
    return min(float(tolerance), _MAX_TOLERANCE)


def _tolerance_ms(tolerance: float) -> int:
    return int(_tolerance(tolerance) * 1000)
