"""`oqronkit demo`: the product at work in one command.

On the embedded SQLite backend in a temporary folder (or `--backend`), it starts receivers on
loopback (healthy, flaky, rate-limiting, down, slow), defines the original's example app
(AcmeCorp, Internal Analytics, Partner, plus a legacy CRM that is down and a slow data lake),
fires a stream of events and shows every endpoint live. It ends with a summary that must add
up — fired x matched = delivered + dead — and every signature verified, or it exits with 1.
"""

from __future__ import annotations

import random
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from oqronkit.cli.common import run_trio
from oqronkit.cli.receivers import ACME_SECRET, BEHAVIOURS, SECRET, DemoReceivers
from oqronkit.config import CircuitBreaker, Endpoint, RateLimit, Retries, Security
from oqronkit.errors import shown_url
from oqronkit.events import LifecycleEvent
from oqronkit.kit import OqronKit
from oqronkit.models import Delivery
from oqronkit.webhooks import Webhook

console = Console()

# (event, weight): the stream the demo fires.
EVENTS = [
    ("order.created", 25),
    ("order.payment.completed", 20),
    ("user.signup", 5),
    ("user.onboarding.activated", 20),
    ("subscription.renewed", 15),
    ("system.health", 15),
]
RECEIVER_OF = {
    "AcmeCorp Integration": "healthy",
    "Internal Analytics": "flaky",
    "Partner": "limited",
    "Legacy CRM": "down",
    "Data Lake": "slow",
}
SETTLE_TIMEOUT = 120.0  # seconds the demo waits for the last delivery before giving up


def define(kit: OqronKit, url: str, view: LiveView) -> Webhook:
    return kit.webhook(
        "platform-events",
        concurrency=16,
        security=Security(signing_secret=SECRET),
        retries=Retries(max=5, base_delay=0.2, max_delay=2.0),
        on_success=view.on_success,
        on_failure=view.on_failure,
        on_dead=view.on_dead,
        endpoints=[
            Endpoint(
                "AcmeCorp Integration",
                f"{url}/healthy",
                ["order.**", "user.signup"],
                security=Security(signing_secret=ACME_SECRET, signing_header="X-Acme-Signature"),
                headers={"X-Acme-Account": "acme-demo"},
            ),
            Endpoint("Internal Analytics", f"{url}/flaky", ["user.*.activated", "system.health"]),
            Endpoint(
                "Partner",
                f"{url}/limited",
                ["order.payment.*", "subscription.*"],
                rate_limit=RateLimit(max=6, per=1.0),  # a little more than it accepts: 429s
            ),
            Endpoint(
                "Legacy CRM",
                f"{url}/down",
                ["user.signup"],
                retries=Retries(max=1, base_delay=0.2),
                circuit_breaker=CircuitBreaker(
                    failure_threshold=3, reset_timeout=0.5, half_open_max=2
                ),
            ),
            Endpoint("Data Lake", f"{url}/slow", ["order.**"]),
        ],
    )


@dataclass
class LiveView:
    """What the hooks and lifecycle events have reported so far."""

    fired: int = 0
    deliveries: int = 0
    delivered: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    retrying: dict[str, set[str]] = field(default_factory=dict)
    breaker: dict[str, str] = field(default_factory=dict)

    async def on_success(self, delivery: Delivery) -> None:
        self.delivered[delivery.endpoint_name] += 1
        self.retrying.get(delivery.endpoint_name, set()).discard(delivery.id)

    async def on_failure(self, delivery: Delivery) -> None:
        if delivery.status != "dead":
            self.retrying.setdefault(delivery.endpoint_name, set()).add(delivery.id)

    async def on_dead(self, delivery: Delivery) -> None:
        self.dead[delivery.endpoint_name] += 1
        self.retrying.get(delivery.endpoint_name, set()).discard(delivery.id)

    async def on_event(self, event: LifecycleEvent) -> None:
        if event.kind in ("breaker.opened", "breaker.closed") and event.endpoint:
            self.breaker[event.endpoint] = "open" if event.kind == "breaker.opened" else "closed"

    @property
    def settled(self) -> int:
        return sum(self.delivered.values()) + sum(self.dead.values())

    def render(self) -> Group:
        table = Table("endpoint", "receiver", "delivered", "retrying", "dead", "breaker")
        for name, receiver in RECEIVER_OF.items():
            breaker = self.breaker.get(name, "closed")
            table.add_row(
                name,
                receiver,
                str(self.delivered[name]),
                str(len(self.retrying.get(name, ()))),
                str(self.dead[name]),
                f"[red]{breaker}[/]" if breaker == "open" else breaker,
            )
        progress = Table.grid(padding=(0, 2))
        progress.add_row(
            ProgressBar(total=max(self.deliveries, 1), completed=self.settled, width=40),
            f"{self.fired} events fired, {self.settled}/{self.deliveries} deliveries settled",
        )
        return Group(table, progress)


