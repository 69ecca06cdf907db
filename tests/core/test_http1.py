"""The Rust response-head parser against h11's: it never panics on any bytes, agrees with h11
on every head h11 accepts, and refuses whatever h11 refuses in the ways that matter (header
injection, bad or conflicting lengths)."""

from __future__ import annotations

import h11
from hypothesis import given
from hypothesis import strategies as st

from oqronkit import _core

TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
    min_size=1,
    max_size=12,
)
VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
POISONS = {
    "cr in a value": b"X-Evil: a\rInjected: 1\r\n",
    "nul in a value": b"X-Evil: a\x00b\r\n",
    "lone lf in a value": b"X-Evil: a\nInjected 1\r\n",
    "space in a name": b"X Evil: a\r\n",
    "conflicting lengths": b"Content-Length: 3\r\nContent-Length: 4\r\n",
    "non-numeric length": b"Content-Length: 3a\r\n",
    "negative length": b"Content-Length: -3\r\n",
}


def h11_parse(raw: bytes) -> h11.Response | str | None:
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(raw)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError:
        return "error"
    return None if event is h11.NEED_DATA else event  # type: ignore[return-value]


def ours(raw: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]], int, bool] | str | None:
    try:
        return _core.parse_response_head(raw, False)
    except ValueError:
        return "error"


@given(st.binary(max_size=300))
def test_never_panics_on_any_bytes(data: bytes) -> None:
    result = ours(data)
    assert result is None or result == "error" or isinstance(result, tuple)
    ours(b"HTTP/1.1 200 OK\r\n" + data)


heads = st.builds(
    lambda status, reason, headers, length: (
        b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())
        + b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in headers)
        + (b"" if length is None else b"Content-Length: %d\r\n" % length)
    ),
    st.integers(200, 599),
    TOKEN,
    st.lists(
        st.tuples(
            TOKEN.filter(lambda n: n.lower() not in ("content-length", "transfer-encoding")), VALUE
        ),
        max_size=6,
    ),
    st.none() | st.integers(0, 10**6),
)


@given(heads)
def test_agrees_with_h11_on_what_it_accepts(head: bytes) -> None:
    raw = head + b"\r\n"
    theirs, mine = h11_parse(raw), ours(raw)
    if isinstance(theirs, h11.Response):
        assert isinstance(mine, tuple), (raw, mine)
        consumed, status, _reason, headers, length, _ = mine
        assert consumed == len(raw) and status == theirs.status_code
        assert [(n.lower(), v.strip()) for n, v in headers] == [
            (n.lower(), v.strip()) for n, v in theirs.headers.raw_items()
        ]
        declared = [int(v) for n, v in theirs.headers.raw_items() if n.lower() == b"content-length"]
        bodiless = status in (204, 304)
        assert length == (0 if bodiless else declared[0] if declared else -2)
    # A head cut short is incomplete to both.
    assert ours(head) is None and h11_parse(head) is None


@given(heads, st.sampled_from(sorted(POISONS)), st.booleans())
def test_refuses_injection_and_bad_lengths_as_h11_does(
    head: bytes, poison: str, first: bool
) -> None:
    line_end = head.index(b"\r\n") + 2
    status_line, rest = head[:line_end], head[line_end:]
    if "length" in poison:
        rest = b"".join(
            line + b"\r\n"
            for line in rest.split(b"\r\n")
            if line and not line.lower().startswith(b"content-length")
        )
    rest = POISONS[poison] + rest if first else rest + POISONS[poison]
    raw = status_line + rest + b"\r\n"
    assert h11_parse(raw) == "error"
    assert ours(raw) == "error", (poison, raw)
