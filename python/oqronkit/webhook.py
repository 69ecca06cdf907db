"""One webhook: its endpoints and policies, and the producer side (`fire`, `fire_many`,
`fire_sync`). Firing validates, serialises once, matches in Rust and stores everything in one
backend write; the dispatcher takes it from there."""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias
from urllib.parse import quote

from oqronkit import _core
from oqronkit.config import (
    RESERVED_HEADERS,
    CircuitBreaker,
    Endpoint,
    Method,
    Retries,
    Security,
    SecuritySource,
    Throttle,
    check_header,
)
from oqronkit.delivery import signature_headers
from oqronkit.errors import ConfigurationError, InvalidPayload, PayloadTooLarge
from oqronkit.hooks import Hook
from oqronkit.ids import new_ids
from oqronkit.models import Claim, Message, NewDelivery

if TYPE_CHECKING:
    from oqronkit.kit import OqronKit

EndpointSource: TypeAlias = (
    Sequence[Endpoint]
    | Callable[[], Iterable[Endpoint]]
    | Callable[[], Awaitable[Iterable[Endpoint]]]
)
Scheme: TypeAlias = Literal["oqron", "standard"]


def header_safe(text: str) -> str:
    """ASCII as it is; anything else percent-encoded as UTF-8 (header values are bytes)."""
    return text if text.isascii() else quote(text, safe="")


class _Compiled(NamedTuple):
    endpoints: tuple[Endpoint, ...]
    by_name: dict[str, Endpoint]
    matcher: _core.Matcher


def serialise(payload: Any) -> bytes:
    """Compact JSON in UTF-8, the exact bytes that are signed and sent."""
    try:
        return json.dumps(
            payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"payload is not JSON-serialisable: {exc}") from None


# A NamedTuple's constructor is a Python function; on the fan-out hot path, tuple's own is
# twice as fast for the same object.
_new_delivery = tuple.__new__


async def _resolve(source: Callable[[], Any]) -> Any:
    result = source()
    return await result if inspect.isawaitable(result) else result


