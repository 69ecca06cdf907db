"""The `oqronkit` command through its real entry point, in subprocesses."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.receiver import Receiver, Reply

OQRONKIT = str(Path(sys.executable).parent / "oqronkit")


def oqronkit(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OQRONKIT, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_delivers_and_its_summary_adds_up() -> None:
    run = oqronkit("demo", "--events", "50", "--duration", "0.5", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    line = re.search(
        r"(\d+) events → (\d+) deliveries = (\d+) delivered \+ (\d+) dead\s+adds up", run.stdout
    )
    assert line is not None, run.stdout
    events, deliveries, delivered, dead = map(int, line.groups())
    assert events == 50 and deliveries == delivered + dead and delivered > 0
    assert dead > 0  # Legacy CRM is down: its deliveries end as dead letters


def test_the_demo_adds_up_again_on_a_kept_backend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    for _ in range(2):  # the second run counts its own deliveries, not the first run's too
        run = oqronkit("demo", "--events", "20", "--duration", "0.2", "--backend", url)
        assert run.returncode == 0 and "adds up" in run.stdout, run.stdout + run.stderr


def test_ctrl_c_stops_the_demo_with_one_line() -> None:
    demo = subprocess.Popen(
        [OQRONKIT, "demo", "--events", "200", "--duration", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        demo.stdout.readline()  # it has started
        time.sleep(1.5)  # and is firing, in its task group (a Ctrl-C comes out of one wrapped)
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=30)
    finally:
        demo.kill()
    assert demo.returncode == 130 and err.strip() == "oqronkit: aborted", err


def test_sign_then_verify_round_trips() -> None:
    signed = oqronkit("sign", "--secret", "s3cret", '{"n":1}')
    assert signed.returncode == 0 and signed.stdout.startswith("t=")
    header = signed.stdout.strip()
    assert (
        oqronkit(
            "verify", "--secret", "s3cret", "--header", header, "-", stdin='{"n":1}'
        ).returncode
        == 0
    )
    wrong_body = oqronkit("verify", "--secret", "s3cret", "--header", header, '{"n":2}')
    assert wrong_body.returncode == 1 and "invalid" in wrong_body.stderr
    rotated = oqronkit(
        "verify", "--secret", "old", "--secret", "s3cret", "--header", header, '{"n":1}'
    )
    assert rotated.returncode == 0


def test_arguments_that_are_not_utf8_are_signed_as_their_bytes() -> None:
    # A shell hands over bytes; Python sees the undecodable ones as surrogates.
    signed = oqronkit("sign", "--secret", "k\udcff", "--timestamp", "1", "\udcfe")
    expected = hmac.new(b"k\xff", b"1.\xfe", hashlib.sha256).hexdigest()
    assert signed.returncode == 0 and signed.stdout.strip() == f"t=1,v1={expected}"


def test_the_secret_from_the_environment_is_one_secret_spaces_and_all() -> None:
    env = {"OQRONKIT_SECRET": "correct horse battery staple"}
    header = oqronkit("sign", "{}", env=env).stdout.strip()
    assert oqronkit("verify", "--header", header, "{}", env=env).returncode == 0
    by_one_word = oqronkit("sign", "--secret", "horse", "{}").stdout.strip()
    assert oqronkit("verify", "--header", by_one_word, "{}", env=env).returncode == 1
    missing = oqronkit("verify", "--header", header, "{}", env={"OQRONKIT_SECRET": ""})
    assert missing.returncode == 2 and "OQRONKIT_SECRET" in missing.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["nope"],
        ["deliveries", "list", "--backend", "memory://", "--limit", "0"],
        ["deliveries", "list", "--backend", "memory://", "--status", "lost"],
        ["deliveries", "list"],  # neither --backend nor --app
        ["worker", "no_colon"],
        ["sign", "body"],  # no --secret
        ["sign", "--secret", "", "{}"],
        ["verify", "--secret", "s", "--header", "t=1,v1=00", "--tolerance", "-1", "{}"],
        ["verify", "--secret", "s", "--header", "t=1,v1=00", "--tolerance", "nan", "{}"],
        ["deliveries", "list", "--backend", "memory://", "--since", "nan"],
        ["deliveries", "list", "--backend", "memory://", "--until", "yesterday"],
        ["deliveries", "list", "--backend", "memory://", "--event", "order..paid"],
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args: list[str]) -> None:
    run = oqronkit(*args, env={"OQRONKIT_BACKEND": "", "OQRONKIT_SECRET": ""})
    assert run.returncode == 2, run.stderr
    assert run.stdout == "" and len(run.stderr.strip().splitlines()) == 1, run.stderr


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "postgresql://u@127.0.0.1:1/db"])
def test_an_unreachable_backend_is_a_one_line_error(url: str) -> None:
    run = oqronkit("dead-letters", "--backend", url)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "BackendUnavailable" in run.stderr


APP = """
import os
from oqronkit import Endpoint, OqronKit, Security

