"""`oqronkit worker module:kit`: runs the dispatchers of a kit defined in the user's code until
SIGINT or SIGTERM, then shuts down gracefully (attempts in flight finish within the kit's
`shutdown_grace`; the rest go back to the queue without using an attempt)."""

from __future__ import annotations

import signal

import anyio
import click

from oqronkit.cli.common import fail_cleanly, import_kit
from oqronkit.kit import OqronKit


async def serve(kit: OqronKit) -> str:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with kit:
            names = ", ".join(w.name for w in await kit.webhooks()) or "none yet"
            click.echo(f"worker {kit.worker_id} on {kit.backend!r}; webhooks: {names}", err=True)
            async for received in signals:
                click.echo(f"{signal.Signals(received).name}: stopping gracefully", err=True)
                return signal.Signals(received).name
    return ""


@click.command()
@click.argument("app", metavar="MODULE:KIT")
def worker(app: str) -> None:
    """Deliver for the kit MODULE:KIT (e.g. myapp.hooks:kit) until SIGINT or SIGTERM."""
    kit = import_kit(app)
    if not kit.dispatch:
        raise click.BadParameter(f"{app} was made with dispatch=False: it delivers nothing")
    fail_cleanly(lambda: anyio.run(serve, kit, backend="trio"))
    click.echo("stopped", err=True)
