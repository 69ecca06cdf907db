"""How fast is HMAC-SHA256 signing through a reused `Signer`, and a header for many secrets?

Ours: `Signer(secret).sign(body, ts)` (hex) for bodies of 256 B, 2 KiB and 64 KiB, and
`signature_header(body, ts, signers)` for one 2 KiB body with 50 secrets. Peer: the standard
library, `hmac.digest(key, b"%d." % ts + body, "sha256").hex()`, and a loop of it building the
same `t=<ts>,v1=<hex>,...` header.

Targets: >= 2x at 256 B, >= 1x at 2 KiB (informational), >= 0.95x at 64 KiB, >= 3x for the
50-secret header.
"""

from __future__ import annotations

import hmac
import random
from collections.abc import Sequence

from _harness import Row, Settings, compare, main, speed_row

from oqronkit import _core

SEED = 7
TIMESTAMP_MS = 1_700_000_000_000
# (body size, calls per timed batch in full mode, target, informational)
BODIES = ((256, 100_000, 2.0, False), (2048, 50_000, 1.0, True), (65536, 2_000, 0.95, False))
SECRET_COUNT = 50


def stdlib_sign(key: bytes, body: bytes, ts: int) -> str:
    return hmac.digest(key, b"%d." % ts + body, "sha256").hex()


def stdlib_header(keys: Sequence[bytes], body: bytes, ts: int) -> str:
    message = b"%d." % ts + body
    signatures = ",".join("v1=" + hmac.digest(k, message, "sha256").hex() for k in keys)
    return f"t={ts},{signatures}"


def bench_sign(
    size: int, calls: int, rng: random.Random, settings: Settings
) -> tuple[float, float]:
    key = rng.randbytes(32)
    body = rng.randbytes(size)
    signer = _core.Signer(key)
    ts = TIMESTAMP_MS
    assert signer.sign(body, ts) == stdlib_sign(key, body, ts)
    loop = range(calls)

    def ours() -> None:
        sign = signer.sign
        for _ in loop:
            sign(body, ts)

    def peer() -> None:
        digest = hmac.digest
        for _ in loop:
            digest(key, b"%d." % ts + body, "sha256").hex()

    return compare(ours, peer, repeat=settings.repeat, ops=calls)


def bench_header(calls: int, rng: random.Random, settings: Settings) -> tuple[float, float]:
    keys = [rng.randbytes(32) for _ in range(SECRET_COUNT)]
    body = rng.randbytes(2048)
    signers = [_core.Signer(k) for k in keys]
    ts = TIMESTAMP_MS
    assert _core.signature_header(body, ts, signers) == stdlib_header(keys, body, ts)
    loop = range(calls)

    def ours() -> None:
        signature_header = _core.signature_header
        for _ in loop:
            signature_header(body, ts, signers)

    def peer() -> None:
        for _ in loop:
            stdlib_header(keys, body, ts)

    return compare(ours, peer, repeat=settings.repeat, ops=calls)


def run(settings: Settings) -> list[Row]:
    rng = random.Random(SEED)
    scale = 20 if settings.quick else 1
    rows = []
    for size, calls, target, informational in BODIES:
        ours, peer = bench_sign(size, calls // scale, rng, settings)
        rows.append(
            speed_row(
                f"sign one {size:,} B body (reused Signer vs hmac.digest)",
                ours,
                peer,
                target,
                informational=informational,
            )
        )
    ours, peer = bench_header(2_000 // scale, rng, settings)
    rows.append(
        speed_row(f"signature_header, 2,048 B body x {SECRET_COUNT} secrets", ours, peer, 3.0)
    )
    return rows


if __name__ == "__main__":
    main(run, __doc__)
