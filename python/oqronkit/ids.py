"""Identifiers that sort by creation time, so "newest first" is an index scan."""

from __future__ import annotations

import operator
import os
import threading
import time

from oqronkit import _core

_lock = threading.Lock()
_last_stamp = 0  # the last stamp handed out: milliseconds << 16 | sequence
_tag = os.urandom(6).hex()  # this process's; unique ids across processes without a syscall each


def _new_process() -> None:
    global _tag, _last_stamp
    _tag, _last_stamp = os.urandom(6).hex(), 0


os.register_at_fork(after_in_child=_new_process)


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` ids `<prefix>_<12 hex ms><4 hex seq><12 hex process tag>`: unique, and ordered
    within a process. Stamps are consecutive: past 65,536 in one millisecond, the sequence
    carries into the millisecond digits, which stay ahead of the clock until it catches up."""
    global _last_stamp
    count = operator.index(count)
    if count <= 0:
        return []
    now_stamp = int(time.time() * 1000) << 16
    with _lock:
        first = max(now_stamp, _last_stamp + 1)
        _last_stamp = first + count - 1
    return _core.sequential_ids(prefix + "_", first, count, _tag)


def new_id(prefix: str) -> str:
    return new_ids(prefix, 1)[0]
