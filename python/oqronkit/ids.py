"""Identifiers that sort by creation time, so "newest first" is an index scan."""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last = (0, 0)
_tag = os.urandom(6).hex()  # this process's; unique ids across processes without a syscall each


def _new_process() -> None:
    global _tag, _last
    _tag, _last = os.urandom(6).hex(), (0, 0)


os.register_at_fork(after_in_child=_new_process)


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` ids `<prefix>_<12 hex ms><4 hex seq><12 hex process tag>`: unique, and ordered
    within a process."""
    global _last
    ms = int(time.time() * 1000)
    with _lock:
        last_ms, seq = _last
        if ms > last_ms:
            last_ms, seq = ms, -1
        stamps = []
        for _ in range(count):
            seq += 1
            if seq > 0xFFFF:
                last_ms, seq = last_ms + 1, 0
            stamps.append((last_ms << 16) | seq)
        _last = (last_ms, seq)
    head = prefix + "_"
    return [head + stamp.to_bytes(8, "big").hex() + _tag for stamp in stamps]  # fastest format


def new_id(prefix: str) -> str:
    return new_ids(prefix, 1)[0]
