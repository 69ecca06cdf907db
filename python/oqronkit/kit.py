"""`OqronKit`: the backend, the webhooks defined on it, and — while `async with kit:` is open —
one dispatcher per webhook in this process, sharing one httpx client."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random as random_module
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx
import sniffio
from anyio.abc import TaskGroup

from oqronkit import _core
from oqronkit.backends import Backend, open_backend
from oqronkit.backends.base import SettleRequest
from oqronkit.batching import GroupCommit
from oqronkit.clock import Clock, SystemClock, sleep
from oqronkit.config import (
    CircuitBreaker,
    Endpoint,
    Method,
    Retries,
    Security,
    SecuritySource,
    Throttle,
    check_count,
    check_header,
    check_seconds,
)
from oqronkit.definitions import (
    WEBHOOK_FIELDS,
    encode_changes,
    endpoint_document,
    webhook_document,
    webhook_settings,
)
from oqronkit.dispatcher import Dispatcher
from oqronkit.egress import EgressPolicy
from oqronkit.errors import (
    BackendUnavailable,
    ConfigurationError,
    DeliveryNotFound,
    DeliveryStateError,
    KitNotRunning,
    OqronKitError,
    describe,
)
from oqronkit.events import EventBus, LifecycleEvent
from oqronkit.guards import Guards
from oqronkit.hooks import Hook, HookPool
from oqronkit.ids import new_id
from oqronkit.models import (
    DEFINITIONS_TTL,
    DELETED,
    NO_DEFINITIONS,
    STATUSES,
    WEBHOOK,
    WEBHOOK_DELETED,
    Definitions,
    Delivery,
    Status,
)
from oqronkit.outages import LoopFailures
from oqronkit.scopes import Watchdog
from oqronkit.slots import Slots
from oqronkit.transport import Http1Transport
from oqronkit.webhooks import EndpointSource, Scheme, Webhook

log = logging.getLogger("oqronkit")

P = ParamSpec("P")
T = TypeVar("T")

WATCH_RETRY = 1.0  # seconds before watching the backend again after it failed
REPLAY_PAGE = 500  # dead deliveries read per query by `replay`


def _wraps_only(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    """Whether `group` is nothing but `exc` in groups of one (task groups wrap what failed;
    a group of the block's own stays whole, though Trio may have rebuilt it)."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
        if inner is exc or (
            isinstance(inner, BaseExceptionGroup)
            and isinstance(exc, BaseExceptionGroup)
            and type(inner) is type(exc)
            and inner.message == exc.message
            and len(inner.exceptions) == len(exc.exceptions)
            and all(a is b for a, b in zip(inner.exceptions, exc.exceptions, strict=True))
        ):
            return True
    return False


class OqronKit:
    """The webhook sender.

    `backend`: `memory://`, `sqlite:///path.db` (or a `Backend`). `dispatch=False` makes a
    producer/operator kit that stores and queries but delivers nothing itself. `clock` injects
    time (tests); `random` the jitter source. Durations are seconds.

    Deliveries go through OqronKit's `Http1Transport`, which applies the egress policy at
    connect time (`ssl_context` replaces its verifying TLS context). `transport` replaces it
    with any httpx transport (proxies, HTTP/2, a `MockTransport`); that one is not guarded.
    """

    def __init__(
        self,
        backend: str | Backend = "memory://",
        *,
        allow_private_networks: bool = False,
        allow_networks: Iterable[str] = (),
        dispatch: bool = True,
        clock: Clock | None = None,
        lease: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_payload_bytes: int = 256 * 1024,
        response_body_cap: int = 64 * 1024,
        retry_after_cap: float = 3600.0,
        shutdown_grace: float = 10.0,
        hook_timeout: float = 10.0,
        idempotency_window: float = 24 * 3600.0,
        user_agent: str | None = None,
        random: random_module.Random | None = None,
        on_event: Callable[[LifecycleEvent], Any] | None = None,
    ) -> None:
        for name, value in (
            ("lease", lease),
            ("retry_after_cap", retry_after_cap),
            ("shutdown_grace", shutdown_grace),
            ("hook_timeout", hook_timeout),
            ("idempotency_window", idempotency_window),
        ):
            check_seconds(name, value)
        for name, count in (
            ("max_connections", max_connections),
            ("max_payload_bytes", max_payload_bytes),
            ("response_body_cap", response_body_cap),
        ):
            check_count(name, count)
        if not isinstance(dispatch, bool):
            raise ConfigurationError(f"dispatch must be True or False, not {dispatch!r}")
        if user_agent is not None:
            check_header("User-Agent", user_agent)
        if on_event is not None and not callable(on_event):
            raise ConfigurationError("on_event must be a callable taking a LifecycleEvent")
        self.backend = open_backend(backend)
        self.egress = EgressPolicy(
            allow_private_networks=allow_private_networks, allow=allow_networks
        )
        self.dispatch = dispatch
        self.clock: Clock = clock or SystemClock()
        self.lease = float(lease)
        self.max_connections = max_connections
        self.max_payload_bytes = max_payload_bytes
        self.response_body_cap = response_body_cap
        self.retry_after_cap = float(retry_after_cap)
        self.shutdown_grace = float(shutdown_grace)
        self.hook_timeout = float(hook_timeout)
        self.idempotency_window = float(idempotency_window)
        self.user_agent = user_agent or f"oqronkit-python/{_core.__version__}"
        self.random = random or random_module.Random()
        self.worker_id = new_id("wrk")  # renewed each time the kit opens
        self._transport = transport
        self.ssl_context = ssl_context
        self._webhooks: dict[str, Webhook] = {}
        self.guards = Guards(self.backend)  # circuit breakers and rate limits
        # Outcomes of attempts, settled in the backend in group commits; one at a time where
        # there is no round trip to share.
        self.settles: Callable[[SettleRequest], Awaitable[Delivery | None]] = (
            GroupCommit(self.backend.settle_many) if self.backend.round_trips else self._settle_one
        )
        self.definitions: Definitions = NO_DEFINITIONS  # as last read from the backend
        self._definitions_read_at = -math.inf
        self._on_event = on_event
        self._events = EventBus()
        self._watcher: anyio.CancelScope | None = None
        self._stopping = False  # set at exit: definitions read from then on start no dispatcher
        self._changing: tuple[object, anyio.Lock] | None = None  # (its event loop, the lock)
        self._dispatchers: dict[str, Dispatcher] = {}
        self._active_transport: httpx.AsyncBaseTransport | None = None
        self._connections: Slots | None = None
        self.watchdog = Watchdog()  # the deadlines of requests and hooks, while running
        self._task_group: TaskGroup | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None

    def __repr__(self) -> str:
        state = "running" if self._task_group is not None else "stopped"
        return f"OqronKit({self.backend!r}, webhooks={list(self._webhooks)}, {state})"

    # ---------------------------------------------------------------- definitions

    def webhook(
        self,
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
    ) -> Webhook:
        """Defines a webhook; if the kit is running, its dispatcher starts at once."""
        if name in self._webhooks:
            raise ConfigurationError(f"a webhook named {name!r} is already defined")
        stored = self.definitions.documents.get((name, WEBHOOK))
        if stored is not None and not stored.get(DELETED):  # a deleted one's name is free
            raise ConfigurationError(f"a webhook named {name!r} was created at runtime")
        webhook = Webhook(
            self,
            name,
            endpoints=endpoints,
            security=security,
            retries=retries,
            concurrency=concurrency,
            throttle=throttle,
            timeout=timeout,
            circuit_breaker=circuit_breaker,
            on_success=on_success,
            on_failure=on_failure,
            on_dead=on_dead,
            scheme=scheme,
            method=method,
            headers=headers,
        )
        self._webhooks[name] = webhook
        if self.dispatch:
            self._start_dispatcher(webhook)
        return webhook

    def get_webhook(self, name: str) -> Webhook:
        try:
            return self._webhooks[name]
        except KeyError:
            raise ConfigurationError(f"no webhook named {name!r}") from None

    async def webhooks(self) -> list[Webhook]:
        """Every webhook: defined in code, or created at runtime (by any process)."""
        await self.current_definitions()
        return list(self._webhooks.values())

    # ---------------------------------------------------------------- runtime definitions

    async def create_webhook(
        self,
        name: str,
        *,
        endpoints: Iterable[Endpoint] = (),
        security: Security | None = None,
        retries: Retries | None = None,
        concurrency: int = 10,
        throttle: Throttle | None = None,
        timeout: float = 30.0,
        circuit_breaker: CircuitBreaker | None = None,
        scheme: Scheme = "oqron",
        method: Method = "POST",
        headers: Mapping[str, str] | None = None,
    ) -> Webhook:
        """Creates a webhook stored in the backend (secrets included): every process on the
        backend sees it within a second, and every dispatching kit delivers it. Hooks belong
        to webhooks defined in code; a runtime webhook reports through `on_event`."""
        await self.refresh_definitions()  # not a copy up to a second old: another process's
        if name in self._webhooks:
            raise ConfigurationError(f"a webhook named {name!r} is already defined")
        settings = dict(
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
        endpoints = list(endpoints)
        # Built once to validate everything before anything is stored.
        Webhook(self, name, endpoints=endpoints, runtime=True, **settings)  # type: ignore[arg-type]
        documents = {e.name: endpoint_document(e) for e in endpoints}
        documents[WEBHOOK] = webhook_document(settings)
        # In one step, and only if no other process created it meanwhile. A webhook of this
        # name deleted earlier leaves a pause, holding what stale fires queued for it since:
        # the new webhook starts unpaused, and that is discarded (meant for the old one).
        now = self.clock.now()
        if not await self.backend.create_webhook(name, documents, now, WEBHOOK_DELETED):
            raise ConfigurationError(f"a webhook named {name!r} is already defined")
        await self.refresh_definitions()
        return self.get_webhook(name)

    async def update_webhook(self, name: str, /, **changes: Any) -> Webhook:
        """Changes settings of a webhook created at runtime (`concurrency=20`, `retries=...`);
        a setting given as None returns to its default. Webhooks defined in code change in
        code."""
        webhook = await self._runtime_webhook(name)
        patch = encode_changes(changes, WEBHOOK_FIELDS, f"webhook {name!r}")
        document = {**self.definitions.documents[(name, WEBHOOK)], **patch}
        settings = webhook_settings({k: v for k, v in document.items() if v is not None})
        webhook._configure(**settings)  # validates; the stored document follows
        await self.write_definition(name, WEBHOOK, patch, replace=False)
        return webhook

    async def delete_webhook(self, name: str) -> int:
        """Deletes a webhook created at runtime, with its endpoints. Its unfinished deliveries
        are cancelled, those in flight aborted as `cancel_delivery` does (never dead: no
        `on_dead`; each can be resent by id), so a webhook created later under the name does
        not receive them; returns how many. Webhooks defined in code are removed in code."""
        await self._runtime_webhook(name)
        discarded = await self.backend.delete_webhook(name, self.clock.now(), WEBHOOK_DELETED)
        self.cancel_in_flight(name, WEBHOOK)
        await self.refresh_definitions()
        return discarded

    def cancel_in_flight(self, webhook: str, endpoint: str) -> None:
        """Aborts this process's attempts for a webhook or endpoint (`WEBHOOK`) now, which the
        backend was told to cancel; other processes' learn of it within a second."""
        dispatcher = self._dispatchers.get(webhook)
        if dispatcher is not None:
            dispatcher.cancel_endpoint(endpoint)

    async def pause_webhook(self, name: str) -> int:
        """Holds every queued delivery of the webhook, and every one fired from now on, until
        `resume_webhook`; attempts already in flight finish. Returns how many were held."""
        await self.current_definitions()  # it may have been created at runtime elsewhere
        self.get_webhook(name)
        return await self.set_paused(name, WEBHOOK, True)

    async def resume_webhook(self, name: str) -> int:
        """Releases the webhook's held deliveries (except those of paused endpoints), each due
        when it was due before the pause. Returns how many were released."""
        await self.current_definitions()
        self.get_webhook(name)
        return await self.set_paused(name, WEBHOOK, False)

    async def _runtime_webhook(self, name: str) -> Webhook:
        await self.current_definitions()
        webhook = self.get_webhook(name)
        if not webhook.runtime:
            raise ConfigurationError(
                f"webhook {name!r} is defined in code: change it there (its endpoints can be "
                "changed at runtime)"
            )
        return webhook

    async def write_definition(
        self, webhook: str, endpoint: str, changes: Mapping[str, Any] | None, *, replace: bool
    ) -> None:
        await self.backend.write_definition(webhook, endpoint, changes, replace=replace)
        await self.refresh_definitions()

    async def set_paused(self, webhook: str, endpoint: str, paused: bool) -> int:
        async with self._changing_definitions():
            await self.refresh_definitions()
            changed = ((webhook, endpoint) in self.definitions.paused) != paused
            count = await self.backend.set_paused(webhook, endpoint, paused, self.clock.now())
            await self.refresh_definitions()
        if changed:  # an event per change, not per call: alerts are made of them
            kind = "paused" if paused else "resumed"
            if endpoint == WEBHOOK:
                self.publish(LifecycleEvent(f"webhook.{kind}", webhook, self.clock.now()))  # type: ignore[arg-type]
            else:
                self.publish(
                    LifecycleEvent(f"endpoint.{kind}", webhook, self.clock.now(), endpoint)  # type: ignore[arg-type]
                )
        if not paused:
            self.wake(webhook)
        return count

    def _changing_definitions(self) -> anyio.Lock:
        """Held while a change that publishes an event is made, so that calls racing in this
        process publish it once (each process publishes what it changed)."""
        loop = anyio.lowlevel.current_token()  # a lock serves one event loop: a kit may see several
        if self._changing is None or self._changing[0] != loop:
            self._changing = (loop, anyio.Lock())
        return self._changing[1]

    async def current_definitions(self) -> Definitions:
        """The stored definitions, read again when the copy here is over a second old."""
        if self.clock.now() - self._definitions_read_at >= DEFINITIONS_TTL:
            await self.refresh_definitions()
        return self.definitions

    async def refresh_definitions(self) -> None:
        self._definitions_read_at = self.clock.now()
        fresh = await self.backend.definitions(self.definitions.version)
        if fresh is None:
            return
        self.definitions = fresh
        self._sync_runtime_webhooks()
        # New definitions may give a dispatcher more room (a raised concurrency or
        # max_in_flight, a looser rate limit): each plans again now, not at its next wake-up.
        for name in list(self._dispatchers):
            self.wake(name)
        for name, webhook in list(self._webhooks.items()):
            if not webhook.runtime and fresh.documents.get((name, WEBHOOK), {}).get(DELETED):
                # A webhook defined in code takes back the name of a deleted runtime webhook:
                # the tombstone goes, and with it what it held, so its fires are not held.
                await self.backend.create_webhook(name, {}, self.clock.now(), WEBHOOK_DELETED)
                await self.refresh_definitions()
                return

    def _sync_runtime_webhooks(self) -> None:
        """Makes this process's runtime webhooks (and their dispatchers) those stored."""
        stored = {
            webhook: document
            for (webhook, endpoint), document in self.definitions.documents.items()
            if endpoint == WEBHOOK and not document.get(DELETED)
        }
        for name, document in stored.items():
            webhook = self._webhooks.get(name)
            try:
                settings = webhook_settings(document)
                if webhook is None:
                    webhook = Webhook(self, name, endpoints=(), runtime=True, **settings)
                    self._webhooks[name] = webhook
                    if self.dispatch:
                        self._start_dispatcher(webhook)
                elif webhook.runtime:
                    webhook._configure(**settings)
                else:
                    log.warning("a webhook %r is defined in code and stored; the code wins", name)
            except (ConfigurationError, TypeError, KeyError, ValueError) as exc:
                log.warning("ignoring the stored webhook %r: %s", name, exc)
        for name in [n for n, w in self._webhooks.items() if w.runtime and n not in stored]:
            del self._webhooks[name]  # deleted (here or by another process)
            self._on_loop(self._stop_dispatcher, name)

    # ---------------------------------------------------------------- lifetime

    async def __aenter__(self) -> OqronKit:
        if self._task_group is not None:
            raise RuntimeError("this kit is already running")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._open_backend()
            stack.push_async_callback(self.backend.close)
            transport = self._transport or Http1Transport(
                egress=self.egress,
                ssl_context=self.ssl_context,
                max_idle_per_origin=self.max_connections,
            )
            self._active_transport = await stack.enter_async_context(transport)
            self._connections = Slots(self.max_connections)
            # Outlives the task group below: hooks finishing at shutdown keep their timeout.
            await stack.enter_async_context(self.watchdog)
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            self._event_hooks = HookPool(self._task_group, self.hook_timeout, self.watchdog)
            stack.push_async_callback(self._stop_dispatchers)
        except BaseException:
            await stack.aclose()
            raise
        self._exit_stack = stack
        self._stopping = False
        # A fresh identity per run: leases held by an earlier run of this kit (one that was
        # cancelled mid-settle, say) are then reclaimed like any other worker's.
        self.worker_id = new_id("wrk")
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        try:
            await self.refresh_definitions()  # runtime webhooks get dispatchers below
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        if self.dispatch:
            for webhook in self._webhooks.values():
                self._start_dispatcher(webhook)
        self._watcher = anyio.CancelScope()  # made here: stopping may come before the task runs
        self._task_group.start_soon(self._watch, name="oqronkit watcher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit_stack = self._exit_stack, None
        try:
            if stack is not None:
                try:
                    await stack.__aexit__(exc_type, exc, tb)
                except BaseExceptionGroup as group:
                    # The kit's task group wraps the block's own error on its way out: it goes
                    # on as itself (returning lets it), so `except DeliveryNotFound` works.
                    if exc is None or not _wraps_only(group, exc):
                        raise
        finally:
            # Only now: until the backend is closed, a `fire_sync` from another thread runs
            # on this loop, whose backend clients (Redis's) it may use; on a loop of its own
            # it would use them from a foreign loop, and hang.
            self._token = self._loop_thread = None
            self._task_group = None
            self._active_transport = None
            self._dispatchers.clear()

    async def _open_backend(self) -> None:
        try:
            await self.backend.open()
        except OqronKitError:
            raise
        except Exception as exc:  # a server down, a refused login, a bad database name
            message = f"cannot open {self.backend!r}: {describe(exc)}"
            raise BackendUnavailable(message) from exc

    def _start_dispatcher(self, webhook: Webhook) -> None:
        """Starts `webhook`'s dispatcher if the kit runs and it has none yet (a refresh at the
        start may have started it already; one that began while stopping would outlive it)."""
        if self._task_group is None:
            return
        if threading.get_ident() != self._loop_thread:  # a definition from another thread
            self._on_loop(self._start_dispatcher, webhook)
            return
        if self._stopping or webhook.name in self._dispatchers:
            return
        dispatcher = Dispatcher(self, webhook)
        self._dispatchers[webhook.name] = dispatcher
        self._task_group.start_soon(dispatcher.run, name=f"oqronkit dispatcher {webhook.name}")

    def _stop_dispatcher(self, name: str) -> None:
        dispatcher = self._dispatchers.pop(name, None)
        if dispatcher is not None:
            dispatcher.stop()

    def _on_loop(self, fn: Callable[..., object], *args: Any) -> None:
        """Calls `fn` on the kit's event loop, from any thread: its task group, dispatchers and
        events are that loop's. Nothing to do when the kit is not running."""
        if self._loop_thread == threading.get_ident():
            fn(*args)
        elif self._token is not None:
            anyio.from_thread.run_sync(fn, *args, token=self._token)

    async def _stop_dispatchers(self) -> None:
        """Graceful: stop claiming, let attempts in flight finish within `shutdown_grace`, then
        cancel the rest (they go back to the queue without using an attempt)."""
        self._stopping = True
        self._event_hooks.close()  # on_event calls under way may finish, within their timeout
        if self._watcher is not None:
            self._watcher.cancel()
        for dispatcher in self._dispatchers.values():
            dispatcher.stop()

    async def _watch(self) -> None:
        """What other processes do reaches this one: runtime changes within a second, work
        they make ready at once (where the backend notifies)."""
        assert self._watcher is not None
        with self._watcher:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._watch_definitions)
                if self.dispatch:
                    tasks.start_soon(self._watch_backend)

    async def _watch_backend(self) -> None:
        failures = self.loop_failures("watching the backend for new work")
        while True:
            try:
                await self.backend.watch(self.wake, failures.succeeded)
                return  # the backend does not notify: dispatchers poll it
            except Exception as exc:
                failures.failed(exc)
            await sleep(self.clock, WATCH_RETRY)

    async def _watch_definitions(self) -> None:
        failures = self.loop_failures("reading the stored definitions")
        while True:
            # Due a second after the last read (not after this task got to run): a test's
            # clock that jumps a second ahead always finds this watcher due.
            due = self._definitions_read_at + DEFINITIONS_TTL
            await self.clock.wait(anyio.Event(), due)
            try:
                await self.current_definitions()
                failures.succeeded()
            except Exception as exc:
                failures.failed(exc)

    def loop_failures(self, what: str) -> LoopFailures:
        """How a background loop named `what` logs its failures (`outages`)."""
        return LoopFailures(what, self.backend.unreachable)

    def run_blocking(
        self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Runs an async operation from synchronous code: on the kit's event loop if the kit is
        running in another thread, else on a loop of its own."""
        call = functools.partial(fn, *args, **kwargs)
        if self._token is not None:
            if threading.get_ident() == self._loop_thread:
                raise RuntimeError("called from the kit's own event loop: use the async method")
            return anyio.from_thread.run(call, token=self._token)
        if _in_event_loop():  # anyio.run would say only "Already running asyncio in this thread"
            raise RuntimeError("called from a running event loop: use the async method")
        return anyio.run(call)

    # ---------------------------------------------------------------- for dispatchers

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The transport every delivery goes through (ours, or the one passed in)."""
        if self._active_transport is None:
            raise KitNotRunning("the kit is not running: use `async with kit:`")
        return self._active_transport

    @property
    def connections(self) -> Slots:
        """`max_connections` slots, one taken before each request touches the transport: at
        most that many sockets are open at once, and no request ever waits inside a transport's
        pool (httpx's own is corrupted by a request cancelled there: encode/httpcore#1093)."""
        if self._connections is None:
            raise KitNotRunning("the kit is not running: use `async with kit:`")
        return self._connections

    async def _settle_one(self, request: SettleRequest) -> Delivery | None:
        return await self.backend.settle(*request)

    def wake(self, webhook: str) -> None:
        dispatcher = self._dispatchers.get(webhook)
        if dispatcher is not None:
            self._on_loop(dispatcher.wake)

    async def disable_endpoint(self, webhook: str, endpoint: str, reason: str) -> None:
        """A 410 Gone: the endpoint is disabled, in every process, until re-enabled. Several
        410s at once (deliveries in flight) disable it, and publish `endpoint.disabled`, once."""
        async with self._changing_definitions():
            await self.refresh_definitions()
            document = self.definitions.documents.get((webhook, endpoint), {})
            if document.get("enabled") is False:
                return
            await self.write_definition(webhook, endpoint, {"enabled": False}, replace=False)
        now = self.clock.now()
        self.publish(LifecycleEvent("endpoint.disabled", webhook, now, endpoint, detail=reason))

    # ---------------------------------------------------------------- lifecycle events

    def publish(self, event: LifecycleEvent) -> None:
        self._events.publish(event)
        if self._on_event is not None and self._task_group is not None:
            self._event_hooks.start_soon(self._on_event, event)

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[AsyncIterator[LifecycleEvent]]:
        """Lifecycle events published in this process from now on, for alerting::

        async with kit.events() as events:
            async for event in events:
                if event.kind == "endpoint.disabled": ...
        """
        async with self._events.subscribe() as stream:
            yield stream

    # ---------------------------------------------------------------- operations

    async def cancel_delivery(
        self, delivery_id: str
    ) -> Literal["cancelled", "aborted", "finished"]:
        """Cancels a delivery: a queued one at once ("cancelled"); one in flight has its
        request aborted ("aborted": at once in this process, within a second on another); a
        finished one is left alone ("finished"). Never a breaker failure, never `on_dead`."""
        _check_id(delivery_id)
        outcome = await self.backend.cancel(delivery_id, self.clock.now())
        if outcome == "missing":
            raise DeliveryNotFound(f"no delivery {delivery_id!r}")
        if outcome == "requested":
            for dispatcher in self._dispatchers.values():
                dispatcher.cancel(delivery_id)
            return "aborted"
        return outcome

    async def resend_webhook(self, delivery_id: str) -> str:
        """Sends a finished delivery (completed, dead or cancelled) again, now, as a new
        delivery: attempts reset, the same `Idempotency-Key`, signed afresh. Returns its id."""
        _check_id(delivery_id)
        resent = await self.backend.resend(delivery_id, new_id("dlv"), self.clock.now())
        if resent is None:
            existing = await self.backend.get_delivery(delivery_id)
            if existing is None:
                raise DeliveryNotFound(f"no delivery {delivery_id!r}")
            raise DeliveryStateError(
                f"delivery {delivery_id} is {existing.status}: only completed, dead or "
                "cancelled deliveries can be resent"
            )
        self.wake(resent.webhook)
        return resent.id

    async def replay(
        self,
        *,
        rate: float,
        webhook: str | None = None,
        endpoint: str | None = None,
        event: str | None = None,
        since: float | None = None,
        until: float | None = None,
        dry_run: bool = False,
    ) -> int:
        """Resends every dead delivery matching the filters (as `list_deliveries` takes them),
        `rate` per second, so receivers back from an outage are not flooded: N deliveries take
        N / rate seconds. A dead delivery resent since (by hand or by an earlier replay) is
        left alone: its message and endpoint are the newer copy's. `dry_run` only counts.
        Returns how many were (or would be) resent."""
        if not (isinstance(rate, int | float) and 0 < rate < math.inf):
            raise ConfigurationError(f"rate must be a positive number per second, not {rate!r}")
        start, count, cursor = self.clock.now(), 0, None
        while True:
            page = await self.list_deliveries(
                webhook=webhook,
                endpoint=endpoint,
                status="dead",
                event=event,
                since=since,
                until=until,
                limit=REPLAY_PAGE,
                cursor=cursor,
            )
            resent = await self.backend.resent([d.id for d in page])
            for dead in page:
                if dead.id in resent:
                    continue
                if not dry_run:
                    await self.clock.wait(anyio.Event(), start + count / rate)
                    await self.resend_webhook(dead.id)
                count += 1
            if len(page) < REPLAY_PAGE:
                break
            cursor = page[-1].id  # resent copies are newer: the pages ahead never see them
        if not dry_run:
            await self.clock.wait(anyio.Event(), start + count / rate)  # the last one's slot
        return count

    # ---------------------------------------------------------------- queries

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        _check_id(delivery_id)
        return await self.backend.get_delivery(delivery_id)

    async def list_deliveries(
        self,
        *,
        webhook: str | None = None,
        endpoint: str | None = None,
        status: Status | None = None,
        event: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> list[Delivery]:
        """Newest first; dead letters are `status="dead"`. `event` is a glob (`order.**`),
        `since`/`until` bound the creation time (Unix seconds). Pass the last id of a page as
        `cursor` for the next page."""
        check_count("limit", limit)
        if status is not None and status not in STATUSES:
            raise ConfigurationError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        for name, bound in (("since", since), ("until", until)):
            if bound is not None and (
                not isinstance(bound, int | float)
                or isinstance(bound, bool)
                or not math.isfinite(bound)
            ):
                raise ConfigurationError(f"{name} is Unix seconds, not {bound!r}")
        for name, text in (
            ("webhook", webhook),
            ("endpoint", endpoint),
            ("event", event),
            ("cursor", cursor),
        ):
            if text is not None and not isinstance(text, str):
                raise ConfigurationError(f"{name} must be a str, not {text!r}")
        if cursor == "":
            cursor = None  # the first page, as on every backend
        return await self.backend.list_deliveries(
            webhook=webhook,
            endpoint=endpoint,
            status=status,
            event=event,
            since=since,
            until=until,
            limit=limit,
            before=cursor,
        )


def _check_id(delivery_id: object) -> None:
    if not isinstance(delivery_id, str):
        raise ConfigurationError(f"a delivery id is a str, not a {type(delivery_id).__name__}")


def _in_event_loop() -> bool:
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return False
    return True
