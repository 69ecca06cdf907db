"""CPU instructions per end-to-end delivery, counted by callgrind: steady where wall time on a
shared VM moves ±30%, so a 5% change shows. Runs `bench_delivery.ours` (memory backend, nginx
on loopback, 50 endpoints, 64 in flight) for 300 and for 1,500 deliveries under
`valgrind --tool=callgrind`, and divides the difference by 1,200, so start-up cancels out.
Needs valgrind and nginx; takes a few minutes.

Blind spot: under callgrind the client runs ~50x slower while nginx does not, so answers are
always there when the client reads. A path that depends on that timing (trying a read before
waiting for readability) looks cheaper here than it is; judge those by CPU time, A/B.

    .venv/bin/python benches/instructions_per_delivery.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench_delivery

from tests.servers import nginx


def instructions(deliveries: int, base: str) -> int:
    with tempfile.TemporaryDirectory() as folder:
        run = subprocess.run(
            [
                *("valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out"),
                *(sys.executable, __file__, "--child", str(deliveries), base),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", run.stderr)
    assert found, run.stderr[-2000:]
    return int(found.group(1))


def main() -> None:
    with nginx() as base:
        few, many = instructions(300, base), instructions(1_500, base)
    print(f"{(many - few) / 1_200 / 1e3:,.0f} k instructions per delivery")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        trio.run(bench_delivery.ours, sys.argv[3], bench_delivery.workload(int(sys.argv[2])))
    else:
        main()
