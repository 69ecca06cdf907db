"""The Rust matcher against a reference written here (one `re.fullmatch` per pattern)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oqronkit import InvalidEventName, InvalidPattern
from oqronkit._core import Matcher, validate_event, validate_pattern


def reference_match(pattern: str, event: str) -> bool:
    """DESIGN.md "Event globs", the obvious way."""
    if pattern in ("*", "**"):
        return True
    pieces = []
    for segment in pattern.split("."):
        if segment == "*":
            pieces.append(r"[^.]+")
        elif segment == "**":
            pieces.append(r"[^.]+(?:\.[^.]+)*")
        else:
            pieces.append(re.escape(segment))
    return re.fullmatch(r"\.".join(pieces), event) is not None


def reference_valid(name: str) -> bool:
    return (
        0 < len(name) <= 255
        and not any(c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name)
        and "" not in name.split(".")
    )


pattern_segments = st.sampled_from(["a", "b", "ab", "*", "**", "a*", "***"])
event_segments = st.sampled_from(["a", "b", "ab", "a*", "*", "***"])
patterns = st.lists(pattern_segments, min_size=1, max_size=5).map(".".join)
events = st.lists(event_segments, min_size=1, max_size=6).map(".".join)


@given(pattern=patterns, event=events)
def test_one_pattern_agrees_with_reference(pattern: str, event: str) -> None:
    expected = (0,) if reference_match(pattern, event) else ()
    assert Matcher([[pattern]]).match(event) == expected


# A vocabulary large enough that deep trie nodes keep their few children in a sorted run, while
# the busy upper ones get a direct table: both lookups are exercised.
words = [f"w{i}" for i in range(30)]
wide_patterns = st.lists(st.sampled_from([*words, "*", "**"]), min_size=1, max_size=4).map(".".join)
wide_events = st.lists(st.sampled_from(words), min_size=1, max_size=5).map(".".join)


@given(
    endpoints=st.lists(st.lists(patterns, max_size=3), max_size=8),
    batch=st.lists(events, max_size=10),
)
def test_many_endpoints_agree_with_reference(endpoints: list[list[str]], batch: list[str]) -> None:
    assert_agrees(endpoints, batch)


@given(
    endpoints=st.lists(st.lists(wide_patterns, min_size=1, max_size=3), max_size=60),
    batch=st.lists(wide_events, max_size=40),
)
def test_wide_vocabulary_and_long_batches_agree_with_reference(
    endpoints: list[list[str]], batch: list[str]
) -> None:
    """Batches longer than the matcher's 16 lanes, events that die early beside ones that go on."""
    assert_agrees(endpoints, batch)


def assert_agrees(endpoints: list[list[str]], batch: list[str]) -> None:
    matcher = Matcher(endpoints)
    expected = [
        tuple(i for i, ps in enumerate(endpoints) if any(reference_match(p, e) for p in ps))
        for e in batch
    ]
    assert [matcher.match(e) for e in batch] == expected
    assert matcher.match_many(batch) == expected


names = st.text(
    alphabet=st.sampled_from(
        [
            "a",
            "é",
            ".",
            "*",
            " ",
            "\t",
            "\n",
            "\x00",
            "\x7f",
            "\x85",
            "\u00a0",
            "\u2028",
            "\u3000",
            "-",
            "_",
        ]
    ),
    max_size=8,
)


@given(name=names)
def test_validation_agrees_with_reference(name: str) -> None:
    if reference_valid(name):
        validate_event(name)
        validate_pattern(name)
    else:
        with pytest.raises(InvalidEventName):
            validate_event(name)
        with pytest.raises(InvalidPattern):
            validate_pattern(name)


# The original's table (reference doc §1.2) where DESIGN.md keeps its behaviour.
ORIGINAL_TABLE = [
    ("user.created", "user.created", True),
    ("user.created", "user.updated", False),
    ("user.*", "user.created", True),
    ("user.*", "user.profile.updated", False),
    ("user.*", "user", False),
    ("user.**", "user", False),
    ("user.**", "user.created", True),
    ("user.**", "user.activity.login.failed", True),
    ("user.**", "org.user.created", False),
    ("user.**.created", "user.created", False),
    ("user.**.created", "user.a.b.created", True),
    ("*.user.created", "org.user.created", True),
    ("*.created", "created", False),
    ("**.created", "created", False),
    ("**.created", "a.b.created", True),
    ("user.*.created", "user.profile.123.created", False),
    ("a.*.*", "a.b", False),
    ("*.*", "a", False),
    ("user.sign*", "user.signup", False),
    ("user.sign*", "user.sign*", True),
    ("user.*up", "user.signup", False),
    ("user.***", "user.x", False),
    ("user.***", "user.***", True),
    ("*", "a.b.c", True),
    ("*", "ping", True),
    ("**", "anything", True),
    ("User.Created", "user.created", False),
    ("user.#", "user.x", False),
    ("user.+", "user.x", False),
    ("user.?", "user.x", False),
    ("user.[ab]", "user.a", False),
    ("user.(x|y)", "user.x", False),
    ("order.**", "order.payment.completed", True),
    ("user.*.activated", "user.onboarding.activated", True),
]


@pytest.mark.parametrize(("pattern", "event", "expected"), ORIGINAL_TABLE)
def test_original_table(pattern: str, event: str, expected: bool) -> None:
    assert (Matcher([[pattern]]).match(event) == (0,)) is expected
    assert reference_match(pattern, event) is expected


def test_pattern_lists_and_empty_lists() -> None:
    matcher = Matcher([["org.*", "user.*"], []])
    assert matcher.match("user.created") == (0,)
    assert matcher.match("tenant.created") == ()
    assert matcher.endpoint_count == 2


# Where DESIGN.md differs from the original: these are rejected, not matched leniently.
@pytest.mark.parametrize(
    "bad", ["", "user..x", "user.", ".created", "user.\n", "user.x\ny", "a b", "a\x00", "x" * 256]
)
def test_design_rejects_empty_segments_whitespace_control_and_long(bad: str) -> None:
    with pytest.raises(InvalidEventName, match="invalid event name"):
        Matcher([["**"]]).match(bad)
    with pytest.raises(InvalidPattern, match="invalid event pattern"):
        Matcher([["ok"], [bad]])


def test_length_limit_counts_characters() -> None:
    validate_event("é" * 255)
    with pytest.raises(InvalidEventName, match="longer than 255"):
        validate_event("é" * 256)


def test_invalid_event_in_a_batch_raises() -> None:
    with pytest.raises(InvalidEventName, match=r"a\.\.b"):
        Matcher([["**"]]).match_many(["a.b", "a..b"])


def test_errors_are_value_errors_for_generic_callers() -> None:
    with pytest.raises(ValueError):
        validate_event("")


def test_single_results_are_shared_immutable_tuples() -> None:
    """Up to 4,096 endpoints, an event matching one endpoint gets that endpoint's own `(id,)`."""
    matcher = Matcher([["a.*"], ["b.*"]])
    first, second, other = matcher.match_many(["a.x", "a.y", "b.x"])
    assert first == (0,) and first is second and first is matcher.match("a.z")
    assert other == (1,)


def test_ids_beyond_the_cached_singles() -> None:
    """Past 4,096 endpoints every result is a fresh tuple; it must hold the same ids."""
    matcher = Matcher([[f"e{i}.*"] for i in range(5_000)] + [["e1.x"]])
    assert matcher.match("e4999.x") == (4_999,)
    assert matcher.match_many(["e1.x", "e4500.y", "nope"]) == [(1, 5_000), (4_500,), ()]
