"""How fast does `fire_many` queue deliveries, and what does a large queue cost in memory?

50 endpoints, each subscribed to one of 10 event families (`f<k>.**`), so every event fans out to
5 endpoints; batches of 1,000 events (5,000 deliveries each) through `fire_many` on a producer
kit (`dispatch=False`, so everything stays queued). Each backend is measured in a fresh child
process, which also reports its peak RSS after 100,000 queued deliveries.

Targets: >= 200,000 deliveries/s queued on memory, >= 50,000/s on SQLite.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from _harness import Row, Settings, info_row, main, rate_row

from oqronkit import Endpoint, OqronKit

TARGETS = {"memory": 200_000.0, "sqlite": 50_000.0}
ENDPOINTS, FAMILIES, BATCH = 50, 10, 1_000


def define(backend: str) -> OqronKit:
    kit = OqronKit(backend, dispatch=False)
    kit.webhook(
        "bench",
        endpoints=[
            Endpoint(f"ep{i}", f"https://receiver.example/ep{i}", [f"f{i % FAMILIES}.**"])
            for i in range(ENDPOINTS)
        ],
    )
    return kit


async def measure(backend: str, deliveries: int) -> dict[str, float]:
    kit = define(backend)
    hook = kit.get_webhook("bench")
    per_batch = BATCH * ENDPOINTS // FAMILIES
    batches = [
        [
            (f"f{(b + i) % FAMILIES}.order.created", {"n": i, "batch": b, "pad": "x" * 200})
            for i in range(BATCH)
        ]
        for b in range(deliveries // per_batch)
    ]
    async with kit:
        await hook.fire_many(batches[0][:10])  # warm up (schema, matcher)
        start = time.perf_counter()
        queued = 0
        for batch in batches:
            queued += sum(map(len, await hook.fire_many(batch)))
    # Closing is timed too: on SQLite it checkpoints what the write-ahead log still holds, the
    # part of storing these deliveries that a short run would otherwise leave unpaid.
    elapsed = time.perf_counter() - start
    return {"rate": queued / elapsed, "queued": queued, "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak resident memory. Not `ru_maxrss`: Linux carries that across exec,
    so a child started from a large parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, deliveries: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = "memory://" if kind == "memory" else f"sqlite:///{Path(folder) / 'bench.db'}"
        print(json.dumps(anyio.run(measure, url, deliveries, backend="trio")))


def run(settings: Settings) -> list[Row]:
    deliveries = 10_000 if settings.quick else 100_000
    rows = []
    for kind, target in TARGETS.items():
        best: dict[str, float] = {}
        for _ in range(1 if settings.quick else 3):
            out = subprocess.run(
                [sys.executable, __file__, "--child", kind, str(deliveries)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out)
            if not best or result["rate"] > best["rate"]:
                best = result
        rows.append(rate_row(f"fire_many queued deliveries/s, {kind}", best["rate"], target))
        rows.append(
            info_row(
                f"peak RSS, {int(best['queued']):,} queued, {kind}", best["peak_rss_mib"], "MiB"
            )
        )
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main(run, __doc__)
