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


def new_id(prefix: str) -> str:
    """`<prefix>_<12 hex ms><4 hex seq><12 hex process tag>`: unique, ordered within a process."""
    global _last
    ms = int(time.time() * 1000)
    with _lock:
        last_ms, seq = _last
        if ms <= last_ms:
            ms, seq = last_ms, seq + 1
            if seq > 0xFFFF:
                ms, seq = ms + 1, 0
        else:
            seq = 0
        _last = (ms, seq)
    return f"{prefix}_{ms:012x}{seq:04x}{_tag}"
