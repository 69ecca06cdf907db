"""End to end: how many deliveries a second reach a real receiver, and how quickly?

nginx on loopback answers 204 with keep-alive (one worker process; the other core is ours).
50 endpoints, each subscribed to one event family; concurrency 64; every request is signed.
The contenders run one after another, in this process:

- ours: `fire_many` on a memory-backed kit, delivered by its dispatcher, under Trio;
- (a) a naive sender written here: regex per pattern, stdlib hmac, httpx, a semaphore of 64,
  under Trio;
- (b) raw httpx posting the same bodies with no library (no matching, no signing, no queue);
- (c) the same naive sender on asyncio + aiohttp, what a user of asyncio might write.

Targets: >= 1.2x (a), >= 0.85x (b), >= 1.5x (c). Also fire-to-acknowledgement latency p50/p99
(ours), and ours with a transport that answers in-process: the cost of the library alone, what
no transport can take away. Needs `nginx` (Debian: `apt-get install nginx-light`); without it
these rows are skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import trio
from _harness import Row, Settings, info_row, main, speed_row

from oqronkit import Delivery, Endpoint, OqronKit, Security, _core
from oqronkit.transport import Exchange, Headers, Http1Transport

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import nginx, nginx_binary

ENDPOINTS, CONCURRENCY, SECRET = 50, 64, "bench-secret"


def workload(count: int) -> list[tuple[str, dict[str, object]]]:
    return [
        (f"family{i % ENDPOINTS}.order.created", {"id": i, "pad": "x" * 900}) for i in range(count)
    ]


def endpoint_table(base: str) -> list[tuple[str, str]]:
    return [(f"{base}/ep{i}", f"family{i}.**") for i in range(ENDPOINTS)]


class InProcess(Http1Transport):
    """Answers every request with a 204 at once, with no socket: what is left of `ours` is
    the library alone (matching, queue, leases, guards, signing, the request's bytes, hooks)."""

    async def exchange(
        self, method: str, url: httpx.URL, headers: Headers, body: bytes, timeouts: Any = None
    ) -> Exchange:
        _core.write_request(method, url.raw_path, headers, body)
        await trio.lowlevel.checkpoint()  # a real exchange yields at least once
        return 204, b"No Content", [], httpx.ByteStream(b"")


async def ours(
    base: str,
    events: list[tuple[str, dict[str, object]]],
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[float, list[float]]:
    done = trio.Event()
    latencies: list[float] = []

    async def delivered(d: Delivery) -> None:
        latencies.append(d.updated_at - d.created_at)
        if len(latencies) == len(events):
            done.set()

    kit = OqronKit(
        "memory://", allow_private_networks=True, max_connections=CONCURRENCY, transport=transport
    )
    hook = kit.webhook(
        "bench",
        concurrency=CONCURRENCY,
        security=Security(signing_secret=SECRET),
        on_success=delivered,
        endpoints=[
            Endpoint(f"ep{i}", url, [pattern])
            for i, (url, pattern) in enumerate(endpoint_table(base))
        ],
    )
    async with kit:
        start = time.perf_counter()
        await hook.fire_many(events)
        await done.wait()
        elapsed = time.perf_counter() - start
    return elapsed, latencies


def glob_regex(pattern: str) -> re.Pattern[str]:
    parts = [
        r"[^.]+(?:\.[^.]+)*" if s == "**" else r"[^.]+" if s == "*" else re.escape(s)
        for s in pattern.split(".")
    ]
    return re.compile(r"\.".join(parts))


async def naive(base: str, events: list[tuple[str, dict[str, object]]]) -> float:
    """What a user might write instead: correct, straightforward, no library."""
    table = [(url, glob_regex(pattern)) for url, pattern in endpoint_table(base)]
    limiter = trio.Semaphore(CONCURRENCY)
    key = SECRET.encode()

    async def send(client: httpx.AsyncClient, url: str, event: str, body: bytes) -> None:
        try:
            ts = int(time.time() * 1000)
            signature = hmac.new(key, b"%d." % ts + body, hashlib.sha256).hexdigest()
            response = await client.post(
                url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Oqron-Event": event,
                    "X-Oqron-Signature": f"t={ts},v1={signature}",
                },
            )
            response.raise_for_status()
        finally:
            limiter.release()

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits) as client:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for event, payload in events:
                body = json.dumps(payload, separators=(",", ":")).encode()
                for url, regex in table:
                    if regex.fullmatch(event):
                        await limiter.acquire()
                        nursery.start_soon(send, client, url, event, body)
        return time.perf_counter() - start


