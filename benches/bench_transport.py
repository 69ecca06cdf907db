"""The HTTP transport alone: POST a 1 KB JSON body to nginx on loopback, 64 requests in flight,
one client process, each contender measured in a fresh child process one after another:

- ours: `Http1Transport.handle_async_request` under Trio, as the dispatcher calls it (an
  `httpx.Request` per request from a parsed URL, byte headers and a `ByteStream`; the body
  stream read and closed);
- httpx's default transport (`httpx.AsyncHTTPTransport`) called the same way, under Trio;
- aiohttp under asyncio (`ClientSession.post`, a connector of 64);
- the floor: a hand-written keep-alive client on plain anyio streams (prebuilt request bytes,
  the response read up to its Content-Length; no parsing beyond that).

Targets: ours >= 10x httpx's transport and >= 2x aiohttp. Needs nginx (Debian: nginx-light).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _harness import Row, Settings, info_row, main, speed_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import nginx, nginx_binary  # noqa: E402

IN_FLIGHT = 64
BODY = b'{"event":"order.created","pad":"' + b"x" * 990 + b'"}'

# Ours and httpx's transport are driven by the same code; only the transport differs.
HTTPX_TRANSPORT = """
import trio, httpx
{setup}
async def run(url, count, body, in_flight):
    transport = {transport}
    target = httpx.URL(url)
    headers = [(b"Host", target.netloc), (b"Content-Type", b"application/json"),
               (b"Content-Length", b"%d" % len(body))]
    left = [count]
    async def worker():
        while left[0] > 0:
            left[0] -= 1
            request = httpx.Request("POST", target, headers=headers, stream=httpx.ByteStream(body))
            request.read()
            response = await transport.handle_async_request(request)
            async for _ in response.stream:
                pass
            await response.stream.aclose()
            assert response.status_code == 204
    async with transport, trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker)
RUN = lambda *a: trio.run(run, *a)
"""

CONTENDERS = {
    "ours": HTTPX_TRANSPORT.format(
        setup="from oqronkit.egress import EgressPolicy\n"
        "from oqronkit.transport import Http1Transport",
        transport="Http1Transport(egress=EgressPolicy(allow_private_networks=True))",
    ),
    "httpx": HTTPX_TRANSPORT.format(
        setup="",
        transport="httpx.AsyncHTTPTransport(limits=httpx.Limits("
        "max_connections=in_flight, max_keepalive_connections=in_flight))",
    ),
    "aiohttp": """
import asyncio, aiohttp
async def run(url, count, body, in_flight):
    left = [count]
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker():
            while left[0] > 0:
                left[0] -= 1
                async with session.post(url, data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    assert r.status == 204
        await asyncio.gather(*(worker() for _ in range(in_flight)))
RUN = lambda *a: asyncio.run(run(*a))
""",
    "floor": """
import anyio
from urllib.parse import urlsplit
async def run(url, count, body, in_flight):
    parts = urlsplit(url)
    request = (b"POST %s HTTP/1.1\\r\\nHost: %s\\r\\nContent-Type: application/json\\r\\n"
               b"Content-Length: %d\\r\\n\\r\\n" % (parts.path.encode(), parts.netloc.encode(),
               len(body))) + body
    left = [count]
    async def worker():
        async with await anyio.connect_tcp(parts.hostname, parts.port) as stream:
            buffer = b""
            while left[0] > 0:
                left[0] -= 1
                await stream.send(request)
                while (end := buffer.find(b"\\r\\n\\r\\n")) < 0:
                    buffer += await stream.receive()
                head, buffer = buffer[:end], buffer[end + 4:]
                assert head.startswith(b"HTTP/1.1 204")
    async with anyio.create_task_group() as tg:
        for _ in range(in_flight):
            tg.start_soon(worker)
RUN = lambda *a: anyio.run(run, *a, backend="trio")
""",
}

CHILD = """
import sys, time
{code}
url, count, in_flight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = {body!r}
RUN(url, count // 10, body, in_flight)  # warm up
start = time.perf_counter()
RUN(url, count, body, in_flight)
print(time.perf_counter() - start)
"""


def measure(name: str, url: str, count: int) -> float:
    """Seconds for `count` requests by contender `name`, in a fresh process."""
    script = CHILD.format(code=CONTENDERS[name], body=BODY)
    out = subprocess.run(
        [sys.executable, "-c", script, url, str(count), str(IN_FLIGHT)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return float(out.stdout.strip().splitlines()[-1])


def run(settings: Settings) -> list[Row]:
    if nginx_binary() is None:
        return [info_row("transport alone: skipped, nginx is not installed", 0.0, "x")]
    count = 2_000 if settings.quick else 20_000
    best = dict.fromkeys(CONTENDERS, float("inf"))
    with nginx() as base:
        url = base + "/hook"
        for _ in range(1 if settings.quick else 3):
            for name in CONTENDERS:
                best[name] = min(best[name], measure(name, url, count))
    per = {name: seconds * 1e9 / count for name, seconds in best.items()}
    return [
        info_row(
            "transport alone, requests/s, ours (POST 1 KB to nginx, 64 in flight)",
            count / best["ours"],
            "/s",
        ),
        speed_row(
            "transport alone per request vs httpx.AsyncHTTPTransport (Trio)",
            per["ours"],
            per["httpx"],
            10.0,
        ),
        speed_row(
            "transport alone per request vs aiohttp (asyncio)", per["ours"], per["aiohttp"], 2.0
        ),
        speed_row(
            "transport alone per request vs a bare anyio-streams client (the floor)",
            per["ours"],
            per["floor"],
            0.0,
            informational=True,
        ),
    ]


if __name__ == "__main__":
    main(run, __doc__)
