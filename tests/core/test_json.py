"""`serialise`: the bytes that are signed and sent must be the stdlib's, byte for byte, whether
the Rust encoder or the stdlib fallback wrote them; and what the stdlib refuses is refused."""

from __future__ import annotations

import enum
import json
import math
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oqronkit import _core
from oqronkit.errors import InvalidPayload
from oqronkit.webhooks import serialise


def stdlib(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class Colour(enum.IntEnum):
    RED = 1


class Tag(enum.StrEnum):
    A = "a"


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet=st.characters(max_codepoint=0x7F))  # control characters, quotes
    | st.sampled_from([Colour.RED, Tag.A])  # subclasses: the stdlib's rules apply
)
keys = (
    st.text()
    | st.integers()
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
)
payloads = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(keys, inner, max_size=5)
        | st.dictionaries(st.text(), inner, max_size=5).map(OrderedDict)
    ),
    max_leaves=30,
)


@given(payloads)
def test_bytes_are_the_stdlibs(payload: Any) -> None:
    assert serialise(payload) == stdlib(payload)


@given(
    st.dictionaries(
        st.text(), st.text() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    )
)
def test_plain_payloads_take_the_rust_path(payload: dict[str, Any]) -> None:
    assert _core.encode_json(payload) == stdlib(payload)


def test_what_rust_leaves_to_the_stdlib() -> None:
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    for value in (Colour.RED, Tag.A, {1: "a"}, OrderedDict(a=1), deep, {"a": {1, 2}}):
        assert _core.encode_json(value) is None
    assert serialise(deep) == stdlib(deep)


@pytest.mark.parametrize(
    "payload",
    [math.nan, {"a": math.inf}, [-math.inf], {"a": {1, 2}}, object(), "\ud800", {"k\udfff": 1}],
)
def test_what_the_stdlib_refuses_is_refused(payload: Any) -> None:
    with pytest.raises(InvalidPayload, match="JSON"):
        serialise(payload)


def test_a_cycle_is_refused() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(InvalidPayload, match="JSON"):
        serialise(cycle)
