"""The egress guard: a request may only reach public addresses unless the kit allows more.

The check happens at connect time, inside httpcore's network backend: the host is resolved
once, every address is checked, and the connection goes to the address that was checked, so a
second DNS answer cannot slip a private address past the guard (DNS rebinding). TLS still uses
the host name for SNI and certificate checks.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore
import httpx
import sniffio

from oqronkit.errors import ConfigurationError, EgressDenied

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressPolicy:
    """Which addresses requests may reach."""

    def __init__(self, *, allow_private_networks: bool = False, allow: Iterable[str] = ()) -> None:
        self.allow_private_networks = allow_private_networks
        try:
            self.allowed: tuple[Network, ...] = tuple(
                ipaddress.ip_network(n, strict=False) for n in allow
            )
        except ValueError as exc:
            raise ConfigurationError(f"allow_networks: {exc}") from None

    def __repr__(self) -> str:
        allowed = [str(n) for n in self.allowed]
        private = self.allow_private_networks
        return f"EgressPolicy(allow_private_networks={private}, allow={allowed})"

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if self.allow_private_networks or any(address in n for n in self.allowed):
            return True
        # Globally routable only: this also refuses CGNAT (100.64/10, where some clouds keep
        # their metadata service), benchmarking and documentation ranges.
        return address.is_global and not address.is_multicast

    async def resolve(self, host: str, port: int) -> str:
        """The first address of `host`, after checking that the policy permits every one."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        denied = [a for a in addresses if not self.permits(a)]
        if denied or not addresses:
            raise EgressDenied(
                f"refusing to connect to {host}: it resolves to a non-public address "
                f"({', '.join(map(str, denied))}); allow it with allow_private_networks=True "
                "or allow_networks=[...]"
            )
        return str(addresses[0])


class _GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._backends: dict[str, httpcore.AsyncNetworkBackend] = {}

    @property
    def _inner(self) -> httpcore.AsyncNetworkBackend:
        # httpcore's native Trio backend is several times cheaper per request than its AnyIO
        # one (whose socket attribute lookups dominate a busy pool); asyncio gets AnyIO's.
        library = sniffio.current_async_library()
        backend = self._backends.get(library)
        if backend is None:
            native = httpcore.TrioBackend() if library == "trio" else httpcore.AnyIOBackend()
            backend = self._backends[library] = native
        return backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self._policy.resolve(host, port)
        return await self._inner.connect_tcp(
            address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressDenied("unix sockets are not a webhook destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(policy: EgressPolicy, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's own HTTP/1.1 transport, with every connection checked by `policy`."""
    transport = httpx.AsyncHTTPTransport(limits=limits, retries=0)
    # httpx has no public hook for the network backend; the pool takes one, so rebuild it.
    pool = transport._pool
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=pool._ssl_context,
        max_connections=pool._max_connections,
        max_keepalive_connections=pool._max_keepalive_connections,
        keepalive_expiry=pool._keepalive_expiry,
        http1=True,
        http2=False,
        retries=0,
        network_backend=_GuardedNetworkBackend(policy),
    )
    return transport
