"""`oqronkit worker module:kit`: runs the dispatchers of a kit defined in the user's code until
SIGINT or SIGTERM, then shuts down gracefully (attempts in flight finish within the kit's
`shutdown_grace`; the rest go back to the queue without using an attempt)."""

from __future__ import annotations

import signal

import anyio
import click

from oqronkit.cli.common import fail_cleanly, import_kit, run_trio
from oqronkit.kit import OqronKit


async def serve(kit: OqronKit) -> str:
    """Runs `kit` until SIGINT or SIGTERM, then lets it drain; another signal during the drain
    stops it at once (what is in flight goes back to the queue, no attempt used)."""
    received: list[str] = []
    stop = anyio.Event()
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        with anyio.CancelScope() as drain:

            async def listen() -> None:
                async for number in signals:
                    name = signal.Signals(number).name
                    if received:
                        click.echo(f"{name}: stopping now", err=True)
                        drain.cancel()
                        return
                    received.append(name)
                    click.echo(f"{name}: stopping gracefully (again: at once)", err=True)
                    stop.set()

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(listen)
                    async with kit:
                        names = ", ".join(w.name for w in await kit.webhooks()) or "none yet"
                        click.echo(
                            f"worker {kit.worker_id} on {kit.backend!r}; webhooks: {names}",
                            err=True,
                        )
                        await stop.wait()
                    tg.cancel_scope.cancel()  # drained: no more listening
            except BaseExceptionGroup as group:  # the kit's own failure, as itself
                if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                    raise group.exceptions[0] from None
                raise
    return received[0] if received else ""


@click.command()
@click.argument("app", metavar="MODULE:KIT")
def worker(app: str) -> None:
    """Deliver for the kit MODULE:KIT (e.g. myapp.hooks:kit) until SIGINT or SIGTERM."""
    kit = import_kit(app)
    if not kit.dispatch:
        raise click.BadParameter(f"{app} was made with dispatch=False: it delivers nothing")
    fail_cleanly(lambda: run_trio(serve, kit))
    click.echo("stopped", err=True)
