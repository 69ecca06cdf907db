"""`sign` and `verify`: the default scheme's header, for testing receivers and senders."""

from __future__ import annotations

import os
import sys

import click

from oqronkit.cli.common import fail_cleanly
from oqronkit.signing import sign_webhook_payload, verify_webhook_signature

ALGORITHMS = click.Choice(["sha256", "sha512"])


def _body(body: str) -> bytes:
    # The argument's bytes as given (os.fsencode), valid UTF-8 or not.
    return sys.stdin.buffer.read() if body == "-" else os.fsencode(body)


def _secret(secret: str) -> bytes:
    if not secret:
        raise click.UsageError("the secret is empty")
    return os.fsencode(secret)


def _tolerance(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not value >= 0:  # NaN too
        raise click.BadParameter(f"must be seconds, at least 0 (inf: any time), not {value}")
    return value


@click.command()
@click.option("--secret", required=True, envvar="OQRONKIT_SECRET", help="env OQRONKIT_SECRET")
@click.option("--algorithm", type=ALGORITHMS, default="sha256", show_default=True)
@click.option(
    "--timestamp",
    type=click.IntRange(0, 2**63 - 1),
    help="Milliseconds since the epoch (default: now).",
)
@click.argument("body")
def sign(secret: str, algorithm: str, timestamp: int | None, body: str) -> None:
    """Print the X-Oqron-Signature header for BODY ('-' reads stdin)."""
    key = _secret(secret)
    click.echo(fail_cleanly(lambda: sign_webhook_payload(_body(body), key, timestamp, algorithm)))


@click.command()
@click.option(
    "--secret",
    multiple=True,
    help="Repeat during a rotation; else env OQRONKIT_SECRET (one secret, spaces and all).",
)
@click.option("--header", required=True, help="The X-Oqron-Signature header received.")
@click.option("--algorithm", type=ALGORITHMS, default="sha256", show_default=True)
@click.option(
    "--tolerance",
    type=float,
    callback=_tolerance,
    default=300.0,
    show_default=True,
    help="Seconds the timestamp may be off.",
)
@click.argument("body")
def verify(
    secret: tuple[str, ...], header: str, algorithm: str, tolerance: float, body: str
) -> None:
    """Exit 0 if HEADER signs BODY ('-' reads stdin) with a SECRET, else 1."""
    # Not click's envvar: for a repeatable option it splits the variable's value on spaces.
    given = list(secret) or [os.environ.get("OQRONKIT_SECRET", "")]
    if given == [""]:
        raise click.UsageError("give --secret (or set OQRONKIT_SECRET)")
    secrets = [_secret(s) for s in given]
    if fail_cleanly(
        lambda: verify_webhook_signature(
            header, _body(body), secrets, algorithm=algorithm, tolerance=tolerance
        )
    ):
        click.echo("valid")
    else:
        click.echo("invalid", err=True)
        sys.exit(1)
