"""Real servers on loopback for the tests and the benchmarks: nginx (Debian's package, when
installed), a server on `h11`, a stdlib one whose paths misbehave in the ways receivers do, and
throwaway Redis and PostgreSQL instances (own data folder and port, stopped afterwards), and a
proxy that cuts connections without a word."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import h11

POSTGRES_BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {folder};
    server {{
        listen 127.0.0.1:{port};
        location = /big {{ root {folder}; try_files /big.bin =404; }}
        location / {{ return 204; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    return found or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@contextmanager
def nginx() -> Iterator[str]:
    """A throwaway nginx on loopback: 204 everywhere, a 1 MiB file at /big. Yields its URL."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "big.bin").write_bytes(b"x" * (1 << 20))
        conf = Path(folder) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(folder=folder, port=port))
        server = subprocess.Popen([binary, "-c", str(conf), "-p", folder])
        try:
            _wait_for_port(port, server, "nginx")
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    for _ in range(1500):
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited at start with code {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise RuntimeError(f"{name} did not listen on port {port} within 15 s")


def redis_binary() -> str | None:
    return shutil.which("redis-server")


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway Redis on loopback, without persistence. Yields its URL."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
             "--save", "", "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for_port(port, server, "redis-server")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait()


def postgres_binaries() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them off the PATH)."""
    return next((b for b in POSTGRES_BINARIES if (b / "initdb").exists()), None)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on loopback, trusting local connections, tuned for tests
    (no fsync). Yields its URL. PostgreSQL refuses to run as root, so as root it runs as the
    `postgres` user that Debian's package creates."""
    binaries = postgres_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    as_user: list[str] = []
    folder = tempfile.mkdtemp(prefix="oqronkit-pg-")
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data, port = Path(folder) / "data", free_port()
    try:
        subprocess.run(
            [*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "postgres",
             "-A", "trust", "--no-sync", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        server = subprocess.Popen(
            [*as_user, str(binaries / "postgres"), "-D", str(data), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={folder}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for_port(port, server, "postgres")
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class H11Server:
    """A keep-alive server on h11: `GET|POST /chunked` answers a chunked body, anything else
    `Content-Length`. Records the client port of every request (to see connection reuse)."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                sock, address = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(sock, address[1]), daemon=True).start()

    def _connection(self, sock: socket.socket, port: int) -> None:
        conn = h11.Connection(h11.SERVER)
        with sock:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = sock.recv(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    self.ports.append(port)
                    target = event.target
                elif isinstance(event, h11.EndOfMessage):
                    body = b"h11 says hi"
                    if target == b"/chunked":
                        headers = [("Transfer-Encoding", "chunked")]
                        parts = [h11.Data(data=body[:3]), h11.Data(data=body[3:])]
                    else:
                        headers = [("Content-Length", str(len(body)))]
                        parts = [h11.Data(data=body)]
                    out = conn.send(h11.Response(status_code=200, headers=headers)) or b""
                    for part in parts:
                        out += conn.send(part) or b""
                    out += conn.send(h11.EndOfMessage()) or b""
                    sock.sendall(out)
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return

    def close(self) -> None:
        self._listener.close()


Handler = Callable[[BaseHTTPRequestHandler], None]


class ScriptedServer:
    """A stdlib server where each path is a function writing a raw answer to the socket. Set
    `tls` to serve HTTPS with that context. Records (path, client port) per request."""

    def __init__(
        self, routes: dict[str, Handler], tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.seen: list[tuple[str, int]] = []
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (ConnectionError, OSError):
                    self.close_connection = True

            def _route(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.seen.append((self.path, self.client_address[1]))
                routes[self.path](self)
                self.wfile.flush()

            do_GET = do_POST = do_HEAD = _route

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        # getaddrinfo keeps an IPv6 zone (`%eth0`) as the address's scope id.
        address = socket.getaddrinfo(host, 0, Server.address_family, socket.SOCK_STREAM)[0][4]
        self._server = Server(address, RequestHandler)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        scheme = "https" if tls else "http"
        self.port = self._server.server_address[1]
        self.url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def ports(self, path: str) -> list[int]:
        return [port for seen_path, port in self.seen if seen_path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def reset(handler: BaseHTTPRequestHandler) -> None:
    """Closes the connection with a TCP RST (SO_LINGER 0), as a crashed server would."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True


class CuttableProxy:
    """A TCP proxy in front of a server. `cut()` silences every connection open at that moment
    for good (nothing forwarded, nothing closed), as a failover or a dropped route leaves them,
    and new ones too until `restore()`; connections made after `restore()` work. `lag` holds
    every answer from the server that many seconds (a slow link)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 0)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))
        self._generation = 0  # connections of an earlier generation stay silent
        self._silent = threading.Event()
        self._closed = threading.Event()
        self.lag = 0.0
        threading.Thread(target=self._serve, daemon=True).start()

    def cut(self) -> None:
        self._generation += 1
        self._silent.set()

    def restore(self) -> None:
        self._silent.clear()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:  # the server is down: so is this connection
                client.close()
                continue
            args = (client, upstream, self._generation)
            threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket, generation: int) -> None:
        # A side that closes, even with a reset (a client closing with bytes unread), ends it.
        with client, upstream, contextlib.suppress(ConnectionError):
            while not self._closed.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.05)
                if generation != self._generation or self._silent.is_set():
                    continue  # silent: leave the bytes where they are, and the socket open
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is upstream:
                        time.sleep(self.lag)
                    (upstream if source is client else client).sendall(data)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
