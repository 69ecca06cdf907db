"""OqronKit's own HTTP/1.1 transport for httpx: the default way deliveries reach receivers.

httpx's default transport spends most of a webhook delivery's CPU in its connection pool (it
scans every connection for every waiting request). This one keeps, per origin, a stack of idle
keep-alive connections on anyio streams (Trio or asyncio), and leaves the request and response
heads to the Rust core. It never makes a request wait for a connection (a new one is opened;
the kit bounds how many requests run at once), so a cancelled request can only ever close its
own connection: the pool cannot be corrupted.

- Egress is checked at connect time: the host is resolved once, every address checked against
  the policy, and the socket connects to the address that was checked.
- TLS through the stdlib `ssl` module: SNI and certificate verification by default, or the
  `ssl_context` given.
- Bodies: Content-Length, chunked, or until close; 1xx answers are skipped, 204/304/HEAD have
  none. The body is read only as far as the caller reads it (a delivery stops at its cap), and a
  connection whose body was not read to the end is closed, never reused.
- A connection the server closed while idle is noticed before use (its socket is readable: a
  FIN, or bytes no request asked for) and replaced. If writing to a reused connection fails,
  the request never arrived whole and is sent once more on a new connection; a request the
  server may have read is never sent twice here.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import time
from collections.abc import AsyncGenerator, Mapping, Sized
from typing import Any, TypeAlias
from urllib.parse import unquote

import anyio
import anyio.abc
import anyio.streams.tls
import httpx
import trio

from oqronkit import _core
from oqronkit.egress import EgressPolicy
from oqronkit.scopes import CancelScope, cancel_scope, in_trio_task

Origin: TypeAlias = tuple[bytes, str, int]  # (scheme, host, port)
Headers: TypeAlias = list[tuple[bytes, bytes]]
# A response head from the core: status, reason, headers, body length (or CHUNKED or
# UNTIL_CLOSE) and whether the connection may be reused.
Head: TypeAlias = tuple[int, bytes, Headers, int, bool]
# An answer: status, reason, headers and the body's stream.
Exchange: TypeAlias = tuple[int, bytes, Headers, httpx.AsyncByteStream]
_NO_TIMEOUTS: Mapping[str, float | None] = {}

READ_SIZE = 64 * 1024
MAX_LINE = 8 * 1024  # a chunk-size or trailer line longer than this is a broken server
# The bytes a response may spend on what is not its body: the chunk-size lines and trailers
# of a chunked body, and interim (1xx) answers before the final one. A reader stops at its
# body cap, so beyond these a server could make it read for ever (until the deadline).
MAX_FRAMING = 1024 * 1024
MAX_INTERIM = 10
PARSE_EVERY = 16 * 1024  # bytes of a response head between two parses of it
CHUNKED, UNTIL_CLOSE = -1, -2  # `length` values from `_core.parse_response_head`
ANSWER_AFTER_FAILED_WRITE = 1.0  # seconds to wait for an early answer (413) after a write fails


class _ServerClosed(Exception):
    """The server closed the connection before sending any byte of a response."""


class _Deadline:
    """Raises `error` when the block outlives `seconds` (no limit when None). One cancel scope:
    `anyio.fail_after` would add three generator-based context managers around it."""

    __slots__ = ("_error", "_scope", "_seconds")

    def __init__(self, seconds: float | None, error: type[httpx.TimeoutException]) -> None:
        self._seconds = seconds
        self._error = error
        self._scope: CancelScope | None = None

    def __enter__(self) -> None:
        if self._seconds is not None:
            self._scope = cancel_scope(deadline=anyio.current_time() + self._seconds)
            self._scope.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        # The scope swallows only the cancellation its own deadline caused, which becomes
        # `error`; everything else propagates.
        if self._scope is not None:
            self._scope.__exit__(*exc_info)
            if self._scope.cancelled_caught:
                raise self._error(f"timed out after {self._seconds:g}s") from None


class _Connection:
    __slots__ = (
        "buffer",
        "direct",
        "idle_since",
        "just_sent",
        "read_queue",
        "read_timeout",
        "socket",
        "ssl_buffers",
        "stream",
    )

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.idle_since = 0.0
        self.read_timeout: float | None = None  # the current request's, for each read
        self.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        # On Trio, a plain TCP stream is a thin layer over a non-blocking socket, with no
        # buffer of its own: the socket is used directly, so that a send the kernel takes at
        # once skips trio's "as if it had blocked" yield (a scheduler pass and two context
        # managers), and a read waits only for readability. Not under TLS (the bytes are the
        # TLS layer's), nor on asyncio (the event loop's transport owns the socket).
        plain = isinstance(stream, anyio.abc.SocketStream) and in_trio_task()
        self.direct: socket.socket | None = self.socket if plain else None
        self.just_sent = False  # the next read comes right after a request went out
        # Where the layers under this one keep bytes read off the socket that no response has
        # used yet (see `holds_unread`): anyio's TLS stream, and asyncio's socket stream.
        # anyio offers no public way to ask, so its attributes are read; a missing one is None.
        under: object = stream
        self.ssl_buffers: tuple[ssl.SSLObject, ssl.MemoryBIO] | None = None
        if isinstance(stream, anyio.streams.tls.TLSStream):
            ssl_object = stream.extra(anyio.streams.tls.TLSAttribute.ssl_object)
            read_bio = getattr(stream, "_read_bio", None)
            if isinstance(ssl_object, ssl.SSLObject) and isinstance(read_bio, ssl.MemoryBIO):
                self.ssl_buffers = (ssl_object, read_bio)
            under = stream.transport_stream
        protocol = getattr(under, "_protocol", None)
        self.read_queue: Sized | None = getattr(protocol, "read_queue", None)

    def looks_closed(self) -> bool:
        """An idle connection with anything to read has been closed by the server, or holds
        bytes no request asked for: either way it must not carry a request."""
        if self.holds_unread():
            return True
        try:
            readable, _, _ = select.select([self.socket.fileno()], [], [], 0)  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):  # no socket, or it is closed
            return True
        return bool(readable)

    def holds_unread(self) -> bool:
        """Bytes read off the socket that no response used: a server sent more than its
        answer, and the next request on this connection would get them as its own. Besides
        `buffer`, anyio's TLS stream (bytes not yet decrypted, or decrypted and not taken)
        and asyncio's socket stream (reads of up to 256 KiB, handed out 64 KiB at a time)
        keep such bytes where `select` on the socket cannot see them."""
        if self.buffer or self.read_queue:
            return True
        if self.ssl_buffers is not None:
            ssl_object, read_bio = self.ssl_buffers
            return bool(ssl_object.pending() or read_bio.pending)
        return False

    async def send(self, data: bytes) -> None:
        try:
            if self.direct is not None:
                # Like trio's own send: a cancelled request is never put on the wire.
                await trio.lowlevel.checkpoint_if_cancelled()
                self.just_sent = True
                try:
                    sent = self.direct.send(data)
                except BlockingIOError:
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            await self.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise httpx.WriteError(f"sending the request failed: {exc!r}") from exc

    async def receive(self) -> bytes:
        """More bytes from the server; b"" when it has closed the connection. The read timeout
        bounds each wait for bytes (httpx's meaning), so bytes already there cost none."""
        try:
            if self.direct is not None:
                return await self._receive_directly(self.direct)
            with _Deadline(self.read_timeout, httpx.ReadTimeout):
                return await self.stream.receive(READ_SIZE)
        except anyio.EndOfStream:
            return b""
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise httpx.ReadError(f"reading the response failed: {exc!r}") from exc

    async def _receive_directly(self, sock: socket.socket) -> bytes:
        # Right after a request its answer is not there yet, but after one pass of the
        # scheduler (the other requests' turns) it usually is: a yield and then a read cost
        # less than registering with epoll and being woken by it (counted on loopback with 64
        # in flight: 97% of such reads find bytes). Every read yields at least once, so a
        # server streaming bytes cannot keep this task (or its deadline) from yielding.
        with _Deadline(self.read_timeout, httpx.ReadTimeout):
            if self.just_sent:
                self.just_sent = False
                await trio.lowlevel.checkpoint()
                try:
                    return sock.recv(READ_SIZE)
                except BlockingIOError:
                    pass
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    return sock.recv(READ_SIZE)
                except BlockingIOError:  # a spurious wake-up
                    pass

    async def read_head(self, head_request: bool) -> Head:
        """The final (non-1xx) response head; the body's first bytes stay in `buffer`."""
        # Parsed when its status line or its blank line may have come in, and every
        # PARSE_EVERY bytes in between (the parser refuses an oversized head): parsing on every
        # read costs the square of the head's size when a server drips it byte by byte.
        pending = bytearray(self.buffer)
        received = line_checked = False
        interim = scanned = parsed_at = 0
        try:
            while True:
                line_done = not line_checked and pending.find(b"\n", scanned) >= 0
                if (
                    line_done
                    or pending.find(b"\n\n", scanned) >= 0
                    or pending.find(b"\n\r\n", scanned) >= 0
                    or len(pending) - parsed_at >= PARSE_EVERY
                ):
                    line_checked, parsed_at = True, len(pending)
                    try:
                        parsed = _core.parse_response_head(bytes(pending), head_request)
                    except ValueError as exc:
                        raise httpx.RemoteProtocolError(str(exc)) from None
                    if parsed is not None:
                        consumed, status, reason, headers, length, keep_alive = parsed
                        del pending[:consumed]
                        if status == 101:  # never asked for: the connection speaks another
                            raise httpx.RemoteProtocolError("unexpected 101 Switching Protocols")
                        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: more follows
                            interim += 1
                            if interim > MAX_INTERIM:
                                raise httpx.RemoteProtocolError("too many interim (1xx) responses")
                            line_checked, scanned, parsed_at = False, 0, 0
                            continue
                        return status, reason, headers, length, keep_alive
                scanned = max(0, len(pending) - 2)  # a blank line may straddle two reads
                data = await self.receive()
                if not data:
                    if not received and not pending:
                        raise _ServerClosed
                    raise httpx.RemoteProtocolError("the server closed the connection mid-response")
                received = True
                pending += data
        finally:
            self.buffer = bytes(pending)

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self.stream)