kit = OqronKit(f"sqlite:///{os.environ['APP_DB']}", allow_private_networks=True)
orders = kit.webhook(
    "orders",
    security=Security(signing_secret="app-secret"),
    endpoints=[Endpoint("receiver", os.environ["RECEIVER_URL"], ["order.*"])],
)
"""


@contextmanager
def running_worker(app_folder: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`oqronkit worker app:kit` in its own process, from the folder of `app.py`; killed on the
    way out if the test did not stop it."""
    worker = subprocess.Popen(
        [OQRONKIT, "worker", "app:kit"],
        cwd=app_folder,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


def test_worker_delivers_what_fire_enqueued_and_stops_on_sigterm(
    tmp_path: Path, receiver: Receiver
) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    env = {"APP_DB": str(tmp_path / "app.db"), "RECEIVER_URL": receiver.url("/hook")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        run = oqronkit(*args, "--app", "app:kit", cwd=tmp_path, env=env)
        assert run.returncode == 0, run.stderr
        return run

    # Fired from another process before the worker runs: stored, then delivered by the worker.
    [first] = cli("fire", "--webhook", "orders", "order.created", '{"id": 1}').stdout.split()
    with running_worker(tmp_path, env) as worker:
        [request] = receiver.wait_for_blocking(1, "/hook", timeout=30)
        assert request.headers["x-oqron-delivery"] == first
        deadline = time.monotonic() + 10
        while (
            json.loads(cli("deliveries", "show", first, "--json").stdout)["status"] != "completed"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)

        assert "active" in cli("endpoints", "list", "orders").stdout
        assert "0 deliveries held" in cli("endpoints", "pause", "orders", "receiver").stdout
        [held] = cli("fire", "--webhook", "orders", "order.paid", "{}").stdout.split()
        listed = json.loads(cli("deliveries", "list", "--status", "held", "--json").stdout)
        assert [d["id"] for d in listed] == [held]
        assert cli("cancel", held).stdout.strip() == "cancelled"
        resumed = cli("endpoints", "resume", "orders", "receiver").stdout
        assert "0 deliveries released" in resumed  # the held one was cancelled
        [copy] = cli("resend", first).stdout.split()
        receiver.wait_for_blocking(2, "/hook", timeout=30)
        assert receiver.received("/hook")[1].headers["idempotency-key"] == first
        assert copy in cli("deliveries", "list").stdout
        assert "app-secret" not in cli("deliveries", "show", first, "--json").stdout

        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    assert "SIGTERM: stopping gracefully" in stderr and stderr.rstrip().endswith("stopped")


SLOW_APP = """
import os
from oqronkit import Endpoint, OqronKit

kit = OqronKit(
    f"sqlite:///{os.environ['APP_DB']}", allow_private_networks=True, shutdown_grace=60.0
)
orders = kit.webhook("orders", endpoints=[Endpoint("slow", os.environ["RECEIVER_URL"], ["**"])])
"""


def test_a_second_signal_stops_a_draining_worker_at_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.respond("/slow", then=Reply(204, delay=30.0))
    (tmp_path / "app.py").write_text(textwrap.dedent(SLOW_APP))
    env = {"APP_DB": str(tmp_path / "app.db"), "RECEIVER_URL": receiver.url("/slow")}
    fired = oqronkit(
        "fire", "--app", "app:kit", "--webhook", "orders", "e", "{}", cwd=tmp_path, env=env
    )
    [delivery_id] = fired.stdout.split()
    with running_worker(tmp_path, env) as worker:
        receiver.wait_for_blocking(1, "/slow", timeout=30)  # in flight for 30 s
        worker.send_signal(signal.SIGTERM)  # drains for up to 60 s ...
        time.sleep(0.5)
        worker.send_signal(signal.SIGINT)  # ... unless told again
        _, stderr = worker.communicate(timeout=15)
    assert worker.returncode == 0, stderr
    assert "SIGINT: stopping now" in stderr and stderr.rstrip().endswith("stopped")
    shown = oqronkit(
        "deliveries", "show", delivery_id, "--json", "--app", "app:kit", cwd=tmp_path, env=env
    )
    d = json.loads(shown.stdout)
    assert (d["status"], d["attempts"]) == ("waiting", [])  # back in the queue, no attempt used


def test_bench_writes_its_results_and_a_plot(tmp_path: Path) -> None:
    run = oqronkit(
        "bench", "--events", "30", "--endpoints", "2", "--out", str(tmp_path), timeout=120
    )
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["deliveries"] == 60 == len(results["completions"])
    assert results["deliveries_per_second"] > 0 and results["latency_seconds"]["p99"] > 0
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args",
    [
        ("deliveries", "list", "--backend", "foo://user:SECRETPW@host/x"),
        ("resend", "dlv_missing", "--backend", "memory://"),
    ],
)
def test_bad_input_is_one_line_without_a_traceback_or_a_password(args: tuple[str, ...]) -> None:
    run = oqronkit(*args)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.startswith("oqronkit: error: ")
    assert len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.stderr and "SECRETPW" not in run.stderr


def test_a_command_without_its_subcommand_prints_its_help_and_exits_2() -> None:
    for args in ((), ("deliveries",)):
        run = oqronkit(*args)
        assert run.returncode == 2 and run.stderr.startswith("Usage: oqronkit"), run.stderr
        assert "(see oqronkit --help)" not in run.stderr


def test_an_app_whose_definitions_are_wrong_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "badapp.py").write_text(
        "from oqronkit import Endpoint, OqronKit\n"
        "kit = OqronKit('memory://')\n"
        "kit.webhook('w', endpoints=[Endpoint('e', 'https://e.example/', ['order..paid'])])\n"
    )
    run = oqronkit("deliveries", "list", "--app", "badapp:kit", cwd=tmp_path)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "cannot load badapp:kit: InvalidPattern" in run.stderr


