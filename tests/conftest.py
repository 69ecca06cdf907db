from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from oqronkit.backends import Backend, MemoryBackend, SQLiteBackend
from tests.receiver import Receiver

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


@pytest.fixture(params=["memory", "sqlite"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> BackendFactory:
    """Builds a backend of each kind; SQLite ones share one file, like processes would."""
    if request.param == "memory":
        return MemoryBackend
    return lambda: SQLiteBackend(tmp_path / "oqronkit.db")
