"""The egress guard: a request may only reach public addresses unless the kit allows more.

OqronKit's transport applies it at connect time: the host is resolved once, every address is
checked, and the connection goes to the address that was checked, so a second DNS answer cannot
slip a private address past the guard (DNS rebinding). TLS still uses the host name for SNI and
certificate checks. A transport passed in by the user is theirs: it is not guarded.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import anyio

from oqronkit.errors import ConfigurationError, EgressDenied

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressPolicy:
    """Which addresses requests may reach."""

    def __init__(self, *, allow_private_networks: bool = False, allow: Iterable[str] = ()) -> None:
        # Only a real bool: "false" from an environment variable is truthy, and would open
        # every private address.
        if not isinstance(allow_private_networks, bool):
            raise ConfigurationError(
                f"allow_private_networks must be True or False, not {allow_private_networks!r}"
            )
        if isinstance(allow, str):
            raise ConfigurationError(f"allow_networks is a list of networks, not {allow!r}")
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
        address = _embedded_ipv4(address) or address  # judged by the IPv4 it leads to
        if self.allow_private_networks or any(address in n for n in self.allowed):
            return True
        # Globally routable only: this also refuses CGNAT (100.64/10, where some clouds keep
        # their metadata service), benchmarking and documentation ranges. `is_global` alone is
        # not enough (its tables vary with the Python version, and 3.11 counts site-local
        # fec0::/10 as global): IPv6 must be global unicast, and a few more ranges are named.
        if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST:
            return False
        return (
            address.is_global
            and not address.is_multicast
            and not any(address in network for network in _NOT_PUBLIC)
        )

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address of `host`, after checking that the policy permits each one."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        denied = [a for a in addresses if not self.permits(a)]
        if denied or not addresses:
            raise EgressDenied(
                f"refusing to connect to {host}: it resolves to a non-public address "
                f"({', '.join(map(str, denied))}); allow it with allow_private_networks=True "
                "or allow_networks=[...]"
            )
        return [str(a) for a in addresses]


_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# Special-purpose ranges (IANA's registries) that some Python versions count as global.
_NOT_PUBLIC: tuple[Network, ...] = (
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.IPv4Network("192.88.99.0/24"),  # 6to4 relay anycast (deprecated)
    ipaddress.IPv6Network("3fff::/20"),  # documentation
    ipaddress.IPv6Network("2001::/23"),  # IETF protocol assignments (Teredo and more)
)

# IPv6 ranges whose last 32 bits are an IPv4 address the packet ends up at.
_CARRYING_IPV4 = (
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT)
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # NAT64, local-use prefix
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated)
)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, translated, NAT64, compatible, 6to4)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.sixtofour is not None:
        return address.sixtofour
    if int(address) > 1 and any(address in network for network in _CARRYING_IPV4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