async def raw(base: str, events: list[tuple[str, dict[str, object]]]) -> float:
    """The floor: httpx posting prepared bodies, nothing else."""
    urls = {pattern.split(".")[0]: url for url, pattern in endpoint_table(base)}
    jobs = [
        (urls[event.split(".")[0]], json.dumps(payload, separators=(",", ":")).encode())
        for event, payload in events
    ]
    limiter = trio.Semaphore(CONCURRENCY)

    async def send(client: httpx.AsyncClient, url: str, body: bytes) -> None:
        try:
            response = await client.post(url, content=body)
            response.raise_for_status()
        finally:
            limiter.release()

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits) as client:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for url, body in jobs:
                await limiter.acquire()
                nursery.start_soon(send, client, url, body)
        return time.perf_counter() - start


async def naive_aiohttp(base: str, events: list[tuple[str, dict[str, object]]]) -> float:
    """The naive sender (a) on asyncio + aiohttp."""
    table = [(url, glob_regex(pattern)) for url, pattern in endpoint_table(base)]
    limiter = asyncio.Semaphore(CONCURRENCY)
    key = SECRET.encode()
    tasks = set()

    async def send(session: aiohttp.ClientSession, url: str, event: str, body: bytes) -> None:
        try:
            ts = int(time.time() * 1000)
            signature = hmac.new(key, b"%d." % ts + body, hashlib.sha256).hexdigest()
            headers = {
                "Content-Type": "application/json",
                "X-Oqron-Event": event,
                "X-Oqron-Signature": f"t={ts},v1={signature}",
            }
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                response.raise_for_status()
        finally:
            limiter.release()

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        for event, payload in events:
            body = json.dumps(payload, separators=(",", ":")).encode()
            for url, regex in table:
                if regex.fullmatch(event):
                    await limiter.acquire()
                    task = asyncio.create_task(send(session, url, event, body))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        return time.perf_counter() - start


def run(settings: Settings) -> list[Row]:
    if nginx_binary() is None:
        return [info_row("end-to-end deliveries: skipped, nginx is not installed", 0.0, "x")]
    count = 300 if settings.quick else 3_000
    events = workload(count)
    best = dict.fromkeys(("ours", "naive", "raw", "aiohttp", "library"), float("inf"))
    latencies: list[float] = []
    with nginx() as base:
        trio.run(raw, base, events[:50])  # warm up nginx and the page cache
        for _ in range(1 if settings.quick else 3):
            elapsed, lat = trio.run(ours, base, events)
            if elapsed < best["ours"]:
                best["ours"], latencies = elapsed, lat
            best["naive"] = min(best["naive"], trio.run(naive, base, events))
            best["raw"] = min(best["raw"], trio.run(raw, base, events))
            best["aiohttp"] = min(best["aiohttp"], asyncio.run(naive_aiohttp(base, events)))
            library, _ = trio.run(ours, base, events, InProcess())
            best["library"] = min(best["library"], library)
    per = {name: seconds * 1e9 / count for name, seconds in best.items()}
    latencies.sort()
    p50 = statistics.median(latencies) * 1e9
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1e9
    return [
        info_row(
            f"end-to-end deliveries/s, ours ({count:,} to nginx, 50 endpoints, 64 in flight)",
            count / best["ours"],
            "/s",
        ),
        speed_row(
            "end-to-end per delivery vs naive Trio + httpx sender", per["ours"], per["naive"], 1.2
        ),
        speed_row(
            "end-to-end per delivery vs raw httpx posts (no library)", per["ours"], per["raw"], 0.85
        ),
        speed_row(
            "end-to-end per delivery vs naive asyncio + aiohttp sender",
            per["ours"],
            per["aiohttp"],
            1.5,
        ),
        info_row(
            "end-to-end per delivery, ours with a transport answering in-process (no socket)",
            per["library"],
            "ns",
        ),
        info_row("fire-to-acknowledgement latency p50, ours", p50, "ns"),
        info_row("fire-to-acknowledgement latency p99, ours", p99, "ns"),
    ]


if __name__ == "__main__":
    main(run, __doc__)
