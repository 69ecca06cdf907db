"""The cluster backends: Redis and PostgreSQL, each a throwaway server on loopback.

- `fire_many` enqueue rate: 50 endpoints, each event matching one (deliveries = events),
  batches of 1,000;
- end to end: worker processes (1, then 2) deliver the same workload to nginx, 64 in flight
  each; timed from the first `fire_many` (in this process, which shares the cores) to the
  last acknowledgement;
- the delivery path alone: the same deliveries fired while the webhook is paused, then timed
  from `resume_webhook` to the last acknowledgement; the goal is 2 workers >= 1.7x one;
- server operations per delivery on the delivery path (claims, settles, breaker and limiter
  steps, lease renewals), counted by the server and divided by the deliveries: Redis script
  calls (`INFO commandstats`; every state change is one script, and the settles and guard
  steps that arrive together share one pipelined round trip), PostgreSQL transactions
  (`pg_stat_database`; each is one round trip, carrying every settle or guard step that
  arrived while the previous one was on its way).

On this 2-core machine the servers (Redis or PostgreSQL, and nginx) share the cores with the
workers, so the 2-worker row measures contention as much as scaling. Needs redis-server,
PostgreSQL and nginx from Debian's packages; a backend whose server is missing is skipped.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import anyio
import coredis
import psycopg
from _harness import Row, Settings, info_row, main, speed_row
from cluster_worker import bench_kit, workload

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import nginx, nginx_binary, postgres_server, redis_server

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1_000


def enqueue_rate(url: str, base: str, count: int) -> float:
    """Deliveries stored per second by `fire_many`, in batches of `BATCH`."""

    async def run() -> float:
        async with bench_kit(url, base, dispatch=False) as kit:
            hook = kit.get_webhook("bench")
            await hook.fire_many(workload(BATCH))  # warm up: schema, scripts, connections
            start = time.perf_counter()
            for first in range(0, count, BATCH):
                await hook.fire_many(workload(min(BATCH, count - first), first))
            return count / (time.perf_counter() - start)

    return anyio.run(run, backend="trio")


class Worker:
    """A worker process, and the running count of deliveries it has made."""

    def __init__(self, url: str, base: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "benches" / "cluster_worker.py"), url, base],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"
        self.delivered = 0
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.delivered = int(line)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def end_to_end(
    url: str,
    base: str,
    count: int,
    workers: int,
    round_trips: Callable[[], int],
    *,
    queued_first: bool,
) -> tuple[float, float]:
    """Deliveries per second with `workers` processes, and server operations per delivery.
    `queued_first`: the delivery path alone; the deliveries are fired while the webhook is
    paused, and timed from its resume. Otherwise from the first `fire_many`, with the workers
    already waiting."""

    async def fire(paused: bool) -> None:
        async with bench_kit(url, base, dispatch=False) as kit:
            if paused:
                await kit.pause_webhook("bench")
            hook = kit.get_webhook("bench")
            for first in range(0, count, BATCH):
                await hook.fire_many(workload(min(BATCH, count - first), first))

    async def resume() -> None:
        async with bench_kit(url, base, dispatch=False) as kit:
            await kit.resume_webhook("bench")

    if queued_first:
        anyio.run(fire, True, backend="trio")
    running = [Worker(url, base) for _ in range(workers)]
    try:
        before = round_trips()
        start = time.perf_counter()
        anyio.run(resume if queued_first else functools.partial(fire, False), backend="trio")
        while sum(w.delivered for w in running) < count:
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        time.sleep(1.5)  # PostgreSQL publishes its statistics up to a second late
        return count / elapsed, (round_trips() - before) / count
    finally:
        for worker in running:
            worker.stop()


def redis_round_trips(url: str) -> Callable[[], int]:
    def read() -> int:
        async def info() -> int:
            async with coredis.Redis.from_url(url) as client:
                stats = await client.info("commandstats")
                return sum(
                    int(stats[name]["calls"])
                    for name in ("cmdstat_evalsha", "cmdstat_eval")
                    if name in stats
                )

        return anyio.run(info)

    return read


def postgres_round_trips(url: str) -> Callable[[], int]:
    def read() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database"
            ).fetchone()
            return int(row[0]) if row else 0

    return read


BACKENDS: dict[
    str, tuple[Callable[[], AbstractContextManager[str]], str, Callable[[str], Callable[[], int]]]
] = {
    "Redis": (redis_server, "prefix", redis_round_trips),
    "PostgreSQL": (postgres_server, "schema", postgres_round_trips),
}


def one_backend(name: str, base: str, settings: Settings) -> Iterator[Row]:
    server, namespace_option, round_trips = BACKENDS[name]
    operations = "script calls" if name == "Redis" else "transactions"
    enqueued = 2_000 if settings.quick else 20_000
    delivered = 300 if settings.quick else 4_000
    try:
        with server() as url:

            def fresh() -> str:
                return f"{url}?{namespace_option}=b{uuid.uuid4().hex[:10]}"

            yield info_row(
                f"{name}: fire_many enqueue, deliveries/s ({enqueued:,}, batches of {BATCH:,})",
                enqueue_rate(fresh(), base, enqueued),
                "/s",
            )
            rates = {}
            for workers in (1, 2):
                rate, _ = end_to_end(
                    fresh(), base, delivered, workers, round_trips(url), queued_first=False
                )
                yield info_row(
                    f"{name}: fire_many to acknowledged, {workers} worker(s), deliveries/s "
                    f"({delivered:,})",
                    rate,
                    "/s",
                )
                rates[workers], trips = end_to_end(
                    fresh(), base, delivered, workers, round_trips(url), queued_first=True
                )
                yield info_row(
                    f"{name}: delivery path (queued first), {workers} worker(s), deliveries/s",
                    rates[workers],
                    "/s",
                )
                yield info_row(
                    f"{name}: server {operations} per delivery, {workers} worker(s)", trips, "x"
                )
            yield speed_row(
                f"{name}: delivery path, 2 workers vs 1, per delivery",
                1e9 / rates[2],
                1e9 / rates[1],
                1.7,
            )
    except RuntimeError as error:  # the server is not installed
        yield info_row(f"{name}: skipped ({error})", 0.0, "x")


def run(settings: Settings) -> list[Row]:
    if nginx_binary() is None:
        return [info_row("cluster backends: skipped, nginx is not installed", 0.0, "x")]
    rows: list[Row] = []
    with nginx() as base:
        for name in BACKENDS:
            rows.extend(one_backend(name, base, settings))
    return rows


if __name__ == "__main__":
    main(run, __doc__)
