"""What users' code, odd inputs and a shared backend must not break."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import httpx
import pytest

from oqronkit import (
    ConfigurationError,
    Endpoint,
    FakeClock,
    InvalidPattern,
    OqronKit,
    Security,
)
from oqronkit.backends import Backend, MemoryBackend, SQLiteBackend
from oqronkit.egress import EgressPolicy
from oqronkit.outages import LoopFailures
from tests.conftest import BackendFactory, namespace
from tests.receiver import Receiver, Reply
from tests.servers import CuttableProxy
from tests.test_dispatch import make_kit, status_of

pytestmark = pytest.mark.anyio


async def test_non_ascii_event_names_are_delivered(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    kit = make_kit(make_backend)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["user.*"])])
    async with kit:
        [delivery_id] = await hook.fire("user.café", {})
        await status_of(kit, delivery_id, "completed")
    [request] = receiver.received()
    assert unquote(request.headers["x-oqron-event"]) == "user.café"


async def test_a_response_body_with_nul_and_bad_utf8_is_stored_alike_on_every_backend(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    """PostgreSQL's jsonb cannot hold NUL: the settle failed for good there, and the delivery
    was sent again every few seconds, never completed (with a batch's other settles)."""
    receiver.respond("/a", then=Reply(200, b"ok\x00\xff"))
    kit = make_kit(make_backend)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    async with kit:
        [delivery_id] = await hook.fire("a.b", {})
        delivered = await status_of(kit, delivery_id, "completed")
    [attempt] = delivered.attempts
    assert attempt.response_body == "ok\ufffd\ufffd"
    assert len(receiver.received("/a")) == 1


def test_definitions_refuse_what_http_cannot_carry() -> None:
    with pytest.raises(ConfigurationError, match="ASCII"):
        Endpoint("a", "https://example.com/", ["**"], headers={"X-Team": "Zoë"})
    with pytest.raises(ConfigurationError, match="invalid endpoint URL"):
        Endpoint("a", "http://☃☃☃..com/", ["**"])


async def test_a_failing_endpoints_callable_does_not_stop_the_kit(
    make_backend: BackendFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def endpoints() -> list[Endpoint]:
        nonlocal calls
        calls += 1
        if calls == 3:  # fire, dispatcher start, then this attempt's lookup
            raise RuntimeError("registry down")
        return [Endpoint("a", receiver.url("/a"), ["**"])]

    clock = FakeClock()
    kit = make_kit(make_backend, clock)
    hook = kit.webhook("w", endpoints=endpoints)
    with caplog.at_level(logging.ERROR, logger="oqronkit"):
        async with kit:
            [delivery_id] = await hook.fire("e", {})
            d = await status_of(kit, delivery_id, "delayed", "completed")
            if d.status == "delayed":
                assert d.attempts == ()
                clock.advance(5)
                await status_of(kit, delivery_id, "completed")


async def test_cancelled_anywhere_the_delivery_goes_back_to_the_queue(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    entered = anyio.Event()
    armed = False

    async def slow_endpoints() -> list[Endpoint]:
        if armed:  # the attempt's lookup: shutdown lands here, before any request
            entered.set()
            await anyio.sleep(10)
        return [Endpoint("a", receiver.url("/a"), ["**"])]

    kit = OqronKit(
        make_backend(), allow_private_networks=True, clock=FakeClock(), shutdown_grace=0.05
    )
    hook = kit.webhook("w", endpoints=slow_endpoints)
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        armed = True  # fire has returned without yielding since it stored the delivery
        await entered.wait()
    d = await kit.get_delivery(delivery_id)
    assert d is not None and d.status == "waiting" and d.attempts == ()
    # The same kit, opened again, sends it (it is not stuck behind its own old lease).
    armed = False
    async with kit:
        await status_of(kit, delivery_id, "completed")


async def test_first_claim_respects_caps_of_callable_endpoints(
    make_backend: BackendFactory, receiver: Receiver
) -> None:
    receiver.respond("/slow", then=Reply(204, delay=0.5))

    async def endpoints() -> list[Endpoint]:
        return [Endpoint("slow", receiver.url("/slow"), ["**"], max_in_flight=2)]

    clock = FakeClock()
    producer = OqronKit(make_backend(), dispatch=False, clock=clock)
    producer.webhook("w", endpoints=endpoints)
    async with producer:
        await producer.get_webhook("w").fire_many([("e", {})] * 6)
    kit = OqronKit(producer.backend, allow_private_networks=True, clock=clock)
    kit.webhook("w", concurrency=8, endpoints=endpoints)
    async with kit:
        await receiver.wait_for(2)
        await anyio.sleep(0.2)
        assert len(receiver.received()) == 2


async def test_a_worker_kit_picks_up_what_a_producer_kit_fires_on_one_memory_backend(
    receiver: Receiver,
) -> None:
    shared, clock = MemoryBackend(), FakeClock()
    endpoints = [Endpoint("a", receiver.url("/a"), ["**"])]
    producer = OqronKit(shared, dispatch=False, clock=clock)
    producer.webhook("w", endpoints=endpoints)
    worker = OqronKit(shared, allow_private_networks=True, clock=clock)
    worker.webhook("w", endpoints=endpoints)
    async with worker, producer:
        [delivery_id] = await producer.get_webhook("w").fire("e", {})
        await anyio.sleep(0.05)
        clock.advance(1.0)  # the worker's poll
        await status_of(worker, delivery_id, "completed")


async def test_secrets_stay_out_of_errors_logs_and_reprs(
    make_backend: BackendFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    kit = make_kit(make_backend)
    endpoint = Endpoint(
        "a",
        receiver.url("/a"),
        ["**"],
        headers={"Authorization": "Bearer sk_1"},
        security=lambda: "sk_live_SUPERSECRET",
    )  # type: ignore[arg-type,return-value]
    hook = kit.webhook("w", endpoints=[endpoint])
    with caplog.at_level(logging.DEBUG, logger="oqronkit"):
        async with kit:
            [delivery_id] = await hook.fire("e", {})
            d = await status_of(kit, delivery_id, "delayed")
    assert "SUPERSECRET" not in (d.error or "") and "SUPERSECRET" not in caplog.text
    assert "sk_1" not in repr(endpoint) and "s3cret" not in repr(Security(signing_secret="s3cret"))


class QuotingTransport(httpx.AsyncBaseTransport):
    """A user's transport whose errors quote the request's headers (h11 quotes a value it
    refuses)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.LocalProtocolError(f"illegal header value {request.headers['authorization']!r}")


async def test_header_values_stay_out_of_delivery_records(make_backend: BackendFactory) -> None:
    with pytest.raises(ConfigurationError, match="whitespace at its start or end"):
        Endpoint("a", "https://example.com/", ["**"], headers={"Authorization": "Bearer x "})
    kit = make_kit(make_backend, transport=QuotingTransport())
    hook = kit.webhook(
        "w",
        endpoints=[
            Endpoint(
                "a",
                "https://example.com/hook",
                ["**"],
                headers={"Authorization": "Bearer AUTHTOKEN-SECRET"},
            )
        ],
    )
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        d = await status_of(kit, delivery_id, "delayed")
    assert d.error == "LocalProtocolError: illegal header value '***'"


async def test_list_limit_must_be_positive(make_backend: BackendFactory) -> None:
    kit = OqronKit(make_backend())
    for bad in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            await kit.list_deliveries(limit=bad)


@pytest.mark.parametrize(
    "address",
    [
        "100.100.100.200",
        "10.1.2.3",
        "127.0.0.1",
        "169.254.169.254",
        "::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "fd00::1",
        "192.0.2.1",
        # Ranges Python 3.11's `is_global` lets through:
        "fec0::1",  # site-local, still assigned by Linux
        "3fff::1",  # documentation
        "5f00::1",  # SRv6
        "192.0.0.8",
        "192.88.99.1",
    ],
)
def test_egress_refuses_every_non_public_address(address: str) -> None:
    assert not EgressPolicy().permits(ipaddress.ip_address(address))
    assert EgressPolicy(allow_private_networks=True).permits(ipaddress.ip_address(address))


def test_egress_allows_public_and_allow_listed_addresses() -> None:
    for public in ("93.184.216.34", "2606:4700::1111", "2001:4860:4860::8888", "64:ff9b::808:808"):
        assert EgressPolicy().permits(ipaddress.ip_address(public))
    assert EgressPolicy(allow=["10.0.0.0/8"]).permits(ipaddress.ip_address("10.9.9.9"))


async def test_listing_with_a_bad_glob_is_a_typed_error(make_backend: BackendFactory) -> None:
    kit = OqronKit(make_backend())
    async with kit:
        with pytest.raises(InvalidPattern):
            await kit.list_deliveries(event="order..created")


def test_redis_commands_have_a_deadline_unless_the_url_sets_its_own() -> None:
    from oqronkit.backends.redis import DEFAULT_TIMEOUT, RedisBackend

    def timeouts(url: str) -> tuple[float, float]:
        kwargs = RedisBackend(url)._new_client().connection_pool.connection_kwargs
        return kwargs["stream_timeout"], kwargs["connect_timeout"]

    assert timeouts("redis://127.0.0.1:1/0") == (DEFAULT_TIMEOUT, DEFAULT_TIMEOUT) == (10, 10)
    assert timeouts("redis://127.0.0.1:1/0?stream_timeout=0.5&connect_timeout=2") == (0.5, 2)


def silent_backend(
    kind: str, request: pytest.FixtureRequest
) -> tuple[CuttableProxy, Backend, type[Exception]]:
    """A shared backend behind a proxy that can cut it off, and what a call fails with at its
    deadline, in real time (a network timeout has no other clock): coredis's own timeouts on
    Redis; on PostgreSQL, three times statement_timeout, the connection shut down under libpq."""
    if kind == "redis":
        from oqronkit.backends.redis import RedisBackend

        proxy = CuttableProxy(request.getfixturevalue("redis_url"))
        url = f"{proxy.url}?prefix={namespace()}&stream_timeout=0.5&connect_timeout=0.5"
        return proxy, RedisBackend(url), TimeoutError
    import psycopg

    from oqronkit.backends.postgres import PostgresBackend

    proxy = CuttableProxy(request.getfixturevalue("postgres_url"))
    url = f"{proxy.url}?schema={namespace()}&connect_timeout=1"
    return proxy, PostgresBackend(url, statement_timeout=0.3), psycopg.OperationalError


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
async def test_a_shared_backend_gone_silent_fails_calls_in_time_and_comes_back(
    kind: str, request: pytest.FixtureRequest, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection cut without a word (a failover, a dropped route, a hung server or pooler)
    fails calls instead of hanging them; once the server answers again, so do calls (on fresh
    connections), and a kit closes even while its backend is silent."""
    proxy, backend, failure = silent_backend(kind, request)
    receiver.respond("/slow", then=Reply(delay=2.0))
    endpoints = [
        Endpoint("a", receiver.url("/a"), ["a"]),
        Endpoint("slow", receiver.url("/slow"), ["slow"]),
    ]
    kit = OqronKit(backend, allow_private_networks=True, clock=FakeClock(), shutdown_grace=0.05)
    hook = kit.webhook("w", endpoints=endpoints)
    try:
        with anyio.fail_after(60), caplog.at_level(logging.WARNING, logger="oqronkit"):
            async with kit:
                [sent] = await hook.fire("a", {})
                await status_of(kit, sent, "completed")
                proxy.cut()
                with pytest.raises(failure):  # not a hang
                    await hook.fire("a", {})
                proxy.restore()
                [after] = await hook.fire("a", {})  # on new connections
                await status_of(kit, after, "completed")
                if kind == "redis":  # the wake-up subscription ended with the replaced client
                    said = "watching the backend for new work failed: ConnectionError"
                    while not any(r.getMessage().startswith(said) for r in caplog.records):
                        await anyio.sleep(0.01)
                [stuck] = await hook.fire("slow", {})
                await receiver.wait_for(1, "/slow")
                proxy.cut()
            # The kit closed all the same. Its attempt, cut short, could not go back to the
            # queue, nor on a last try: it stays leased to this kit until the lease expires
            # (another worker takes it then), and is not lost. Said in a line.
            assert "webhook w: could not requeue 1 deliveries in time" in caplog.text
            proxy.restore()
            d = await kit.get_delivery(stuck)
            assert d is not None and d.status == "active" and d.attempts == ()
            # The background loops said what failed in a line, with no traceback.
            loops = [r for r in caplog.records if r.getMessage().endswith("trying again")]
            assert all(r.levelno == logging.WARNING and not r.exc_info for r in loops)
    finally:
        proxy.close()


async def test_a_fire_cancelled_while_redis_runs_its_write_returns_what_it_stored(
    redis_url: str,
) -> None:
    """The script runs once sent, whatever the caller does: cut short while waiting for its
    answer, a fire said "not stored" of stored deliveries (a review's retry-on-timeout loop
    sent one order 119 times, each under a new id)."""
    from oqronkit.backends.redis import RedisBackend

    proxy = CuttableProxy(redis_url)
    kit = OqronKit(
        RedisBackend(f"{proxy.url}?prefix={namespace()}"), dispatch=False, clock=FakeClock()
    )
    hook = kit.webhook("w", endpoints=[Endpoint("a", "https://example.com/hooks", ["**"])])
    try:
        async with kit:
            await hook.fire("e", {})  # definitions read and a connection open: only the write
            proxy.lag = 0.3
            returned, ids = False, []
            with anyio.move_on_after(0.1) as scope:
                ids = await hook.fire("e", {})
                returned = True
            proxy.lag = 0.0
            assert scope.cancel_called and returned
            assert {d.id for d in await kit.list_deliveries()} >= set(ids) != set()
    finally:
        proxy.close()


async def test_a_kit_closes_within_its_grace_twice_over_while_its_backend_is_silent(
    redis_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """An attempt in flight when Redis went silent: its requeue, then the last try at it, each
    waited out the backend's command timeout (10 s by default: 51 s in all in a review). They
    get one more grace period after the drain's; leases take back what is left."""
    from oqronkit.backends.redis import RedisBackend

    proxy = CuttableProxy(redis_url)
    backend = RedisBackend(f"{proxy.url}?prefix={namespace()}&stream_timeout=30")
    receiver.respond("/slow", then=Reply(delay=60.0))
    endpoints = [Endpoint("slow", receiver.url("/slow"), ["**"])]
    kit = OqronKit(backend, allow_private_networks=True, clock=FakeClock(), shutdown_grace=0.2)
    hook = kit.webhook("w", endpoints=endpoints)
    try:
        with caplog.at_level(logging.WARNING, logger="oqronkit"), anyio.fail_after(10):
            async with kit:  # its exit takes no 30 s a step
                [stuck] = await hook.fire("e", {})
                await receiver.wait_for(1, "/slow")
                proxy.cut()
            assert "webhook w: could not requeue 1 deliveries in time" in caplog.text
            proxy.restore()
            d = await kit.get_delivery(stuck)
            assert d is not None and d.status == "active" and d.attempts == ()
    finally:
        proxy.close()


def test_background_loops_log_a_lost_backend_once_a_minute_and_bugs_with_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    unreachable = MemoryBackend().unreachable  # OSError, or a group of them
    failures = LoopFailures("webhook w: claiming", unreachable, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="oqronkit"):
        failures.failed(ConnectionRefusedError("refused\n\tIs the server running?"))
        now[0] = 59.0
        failures.failed(ExceptionGroup("", [TimeoutError(), ConnectionResetError()]))
        failures.failed(ConnectionRefusedError("refused"))
        now[0] = 61.0
        failures.failed(ConnectionRefusedError("refused"))
        failures.failed(KeyError("a bug"))
        failures.failed(ExceptionGroup("", [TimeoutError(), KeyError("a bug")]))
        failures.succeeded()
        failures.succeeded()  # said once
        now[0] = 62.0  # failing again, and working again, within the minute: no new warning
        failures.failed(ConnectionResetError())
        failures.succeeded()
        now[0] = 121.0
        failures.failed(ConnectionResetError())
    lines = [(r.levelname, r.getMessage(), bool(r.exc_info)) for r in caplog.records]
    assert lines == [
        (
            "WARNING",
            "webhook w: claiming failed: ConnectionRefusedError: refused Is the server running?;"
            " trying again",
            False,
        ),
        ("DEBUG", "webhook w: claiming failed again: TimeoutError", False),
        ("DEBUG", "webhook w: claiming failed again: ConnectionRefusedError: refused", False),
        (
            "WARNING",
            "webhook w: claiming failed: ConnectionRefusedError: refused; trying again"
            " (2 more failures since the last warning)",
            False,
        ),
        ("ERROR", "webhook w: claiming failed; trying again", True),
        ("ERROR", "webhook w: claiming failed; trying again", True),
        ("INFO", "webhook w: claiming works again", False),
        ("DEBUG", "webhook w: claiming failed again: ConnectionResetError", False),
        (
            "WARNING",
            "webhook w: claiming failed: ConnectionResetError; trying again"
            " (1 more failure since the last warning)",
            False,
        ),
    ]


def test_shared_backends_tell_an_unreachable_server_from_a_bug() -> None:
    import coredis.exceptions as redis_errors
    import psycopg
    import psycopg_pool
    from psycopg import errors as pg_errors

    from oqronkit.backends.postgres import PostgresBackend
    from oqronkit.backends.redis import RedisBackend

    redis = RedisBackend("redis://127.0.0.1:1/0")
    assert all(
        map(
            redis.unreachable,
            [
                TimeoutError("EVALSHA timed out after 10 seconds"),
                redis_errors.ConnectionError("Unable to establish a connection"),
                redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
                redis_errors.ReadOnlyError("You can't write against a read only replica."),
                redis_errors.ResponseError("MASTERDOWN Link with MASTER is down"),
                ExceptionGroup("", [TimeoutError("PING timed out after 10 seconds")]),
            ],
        )
    )
    assert not any(
        map(
            redis.unreachable,
            [
                redis_errors.ResponseError("WRONGTYPE Operation against a key"),
                redis_errors.AuthenticationError("invalid username-password pair"),
                ExceptionGroup("", [TimeoutError(), ValueError()]),
            ],
        )
    )
    postgres = PostgresBackend("postgresql://u@127.0.0.1:1/db")
    assert all(
        map(
            postgres.unreachable,
            [
                psycopg.OperationalError("consuming input failed: server closed the connection"),
                pg_errors.AdminShutdown("terminating connection due to administrator command"),
                pg_errors.CannotConnectNow("the database system is starting up"),
                pg_errors.TooManyConnections("sorry, too many clients already"),
                pg_errors.ConnectionFailure("connection failure"),
                pg_errors.ReadOnlySqlTransaction("cannot execute UPDATE in read-only mode"),
                psycopg_pool.PoolTimeout("couldn't get a connection after 90.00 sec"),
            ],
        )
    )
    assert not any(
        map(
            postgres.unreachable,
            [
                pg_errors.DeadlockDetected("deadlock detected"),
                pg_errors.QueryCanceled("canceling statement due to statement timeout"),
                pg_errors.SerializationFailure("could not serialize access"),
                pg_errors.UndefinedTable('relation "x" does not exist'),
                psycopg.OperationalError(
                    'connection failed: connection to server at "127.0.0.1", port 5432 failed:'
                    ' FATAL:  password authentication failed for user "u"'
                ),
                psycopg.OperationalError('connection failed: FATAL:  database "d" does not exist'),
            ],
        )
    )


async def publish_until_heard(direct: Any, channel: str, message: str, heard: list[str]) -> None:
    """Publishes `message` on `channel` until a watch has heard it (it is subscribed by then)."""
    while message not in heard:
        await direct.publish(channel, message)
        await anyio.sleep(0.01)


async def test_a_redis_backend_closes_while_its_replaced_client_ends_a_subscription(
    redis_url: str,
) -> None:
    import coredis

    from oqronkit.backends.redis import RedisBackend

    proxy = CuttableProxy(redis_url)
    prefix = namespace()
    backend = RedisBackend(f"{proxy.url}?prefix={prefix}&stream_timeout=0.5&connect_timeout=0.5")
    woken: list[str] = []
    ended: list[ConnectionError] = []

    async def watch() -> None:
        try:
            await backend.watch(woken.append)
        except ConnectionError as exc:  # the subscription ended with its client
            ended.append(exc)

    try:
        with anyio.fail_after(30):
            await backend.open()
            async with (
                anyio.create_task_group() as tasks,
                coredis.Redis.from_url(redis_url) as direct,
            ):
                tasks.start_soon(watch)
                await publish_until_heard(direct, f"{prefix}:wake", "w", woken)
                assert await backend.get_delivery("dlv_0") is None  # a connection to cut
                proxy.cut()
                with pytest.raises(TimeoutError):  # retires the client, ending the subscription
                    await backend.get_delivery("dlv_0")
                await backend.close()  # while that is under way: waits for it, no hang
            assert len(ended) == 1
    finally:
        proxy.close()


async def test_a_redis_wake_up_subscription_gone_silent_is_found_out(redis_url: str) -> None:
    """A subscription waits for messages with no deadline: after a command timeout's worth of
    silence it pings, so a connection gone silent is replaced (and the channel subscribed
    again) instead of losing wake-ups for good."""
    import coredis

    from oqronkit.backends.redis import RedisBackend

    proxy = CuttableProxy(redis_url)
    prefix = namespace()
    backend = RedisBackend(f"{proxy.url}?prefix={prefix}&stream_timeout=0.5&connect_timeout=0.5")
    woken: list[str] = []
    listening: list[bool] = []  # each time the watch says it listens

    async def watch() -> None:  # as the kit does: a watch that ends is started again
        while True:
            with contextlib.suppress(ConnectionError, TimeoutError):
                await backend.watch(woken.append, lambda: listening.append(True))

    try:
        with anyio.fail_after(10):  # coredis's own ping would come after 15 s of silence
            await backend.open()
            async with (
                anyio.create_task_group() as tasks,
                coredis.Redis.from_url(redis_url) as direct,
            ):
                tasks.start_soon(watch)
                await publish_until_heard(direct, f"{prefix}:wake", "before", woken)
                proxy.cut()  # the subscription's connection stays silent for good
                proxy.restore()  # new connections work
                await publish_until_heard(direct, f"{prefix}:wake", "after", woken)
                tasks.cancel_scope.cancel()
            assert len(listening) >= 2  # the kit says its watch works again
    finally:
        await backend.close()
        proxy.close()


async def test_a_postgres_wake_up_connection_gone_silent_is_found_out(postgres_url: str) -> None:
    """Waiting for notifications never fails by itself: the watch checks its connection still
    answers, so a silent one ends it (and the kit listens anew) instead of lasting for ever."""
    import psycopg

    from oqronkit.backends.postgres import PostgresBackend

    proxy = CuttableProxy(postgres_url)
    schema = namespace()
    url = f"{proxy.url}?schema={schema}&connect_timeout=1"
    backend = PostgresBackend(url, statement_timeout=0.3)
    woken: list[str] = []

    async def notify_then_cut() -> None:
        with psycopg.Connection.connect(postgres_url, autocommit=True) as direct:
            while not woken:  # listening once a notification comes through
                direct.execute(f"NOTIFY \"oqronkit_{schema}\", 'w'")
                await anyio.sleep(0.01)
        proxy.cut()

    try:
        with anyio.fail_after(30):
            await backend.open()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(notify_then_cut)
                with pytest.raises(psycopg.OperationalError):
                    await backend.watch(woken.append)
    finally:
        await backend.close()
        proxy.close()


async def test_a_postgres_call_that_keeps_getting_answers_is_not_cut(postgres_url: str) -> None:
    from oqronkit.backends.postgres import PostgresBackend

    proxy = CuttableProxy(postgres_url)
    backend = PostgresBackend(f"{proxy.url}?schema={namespace()}", statement_timeout=0.3)
    kit = OqronKit(backend, dispatch=False, clock=FakeClock())
    hook = kit.webhook("w", endpoints=[Endpoint("a", "https://example.com/", ["**"])])
    try:
        async with kit:
            await hook.fire_many([("order.created", {})] * 2_000)
            # A glob SQL cannot narrow reads every row, a page of 500 per round trip: 5 of them,
            # each 0.3 s late, take longer than a call's deadline (3 x 0.3 s) all together.
            proxy.lag = 0.3
            with anyio.fail_after(30):
                assert await kit.list_deliveries(event="*.shipped", limit=10) == []
    finally:
        proxy.close()


@pytest.mark.parametrize(("query", "keepalive_idle"), [("", 10), ("&keepalives_idle=60", 60)])
async def test_postgres_connections_give_up_on_a_server_gone_silent(
    postgres_url: str, query: str, keepalive_idle: int
) -> None:
    """libpq's TCP settings, read back from a pooled connection's socket: keepalives and a user
    timeout, so a server that vanished without a word fails calls within ~30 s (the URL's own
    settings win)."""
    from oqronkit.backends.postgres import PostgresBackend

    backend = PostgresBackend(f"{postgres_url}?schema={namespace()}{query}")
    await backend.open()
    try:
        assert backend._pool is not None
        with (
            backend._pool.connection() as conn,
            socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock,
        ):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == keepalive_idle
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
    finally:
        await backend.close()


def test_postgres_tcp_defaults_yield_to_libpqs_environment_and_service_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from oqronkit.backends.postgres import TCP_DEFAULTS, PostgresBackend

    def options(url: str) -> dict[str, object]:
        return PostgresBackend(url)._connect_options

    url = "postgresql://app@db.internal/app"
    assert options(url) == {"autocommit": True, **TCP_DEFAULTS}
    assert "connect_timeout" not in options(url + "?connect_timeout=3")  # the URL's own
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "3")
    assert "connect_timeout" not in options(url)  # libpq reads the variable
    assert options(url + "?service=billing") == {"autocommit": True}
    monkeypatch.setenv("PGSERVICE", "billing")
    assert options(url) == {"autocommit": True}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:hunter2@db.internal/app?colour=blue",
        "postgresql://app:hunter2%zz@db.internal/app",  # libpq quotes the bad token
        "host=db.internal password=hunter2 x",
    ],
)
def test_a_postgres_url_libpq_cannot_read_is_refused_at_once_without_its_password(
    url: str,
) -> None:
    from oqronkit.backends.postgres import PostgresBackend

    with pytest.raises(ConfigurationError, match="libpq cannot read it") as caught:
        PostgresBackend(url)
    assert "hunter2" not in str(caught.value)


async def test_a_sqlite_file_locked_elsewhere_holds_up_no_cancel_nor_shutdown(
    tmp_path: Path, receiver: Receiver
) -> None:
    # SQLite waits for a lock in a worker thread that no cancellation reaches: its own wait is
    # short, and the waiting between tries is ours, which a timeout or a shutdown cuts short.
    path = tmp_path / "oqronkit.db"
    kit = OqronKit(SQLiteBackend(path), allow_private_networks=True, shutdown_grace=0.1)
    hook = kit.webhook("w", endpoints=[Endpoint("a", receiver.url("/a"), ["**"])])
    other = sqlite3.connect(path, isolation_level=None)  # another process, as locks go
    with anyio.fail_after(5):  # SQLite's busy wait was 30 s
        async with kit:
            other.execute("BEGIN IMMEDIATE")
            with anyio.move_on_after(0.3) as waited:
                await hook.fire("e", {})
            assert waited.cancelled_caught  # it waited for the lock, and gave way to a timeout
    other.execute("ROLLBACK")
    other.close()
    async with kit:  # the lock is free: all is well
        [delivery_id] = await hook.fire("e", {})
        assert (await status_of(kit, delivery_id, "completed")).attempts[0].status == 204