def test_a_piped_table_is_whole_and_offers_a_next_page_only_after_a_full_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "oqronkit.db"
    (tmp_path / "app.py").write_text(
        textwrap.dedent(APP).replace("allow_private_networks=True", "dispatch=False")
    )
    env = {"APP_DB": str(db), "RECEIVER_URL": "https://r.example/hook"}
    ids = [
        oqronkit(
            "fire", "--app", "app:kit", "--webhook", "orders", "order.paid", cwd=tmp_path, env=env
        ).stdout.strip()
        for _ in range(3)
    ]
    full = oqronkit("deliveries", "list", "--backend", f"sqlite:///{db}", "--limit", "2")
    assert all(i in full.stdout for i in ids[1:]) and "waiting" in full.stdout, full.stdout
    assert "…" not in full.stdout and f"next page: --cursor {ids[1]}" in full.stdout
    rest = oqronkit(
        "deliveries", "list", "--backend", f"sqlite:///{db}", "--limit", "2", "--cursor", ids[1]
    )
    assert ids[0] in rest.stdout and "next page" not in rest.stdout, rest.stdout
    # The app's kit has its own backend: given both, which was meant is not guessed.
    both = oqronkit(
        "deliveries",
        "list",
        "--backend",
        "memory://",
        cwd=tmp_path,
        env={**env, "OQRONKIT_APP": "app:kit"},
    )
    assert both.returncode == 2 and "not both" in both.stderr, both.stderr


def test_operating_on_a_database_that_is_not_there_is_an_error_not_a_new_file(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "typo" / "oqronkit.db"
    run = oqronkit("dead-letters", "--backend", f"sqlite:///{missing}")
    assert run.returncode == 1 and "no database at" in run.stderr, run.stderr
    assert not missing.parent.exists()
