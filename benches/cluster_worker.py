"""A worker process of the cluster benchmark: delivers the bench webhook's deliveries from a
shared backend to nginx, printing how many it has delivered every 50 ms, until SIGTERM."""

from __future__ import annotations

import signal
import sys

import anyio

from oqronkit import Delivery, Endpoint, OqronKit, Security
from oqronkit.hooks import Hook

ENDPOINTS, CONCURRENCY, SECRET = 50, 64, "bench-secret"


def bench_kit(
    backend: str, base: str, *, dispatch: bool, on_success: Hook | None = None
) -> OqronKit:
    kit = OqronKit(
        backend, allow_private_networks=True, max_connections=CONCURRENCY, dispatch=dispatch
    )
    kit.webhook(
        "bench",
        concurrency=CONCURRENCY,
        security=Security(signing_secret=SECRET),
        on_success=on_success,
        endpoints=[
            Endpoint(f"ep{i}", f"{base}/ep{i}", [f"family{i}.**"]) for i in range(ENDPOINTS)
        ],
    )
    return kit


def workload(count: int, start: int = 0) -> list[tuple[str, dict[str, object]]]:
    """`count` events, each matching one of the endpoints: deliveries = events."""
    return [
        (f"family{i % ENDPOINTS}.order.created", {"id": i, "pad": "x" * 900})
        for i in range(start, start + count)
    ]


async def main(backend: str, base: str) -> None:
    delivered = 0

    async def count(_: Delivery) -> None:
        nonlocal delivered
        delivered += 1

    kit = bench_kit(backend, base, dispatch=True, on_success=count)
    async with kit, anyio.create_task_group() as tasks:
        print("ready", flush=True)

        async def report() -> None:
            while True:
                await anyio.sleep(0.05)
                print(delivered, flush=True)

        tasks.start_soon(report)
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                tasks.cancel_scope.cancel()
                return


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], backend="trio")
