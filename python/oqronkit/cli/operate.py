"""Operations from a terminal: fire, delivery queries, resend, cancel, endpoints."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import sys
from typing import Any, get_args

import click
from rich.console import Console
from rich.table import Column, Table

from oqronkit._core import validate_pattern
from oqronkit.cli.common import app_option, backend_option, echo_json, operator_kit, run_operation
from oqronkit.errors import DeliveryNotFound, InvalidPattern, shown_url
from oqronkit.kit import OqronKit
from oqronkit.models import Delivery, Status

# In a terminal, tables fit its width; piped or into a file, no column is cut short.
console = Console() if sys.stdout.isatty() else Console(width=1_000)
STATUSES = click.Choice(list(get_args(Status)))


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _timestamp(value: str | None, option: str) -> float | None:
    """An ISO-8601 time (UTC unless it says otherwise) or Unix seconds."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise click.BadParameter(f"{value!r} is not a time", param_hint=option)
        return seconds
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither ISO-8601 nor Unix seconds", param_hint=option
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def _pattern(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An event glob, checked where it is given (a bad one is a usage error, exit 2)."""
    if value is not None:
        try:
            validate_pattern(value)
        except InvalidPattern as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _as_json(delivery: Delivery) -> dict[str, Any]:
    return dataclasses.asdict(delivery)


def _print_deliveries(found: list[Delivery], as_json: bool, limit: int) -> None:
    if as_json:
        echo_json([_as_json(d) for d in found])
        return
    table = Table("webhook", "endpoint", "event", "status", "attempts", "created (UTC)")
    table.columns.insert(
        0, Column("id", no_wrap=True, min_width=max(map(len, (d.id for d in found)), default=2))
    )
    for d in found:
        table.add_row(
            d.id,
            d.webhook,
            d.endpoint_name,
            d.event,
            d.status,
            str(len(d.attempts)),
            _time(d.created_at),
        )
    console.print(table)
    if found and len(found) == limit:  # a full page: there may be more
        console.print(f"next page: --cursor {found[-1].id}", style="dim")


@click.command()
@app_option
@backend_option
@click.option("--webhook", "webhook_name", required=True, help="The webhook to fire on.")
@click.option("--idempotency-key", help="Dedupes repeated fires within the kit's window.")
@click.argument("event")
@click.argument("payload", default="{}")
def fire(
    app: str | None,
    backend: str | None,
    webhook_name: str,
    idempotency_key: str | None,
    event: str,
    payload: str,
) -> None:
    """Fire EVENT with a JSON PAYLOAD; prints the delivery ids (one per matching endpoint)."""
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="PAYLOAD") from None

    async def run(kit: OqronKit) -> list[str]:
        await kit.current_definitions()
        return await kit.get_webhook(webhook_name).fire(
            event, body, idempotency_key=idempotency_key
        )

    for delivery_id in run_operation(operator_kit(app, backend), run):
        click.echo(delivery_id)


def _list_options(command: Any) -> Any:
    for option in reversed(
        [
            app_option,
            backend_option,
            click.option("--webhook"),
            click.option("--endpoint"),
            click.option("--event", callback=_pattern, help="An event glob, e.g. 'order.**'."),
            click.option("--since", help="Created at or after (ISO-8601 or Unix seconds)."),
            click.option("--until", help="Created before (ISO-8601 or Unix seconds)."),
            click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True),
            click.option("--cursor", help="The last id of the previous page."),
            click.option("--json", "as_json", is_flag=True, help="JSON instead of a table."),
        ]
    ):
        command = option(command)
    return command


def _list(status: str | None, **options: Any) -> None:
    app, backend, as_json = options.pop("app"), options.pop("backend"), options.pop("as_json")
    for option in ("since", "until"):
        options[option] = _timestamp(options[option], f"--{option}")

    async def run(kit: OqronKit) -> list[Delivery]:
        return await kit.list_deliveries(status=status, **options)  # type: ignore[arg-type]

    _print_deliveries(run_operation(operator_kit(app, backend), run), as_json, options["limit"])


@click.group()
def deliveries() -> None:
    """Query deliveries."""


@deliveries.command("list")
@_list_options
@click.option("--status", type=STATUSES)
def list_command(status: str | None, **options: Any) -> None:
    """Deliveries, newest first."""
    _list(status, **options)


@deliveries.command()
@app_option
@backend_option
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@click.argument("delivery_id")
def show(app: str | None, backend: str | None, as_json: bool, delivery_id: str) -> None:
    """One delivery with its attempt log."""

    async def run(kit: OqronKit) -> Delivery:
        found = await kit.get_delivery(delivery_id)
        if found is None:
            raise DeliveryNotFound(f"no delivery {delivery_id!r}")
        return found

    d = run_operation(operator_kit(app, backend), run)
    if as_json:
        echo_json(_as_json(d))
        return
    console.print(f"[bold]{d.id}[/]  {d.status}  {d.webhook} → {d.endpoint_name}  {d.event}")
    console.print(f"created {_time(d.created_at)}  next attempt {_time(d.next_attempt_at)}")
    console.print(
        f"idempotency key {d.idempotency_key}"
        + (f"  resent from {d.resent_from}" if d.resent_from else "")
    )
    if d.error:
        console.print(f"error: {d.error}", style="red")
    table = Table("#", "at (UTC)", "duration", "status", "error", "response")
    for number, attempt in enumerate(d.attempts, 1):
        table.add_row(
            str(number),
            _time(attempt.at),
            f"{attempt.duration * 1000:.1f} ms",
            str(attempt.status or "-"),
            attempt.error or "",
            (attempt.response_body or "")[:60],
        )
    console.print(table)


@click.command("dead-letters")
@_list_options
def dead_letters(**options: Any) -> None:
    """Dead deliveries, newest first (resend them with `resend`)."""
    _list("dead", **options)


@click.command()
@app_option
@backend_option
@click.argument("delivery_id")
def resend(app: str | None, backend: str | None, delivery_id: str) -> None:
    """Send a finished delivery again (same Idempotency-Key); prints the new id."""
    click.echo(
        run_operation(operator_kit(app, backend), lambda kit: kit.resend_webhook(delivery_id))
    )


@click.command()
@app_option
@backend_option
@click.argument("delivery_id")
def cancel(app: str | None, backend: str | None, delivery_id: str) -> None:
    """Cancel a queued delivery, or abort its request in flight."""
    click.echo(
        run_operation(operator_kit(app, backend), lambda kit: kit.cancel_delivery(delivery_id))
    )


@click.group()
def endpoints() -> None:
    """List, pause and resume a webhook's endpoints."""


@endpoints.command("list")
@app_option
@backend_option
@click.argument("webhook_name")
def list_endpoints(app: str | None, backend: str | None, webhook_name: str) -> None:
    """The endpoints of WEBHOOK as they stand (secrets and headers are never shown)."""

    async def run(kit: OqronKit) -> list[tuple[str, str, str, str]]:
        await kit.current_definitions()
        webhook = kit.get_webhook(webhook_name)
        rows = []
        for e in await webhook.endpoints():
            paused = kit.definitions.is_paused(webhook_name, e.name)
            state = "disabled" if not e.enabled else "paused" if paused else "active"
            rows.append((e.name, shown_url(e.url), ", ".join(e.events), state))
        return rows

    table = Table("endpoint", "url", "events", "state")
    for row in run_operation(operator_kit(app, backend), run):
        table.add_row(*row)
    console.print(table)


@endpoints.command("pause")
@app_option
@backend_option
@click.argument("webhook_name")
@click.argument("endpoint_name")
def pause_endpoint(
    app: str | None, backend: str | None, webhook_name: str, endpoint_name: str
) -> None:
    """Hold ENDPOINT's deliveries until it is resumed."""

    async def run(kit: OqronKit) -> int:
        await kit.current_definitions()
        return await kit.get_webhook(webhook_name).pause_endpoint(endpoint_name)

    click.echo(f"paused; {run_operation(operator_kit(app, backend), run)} deliveries held")


@endpoints.command("resume")
@app_option
@backend_option
@click.argument("webhook_name")
@click.argument("endpoint_name")
def resume_endpoint(
    app: str | None, backend: str | None, webhook_name: str, endpoint_name: str
) -> None:
    """Release ENDPOINT's held deliveries, each due when it was due."""

    async def run(kit: OqronKit) -> int:
        await kit.current_definitions()
        return await kit.get_webhook(webhook_name).resume_endpoint(endpoint_name)

    click.echo(f"resumed; {run_operation(operator_kit(app, backend), run)} deliveries released")
