"""One webhook: its endpoints and policies, and the producer side (`fire`, `fire_many`,
`fire_sync`). Firing validates, serialises once, matches in Rust and stores everything in one
backend write; the dispatcher takes it from there."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias
from urllib.parse import quote

import anyio

from oqronkit import _core
from oqronkit.config import (
    METHODS,
    CircuitBreaker,
    Endpoint,
    Method,
    Retries,
    Security,
    SecuritySource,
    Throttle,
    check_count,
    check_headers,
    check_policy,
    check_seconds,
    check_security_source,
)
from oqronkit.definitions import (
    ENDPOINT_FIELDS,
    apply_document,
    encode_changes,
    endpoint_document,
    overlay_endpoint,
)
from oqronkit.delivery import signature_headers, wire_body
from oqronkit.errors import ConfigurationError, InvalidPayload, PayloadTooLarge
from oqronkit.gc_pause import gc_paused
from oqronkit.hooks import Hook
from oqronkit.ids import new_ids
from oqronkit.models import (
    ENDPOINT_REMOVED,
    REMOVED,
    WEBHOOK,
    Claim,
    Definitions,
    Document,
    Message,
    NewDelivery,
)

if TYPE_CHECKING:
    from oqronkit.kit import OqronKit

log = logging.getLogger("oqronkit")

EndpointSource: TypeAlias = (
    Sequence[Endpoint]
    | Callable[[], Iterable[Endpoint]]
    | Callable[[], Awaitable[Iterable[Endpoint]]]
)
Scheme: TypeAlias = Literal["oqron", "standard"]


def header_safe(text: str) -> str:
    """ASCII as it is; anything else percent-encoded as UTF-8 (header values are bytes)."""
    return text if text.isascii() else quote(text, safe="")


class _FixedHeaders(NamedTuple):
    endpoint: Endpoint
    webhook: Mapping[str, str]  # the webhook's own headers, as they were
    encoded: list[tuple[bytes, bytes]]
    names: frozenset[str]  # lower case


class _Compiled(NamedTuple):
    endpoints: tuple[Endpoint, ...]
    by_name: dict[str, Endpoint]
    matcher: _core.Matcher


# Made once: `json.dumps` with options builds a new encoder on every call.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def serialise(payload: Any) -> bytes:
    """Compact JSON in UTF-8, the exact bytes that are signed and sent. Plain payloads are
    encoded in Rust (the stdlib's encoder costs microseconds per call before its first byte);
    anything else, and every error, is the stdlib's."""
    body = _core.encode_json(payload)
    if body is not None:
        return body
    try:
        return _encode_json(payload).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"payload is not JSON-serialisable: {exc}") from None


SIGNER_CACHE = 256  # keyed signers kept per webhook, by Security (old secrets do not linger)

# A NamedTuple's constructor is a Python function; on the fan-out hot path, tuple's own is
# twice as fast for the same object.
_new_delivery = tuple.__new__


async def _resolve(source: Callable[[], Any], what: str, timeout: float) -> Any:
    """What a user's callable source gives; an async one has `timeout` seconds to answer (a
    hung secrets or endpoints lookup would otherwise stall its deliveries for good)."""
    result = source()
    if not inspect.isawaitable(result):
        return result
    with anyio.move_on_after(timeout) as scope:
        return await result
    assert scope.cancelled_caught
    raise TimeoutError(f"the {what} callable did not answer within {timeout:g}s")


