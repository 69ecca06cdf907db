"""One HTTP attempt of one delivery: build the signed request, send it (under the caller's
deadline), read at most the capped response, and classify what came back. No queue or state
here: the dispatcher decides what the outcome means for the delivery."""

from __future__ import annotations

import enum
import functools
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

import anyio
import httpx

from oqronkit import _core
from oqronkit.config import Security
from oqronkit.errors import EgressDenied, describe
from oqronkit.transport import Http1Transport


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # 408, 429, 5xx, connection errors, timeouts
    GONE = "gone"  # 410: dead, and the endpoint is disabled
    REJECTED = "rejected"  # any other 3xx/4xx, or a request we refuse to send: dead at once


class Response(NamedTuple):
    """What an attempt got back: a status and a capped body, or an error. A tuple: one is made
    per attempt, at a fifth of a frozen dataclass's cost."""

    verdict: Verdict
    duration: float
    status: int | None = None
    body: str | None = None
    error: str | None = None
    retry_after: str | None = None
    reached: bool = True  # False when the request never left (it could not be prepared)

    @property
    def counts_against_breaker(self) -> bool:
        """Only retryable failures show the receiver is unwell; a 4xx shows it is up."""
        return self.verdict is Verdict.RETRY


def classify(status: int) -> Verdict:
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in (408, 429) or status >= 500:
        return Verdict.RETRY
    if status == 410:
        return Verdict.GONE
    return Verdict.REJECTED


def wire_body(method: str, body: bytes) -> bytes:
    """The body as it goes on the wire, and so as it is signed: a GET carries none."""
    return b"" if method == "GET" else body


def signature_headers(
    security: Security,
    signers: list[_core.Signer],
    scheme: str,
    body: bytes,
    now: float,
    message_id: str,
) -> dict[str, str]:
    """Signs `body` at `now` (each attempt signs afresh, so late retries verify)."""
    if scheme == "standard":
        ts = int(now)
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": _core.standard_signature_header(message_id, ts, body, signers),
        }
    ts_ms = int(now * 1000)
    headers = {security.signing_header: _core.signature_header(body, ts_ms, signers)}
    if security.include_timestamp:
        headers[security.timestamp_header] = str(ts_ms)
    return headers


async def send(
    transport: httpx.AsyncBaseTransport,
    method: str,
    url: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    body_cap: int,
    started: float,
    clock: Callable[[], float] = anyio.current_time,
    answered: Callable[[Response], object] | None = None,
) -> Response:
    """Sends one request; never raises for HTTP or network trouble, only for cancellation.

    No deadline of its own: the caller's cancel scope bounds the exchange (the dispatcher's
    worker scope, which the kit's watchdog cancels at the deadline), and `timed_out` describes
    an exchange it cut short.
    `started` is when the exchange began on the event loop's `clock`, as that deadline counts.
    `answered` is given the answer as soon as its head is in (its body not yet read).

    It goes straight to the transport: a webhook delivery uses none of httpx's client features
    (cookies, auth flows, redirects, event hooks), and skipping them halves the CPU per request.
    Transports never follow redirects."""
    try:
        # A parsed URL and the headers as they go on the wire, with the Host and Content-Length
        # httpx would add: given a `stream`, httpx skips its own body encoding and header
        # preparation, which rebuild the headers twice. `read` keeps `request.content` there
        # for any transport. `headers` are encoded already (`Webhook.request_headers`).
        target, host = _parsed(url)
        payload = wire_body(method, body)
        wire_headers = [(b"Host", host), *headers]
        if method != "GET":
            wire_headers.append((b"Content-Length", b"%d" % len(body)))
        # Ours takes them as they are; any other transport (a subclass of ours that handles
        # requests its own way too) gets an httpx Request.
        direct = type(transport).handle_async_request is Http1Transport.handle_async_request
        request = None
        if not direct:
            request = httpx.Request(
                method, target, headers=wire_headers, stream=httpx.ByteStream(payload)
            )
            request.read()
    except Exception as exc:  # a request that cannot be expressed is no transient failure
        return Response(Verdict.REJECTED, 0.0, error=f"invalid request: {exc}", reached=False)
    stream: httpx.SyncByteStream | httpx.AsyncByteStream
    try:
        if direct:
            assert isinstance(transport, Http1Transport)
            exchange = await transport.exchange(method, target, wire_headers, payload)
            status, _, response_headers, stream = exchange
        else:
            assert request is not None
            response = await transport.handle_async_request(request)
            status, response_headers, stream = (
                response.status_code,
                response.headers.raw,
                response.stream,
            )
    except EgressDenied as exc:
        return Response(Verdict.REJECTED, clock() - started, error=str(exc))
    except Exception as exc:  # any transport (a user's too) failing is a failed attempt
        return Response(Verdict.RETRY, clock() - started, error=_scrubbed(describe(exc), headers))
    # The answer is in with its head: it stands whatever becomes of the body, which is only
    # kept for the record. A 200 whose body breaks off was still received.
    verdict = classify(status)
    # Only a retry waits for it.
    retry_after = _header(response_headers, b"retry-after") if verdict is Verdict.RETRY else None
    answer = Response(verdict, 0.0, status=status, retry_after=retry_after)
    if answered is not None:  # for a deadline that cuts the body short
        answered(answer)
    try:
        raw = await _read_capped(stream, body_cap)
    except Exception as exc:
        return body_cut_short(answer, clock() - started, describe(exc))
    duration = clock() - started
    return Response(verdict, duration, status, _text(raw, body_cap), None, retry_after)


