"""Worker processes: a worker SIGKILLed mid-run on SQLite loses nothing (a second worker picks
up its leased deliveries once the leases expire; the many-worker version on Redis and
PostgreSQL is in test_cluster.py), and a cancel reaches a request in flight in another
process, on every durable backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.conftest import backend_url
from tests.crash_worker import define
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent


def start_worker(backend: str, receiver: Receiver) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_worker", backend, receiver.url("")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    return worker


def stop_gracefully(worker: subprocess.Popen[str]) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert worker.stdout is not None
    worker.stdout.close()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_sigkill_mid_run_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    receiver.respond("/a", then=Reply(204, delay=0.005))
    receiver.respond("/b", then=Reply(204, delay=0.005))
    backend = f"sqlite:///{tmp_path / 'crash.db'}"
    producer = define(backend, receiver.url(""), dispatch=False)
    async with producer:
        hook = producer.get_webhook("orders")
        fired = await hook.fire_many([(f"order.n{i}", {"n": i}) for i in range(300)])
    expected = {delivery_id for ids in fired for delivery_id in ids}
    assert len(expected) == 600

    first = start_worker(backend, receiver)
    await receiver.wait_for(60, timeout=30)
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stdout.close()  # type: ignore[union-attr]
    second = start_worker(backend, receiver)
    try:
        async with producer:
            with anyio.fail_after(60):
                while True:
                    keys = {r.headers["idempotency-key"] for r in receiver.received()}
                    unfinished = [
                        d
                        for d in await producer.list_deliveries(limit=1000)
                        if d.status != "completed"
                    ]
                    if keys >= expected and not unfinished:
                        break
                    await anyio.sleep(0.1)
    finally:
        stop_gracefully(second)

    # Every delivery arrived and finished; a few arrived twice (at-least-once: the killed
    # worker's in-flight requests are sent again once their leases expire).
    keys = [r.headers["idempotency-key"] for r in receiver.received()]
    assert set(keys) == expected


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgresql"])
async def test_cancel_reaches_a_request_in_flight_in_another_process(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.respond("/a", then=Reply(204, delay=20.0))
    receiver.respond("/b", then=Reply(204, delay=20.0))
    backend = backend_url(kind, request, tmp_path)
    operator = define(backend, receiver.url(""), dispatch=False)
    worker = start_worker(backend, receiver)
    try:
        async with operator:
            ids = await operator.get_webhook("orders").fire("order.created", {})
            await receiver.wait_for(2, timeout=10)
            for delivery_id in ids:
                assert await operator.cancel_delivery(delivery_id) == "aborted"
            with anyio.fail_after(5):  # the worker checks every second
                while True:
                    found = [await operator.get_delivery(i) for i in ids]
                    if all(d is not None and d.status == "cancelled" for d in found):
                        break
                    await anyio.sleep(0.05)
    finally:
        stop_gracefully(worker)
