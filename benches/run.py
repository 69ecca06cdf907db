"""Runs every benchmark and prints one table; also writes it to benches/results/latest.json.

    .venv/bin/python benches/run.py            # full run (a few minutes)
    .venv/bin/python benches/run.py --quick    # smoke run for CI (a few seconds)
    .venv/bin/python benches/run.py --strict   # exit 1 when a target is missed

Ratios are peer time / our time, so > 1 means ours is faster.
"""

from __future__ import annotations

import sys

import bench_breaker
import bench_cluster
import bench_delivery
import bench_fanout
import bench_matching
import bench_signing
import bench_transport
from _harness import Row, exit_code, format_table, parse_args, settings, write_json

BENCHMARKS = (
    bench_matching,
    bench_signing,
    bench_breaker,
    bench_fanout,
    bench_transport,
    bench_delivery,
    bench_cluster,
)


def main() -> int:
    args = parse_args(__doc__)
    config = settings(args.quick)
    rows: list[Row] = []
    for bench in BENCHMARKS:
        print(f"running {bench.__name__} ...", file=sys.stderr, flush=True)
        rows.extend(bench.run(config))
    print(format_table(rows))
    print(f"\nwritten to {write_json(rows, args.quick)}")
    return exit_code(rows, args.strict)


if __name__ == "__main__":
    sys.exit(main())