class Webhook:
    """A webhook: its endpoints (from the code, changed by runtime operations) and policies.
    Made by `kit.webhook(...)` (in code) or `kit.create_webhook(...)` (stored, `runtime`)."""

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
        runtime: bool = False,
    ) -> None:
        if not name or not isinstance(name, str) or not name.isprintable():
            raise ConfigurationError(f"a webhook needs a printable name, not {name!r}")
        for hook in (on_success, on_failure, on_dead):
            if hook is not None and not callable(hook):
                raise ConfigurationError("hooks must be callables taking the Delivery")
        if not callable(endpoints) and not isinstance(endpoints, Iterable):
            raise ConfigurationError(
                f"endpoints is a list of Endpoint objects or a callable returning one, "
                f"not a {type(endpoints).__name__}"
            )
        self.kit = kit
        self.name = name
        self.runtime = runtime
        self.on_success, self.on_failure, self.on_dead = on_success, on_failure, on_dead
        self._signers: dict[tuple[Security, str], list[_core.Signer]] = {}
        self._backoffs: dict[Retries, _core.Backoff] = {}
        self._fixed_headers: dict[str, _FixedHeaders] = {}  # by endpoint name
        self._configure(
            security=security,
            retries=retries,
            concurrency=concurrency,
            throttle=throttle,
            timeout=timeout,
            circuit_breaker=circuit_breaker,
            scheme=scheme,
            method=method,
            headers=headers,
        )
        self._source = endpoints if callable(endpoints) else tuple(endpoints)
        # One immutable snapshot, replaced whole: a fire that awaits between reading the
        # endpoints and matching must never pair one version's matcher with another's list.
        self._compiled = _Compiled((), {}, _core.Matcher([]))
        self._compiled_from: tuple[tuple[Endpoint, ...], int] | None = None
        self._code_endpoints: dict[str, Endpoint] = {}
        if not callable(endpoints):
            self._compile(endpoints, kit.definitions)

    def _configure(
        self,
        *,
        security: SecuritySource = None,
        retries: Retries | None = None,
        concurrency: int = 10,
        throttle: Throttle | None = None,
        timeout: float = 30.0,
        circuit_breaker: CircuitBreaker | None = None,
        scheme: Scheme = "oqron",
        method: Method = "POST",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Validates every setting, then applies them all (a bad one changes nothing)."""
        check_count("concurrency", concurrency)
        check_seconds("timeout", timeout)
        if scheme not in ("oqron", "standard"):
            raise ConfigurationError('scheme must be "oqron" or "standard"')
        if method not in METHODS:
            raise ConfigurationError(f"method must be one of {', '.join(METHODS)}")
        policies: tuple[tuple[type, object], ...] = (
            (Retries, retries),
            (Throttle, throttle),
            (CircuitBreaker, circuit_breaker),
        )
        for kind, policy in policies:
            check_policy(kind, policy)
        headers = check_headers(headers)
        self._check_security(security, scheme)
        if hasattr(self, "_compiled"):  # an update: every endpoint must suit the new scheme
            for endpoint in self._compiled.endpoints:
                self._check_security(endpoint.security, scheme)
        self.security = security
        self.retries = retries or Retries()
        self.concurrency = concurrency
        self.throttle = throttle
        self.timeout = float(timeout)
        self.circuit_breaker = circuit_breaker or CircuitBreaker()
        self.scheme: Scheme = scheme
        self.method: Method = method
        self.headers = headers

    def __repr__(self) -> str:
        endpoints = len(self._compiled.endpoints)
        return f"Webhook({self.name!r}, endpoints={endpoints}, scheme={self.scheme!r})"

    # ---------------------------------------------------------------- endpoints

    def _compile(self, base: Iterable[Endpoint], definitions: Definitions) -> None:
        """The endpoints as they stand (the code's, changed by stored documents) and their
        matcher, rebuilt only when the set changed."""
        base = tuple(base)
        if self._compiled_from is not None and (
            self._compiled_from[1] == definitions.version
            and (base is self._compiled_from[0] or base == self._compiled_from[0])
        ):
            return
        for endpoint in base:
            if not isinstance(endpoint, Endpoint):
                # Only its type: a dict in the original's style carries its secret and headers.
                kind = type(endpoint).__name__
                raise ConfigurationError(f"endpoints must be Endpoint objects, not a {kind}")
        self._code_endpoints = {e.name: e for e in base}
        names = set()
        for endpoint in base:
            if endpoint.name in names:
                raise ConfigurationError(f"two endpoints are named {endpoint.name!r}")
            names.add(endpoint.name)
            self._check_security(endpoint.security)
        stored = {
            endpoint: document
            for (webhook, endpoint), document in definitions.documents.items()
            if webhook == self.name and endpoint != WEBHOOK
        }
        endpoints = []
        for endpoint in base:
            endpoints.append(
                overlay_endpoint(
                    self.name, endpoint.name, endpoint, stored.pop(endpoint.name, None)
                )
            )
        for name in sorted(stored):  # added at runtime: name order, the same in every process
            endpoints.append(self._stored_endpoint(name, stored[name]))
        current = tuple(e for e in endpoints if e is not None)
        if current != self._compiled.endpoints:
            self._compiled = _Compiled(
                current,
                {e.name: e for e in current},
                _core.Matcher([list(e.events) for e in current]),
            )
        self._compiled_from = (base, definitions.version)

    def _stored_endpoint(self, name: str, document: Document) -> Endpoint | None:
        endpoint = overlay_endpoint(self.name, name, None, document)
        try:
            if endpoint is not None:
                self._check_security(endpoint.security)
        except ConfigurationError as exc:  # e.g. a secret the webhook's scheme cannot use
            log.warning("webhook %s: ignoring the stored endpoint %r: %s", self.name, name, exc)
            return None
        return endpoint

    def _check_security(self, security: SecuritySource, scheme: str | None = None) -> None:
        check_security_source(security)
        if isinstance(security, Security):
            security.signers(scheme or self.scheme)  # a bad whsec_ secret fails at definition

    async def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoints (calling the endpoints callable, if one was given)."""
        return (await self._snapshot()).endpoints

    async def _snapshot(self) -> _Compiled:
        definitions = await self.kit.current_definitions()
        source = self._source
        endpoints = (
            await _resolve(source, "endpoints", self.timeout) if callable(source) else source
        )
        self._compile(endpoints, definitions)
        return self._compiled

    def current_endpoints(self) -> tuple[Endpoint, ...]:
        """The latest known set (no callable is called)."""
        return self._compiled.endpoints

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
        """The endpoint a claimed delivery goes to; None if it is gone or disabled. (Pauses
        are the backend's to apply: it never hands out a paused endpoint's delivery.)"""
        endpoint = (await self._snapshot()).by_name.get(name)
        if endpoint is None or not endpoint.enabled:
            # Read again before holding it: another process may have just re-enabled it.
            await self.kit.refresh_definitions()
            endpoint = (await self._snapshot()).by_name.get(name)
        return endpoint if endpoint is not None and endpoint.enabled else None

    # ---------------------------------------------------------------- runtime endpoints

    async def add_endpoint(self, endpoint: Endpoint) -> None:
        """Adds an endpoint, stored in the backend: a fan-out target from the next `fire`, in
        every process within a second."""
        if not isinstance(endpoint, Endpoint):
            raise ConfigurationError(f"expected an Endpoint, not {type(endpoint).__name__}")
        taken = ConfigurationError(
            f"webhook {self.name!r} already has an endpoint {endpoint.name!r}"
        )
        await self.kit.refresh_definitions()  # another process may have just added it
        if endpoint.name in (await self._snapshot()).by_name:
            raise taken
        self._check_security(endpoint.security)
        document = endpoint_document(endpoint)
        # One backend step, so that of two processes adding the name at once one is refused,
        # and what stale processes fired to a removed endpoint of the name is not sent here.
        now = self.kit.clock.now()
        if not await self.kit.backend.create_endpoint(
            self.name, endpoint.name, document, now, ENDPOINT_REMOVED
        ):
            raise taken
        await self.kit.refresh_definitions()

    async def update_endpoint(self, name: str, /, **changes: Any) -> Endpoint:
        """Changes some settings of an endpoint (one defined in code too); stored, so they
        outlive restarts. A setting given as None returns to its default (for an endpoint
        defined in code: to the code's value). Returns the endpoint as it now stands."""
        await self.kit.refresh_definitions()  # not a copy up to a second old
        await self._existing(name)
        patch = encode_changes(changes, ENDPOINT_FIELDS, f"endpoint {name!r}")
        stored = self.kit.definitions.documents.get((self.name, name), {})
        merged = {k: v for k, v in {**stored, **patch}.items() if v is not None}
        updated = apply_document(name, self._code_endpoints.get(name), merged)  # validates
        assert updated is not None
        self._check_security(updated.security)
        await self.kit.write_definition(self.name, name, patch, replace=False)
        # What was held while it was disabled goes (pauses still hold theirs), also when
        # another process disabled it a moment ago, unseen here.
        now = self.kit.clock.now()
        if updated.enabled and await self.kit.backend.release(self.name, name, now):
            self.kit.wake(self.name)
        return (await self._snapshot()).by_name[name]

    async def remove_endpoint(self, name: str) -> int:
        """Removes an endpoint: it receives nothing more. Its unfinished deliveries are
        cancelled, those in flight aborted as `cancel_delivery` does (never dead: no
        `on_dead`; each can be resent by id), so an endpoint added later under the name does
        not receive them; returns how many. To stop deliveries for a while and keep them,
        disable or pause it instead."""
        await self._existing(name)
        await self.kit.write_definition(self.name, name, {REMOVED: True}, replace=True)
        discarded = await self.kit.backend.discard(
            self.name, name, self.kit.clock.now(), ENDPOINT_REMOVED
        )
        self.kit.cancel_in_flight(self.name, name)
        return discarded

    async def pause_endpoint(self, name: str) -> int:
        """Holds the endpoint's queued deliveries, and those fired from now on, until
        `resume_endpoint`. Returns how many were held."""
        await self._existing(name)
        return await self.kit.set_paused(self.name, name, True)

    async def resume_endpoint(self, name: str) -> int:
        """Releases the endpoint's held deliveries, each due when it was due before the pause.
        Returns how many were released."""
        await self._existing(name)
        return await self.kit.set_paused(self.name, name, False)

    async def _existing(self, name: str) -> Endpoint:
        endpoint = (await self._snapshot()).by_name.get(name)
        if endpoint is None:
            raise ConfigurationError(f"webhook {self.name!r} has no endpoint {name!r}")
        return endpoint

    # ---------------------------------------------------------------- requests

    def _signers_for(self, security: Security) -> list[_core.Signer]:
        key = (security, self.scheme)
        signers = self._signers.get(key)
        if signers is None:
            if len(self._signers) >= SIGNER_CACHE:  # a security callable's rotating secrets
                del self._signers[next(iter(self._signers))]  # the oldest goes
            signers = self._signers[key] = security.signers(self.scheme)
        return signers

    def backoff(self, retries: Retries) -> _core.Backoff:
        backoff = self._backoffs.get(retries)
        if backoff is None:
            backoff = self._backoffs[retries] = retries.backoff()
        return backoff

    async def _security(self, endpoint: Endpoint) -> Security | None:
        source = endpoint.security if endpoint.security is not None else self.security
        timeout = endpoint.timeout or self.timeout
        security = await _resolve(source, "security", timeout) if callable(source) else source
        if security is not None and not isinstance(security, Security):
            # Never the value itself: it may well be the secret.
            kind = type(security).__name__
            raise ConfigurationError(f"the security callable returned a {kind}, not a Security")
        return security

    async def request_headers(
        self, endpoint: Endpoint, claim: Claim, attempt_number: int, now: float
    ) -> list[tuple[bytes, bytes]]:
        """The request's headers as they go on the wire, but for Host and Content-Length."""
        fixed = self._fixed(endpoint)
        headers = [
            *fixed.encoded,
            (b"Idempotency-Key", claim.idempotency_key.encode()),
            (b"X-Oqron-Event", header_safe(claim.event).encode()),
            (b"X-Oqron-Delivery", claim.id.encode()),
            (b"X-Oqron-Attempt", b"%d" % attempt_number),
        ]
        security = await self._security(endpoint)
        if security is not None:
            signed = signature_headers(
                security,
                self._signers_for(security),
                self.scheme,
                wire_body(endpoint.method or self.method, claim.body),
                now,
                claim.idempotency_key,
            )
            replaced = {name.lower() for name in signed}
            if not fixed.names.isdisjoint(replaced):  # a header of the endpoint's: overridden
                headers = [(n, v) for n, v in headers if n.decode().lower() not in replaced]
            headers += [(name.encode(), value.encode()) for name, value in signed.items()]
        return headers

    def _fixed(self, endpoint: Endpoint) -> _FixedHeaders:
        """The headers every request to `endpoint` carries, encoded once (until the endpoint
        or the webhook's headers change)."""
        fixed = self._fixed_headers.get(endpoint.name)
        if fixed is None or fixed.endpoint is not endpoint or fixed.webhook is not self.headers:
            merged: dict[str, tuple[str, str]] = {}  # by lower-case name: HTTP ignores case
            for name, value in (
                *self.headers.items(),
                *(endpoint.headers or {}).items(),
                ("Content-Type", "application/json"),
                ("User-Agent", self.kit.user_agent),
                ("Accept-Encoding", "identity"),
            ):
                merged[name.lower()] = (name, value)
            encoded = [(name.encode(), value.encode()) for name, value in merged.values()]
            fixed = _FixedHeaders(endpoint, self.headers, encoded, frozenset(merged))
            self._fixed_headers[endpoint.name] = fixed
        return fixed

    # ---------------------------------------------------------------- firing

    def _body(self, payload: Any) -> bytes:
        body = serialise(payload)
        if len(body) > self.kit.max_payload_bytes:
            raise PayloadTooLarge(
                f"payload is {len(body)} bytes; the limit is {self.kit.max_payload_bytes}"
            )
        return body

    async def _targets(self) -> tuple[_core.Matcher, tuple[Endpoint, ...], list[bool]]:
        """A paused endpoint is still a target: its deliveries are stored held (the backend
        decides, in the same step as the write). A disabled one is not."""
        compiled = await self._snapshot()
        return compiled.matcher, compiled.endpoints, [e.enabled for e in compiled.endpoints]

    def _plan(
        self,
        events: Sequence[str],
        bodies: Sequence[bytes],
        matches: Sequence[Sequence[int]],
        endpoints: Sequence[Endpoint],
        enabled: Sequence[bool],
        idempotency_key: str | None = None,
    ) -> tuple[list[Message], list[NewDelivery], list[list[str]]]:
        """The records one batch of fires stores: a message per event with targets (or with an
        idempotency key, which it holds even with none: a repeat returns the first fire's ids
        whatever it matches now), a delivery per (event, enabled matching endpoint); and the
        delivery ids per event."""
        now, name = self.kit.clock.now(), self.name
        targets = [[endpoints[i].name for i in matched if enabled[i]] for matched in matches]
        delivery_ids = iter(new_ids("dlv", sum(map(len, targets))))
        keyed = idempotency_key is not None
        message_ids = iter(new_ids("msg", sum(1 for t in targets if t or keyed)))
        messages: list[Message] = []
        deliveries: list[NewDelivery] = []
        ids: list[list[str]] = []
        for event, body, names in zip(events, bodies, targets, strict=True):
            fired: list[str] = []
            if names or keyed:
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
        if not isinstance(event, str):
            raise TypeError(f"an event name is a str, not a {type(event).__name__}")
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str):
                kind = type(idempotency_key).__name__
                raise TypeError(f"idempotency_key must be a str, not a {kind}")
            if not idempotency_key.isprintable() or not idempotency_key:
                raise ValueError(f"idempotency_key must be printable text, not {idempotency_key!r}")
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
        for i, item in enumerate(batch):
            # A str "ab" or a dict's key would unpack into an event and a payload too.
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise TypeError(f"fire_many takes (event, payload) pairs; item {i} is not one")
            if not isinstance(item[0], str):
                kind = type(item[0]).__name__
                raise TypeError(f"an event name is a str, not a {kind} (item {i})")
        names = [event for event, _ in batch]
        bodies = [self._body(payload) for _, payload in batch]
        matcher, endpoints, enabled = await self._targets()
        try:
            matches = matcher.match_many(names)  # validates every name
        except UnicodeEncodeError:  # a str that is not valid Unicode: found, and said, here
            for name in names:
                _core.validate_event(name)
            raise
        with gc_paused():
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
