"""`oqronkit bench`: the fan-out benchmark. Fires events that every endpoint matches, delivers
them to a fast loopback receiver (its own process), and reports deliveries/s and the latency
from fire to completion, with a progress bar; writes `bench.json` and `bench.png` (deliveries/s
over time and the latency distribution) to `--out`."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from oqronkit.cli.common import run_trio
from oqronkit.config import Endpoint
from oqronkit.kit import OqronKit
from oqronkit.models import Delivery

console = Console()
BATCH = 1000  # events per fire_many


class Recorder:
    def __init__(self) -> None:
        self.done: list[tuple[float, float]] = []  # (completed at, latency), monotonic seconds

    async def on_success(self, delivery: Delivery) -> None:
        self.done.append((time.monotonic(), delivery.updated_at - delivery.created_at))


async def measure(
    backend: str, events: int, endpoints: int, concurrency: int, port: int
) -> dict[str, Any]:
    recorder = Recorder()
    kit = OqronKit(backend, allow_private_networks=True)
    webhook = kit.webhook(
        "bench",
        concurrency=concurrency,
        on_success=recorder.on_success,
        endpoints=[
            Endpoint(
                f"e{i}", f"http://127.0.0.1:{port}/e{i}", ["bench.*"], max_in_flight=concurrency
            )
            for i in range(endpoints)
        ],
    )
    total = events * endpoints
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn())
    async with kit:
        with Progress(*columns, BarColumn(), console=console) as progress:
            task = progress.add_task("delivering", total=total)
            start = time.monotonic()
            for first in range(0, events, BATCH):
                size = min(BATCH, events - first)
                await webhook.fire_many([("bench.event", {"n": first + i}) for i in range(size)])
            fired = time.monotonic()
            while len(recorder.done) < total:
                progress.update(task, completed=len(recorder.done))
                await anyio.sleep(0.1)
            progress.update(task, completed=total)
    finished = max(at for at, _ in recorder.done)
    latencies = sorted(latency for _, latency in recorder.done)
    quantile = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "backend": backend,
        "events": events,
        "endpoints": endpoints,
        "concurrency": concurrency,
        "deliveries": total,
        "enqueue_seconds": fired - start,
        "seconds": finished - start,
        "deliveries_per_second": total / (finished - start),
        "latency_seconds": {
            "p50": quantile[49],
            "p90": quantile[89],
            "p99": quantile[98],
            "max": latencies[-1],
        },
        "completions": [(at - start, latency) for at, latency in recorder.done],
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [at for at, _ in results["completions"]]
    latencies = [latency * 1000 for _, latency in results["completions"]]
    width = 0.25
    bins = int(max(times) / width) + 1
    rate = [0] * bins
    for at in times:
        rate[int(at / width)] += 1
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([i * width for i in range(bins)], [n / width for n in rate])
    left.set(xlabel="seconds since the first fire", ylabel="deliveries/s", title="throughput")
    right.hist(latencies, bins=50)
    right.set(xlabel="fire → completed (ms)", ylabel="deliveries", title="latency")
    figure.suptitle(
        f"{results['deliveries']} deliveries on {results['backend'].split(':')[0]}: "
        f"{results['deliveries_per_second']:,.0f}/s"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@click.command()
@click.option("--events", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option(
    "--endpoints",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Every event fans out to each.",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--backend", help="Backend URL (default: SQLite in a temporary folder).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("oqronkit-bench"),
    show_default=True,
)
def bench(events: int, endpoints: int, concurrency: int, backend: str | None, out: Path) -> None:
    """Fan-out throughput and latency to a loopback receiver; writes JSON and a PNG plot."""
    sink = subprocess.Popen(
        [sys.executable, "-m", "oqronkit.cli.sink"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="oqronkit-bench-") as folder:
            url = backend or f"sqlite:///{Path(folder) / 'bench.db'}"
            results = run_trio(measure, url, events, endpoints, concurrency, port)
    finally:
        sink.terminate()
        sink.wait()
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in results.items() if k != "completions"}
    (out / "bench.json").write_text(json.dumps(results, indent=1))
    latency = summary["latency_seconds"]
    console.print(
        f"{summary['deliveries']:,} deliveries in {summary['seconds']:.2f} s: "
        f"[bold]{summary['deliveries_per_second']:,.0f}/s[/]; latency p50 "
        f"{latency['p50'] * 1000:.0f} ms, p99 {latency['p99'] * 1000:.0f} ms"
    )
    try:
        plot(results, out / "bench.png")
    except ImportError:
        raise click.ClickException(
            f"wrote {out / 'bench.json'}; the plot needs matplotlib: pip install 'oqronkit[bench]'"
        ) from None
    console.print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