class _ResponseBody(httpx.AsyncByteStream):
    """The body as the caller reads it; the connection goes back to the pool only when the body
    was read to its end and the server allows reuse. Iterating it creates no generator of the
    caller's: stopping early and calling `aclose` finalises everything at once."""

    def __init__(
        self,
        transport: Http1Transport,
        origin: Origin,
        connection: _Connection,
        length: int,
        keep_alive: bool,
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._connection: _Connection | None = connection
        self._keep_alive = keep_alive and length != UNTIL_CLOSE
        self._failed = False
        # A Content-Length body is counted down here: no generator to create and finalise
        # per response. Chunked and read-until-close bodies are generators.
        self._left = max(length, 0)
        self._chunks: AsyncGenerator[bytes, None] | None = None
        if length == CHUNKED:
            self._chunks = self._chunked(connection)
        elif length == UNTIL_CLOSE:
            self._chunks = self._until_close(connection)

    def __aiter__(self) -> _ResponseBody:
        return self

    async def __anext__(self) -> bytes:
        if self._failed:
            raise httpx.StreamError("the body could not be read to its end")
        connection = self._connection
        if connection is None:
            raise StopAsyncIteration
        try:
            if self._chunks is not None:
                return await self._chunks.__anext__()
            if self._left:
                chunk = await self._take(connection, self._left)
                self._left -= len(chunk)
                return chunk
        except StopAsyncIteration:
            pass
        except BaseException:
            # A failed or cancelled read leaves the connection mid-body: it is closed, and the
            # body stays failed (never "complete", never pooled).
            self._failed = True
            self._connection = None
            await connection.aclose()
            raise
        # Read to the end: the connection can carry the next request.
        self._connection = None
        if self._keep_alive and not connection.holds_unread():
            await self._transport._release(self._origin, connection)
        else:
            await connection.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()
        connection, self._connection = self._connection, None
        if connection is not None:  # not read to the end: its state is unknown, close it
            await connection.aclose()

    @staticmethod
    async def _take(connection: _Connection, size: int) -> bytes:
        """Up to `size` (> 0) bytes of body: buffered ones, else those of one read."""
        if not connection.buffer:
            connection.buffer = await connection.receive()
            if not connection.buffer:
                raise httpx.RemoteProtocolError("the server closed the connection mid-body")
        chunk = connection.buffer[:size]
        connection.buffer = connection.buffer[len(chunk) :]
        return chunk

    @staticmethod
    async def _line(connection: _Connection) -> bytes:
        while (end := connection.buffer.find(b"\r\n")) < 0:
            if len(connection.buffer) > MAX_LINE:
                raise httpx.RemoteProtocolError("a chunked-encoding line is too long")
            data = await connection.receive()
            if not data:
                raise httpx.RemoteProtocolError("the server closed the connection mid-body")
            connection.buffer += data
        line, connection.buffer = connection.buffer[:end], connection.buffer[end + 2 :]
        return line

    @classmethod
    async def _chunked(cls, connection: _Connection) -> AsyncGenerator[bytes, None]:
        framing = 0  # bytes of chunk-size lines and trailers

        async def framing_line() -> bytes:
            nonlocal framing
            line = await cls._line(connection)
            framing += len(line) + 2
            if framing > MAX_FRAMING:
                raise httpx.RemoteProtocolError("the chunked encoding's framing is too long")
            return line

        while True:
            size_text = (await framing_line()).split(b";", 1)[0].strip()
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                raise httpx.RemoteProtocolError(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                while await framing_line():  # trailers, up to the blank line
                    pass
                return
            while size > 0:
                chunk = await cls._take(connection, size)
                size -= len(chunk)
                yield chunk
            if await cls._line(connection):
                raise httpx.RemoteProtocolError("a chunk is longer than its size")

    @staticmethod
    async def _until_close(connection: _Connection) -> AsyncGenerator[bytes, None]:
        if connection.buffer:
            chunk, connection.buffer = connection.buffer, b""
            yield chunk
        while chunk := await connection.receive():
            yield chunk


class Http1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive, for httpx. `egress` decides which addresses may be reached
    (default: public addresses only); `ssl_context` replaces the default verifying one."""

    def __init__(
        self,
        *,
        egress: EgressPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_per_origin: int = 100,
        idle_timeout: float = 30.0,
    ) -> None:
        self._egress = egress or EgressPolicy()
        self._ssl_context = ssl_context
        self._max_idle = max_idle_per_origin
        self._idle_timeout = idle_timeout
        self._idle: dict[Origin, list[_Connection]] = {}
        self._closed = False

    def __repr__(self) -> str:
        idle = sum(map(len, self._idle.values()))
        return f"Http1Transport({self._egress!r}, idle_connections={idle})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        status, reason, headers, stream = await self.exchange(
            request.method,
            request.url,
            _framed(request, body),
            body,
            request.extensions.get("timeout", _NO_TIMEOUTS),
        )
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
            request=request,
        )

    async def exchange(
        self,
        method: str,
        url: httpx.URL,
        headers: Headers,
        body: bytes,
        timeouts: Mapping[str, float | None] = _NO_TIMEOUTS,
    ) -> Exchange:
        """One request, as `handle_async_request` sends it, without httpx's objects: `headers`
        are the ones on the wire (Host and Content-Length included) and the answer is its
        status, reason, headers and body stream. Deliveries come this way: a Request and a
        Response with their Headers cost more CPU than the rest of the exchange."""
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"{url.scheme!r} is not http or https")
        host = url.host
        if "%" in host:  # an IPv6 zone, percent-encoded in URLs (RFC 6874): `%25eth0`
            host = unquote(host)
        origin: Origin = (scheme, host, url.port or (443 if scheme == b"https" else 80))
        try:
            data = _core.write_request(method, url.raw_path, headers, body)
        except ValueError as exc:
            raise httpx.LocalProtocolError(str(exc)) from None
        head_request = method == "HEAD"
        connection, reused = await self._checkout(origin, timeouts.get("connect"))
        connection.read_timeout = timeouts.get("read")
        head = None
        try:
            try:
                with _Deadline(timeouts.get("write"), httpx.WriteTimeout):
                    await connection.send(data)
            except httpx.WriteError:
                # The server may have answered and closed before taking it all (413): read
                # that answer. Otherwise, on a connection it had closed while idle, the request
                # never arrived whole: send it once more, on a new connection.
                head = await _answer_after_failed_write(connection, head_request)
                if head is None:
                    if not reused:
                        raise
                    await connection.aclose()
                    connection = await self._connect(origin, timeouts.get("connect"))
                    connection.read_timeout = timeouts.get("read")
                    await connection.send(data)
            if head is None:
                head = await connection.read_head(head_request)
        except _ServerClosed:
            # It may have processed the request: never sent again here (the caller decides).
            await connection.aclose()
            raise httpx.RemoteProtocolError(
                "the server closed the connection without answering"
            ) from None
        except BaseException:
            await connection.aclose()
            raise
        status, reason, response_headers, length, keep_alive = head
        stream = _ResponseBody(self, origin, connection, length, keep_alive)
        return status, reason, response_headers, stream

    async def _checkout(self, origin: Origin, timeout: float | None) -> tuple[_Connection, bool]:
        """An idle connection to `origin` that still looks open, or a new one."""
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < self._idle_timeout and not connection.looks_closed():
                return connection, True
            await connection.aclose()
        return await self._connect(origin, timeout), False

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        try:
            with _Deadline(timeout, httpx.ConnectTimeout):
                addresses = await self._egress.resolve(host, port)  # raises EgressDenied
                stream = await _connect_first(addresses, port)
                if scheme == b"https":
                    context = self._ssl_context or _default_ssl_context()
                    try:
                        stream = await anyio.streams.tls.TLSStream.wrap(
                            stream, hostname=host, ssl_context=context, standard_compatible=False
                        )
                    except BaseException:
                        await anyio.aclose_forcefully(stream)
                        raise
        except (OSError, ssl.SSLError, anyio.BrokenResourceError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return _Connection(stream)

    async def _release(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if self._closed or len(idle) >= self._max_idle:
            await connection.aclose()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await connection.aclose()

    async def __aenter__(self) -> Http1Transport:
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.aclose()


def _framed(request: httpx.Request, body: bytes) -> Headers:
    """The request's headers with the framing the bytes on the wire really have: the whole
    body is sent with a Content-Length (never Transfer-Encoding: a streamed body was read in
    full), and a Content-Length that disagrees with the body is refused."""
    headers: Headers = []
    declared: bytes | None = None
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"content-length":
            declared = value
        elif lowered != b"transfer-encoding":
            headers.append((name, value))
    if declared is not None and declared.strip() != b"%d" % len(body):
        raise httpx.LocalProtocolError(
            f"Content-Length {declared.decode(errors='replace')} but the body is {len(body)} bytes"
        )
    if body or declared is not None or request.method not in ("GET", "HEAD"):
        headers.append((b"Content-Length", b"%d" % len(body)))
    return headers


async def _answer_after_failed_write(connection: _Connection, head_request: bool) -> Head | None:
    """The response a server sent before closing on a request it would not take, if any."""
    with anyio.move_on_after(ANSWER_AFTER_FAILED_WRITE):
        try:
            status, reason, headers, length, _ = await connection.read_head(head_request)
        except (_ServerClosed, httpx.HTTPError):
            return None
        return status, reason, headers, length, False  # the connection is done either way
    return None


async def _connect_first(addresses: list[str], port: int) -> anyio.abc.ByteStream:
    """A TCP connection to the first of the checked `addresses` that answers."""
    connect = _connect_tcp if in_trio_task() else anyio.connect_tcp
    for address in addresses[:-1]:
        with contextlib.suppress(OSError):
            return await connect(address, port)
    return await connect(addresses[-1], port)


async def _connect_tcp(address: str, port: int) -> anyio.abc.SocketStream:
    """A TCP connection to one IP address, on Trio. Not `anyio.connect_tcp`: for a single
    address it still runs its Happy Eyeballs machinery (a task group, a task, an event and a
    timeout), four times the CPU of the connection itself. (On asyncio that one is kept: a
    stream wrapped from a socket there starts reading eagerly, and an idle pooled connection
    would then swallow what a server sends it instead of showing it to `looks_closed`.)"""
    # getaddrinfo of a numeric address does no lookup; it makes the IPv6 zone (`%eth0`) part
    # of the socket address, which a plain (host, port) tuple would lose.
    family, kind, protocol, _, target = socket.getaddrinfo(
        address, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
    )[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect(target)
        except BlockingIOError:  # in progress: done when writable, with SO_ERROR saying how
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error)) from None
        try:
            return await anyio.abc.SocketStream.from_socket(sock)
        except ValueError as exc:  # reset between the connect and the wrapping
            raise ConnectionResetError(str(exc)) from None
    except BaseException:
        sock.close()
        raise


_DEFAULT_SSL: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    """A verifying context (system CAs, hostname check), made once: they are costly to build."""
    global _DEFAULT_SSL
    if _DEFAULT_SSL is None:
        _DEFAULT_SSL = ssl.create_default_context()
    return _DEFAULT_SSL
