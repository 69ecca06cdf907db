"""A worker process for the crash and cluster tests: dispatches a backend's deliveries to a
receiver until SIGTERM (graceful) or SIGKILL (not)."""

from __future__ import annotations

import signal
import sys

import anyio

from oqronkit import Endpoint, OqronKit, Retries


def define(backend: str, receiver: str, *, dispatch: bool) -> OqronKit:
    kit = OqronKit(backend, allow_private_networks=True, dispatch=dispatch, lease=1.0)
    kit.webhook(
        "orders",
        concurrency=8,
        retries=Retries(max=10, base_delay=0.05, max_delay=0.2),
        endpoints=[
            Endpoint("a", f"{receiver}/a", ["order.**"], max_in_flight=4),
            Endpoint("b", f"{receiver}/b", ["order.**"], max_in_flight=4),
        ],
    )
    return kit


async def main(backend: str, receiver: str) -> None:
    async with define(backend, receiver, dispatch=True):
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            print("ready", flush=True)
            async for _ in signals:
                return


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], backend="trio")
