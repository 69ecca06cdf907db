"""Runtime definitions as the backend stores them: webhooks and endpoints as JSON documents,
and the one rule that lays an endpoint's document over the code's endpoint of that name.

- A webhook created at runtime is a document at (webhook, WEBHOOK) holding its settings; its
  endpoints are documents of their own, so two processes can add endpoints independently.
- An endpoint document either defines an endpoint (runtime-added: `url` and `events` at least)
  or changes some fields of the code's endpoint of the same name (`update_endpoint`, or a 410
  disabling it); `{"removed": true}` removes it.

Secrets are stored as given (the backend is trusted with them, as the code is); they never
appear in reprs, logs or delivery records.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from oqronkit.config import (
    CircuitBreaker,
    Endpoint,
    RateLimit,
    Retries,
    Security,
    Throttle,
    check_policy,
)
from oqronkit.errors import ConfigurationError
from oqronkit.models import REMOVED, Document

log = logging.getLogger("oqronkit")

_POLICIES: dict[str, type[Any]] = {
    "retries": Retries,
    "rate_limit": RateLimit,
    "circuit_breaker": CircuitBreaker,
    "throttle": Throttle,
}
ENDPOINT_FIELDS = frozenset(f.name for f in dataclasses.fields(Endpoint)) - {"name"}
WEBHOOK_FIELDS = frozenset(
    {
        "security",
        "retries",
        "concurrency",
        "throttle",
        "timeout",
        "circuit_breaker",
        "scheme",
        "method",
        "headers",
    }
)


# ---------------------------------------------------------------- values


def encode(field: str, value: Any) -> Any:
    """One setting as a JSON-compatible value."""
    if value is None:
        return None
    if field == "security":
        if not isinstance(value, Security):
            raise ConfigurationError(
                "a security callable cannot be stored: pass a Security to runtime definitions"
            )
        return {
            "signing_secret": [_encode_secret(s) for s in value.secrets],
            "signing_algorithm": value.signing_algorithm,
            "signing_header": value.signing_header,
            "timestamp_header": value.timestamp_header,
            "include_timestamp": value.include_timestamp,
        }
    if field in _POLICIES:
        check_policy(_POLICIES[field], value)
        return dataclasses.asdict(value)
    if field == "events":
        return [value] if isinstance(value, str) else list(value)  # as Endpoint takes them
    if field == "headers":
        return dict(value)
    return value


def decode(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field == "security":
        secrets = [_decode_secret(s) for s in value["signing_secret"]]
        return Security(**{**value, "signing_secret": secrets})
    if field in _POLICIES:
        return _POLICIES[field](**value)
    return value


def _encode_secret(secret: str | bytes) -> dict[str, str]:
    if isinstance(secret, bytes):
        return {"base64": base64.b64encode(secret).decode()}
    return {"text": secret}


def _decode_secret(stored: Mapping[str, str]) -> str | bytes:
    return stored["text"] if "text" in stored else base64.b64decode(stored["base64"])


def encode_changes(
    changes: Mapping[str, Any], allowed: frozenset[str], what: str
) -> dict[str, Any]:
    unknown = set(changes) - allowed
    if unknown:
        raise ConfigurationError(f"{what} has no setting {', '.join(sorted(unknown))}")
    return {field: encode(field, value) for field, value in changes.items()}


# ---------------------------------------------------------------- endpoints


def endpoint_document(endpoint: Endpoint) -> dict[str, Any]:
    """The whole endpoint, for storing (`add_endpoint`, `create_webhook`)."""
    fields = {f: getattr(endpoint, f) for f in ENDPOINT_FIELDS}
    document = {f: encode(f, v) for f, v in fields.items()}
    return {f: v for f, v in document.items() if v is not None}


def apply_document(name: str, base: Endpoint | None, document: Document | None) -> Endpoint | None:
    """The endpoint `name` as it stands: the code's (`base`) changed by its stored document.
    Raises `ConfigurationError` if the result is not a valid endpoint."""
    if document is None:
        return base
    if document.get(REMOVED):
        return None
    settings = {} if base is None else {f: getattr(base, f) for f in ENDPOINT_FIELDS}
    settings.update({f: decode(f, v) for f, v in document.items() if f in ENDPOINT_FIELDS})
    if "url" not in settings or "events" not in settings:
        raise ConfigurationError(f"endpoint {name!r} needs a url and events")
    return Endpoint(name=name, **settings)


def overlay_endpoint(
    webhook: str, name: str, base: Endpoint | None, document: Document | None
) -> Endpoint | None:
    """`apply_document` for what was stored: an invalid document is logged and ignored."""
    try:
        return apply_document(name, base, document)
    except (ConfigurationError, TypeError, KeyError, ValueError) as exc:
        # Written by another version, or by hand: the code's endpoint (if any) stands.
        log.warning("webhook %s: ignoring the stored endpoint %r: %s", webhook, name, exc)
        return base


# ---------------------------------------------------------------- webhooks


def webhook_document(settings: Mapping[str, Any]) -> dict[str, Any]:
    document = encode_changes(settings, WEBHOOK_FIELDS, "a webhook")
    return {f: v for f, v in document.items() if v is not None}


def webhook_settings(document: Document) -> dict[str, Any]:
    """Keyword arguments for a `Webhook` from its stored document."""
    return {f: decode(f, v) for f, v in document.items() if f in WEBHOOK_FIELDS}
