from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oqronkit.backends import Backend, MemoryBackend, SQLiteBackend
from tests.receiver import Receiver


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


@pytest.fixture(params=["memory", "sqlite"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    """Builds a backend of each kind; SQLite ones share one file, like processes would."""
    if request.param == "memory":
        return MemoryBackend
    return lambda: SQLiteBackend(tmp_path / "oqronkit.db")
