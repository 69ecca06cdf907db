"""Ids: `<prefix>_<12 hex ms><4 hex seq><12 hex process tag>`, unique and ordered in a process."""

from __future__ import annotations

import re
import time
from itertools import pairwise

import pytest

from oqronkit.ids import new_id, new_ids


def test_format_and_clock() -> None:
    before = int(time.time() * 1000)
    id_ = new_id("dlv")
    assert re.fullmatch(r"dlv_[0-9a-f]{28}", id_)
    assert int(id_[4:16], 16) >= before


def test_a_burst_past_one_millisecond_of_sequence_stays_unique_and_ordered() -> None:
    burst = new_ids("dlv", 70_000) + new_ids("msg", 2) + new_ids("dlv", 3)
    stamps = [int(i.split("_")[1][:16], 16) for i in burst]
    assert all(a < b for a, b in pairwise(stamps))
    assert stamps[69_999] - stamps[0] == 69_999  # consecutive within a call
    assert len(set(burst)) == len(burst)
    assert len({i.split("_")[1][16:] for i in burst}) == 1  # one process tag


def test_an_empty_or_negative_count_is_no_ids_and_changes_nothing() -> None:
    before = new_ids("dlv", 2)
    assert new_ids("dlv", 0) == [] and new_ids("dlv", -3) == []
    after = new_ids("dlv", 2)
    assert after[0] > before[1]
    with pytest.raises(TypeError):
        new_ids("dlv", 2.0)  # type: ignore[arg-type]
