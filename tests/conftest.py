from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from hypothesis import settings

from oqronkit.backends import Backend, MemoryBackend, SQLiteBackend
from tests.receiver import Receiver
from tests.servers import postgres_server, redis_server

# `HYPOTHESIS_PROFILE=deep make test-python` searches far harder (minutes, not seconds).
settings.register_profile("deep", max_examples=5_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on both event loops anyio supports."""
    return str(request.param)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


BackendFactory = Callable[[], Backend]


# `.ci/run` sets this: there, a server that cannot be started fails the run instead of skipping.
REQUIRE_SERVERS = os.environ.get("OQRONKIT_REQUIRE_SERVERS") == "1"


def _server(launch: Callable[[], AbstractContextManager[str]], name: str) -> Iterator[str]:
    try:
        with launch() as url:
            yield url
    except RuntimeError as error:
        if REQUIRE_SERVERS:
            raise
        pytest.skip(f"NO {name.upper()} SERVER, ITS TESTS ARE SKIPPED: {error}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway Redis for the whole run (tests keep apart by key prefix)."""
    yield from _server(redis_server, "redis")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL for the whole run (tests keep apart by schema)."""
    yield from _server(postgres_server, "postgresql")


def namespace() -> str:
    """A key prefix or schema name no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


def backend_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a durable backend that separate processes can share, all this test's own."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'oqronkit.db'}"
    if kind == "redis":
        return f"{request.getfixturevalue('redis_url')}?prefix={namespace()}"
    return f"{request.getfixturevalue('postgres_url')}?schema={namespace()}"


def two_processes(make_backend: BackendFactory) -> list[Backend]:
    """Two backends on one store, as two processes would have them (two SQLite connections,
    two Redis or PostgreSQL clients); for memory, one instance shared."""
    first = make_backend()
    return [first, first if isinstance(first, MemoryBackend) else make_backend()]


@pytest.fixture(params=["memory", "sqlite", "redis", "postgresql"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    """Builds a backend of each kind. The backends one factory builds share their storage (a
    SQLite file, a Redis key prefix, a PostgreSQL schema), like processes would."""
    if request.param == "memory":
        return MemoryBackend
    if request.param == "sqlite":
        return lambda: SQLiteBackend(tmp_path / "oqronkit.db")
    name = namespace()
    if request.param == "redis":
        from oqronkit.backends.redis import RedisBackend

        url = request.getfixturevalue("redis_url")
        return lambda: RedisBackend(url, prefix=name)
    from oqronkit.backends.postgres import PostgresBackend

    url = request.getfixturevalue("postgres_url")
    return lambda: PostgresBackend(url, schema=name)