def _scrubbed(error: str, headers: list[tuple[bytes, bytes]]) -> str:
    """`error` without any value of the request's headers: a transport's message may quote one
    (h11 quotes a value it refuses), and a header may carry a credential."""
    for _, value in headers:
        if len(value) >= 8:
            error = error.replace(value.decode("latin-1"), "***")
    return error


def body_cut_short(answer: Response, duration: float, why: str) -> Response:
    """`answer` (a response's head) whose body could not be read in full: the answer stands."""
    return answer._replace(duration=duration, error=f"the response body was cut short: {why}")


def _text(raw: bytes, cap: int) -> str | None:
    """A response body as stored: text, at most `cap` bytes of UTF-8. Invalid UTF-8 and NUL
    become U+FFFD (every backend stores the same text, and PostgreSQL's jsonb cannot hold NUL),
    which takes three bytes for one, so the text is cut again to the cap."""
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    if raw.isascii() and b"\x00" not in raw:  # one byte a character, as most bodies are
        return text
    return text.encode()[:cap].decode("utf-8", errors="ignore")


def _header(headers: list[tuple[bytes, bytes]], lowered_name: bytes) -> str | None:
    """The first value of a header, by its name in lower case."""
    for name, value in headers:
        if name.lower() == lowered_name:
            return value.decode("latin-1")
    return None


def timed_out(timeout: float, duration: float) -> Response:
    """An exchange cut short by its deadline before its answer: retried, like any transient
    failure."""
    return Response(Verdict.RETRY, duration, error=f"timed out after {timeout:g}s")


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> tuple[httpx.URL, bytes]:
    """Endpoint URLs are few and reused: each is parsed once, with its Host header's value
    (httpx makes that anew on every read of `netloc`)."""
    target = httpx.URL(url)
    host = target.netloc
    address, zone, rest = host.partition(b"%25")  # an IPv6 zone: this host's own business,
    if zone and host.startswith(b"[") and b"]" in rest:  # never sent (RFC 6874 §4)
        host = address + rest[rest.index(b"]") :]
    return target, host


async def _read_capped(stream: httpx.SyncByteStream | httpx.AsyncByteStream, cap: int) -> bytes:
    """At most `cap` bytes of the body; the rest is never read (the connection is dropped).
    The stream is closed here, which is all `Response.aclose` would do (through a generator
    context manager that only relabels exceptions, ~4 µs a response)."""
    chunks: list[bytes] = []
    size = 0
    # The stream itself, not httpx's `aiter_bytes` generators: stopping at the cap must not
    # leave generators for the garbage collector (deliveries ask for identity encoding).
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError(f"the transport answered with a {type(stream).__name__}, not async")
    body: AsyncIterator[bytes] | httpx.AsyncByteStream = aiter(stream)
    try:
        async for chunk in body:
            chunks.append(chunk[: cap - size])
            size += len(chunks[-1])
            if size >= cap:
                break
    finally:
        if body is not stream and hasattr(body, "aclose"):
            await body.aclose()  # an async generator of the stream's, finalised now
        await stream.aclose()  # the connection goes back to its pool, or is closed
    return b"".join(chunks)