async def fire_stream(webhook: Webhook, count: int, duration: float, view: LiveView) -> None:
    """`count` events spread over `duration` seconds, in batches every tenth of a second."""
    rng = random.Random(7)
    names, weights = zip(*EVENTS, strict=True)
    batches = max(1, int(duration * 10))
    for batch in range(batches):
        size = count * (batch + 1) // batches - count * batch // batches
        events = [
            (name, {"id": f"evt_{view.fired + i}", "amount": rng.randint(1, 500)})
            for i, name in enumerate(rng.choices(names, weights, k=size))
        ]
        fired = await webhook.fire_many(events)
        view.fired += size
        view.deliveries += sum(map(len, fired))
        if batch + 1 < batches:
            await anyio.sleep(duration / batches)


async def every_delivery(kit: OqronKit, since: float) -> list[Delivery]:
    """This run's: a backend kept with `--backend` holds earlier runs' too."""
    found: list[Delivery] = []
    cursor = None
    while page := await kit.list_deliveries(since=since, limit=1000, cursor=cursor):
        found.extend(page)
        cursor = page[-1].id
    return found


async def run_demo(count: int, duration: float, backend: str | None) -> bool:
    receivers = DemoReceivers()
    view = LiveView()
    try:
        with tempfile.TemporaryDirectory(prefix="oqronkit-demo-") as folder:
            url = backend or f"sqlite:///{Path(folder) / 'oqronkit.db'}"
            console.print(f"[bold]OqronKit demo[/] on {shown_url(url)}")
            for name, receiver in RECEIVER_OF.items():
                console.print(f"  {name:22} {receiver:8} {BEHAVIOURS[receiver]}", style="dim")
            kit = OqronKit(url, allow_private_networks=True, on_event=view.on_event)
            webhook = define(kit, receivers.url, view)
            async with kit:
                started = kit.clock.now()
                with Live(view.render(), console=console, refresh_per_second=8) as live:

                    async def refresh() -> None:
                        while True:
                            live.update(view.render())
                            await anyio.sleep(0.125)

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(refresh)
                        await fire_stream(webhook, count, duration, view)
                        with anyio.move_on_after(SETTLE_TIMEOUT):
                            while await unsettled(kit, started):
                                await anyio.sleep(0.25)
                        tg.cancel_scope.cancel()
                    live.update(view.render())
                console.print()
                deliveries = await every_delivery(kit, started)
    finally:
        receivers.close()
    return summarise(deliveries, view, receivers)


async def unsettled(kit: OqronKit, since: float) -> bool:
    for status in ("waiting", "active", "delayed"):
        if await kit.list_deliveries(status=status, since=since, limit=1):
            return True
    return False


def summarise(deliveries: list[Delivery], view: LiveView, receivers: DemoReceivers) -> bool:
    by_status = Counter((d.endpoint_name, d.status) for d in deliveries)
    attempts = Counter[str]()
    for d in deliveries:
        attempts[d.endpoint_name] += len(d.attempts)
    table = Table("endpoint", "matched", "delivered", "dead", "attempts", "signatures ok/bad")
    for name, receiver in RECEIVER_OF.items():
        matched = sum(n for (endpoint, _), n in by_status.items() if endpoint == name)
        table.add_row(
            name,
            str(matched),
            str(by_status[(name, "completed")]),
            str(by_status[(name, "dead")]),
            str(attempts[name]),
            f"{receivers.verified[receiver]}/{receivers.rejected[receiver]}",
        )
    console.print(table)
    delivered = sum(n for (_, status), n in by_status.items() if status == "completed")
    dead = sum(n for (_, status), n in by_status.items() if status == "dead")
    rejected = sum(receivers.rejected.values())
    adds_up = len(deliveries) == view.deliveries == delivered + dead
    console.print(
        f"fired x matched = {view.fired} events → {len(deliveries)} deliveries = "
        f"{delivered} delivered + {dead} dead  "
        + ("[green]adds up[/]" if adds_up else "[red]does NOT add up[/]")
    )
    console.print(
        "Internal Analytics recovered from its 500s by retrying; Partner's 429s were retried "
        "after their Retry-After;\nLegacy CRM is down: its breaker opened and its deliveries "
        "went dead (the demo's database is temporary: with `--backend sqlite:///demo.db` "
        "it stays, for `oqronkit dead-letters --backend sqlite:///demo.db`).",
        style="dim",
    )
    if rejected:
        console.print(f"[red]{rejected} signatures were rejected[/]")
    return adds_up and rejected == 0


@click.command()
@click.option("--events", "count", type=click.IntRange(min=1), default=200, show_default=True)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds over which the events are fired.",
)
@click.option("--backend", help="Backend URL (default: SQLite in a temporary folder).")
def demo(count: int, duration: float, backend: str | None) -> None:
    """Deliver a stream of events to local receivers, live; exit 0 if it all adds up."""
    ok: Any = run_trio(run_demo, count, duration, backend)
    sys.exit(0 if ok else 1)