class Webhook:
    def __init__(
        self,
        kit: OqronKit,
        name: str,
        *,
        endpoints: EndpointSource,
        security: SecuritySource = None,
        retries: Retries | None = None,
        concurrency: int = 10,
        throttle: Throttle | None = None,
        timeout: float = 30.0,
        circuit_breaker: CircuitBreaker | None = None,
        on_success: Hook | None = None,
        on_failure: Hook | None = None,
        on_dead: Hook | None = None,
        scheme: Scheme = "oqron",
        method: Method = "POST",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not name or not isinstance(name, str) or not name.isprintable():
            raise ConfigurationError(f"a webhook needs a printable name, not {name!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError("concurrency must be a whole number >= 1")
        if not (isinstance(timeout, int | float) and 0 < timeout < math.inf):
            raise ConfigurationError("timeout must be a positive number of seconds")
        if scheme not in ("oqron", "standard"):
            raise ConfigurationError('scheme must be "oqron" or "standard"')
        for hook in (on_success, on_failure, on_dead):
            if hook is not None and not callable(hook):
                raise ConfigurationError("hooks must be callables taking the Delivery")
        self.kit = kit
        self.name = name
        self.security = security
        self.retries = retries or Retries()
        self.concurrency = concurrency
        self.throttle = throttle
        self.timeout = float(timeout)
        self.circuit_breaker = circuit_breaker or CircuitBreaker()
        self.on_success, self.on_failure, self.on_dead = on_success, on_failure, on_dead
        self.scheme: Scheme = scheme
        self.method: Method = method
        self.headers = dict(headers or {})
        for header, value in self.headers.items():
            check_header(header, value)
            if header.lower() in RESERVED_HEADERS:
                raise ConfigurationError(f"header {header!r} is set by OqronKit")
        self._source = endpoints
        # One immutable snapshot, replaced whole: a fire that awaits between reading the
        # endpoints and matching must never pair one version's matcher with another's list.
        self._compiled = _Compiled((), {}, _core.Matcher([]))
        self._signers: dict[tuple[Security, str], list[_core.Signer]] = {}
        self._backoffs: dict[Retries, _core.Backoff] = {}
        if not callable(endpoints):
            self._compile(endpoints)
        self._check_security(security)

    def __repr__(self) -> str:
        endpoints = len(self._compiled.endpoints)
        return f"Webhook({self.name!r}, endpoints={endpoints}, scheme={self.scheme!r})"

    # ---------------------------------------------------------------- endpoints

    def _compile(self, endpoints: Iterable[Endpoint]) -> None:
        """Validates the endpoint set and rebuilds the matcher, only when the set changed."""
        endpoints = tuple(endpoints)
        if endpoints == self._compiled.endpoints:
            return
        names = set()
        for endpoint in endpoints:
            if not isinstance(endpoint, Endpoint):
                raise ConfigurationError(f"endpoints must be Endpoint objects, not {endpoint!r}")
            if endpoint.name in names:
                raise ConfigurationError(f"two endpoints are named {endpoint.name!r}")
            names.add(endpoint.name)
            self._check_security(endpoint.security)
        self._compiled = _Compiled(
            endpoints,
            {e.name: e for e in endpoints},
            _core.Matcher([list(e.events) for e in endpoints]),
        )

    def _check_security(self, security: SecuritySource) -> None:
        if isinstance(security, Security):
            self._signers_for(security)  # a bad whsec_ secret fails at definition time

    async def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoints (calling the endpoints callable, if one was given)."""
        return (await self._snapshot()).endpoints

    async def _snapshot(self) -> _Compiled:
        if callable(self._source):
            self._compile(await _resolve(self._source))
        return self._compiled

    def endpoint_named(self, name: str) -> Endpoint | None:
        """The endpoint of that name in the latest known set (no callable is called)."""
        return self._compiled.by_name.get(name)

    def endpoint_names(self) -> list[str]:
        return list(self._compiled.by_name)

    def max_in_flight(self, endpoint_name: str) -> int:
        endpoint = self._compiled.by_name.get(endpoint_name)
        if endpoint is not None and endpoint.max_in_flight is not None:
            return endpoint.max_in_flight
        return max(1, self.concurrency // 2)

    async def endpoint_for_attempt(self, name: str) -> Endpoint | None:
        """The endpoint a claimed delivery goes to, or None if it is gone or disabled."""
        endpoint = (await self._snapshot()).by_name.get(name)
        if endpoint is None:
            return None
        flags = await self.kit.endpoint_flags(self.name)
        return endpoint if flags.get(name, endpoint.enabled) else None

    # ---------------------------------------------------------------- requests

    def _signers_for(self, security: Security) -> list[_core.Signer]:
        key = (security, self.scheme)
        signers = self._signers.get(key)
        if signers is None:
            signers = self._signers[key] = security.signers(self.scheme)
        return signers

    def backoff(self, retries: Retries) -> _core.Backoff:
        backoff = self._backoffs.get(retries)
        if backoff is None:
            backoff = self._backoffs[retries] = retries.backoff()
        return backoff

    async def _security(self, endpoint: Endpoint) -> Security | None:
        source = endpoint.security if endpoint.security is not None else self.security
        security = await _resolve(source) if callable(source) else source
        if security is not None and not isinstance(security, Security):
            # Never the value itself: it may well be the secret.
            kind = type(security).__name__
            raise ConfigurationError(f"the security callable returned a {kind}, not a Security")
        return security

    async def request_headers(
        self, endpoint: Endpoint, claim: Claim, attempt_number: int, now: float
    ) -> dict[str, str]:
        headers = {**self.headers, **(endpoint.headers or {})}
        headers.update(
            {
                "Content-Type": "application/json",
                "User-Agent": self.kit.user_agent,
                "Accept-Encoding": "identity",
                "Idempotency-Key": claim.idempotency_key,
                "X-Oqron-Event": header_safe(claim.event),
                "X-Oqron-Delivery": claim.id,
                "X-Oqron-Attempt": str(attempt_number),
            }
        )
        security = await self._security(endpoint)
        if security is not None:
            headers.update(
                signature_headers(
                    security,
                    self._signers_for(security),
                    self.scheme,
                    claim.body,
                    now,
                    claim.idempotency_key,
                )
            )
        return headers

    # ---------------------------------------------------------------- firing

    def _body(self, payload: Any) -> bytes:
        body = serialise(payload)
        if len(body) > self.kit.max_payload_bytes:
            raise PayloadTooLarge(
                f"payload is {len(body)} bytes; the limit is {self.kit.max_payload_bytes}"
            )
        return body

    async def _targets(self) -> tuple[_core.Matcher, tuple[Endpoint, ...], list[bool]]:
        compiled = await self._snapshot()
        flags = await self.kit.endpoint_flags(self.name)
        enabled = [flags.get(e.name, e.enabled) for e in compiled.endpoints]
        return compiled.matcher, compiled.endpoints, enabled

    def _plan(
        self,
        events: Sequence[str],
        bodies: Sequence[bytes],
        matches: Sequence[Sequence[int]],
        endpoints: Sequence[Endpoint],
        enabled: Sequence[bool],
        idempotency_key: str | None = None,
    ) -> tuple[list[Message], list[NewDelivery], list[list[str]]]:
        """The records one batch of fires stores: a message per event with targets, a delivery
        per (event, enabled matching endpoint); and the delivery ids per event."""
        now, name = self.kit.clock.now(), self.name
        targets = [[endpoints[i].name for i in matched if enabled[i]] for matched in matches]
        delivery_ids = iter(new_ids("dlv", sum(map(len, targets))))
        message_ids = iter(new_ids("msg", sum(1 for t in targets if t)))
        messages: list[Message] = []
        deliveries: list[NewDelivery] = []
        ids: list[list[str]] = []
        for event, body, names in zip(events, bodies, targets, strict=True):
            fired: list[str] = []
            if names:
                message_id = next(message_ids)
                messages.append(Message(message_id, name, event, body, now, idempotency_key))
                for endpoint_name in names:
                    delivery_id = next(delivery_ids)
                    deliveries.append(
                        _new_delivery(
                            NewDelivery,
                            (
                                delivery_id,
                                message_id,
                                name,
                                endpoint_name,
                                event,
                                delivery_id,
                                now,
                                None,
                            ),
                        )
                    )
                    fired.append(delivery_id)
            ids.append(fired)
        return messages, deliveries, ids

    async def fire(
        self, event: str, payload: Any, *, idempotency_key: str | None = None
    ) -> list[str]:
        """Queues one delivery per matching, enabled endpoint; returns their ids (empty when
        nothing matches, and then nothing is stored). With `idempotency_key`, a repeat within
        the kit's idempotency window returns the first fire's ids and stores nothing."""
        _core.validate_event(event)
        body = self._body(payload)
        matcher, endpoints, enabled = await self._targets()
        messages, deliveries, ids = self._plan(
            [event], [body], [matcher.match(event)], endpoints, enabled, idempotency_key
        )
        if not messages:
            return []
        since = None
        if idempotency_key is not None:
            since = self.kit.clock.now() - self.kit.idempotency_window
        repeat = await self.kit.backend.enqueue(messages, deliveries, idempotency_since=since)
        if repeat is not None:
            return repeat
        self.kit.wake(self.name)
        return ids[0]

    async def fire_many(self, events: Iterable[tuple[str, Any]]) -> list[list[str]]:
        """`fire` for a batch: one trip into Rust to match them all and one backend write.
        Every event is validated and serialised before anything is stored."""
        batch = list(events)
        names = [event for event, _ in batch]
        bodies = [self._body(payload) for _, payload in batch]
        matcher, endpoints, enabled = await self._targets()
        matches = matcher.match_many(names)  # validates every name
        messages, deliveries, ids = self._plan(names, bodies, matches, endpoints, enabled)
        if messages:
            await self.kit.backend.enqueue(messages, deliveries)
            self.kit.wake(self.name)
        return ids

    def fire_sync(
        self, event: str, payload: Any, *, idempotency_key: str | None = None
    ) -> list[str]:
        """`fire` for code that is not async (Django, Flask, scripts); blocks until stored."""
        return self.kit.run_blocking(self.fire, event, payload, idempotency_key=idempotency_key)
