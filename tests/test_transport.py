"""Conformance of OqronKit's HTTP/1.1 transport against real servers on loopback: the stdlib's
`http.server` (scripted to misbehave), a server on `h11`, nginx when installed, and TLS with a
test CA. On Trio and asyncio."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler

import anyio
import httpx
import pytest
import trustme

from oqronkit import EgressDenied, Endpoint, OqronKit
from oqronkit.delivery import Response, Verdict, _parsed, send
from oqronkit.egress import EgressPolicy
from oqronkit.transport import Http1Transport, _connect_first
from tests.servers import H11Server, ScriptedServer, nginx, nginx_binary, reset
from tests.test_dispatch import status_of

pytestmark = pytest.mark.anyio
LOOPBACK = EgressPolicy(allow_private_networks=True)


def raw(text: bytes) -> object:
    def write(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(text)

    return write


def answer(status: int, body: bytes = b"", **headers: str) -> object:
    def write(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        if status not in (204, 304) and "Transfer_Encoding" not in headers:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    return write


def close_after(write: object) -> object:
    def handler(h: BaseHTTPRequestHandler) -> None:
        write(h)  # type: ignore[operator]
        h.close_connection = True

    return handler


closed_quietly = threading.Event()


def silent_close(handler: BaseHTTPRequestHandler) -> None:
    """Answers with keep-alive, then closes the connection anyway (an idle timeout)."""
    answer(204)(handler)  # type: ignore[operator]
    handler.close_connection = True
    closed_quietly.set()


def drip(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        handler.wfile.write(b".")
        handler.wfile.flush()
        threading.Event().wait(0.2)


def dripped_head(handler: BaseHTTPRequestHandler) -> None:
    """Heads a byte at a time: blank lines of either kind straddle reads."""
    for byte in (
        b"HTTP/1.1 103 Early Hints\nLink: </a>\n\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Long: " + b"v" * 300 + b"\r\n\r\nhello"
    ):
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        threading.Event().wait(0.0005)


def echo_host(handler: BaseHTTPRequestHandler) -> None:
    answer(200, handler.headers.get("Host", "").encode())(handler)  # type: ignore[operator]


def stall(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    handler.wfile.flush()
    threading.Event().wait(3)


def reset_mid_body(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
    handler.wfile.flush()
    reset(handler)


def big(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (8 << 20))
    try:
        for _ in range(128):
            handler.wfile.write(b"y" * 65536)
    except OSError:
        handler.close_connection = True  # the client stopped reading and closed: expected


stray_sent = threading.Event()


def stray(handler: BaseHTTPRequestHandler) -> None:
    """Answers 204, then, unasked, a second response on the same connection."""
    answer(204)(handler)  # type: ignore[operator]
    handler.wfile.flush()
    threading.Event().wait(0.05)
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
    handler.wfile.flush()
    stray_sent.set()


def stray_with(size: int) -> object:
    """Answers with a body of `size` bytes and, in the same burst (corked into one write), a
    second response nobody asked for: so the client reads both at once."""

    def handler(h: BaseHTTPRequestHandler) -> None:
        h.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        answer(200, b"x" * size)(h)  # type: ignore[operator]
        h.wfile.flush()
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
        h.wfile.flush()
        h.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

    return handler


def flood(unit: bytes, head: bytes = b"") -> object:
    """Writes `head`, then `unit` over and over until the client goes away."""

    def handler(h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        try:
            h.wfile.write(head)
            for _ in range(100_000):
                h.wfile.write(unit)
        except OSError:
            pass  # the client gave up: expected

    return handler


def swallow(handler: BaseHTTPRequestHandler) -> None:
    """Reads the request and closes without answering (a crash, nginx's 444)."""
    handler.close_connection = True


ROUTES = {
    "/stray": stray,
    "/swallow": swallow,
    "/stray-burst": stray_with(2),
    "/endless-trailers": flood(
        b"X-Trailer: " + b"t" * 1000 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n",
    ),
    "/endless-interim": flood(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
    "/endless-chunk-extensions": flood(
        b"1;" + b"e" * 1000 + b"\r\nx\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    ),
    "/upgrade": raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\n\r\n"),
    "/length": answer(200, b"hello"),
    "/chunked": raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    ),
    "/close": answer(200, b"ok", Connection="close"),
    "/no-content": answer(204),
    "/not-modified": answer(304, ETag='"x"'),
    "/continue": raw(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    ),
    "/until-close": close_after(raw(b"HTTP/1.1 200 OK\r\n\r\nall of it")),
    "/silent-close": silent_close,
    "/drip": drip,
    "/dripped-head": dripped_head,
    "/echo-host": echo_host,
    "/stall": stall,
    "/reset": reset_mid_body,
    "/big": big,
    "/smuggle": raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    running = ScriptedServer(ROUTES)  # type: ignore[arg-type]
    yield running
    running.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=Http1Transport(egress=LOOPBACK)) as http:
        yield http


async def test_length_and_chunked_bodies_on_one_kept_alive_connection(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    first = await client.post(server.url + "/length", content=b'{"n":1}')
    second = await client.get(server.url + "/chunked")
    third = await client.post(server.url + "/length", content=b"{}")
    assert (first.status_code, first.text, first.http_version) == (200, "hello", "HTTP/1.1")
    assert (second.status_code, second.text) == (200, "hello world")
    assert third.text == "hello"
    ports = {port for _, port in server.seen}
    assert len(ports) == 1  # every request on the same connection


async def test_connection_close_and_until_close_bodies_are_not_reused(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    assert (await client.get(server.url + "/close")).text == "ok"
    assert (await client.get(server.url + "/until-close")).text == "all of it"
    assert (await client.get(server.url + "/length")).text == "hello"
    assert len({port for _, port in server.seen}) == 3


async def test_bodiless_answers(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    for path, status in (("/no-content", 204), ("/not-modified", 304), ("/continue", 200)):
        response = await client.get(server.url + path)
        assert response.status_code == status
    assert (await client.head(server.url + "/length")).content == b""
    assert (await client.get(server.url + "/length")).text == "hello"  # still in step
    assert len({port for _, port in server.seen}) == 1


async def test_a_head_dripped_byte_by_byte(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    response = await client.get(server.url + "/dripped-head")
    assert (response.status_code, response.text) == (200, "hello")
    assert response.headers["x-long"] == "v" * 300
    assert (await client.get(server.url + "/length")).text == "hello"  # still in step


def link_local_address() -> tuple[str, str] | None:
    """A link-local IPv6 address of this machine and its interface's name, if it has one."""
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as table:
        for line in table:
            hexa, _, _, scope, _, name = line.split()
            if scope == "20":  # link
                return str(ipaddress.IPv6Address(bytes.fromhex(hexa))), name
    return None


async def test_an_ipv6_zone_in_the_url_reaches_the_socket(client: httpx.AsyncClient) -> None:
    # RFC 6874: `[addr%25zone]` in a URL is the address on interface `zone`.
    found = link_local_address()
    if found is None:
        pytest.skip("no link-local IPv6 address here")
    address, interface = found
    v6 = ScriptedServer(ROUTES, host=f"{address}%{interface}")  # type: ignore[arg-type]
    try:
        url = f"http://[{address}%25{interface}]:{v6.port}"
        assert (await client.get(url + "/length")).text == "hello"
        async with Http1Transport(egress=LOOPBACK) as transport:  # as deliveries go
            response = await post(transport, url + "/echo-host")
        assert response.body == f"[{address}]:{v6.port}"  # the zone is never sent
    finally:
        v6.close()


def test_a_percent_25_in_a_host_name_is_left_alone() -> None:
    # Only an IPv6 literal has a zone to strip from the Host header.
    assert _parsed("http://a%25b.example/x")[1] == b"a%25b.example"
    assert _parsed("http://[fe80::1%25eth0]:8080/x")[1] == b"[fe80::1]:8080"


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    closed_quietly.clear()
    assert (await client.get(server.url + "/silent-close")).status_code == 204
    await anyio.to_thread.run_sync(closed_quietly.wait, 5)
    with anyio.fail_after(5):
        while len(server.seen) == 1:  # the idle socket turns readable once the FIN arrives
            response = await client.get(server.url + "/length")
            assert response.text == "hello"
    first, second = (port for _, port in server.seen[:2])
    assert first != second


async def post(transport: Http1Transport, url: str, body_cap: int = 1000) -> Response:
    """One delivery-style POST of `{}` through `send`, as the dispatcher makes it."""
    return await send(
        transport, "POST", url, [], b"{}", body_cap=body_cap, started=anyio.current_time()
    )


async def test_the_delivery_cap_stops_reading_and_drops_the_connection(
    server: ScriptedServer,
) -> None:
    async with Http1Transport(egress=LOOPBACK) as transport:
        response = await post(transport, server.url + "/big")
        assert response.status == 200 and response.body == "y" * 1000
        again = await post(transport, server.url + "/length")
        assert again.body == "hello"
    assert server.ports("/big") != server.ports("/length")  # not reused mid-body


async def test_a_slow_drip_hits_the_deadline(server: ScriptedServer) -> None:
    """The caller's scope bounds the whole exchange (the dispatcher's worker scope does)."""
    async with Http1Transport(egress=LOOPBACK) as transport:
        with anyio.move_on_after(0.5) as deadline:
            await post(transport, server.url + "/drip")
        assert deadline.cancelled_caught
        again = await post(transport, server.url + "/length")
    assert again.verdict is Verdict.DELIVERED and again.body == "hello"
    assert server.ports("/drip") != server.ports("/length")  # cut mid-body: never reused


# In its own process, so that its bytes keep coming while the client runs (a server thread
# here would wait for the client to release the GIL).
FLOOD_SERVER = """
import socket, sys, time
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
connection, _ = listener.accept()
connection.recv(65536)
until = time.monotonic() + 4
try:
    connection.sendall(b"HTTP/1.1 200 OK\\r\\n\\r\\n")  # a body read until the server closes
    while time.monotonic() < until:
        connection.sendall(b"y" * 65536)
except OSError:
    pass
"""


@pytest.fixture
def flood_server() -> Iterator[str]:
    with subprocess.Popen(
        [sys.executable, "-c", FLOOD_SERVER], stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{process.stdout.readline().strip()}"
        process.kill()


async def test_a_flood_of_bytes_always_there_to_read_hits_the_deadline(flood_server: str) -> None:
    """Bytes that are always there to read must not keep the reader from yielding: the
    deadline (and every other task) runs only when it does."""
    async with Http1Transport(egress=LOOPBACK) as transport:
        started = time.monotonic()
        with anyio.move_on_after(0.5) as deadline:
            await post(transport, flood_server, body_cap=1 << 40)
    assert deadline.cancelled_caught
    assert time.monotonic() - started < 2.0  # the flood lasts 4 s


async def test_reset_mid_body_and_conflicting_lengths_are_errors(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.get(server.url + "/reset")
    with pytest.raises(httpx.RemoteProtocolError, match="conflicting Content-Length"):
        await client.get(server.url + "/smuggle")
    assert (await client.get(server.url + "/length")).text == "hello"


async def test_a_cancelled_request_closes_only_its_own_connection(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    with anyio.move_on_after(0.3):
        await client.get(server.url + "/drip")
    results = []
    async with anyio.create_task_group() as tg:
        for _ in range(5):

            async def fetch() -> None:
                results.append((await client.get(server.url + "/length")).text)

            tg.start_soon(fetch)
    assert results == ["hello"] * 5


async def test_header_injection_is_refused_before_sending(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    request = httpx.Request("POST", server.url + "/length", headers={"X-Ok": "1"})
    request.headers._list.append((b"X-Evil", b"x-evil", b"a\r\nInjected: 1"))
    with pytest.raises(httpx.LocalProtocolError, match="control character"):
        await client.send(request)
    assert server.seen == []


async def test_egress_is_checked_at_connect_time(server: ScriptedServer) -> None:
    async with httpx.AsyncClient(transport=Http1Transport()) as guarded:
        with pytest.raises(EgressDenied, match="non-public address"):
            await guarded.get(server.url + "/length")
        with pytest.raises(EgressDenied):
            await guarded.get(f"http://localhost:{server.port}/length")
    assert server.seen == []


async def test_h11_server_chunked_and_length_with_reuse() -> None:
    h11_server = H11Server()
    try:
        async with httpx.AsyncClient(transport=Http1Transport(egress=LOOPBACK)) as http:
            assert (await http.get(h11_server.url + "/chunked")).text == "h11 says hi"
            assert (await http.post(h11_server.url + "/x", content=b"{}")).text == "h11 says hi"
            assert (await http.get(h11_server.url + "/chunked")).text == "h11 says hi"
        assert len(h11_server.ports) == 3 and len(set(h11_server.ports)) == 1
    finally:
        h11_server.close()


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")
async def test_nginx_keep_alive_and_a_large_body() -> None:
    with nginx() as base:
        async with httpx.AsyncClient(transport=Http1Transport(egress=LOOPBACK)) as http:
            for _ in range(3):
                assert (await http.post(base + "/hook", content=b"x" * 1024)).status_code == 204
            big_body = await http.get(base + "/big")
            assert big_body.status_code == 200 and big_body.content == b"x" * (1 << 20)
            assert (await http.post(base + "/hook", content=b"{}")).status_code == 204


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[ScriptedServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    running = ScriptedServer(ROUTES, tls=context)  # type: ignore[arg-type]
    yield running
    running.close()


async def test_tls_verifies_certificates_by_default(tls_server: ScriptedServer) -> None:
    url = f"https://localhost:{tls_server.port}/length"
    async with httpx.AsyncClient(transport=Http1Transport(egress=LOOPBACK)) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(url)


async def test_tls_with_the_right_ca(tls_server: ScriptedServer, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = f"https://localhost:{tls_server.port}"
    transport = Http1Transport(egress=LOOPBACK, ssl_context=context)
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.get(url + "/length")).text == "hello"
        assert (await http.get(url + "/chunked")).text == "hello world"
    assert len({port for _, port in tls_server.seen}) == 1


async def test_only_plain_tcp_on_trio_uses_its_socket_directly(
    server: ScriptedServer, tls_server: ScriptedServer, ca: trustme.CA, anyio_backend: str
) -> None:
    """On asyncio the event loop owns the socket, and under TLS the bytes are the TLS
    layer's: reading the socket there would steal them."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with Http1Transport(egress=LOOPBACK, ssl_context=context) as transport:
        for base in (server.url, f"https://localhost:{tls_server.port}"):
            response = await transport.handle_async_request(httpx.Request("GET", base + "/length"))
            assert await response.aread() == b"hello"
        plain, tls = (idle[0] for idle in transport._idle.values())
        assert (plain.direct is not None) == (anyio_backend == "trio")
        assert tls.direct is None


async def test_a_kit_delivers_over_tls_with_its_ssl_context(
    tls_server: ScriptedServer, ca: trustme.CA
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    kit = OqronKit("memory://", allow_private_networks=True, ssl_context=context)
    url = f"https://localhost:{tls_server.port}/length"
    hook = kit.webhook("w", endpoints=[Endpoint("tls", url, ["**"])])
    async with kit:
        [delivery_id] = await hook.fire("e", {})
        delivered = await status_of(kit, delivery_id, "completed")
    assert delivered.attempts[0].response_body == "hello"


async def test_a_streamed_body_is_sent_with_a_content_length_never_unframed(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    async def smuggler() -> AsyncIterator[bytes]:
        yield b"0\r\n\r\nGET /no-content HTTP/1.1\r\nHost: x\r\n\r\n"

    assert (await client.post(server.url + "/length", content=smuggler())).text == "hello"
    assert [path for path, _ in server.seen] == ["/length"]  # one request, not two
    with pytest.raises(httpx.LocalProtocolError, match="Content-Length 2 but the body is 5"):
        await client.post(server.url + "/length", content=b"12345", headers={"Content-Length": "2"})


async def test_bytes_no_request_asked_for_retire_the_connection(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    stray_sent.clear()
    assert (await client.get(server.url + "/stray")).status_code == 204
    await anyio.to_thread.run_sync(stray_sent.wait, 5)
    await anyio.sleep(0.05)  # the stray bytes are on their way over loopback
    assert (await client.get(server.url + "/length")).text == "hello"  # not "stale"
    stray_port, length_port = server.ports("/stray")[0], server.ports("/length")[0]
    assert stray_port != length_port


async def test_bytes_read_along_with_an_answer_retire_the_connection(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    assert (await client.get(server.url + "/stray-burst")).status_code == 200
    assert (await client.get(server.url + "/length")).text == "hello"  # not "stale"
    assert server.ports("/stray-burst") != server.ports("/length")


async def test_an_idle_connection_holding_bytes_in_a_layer_under_it_looks_closed(
    server: ScriptedServer, tls_server: ScriptedServer, ca: trustme.CA
) -> None:
    """Stray bytes a layer under the transport already read off the socket (anyio's TLS
    stream; asyncio's socket stream, which reads up to 256 KiB and hands out 64 KiB) are
    where `select` cannot see them: the connection must still never carry a request."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    stray_sent.clear()
    async with Http1Transport(egress=LOOPBACK, ssl_context=context) as transport:
        for base in (server.url, f"https://localhost:{tls_server.port}"):
            response = await transport.handle_async_request(httpx.Request("GET", base + "/stray"))
            await response.aread()
            await anyio.to_thread.run_sync(stray_sent.wait, 5)
            stray_sent.clear()
        await anyio.sleep(0.1)  # the stray responses are in
        for [connection] in transport._idle.values():
            assert await connection.stream.receive(1) == b"H"  # the layers hold the rest
            assert connection.looks_closed()


async def test_bytes_a_tls_stream_read_along_with_an_answer_retire_the_connection(
    tls_server: ScriptedServer, ca: trustme.CA
) -> None:
    """Under TLS the stray bytes sit in the TLS layer (not yet decrypted), not in the socket."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = f"https://localhost:{tls_server.port}"
    async with httpx.AsyncClient(
        transport=Http1Transport(egress=LOOPBACK, ssl_context=context)
    ) as http:
        assert (await http.get(url + "/stray-burst")).text == "xx"
        assert (await http.get(url + "/length")).text == "hello"  # not "stale"
    assert tls_server.ports("/stray-burst") != tls_server.ports("/length")


@pytest.mark.parametrize(
    "path", ["/endless-trailers", "/endless-interim", "/endless-chunk-extensions"]
)
async def test_a_flood_of_framing_ends_the_response_long_before_its_deadline(
    server: ScriptedServer, client: httpx.AsyncClient, path: str
) -> None:
    """Trailers, interim answers and chunk extensions are not body: the body cap does not
    bound them, so the transport does (a reader would otherwise read until the deadline)."""
    with anyio.fail_after(10):
        with pytest.raises(httpx.RemoteProtocolError, match=r"too long|too many"):
            async with client.stream("GET", server.url + path) as response:
                async for _ in response.aiter_raw():
                    pass


async def test_stray_bytes_retire_the_connection_even_when_the_answer_came_first() -> None:
    """The answer is in the socket before the first read (the server answers without waiting
    for the request), so no read ever waits; stray bytes must still show on the idle socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            for _ in range(2):
                connection, _ = listener.accept()
                with connection:
                    connection.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
                    time.sleep(0.1)
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
                    time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    async with httpx.AsyncClient(transport=Http1Transport(egress=LOOPBACK)) as client:
        await anyio.sleep(0.05)  # the first answer is waiting before the request is read
        first = await client.get(f"http://127.0.0.1:{port}/a")
        await anyio.sleep(0.3)  # the stray response reaches the idle, pooled connection
        second = await client.get(f"http://127.0.0.1:{port}/b")
    assert (first.status_code, second.status_code) == (204, 204)  # never "200 stale"


async def test_a_body_that_failed_stays_failed_and_its_connection_is_dropped(
    server: ScriptedServer,
) -> None:
    async with Http1Transport(egress=LOOPBACK) as transport:
        response = await transport.handle_async_request(httpx.Request("GET", server.url + "/drip"))
        body = response.stream
        assert isinstance(body, httpx.AsyncByteStream)
        with anyio.move_on_after(0.3):
            async for _ in body:
                pass
        with pytest.raises(httpx.StreamError):
            await body.__aiter__().__anext__()
        await response.aclose()
        again = await transport.handle_async_request(httpx.Request("GET", server.url + "/length"))
        assert (await again.aread()) == b"hello"
    assert server.ports("/length")[0] != server.ports("/drip")[0]


async def test_unasked_upgrades_and_unanswered_requests_are_errors_never_resent(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="101"):
        await client.get(server.url + "/upgrade")
    assert (await client.get(server.url + "/length")).text == "hello"
    with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
        await client.post(server.url + "/swallow", content=b'{"charge": 100}')  # reused
    assert len(server.ports("/swallow")) == 1  # the server may have acted on it: not resent


async def test_read_timeouts_cover_the_body_and_unknown_hosts_are_connect_errors(
    server: ScriptedServer,
) -> None:
    transport = Http1Transport(egress=LOOPBACK)
    async with httpx.AsyncClient(transport=transport, timeout=0.5) as http:
        with anyio.fail_after(5), pytest.raises(httpx.ReadTimeout):
            await http.get(server.url + "/stall")  # the head, then nothing
        with pytest.raises(httpx.ConnectError):
            await http.get("http://no-such-host.invalid/")


async def test_a_refused_address_falls_through_to_the_next(server: ScriptedServer) -> None:
    # The server listens on 127.0.0.1 only: ::1 is refused (or has no IPv6 at all).
    stream = await _connect_first(["::1", "127.0.0.1"], server.port)
    async with stream:
        await stream.send(b"GET /length HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await stream.receive()).startswith(b"HTTP/1.1 200")
    with socket.socket() as spare:  # a port nothing listens on
        spare.bind(("127.0.0.1", 0))
        closed_port = spare.getsockname()[1]
    async with Http1Transport(egress=LOOPBACK) as transport:
        with pytest.raises(httpx.ConnectError, match=r"cannot connect to 127\.0\.0\.1"):
            request = httpx.Request("GET", f"http://127.0.0.1:{closed_port}/")
            await transport.handle_async_request(request)


@pytest.mark.parametrize(
    "address",
    ["::127.0.0.1", "::ffff:0:127.0.0.1", "64:ff9b::127.0.0.1", "2002:7f00:1::", "::ffff:10.0.0.1"],
)
def test_ipv6_addresses_carrying_a_private_ipv4_are_refused(address: str) -> None:
    import ipaddress

    assert not EgressPolicy().permits(ipaddress.ip_address(address))
    assert EgressPolicy().permits(ipaddress.ip_address("64:ff9b::8.8.8.8"))
