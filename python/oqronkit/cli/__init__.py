"""The `oqronkit` command: the demo, a worker for a user's kit, operations on deliveries and
endpoints, signing tools and the fan-out benchmark.

Every command runs on Trio. Bad arguments exit with 2 (click's usage errors); a backend that
cannot be opened, or an operation that fails, prints one line and exits with 1.
"""

from __future__ import annotations

import sys

import click

from oqronkit.cli.bench import bench
from oqronkit.cli.demo import demo
from oqronkit.cli.operate import cancel, dead_letters, deliveries, endpoints, fire, resend
from oqronkit.cli.signing import sign, verify
from oqronkit.cli.worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="oqronkit")
def main() -> None:
    """OqronKit: outbound webhook fan-out with a Rust core."""


for command in (
    demo,
    worker,
    fire,
    deliveries,
    dead_letters,
    resend,
    cancel,
    endpoints,
    sign,
    verify,
    bench,
):
    main.add_command(command)


def run() -> None:
    """The `oqronkit` entry point: click's, with every error on one line (usage errors exit
    with 2, failures with 1)."""
    try:
        code = main.main(prog_name="oqronkit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `oqronkit`, `oqronkit deliveries`
        click.echo(exc.format_message(), err=True)
        sys.exit(2)
    except click.UsageError as exc:
        click.echo(f"oqronkit: {exc.format_message()} (see oqronkit --help)", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"oqronkit: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("oqronkit: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
