"""What the commands share: loading a kit (a user's `module:kit`, or a backend URL), running
an operation on it, and turning failures into one-line errors."""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from oqronkit.backends import SQLiteBackend
from oqronkit.errors import OqronKitError, describe
from oqronkit.kit import OqronKit

T = TypeVar("T")

backend_option = click.option(
    "--backend",
    envvar="OQRONKIT_BACKEND",
    help="Backend URL (memory://, sqlite:///path.db); env OQRONKIT_BACKEND.",
)
app_option = click.option(
    "--app",
    envvar="OQRONKIT_APP",
    metavar="MODULE:KIT",
    help="Your kit, for the webhooks defined in code (e.g. myapp.hooks:kit); env OQRONKIT_APP.",
)


def import_kit(spec: str) -> OqronKit:
    """`module:attribute` → the `OqronKit` it names (the current folder is importable)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"expected MODULE:KIT, not {spec!r}", param_hint="MODULE:KIT")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        kit = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise click.BadParameter(f"cannot load {spec}: {exc}", param_hint="MODULE:KIT") from None
    except OqronKitError as exc:  # the module's definitions are wrong: one line, not a trace
        raise click.ClickException(f"cannot load {spec}: {describe(exc)}") from None
    if not isinstance(kit, OqronKit):
        raise click.BadParameter(f"{spec} is a {type(kit).__name__}, not an OqronKit")
    return kit


def operator_kit(app: str | None, backend: str | None) -> OqronKit:
    """A kit that operates and delivers nothing (the workers deliver)."""
    if app and backend:  # the app's kit has its backend: which one was meant is not for us
        raise click.UsageError(
            "give --app or --backend, not both (OQRONKIT_APP and OQRONKIT_BACKEND count too): "
            "the app's kit opens its own backend"
        )
    if app:
        kit = import_kit(app)
        kit.dispatch = False
        return kit
    if backend:
        kit = fail_cleanly(lambda: OqronKit(backend, dispatch=False))
        store = kit.backend
        # A mistyped path: opening it would create an empty database, and show nothing.
        if isinstance(store, SQLiteBackend) and not Path(store.path).exists():
            raise click.ClickException(
                f"no database at {store.path} (operating commands never create one)"
            )
        return kit
    raise click.UsageError("give --backend URL or --app MODULE:KIT (or set OQRONKIT_BACKEND)")


def fail_cleanly(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except (OqronKitError, OSError, sqlite3.Error, ValueError) as exc:
        raise click.ClickException(describe(exc)) from None


def run_trio(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`anyio.run` on Trio, where Ctrl-C is click's abort (one line, exit 130) even when it
    comes out of a task group, wrapped in an exception group."""
    try:
        return anyio.run(fn, *args, backend="trio")
    except KeyboardInterrupt:
        raise click.Abort from None
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            raise click.Abort from None
        raise


def run_operation(kit: OqronKit, operation: Callable[[OqronKit], Awaitable[T]]) -> T:
    """Opens `kit`, runs `operation` on it, closes it; failures become one-line errors."""

    async def run() -> T:
        async with kit:
            return await operation(kit)

    return fail_cleanly(lambda: run_trio(run))


def echo_json(value: Any) -> None:
    import json

    click.echo(json.dumps(value, indent=2, default=str))
