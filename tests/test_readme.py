"""Every Python example in the README runs as written, each in a fresh interpreter in an empty
folder, as a reader would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def examples() -> dict[str, str]:
    """The Python blocks of the README, by the section they are in."""
    found: dict[str, str] = {}
    for section in re.split(r"\n## ", README.read_text())[1:]:
        title = section.splitlines()[0]
        for n, code in enumerate(re.findall(r"```python\n(.*?)```", section, flags=re.S)):
            found[f"{title} #{n + 1}"] = code
    return found


# What each example prints, where its output is deterministic.
OUTPUT = {
    "Receiving webhooks: verify the signature #1": ["True"],
    "A circuit breaker for your own calls #1": ["failed"] * 3 + ["open: not even tried"] * 2,
    "Operating a running kit #1": ["['held', 'held']", "2", "0"],
    "Many workers: Redis and PostgreSQL #1": [],  # a module that only defines
}
# What an example reads from its environment.
ENVIRONMENT = {
    "Many workers: Redis and PostgreSQL #1": {
        "OQRONKIT_BACKEND": "memory://",
        "ORDERS_SECRET": "whsec-orders",
    },
}


def test_every_example_is_checked() -> None:
    assert set(OUTPUT) | {"Quick start #1"} == set(examples())


@pytest.mark.parametrize("name", sorted(examples()))
def test_readme_example_runs(name: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", examples()[name]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **ENVIRONMENT.get(name, {})},
    )
    assert run.returncode == 0, run.stderr
    if name in OUTPUT:
        assert run.stdout.splitlines() == OUTPUT[name]
    else:  # the quick start: its endpoints are example hosts, so the delivery is in progress
        assert run.stdout.startswith("Delivery(id='dlv_"), run.stdout
