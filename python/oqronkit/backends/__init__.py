"""Storage and queue backends, chosen by URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from oqronkit.backends.base import Backend
from oqronkit.backends.memory import MemoryBackend
from oqronkit.backends.sqlite import SQLiteBackend
from oqronkit.errors import ConfigurationError, shown_url

__all__ = ["Backend", "MemoryBackend", "SQLiteBackend", "open_backend"]


@contextmanager
def _extra(name: str) -> Iterator[None]:
    try:
        yield
    except ImportError as exc:
        message = f"this backend needs its client library: pip install 'oqronkit[{name}]' ({exc})"
        raise ConfigurationError(message) from None


def open_backend(url: str | Backend) -> Backend:
    """`memory://`, `sqlite:///relative/path.db` / `sqlite:////absolute/path.db`,
    `redis://host:port/db` (key prefix: `?prefix=name`) or `postgresql://user@host/database`
    (schema: `?schema=name`)."""
    if isinstance(url, Backend):
        return url
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBackend()
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigurationError(
                f"a SQLite URL needs a path: sqlite:///file.db, not {shown_url(url)!r}"
            )
        return SQLiteBackend(path)
    if scheme in ("redis", "rediss"):
        with _extra("redis"):
            from oqronkit.backends.redis import RedisBackend
        return RedisBackend(url)
    if scheme in ("postgres", "postgresql"):
        with _extra("postgres"):
            from oqronkit.backends.postgres import PostgresBackend
        return PostgresBackend(url)
    raise ConfigurationError(
        f"unknown backend URL {shown_url(url)!r}: use memory://, sqlite:///path.db, redis://host "
        "or postgresql://host/database"
    )
