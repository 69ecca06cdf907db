"""Shared helpers for the benchmarks: timing, result rows, the table and the JSON file."""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Settings:
    """How hard to measure: `quick` shrinks every size so CI can run it in a few seconds."""

    quick: bool
    repeat: int


def settings(quick: bool) -> Settings:
    return Settings(quick=quick, repeat=3 if quick else 5)


@dataclass(frozen=True)
class Row:
    """One line of the table: `ours` and `peer` in ns per op, or plain factors when unit is "x"."""

    label: str
    ours: float
    peer: float | None
    ratio: float | None
    unit: str
    target: str
    passed: bool
    informational: bool = False

    @property
    def verdict(self) -> str:
        word = "PASS" if self.passed else "MISS"
        return f"{word} (info)" if self.informational else word


def _time_once_ns(fn: Callable[[], object]) -> int:
    """Wall time of one call to `fn`, with the cyclic GC off (as `timeit` does)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        fn()
        return time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()


Batch = tuple[Callable[[], object], int]
"""A callable doing a whole batch of operations, and how many operations that is."""


def best_ns_per_op(batches: Sequence[Batch], repeat: int) -> list[float]:
    """Best-of-`repeat` ns per op of each batch; every round times all batches in turn, so the
    contenders are measured side by side under the same machine conditions."""
    best = [math.inf] * len(batches)
    for _ in range(repeat):
        for i, (fn, ops) in enumerate(batches):
            best[i] = min(best[i], _time_once_ns(fn) / ops)
    return best


def compare(
    ours: Callable[[], object], peer: Callable[[], object], *, ops: int, repeat: int
) -> tuple[float, float]:
    """`best_ns_per_op` of two batches of the same `ops` operations each."""
    ours_ns, peer_ns = best_ns_per_op([(ours, ops), (peer, ops)], repeat)
    return ours_ns, peer_ns


def speed_row(
    label: str, ours_ns: float, peer_ns: float, min_ratio: float, informational: bool = False
) -> Row:
    """A row comparing per-op costs; the target is met when peer / ours >= `min_ratio`."""
    ratio = peer_ns / ours_ns
    return Row(
        label=label,
        ours=ours_ns,
        peer=peer_ns,
        ratio=ratio,
        unit="ns",
        target=f">= {min_ratio:g}x",
        passed=ratio >= min_ratio,
        informational=informational,
    )


def rate_row(label: str, per_second: float, min_per_second: float) -> Row:
    """A row with an absolute throughput target (no peer)."""
    return Row(
        label=label,
        ours=per_second,
        peer=None,
        ratio=None,
        unit="/s",
        target=f">= {min_per_second:,.0f}/s",
        passed=per_second >= min_per_second,
    )


def info_row(label: str, value: float, unit: str) -> Row:
    """A figure to report, with no target."""
    return Row(label, value, None, None, unit, "-", True, informational=True)


def growth_row(label: str, ours_factor: float, peer_factor: float, max_factor: float) -> Row:
    """A row of growth factors (cost at a large size / at a small one); lower is better."""
    return Row(
        label=label,
        ours=ours_factor,
        peer=peer_factor,
        ratio=None,
        unit="x",
        target=f"<= {max_factor:g}x",
        passed=ours_factor <= max_factor,
    )


def _format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    for scale, suffix in ((1e9, "s"), (1e6, "ms"), (1e3, "us")):
        if value >= scale:
            return f"{value / scale:.2f} {suffix}"
    return f"{value:.1f} ns"


def format_table(rows: Sequence[Row]) -> str:
    header = ("measured (per op)", "ours", "peer", "ratio", "target", "result")
    lines = [
        (
            row.label,
            _format_value(row.ours, row.unit),
            _format_value(row.peer, row.unit),
            "-" if row.ratio is None else f"{row.ratio:.2f}x",
            row.target,
            row.verdict,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        first, *numbers, verdict = cells
        padded = [first.ljust(widths[0])]
        padded += [cell.rjust(width) for cell, width in zip(numbers, widths[1:-1], strict=True)]
        return "  ".join([*padded, verdict]).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def write_json(rows: Sequence[Row], quick: bool, path: Path = RESULTS_DIR / "latest.json") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "quick": quick,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": [{**asdict(row), "result": row.verdict} for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def parse_args(description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run for CI")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    return parser.parse_args()


def exit_code(rows: Sequence[Row], strict: bool) -> int:
    """1 under `--strict` when a (non-informational) target is missed, else 0."""
    missed = any(not row.passed and not row.informational for row in rows)
    return 1 if strict and missed else 0


def main(run: Callable[[Settings], list[Row]], description: str | None = None) -> None:
    """Entry point of one benchmark script: `python benches/bench_x.py [--quick] [--strict]`."""
    args = parse_args(description)
    rows = run(settings(args.quick))
    print(format_table(rows))
    sys.exit(exit_code(rows, args.strict))
