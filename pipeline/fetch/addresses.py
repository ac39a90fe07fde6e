"""Address policy: which hosts and IP addresses the fetcher may connect to.

A name is resolved once, every address it resolves to is vetted, and the fetcher then
connects to one of those vetted addresses itself (see `connection.py`), so a DNS answer
that changes between the check and the connect (DNS rebinding) cannot slip through. The
vetting runs again for every redirect hop.

Blocked: private (10/8, 172.16/12, 192.168/16, fc00::/7), shared/CGNAT (100.64/10),
loopback (127/8, ::1), link-local (169.254/16, fe80::/10), multicast, unspecified,
reserved and every other non-global range `ipaddress` knows; the same ranges embedded in
IPv6 (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo); and cloud
metadata endpoints by address and by name. `allowed_networks` exempts addresses (the demo
and the tests allow loopback); metadata endpoints are refused even then.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], list[str]]
"""Maps (host, port) to the IP addresses (as strings) the host resolves to."""

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address, so name it)
    )
)

METADATA_HOSTNAMES: frozenset[str] = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressBlocked(Exception):
    """An address or host name the policy refuses; the message says which rule."""


class ResolutionFailed(Exception):
    """A host name that does not resolve to any usable address."""


def default_resolver(host: str, port: int) -> list[str]:
    """Resolve `host` with the system resolver (`socket.getaddrinfo`), TCP addresses only."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return seen


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse CIDR strings (already validated by `FetchConfig`)."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def why_blocked(address: IPAddress) -> str | None:
    """The rule that blocks `address` (ignoring `allowed_networks`), or None if it is public."""
    if address in METADATA_ADDRESSES:
        return "cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A mapped address reaches exactly its IPv4 address: judge that one alone.
        inner_reason = why_blocked(address.ipv4_mapped)
        return None if inner_reason is None else f"IPv4-mapped {inner_reason}"
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"{name} address"
    inner = embedded_ipv4(address)
    if inner is not None:
        inner_reason = why_blocked(inner)
        if inner_reason is not None:
            return f"{inner_reason} embedded in IPv6 ({inner})"
    return None


class AddressPolicy:
    """Vets host names and resolved addresses against the block list and `allowed_networks`."""

    def __init__(self, allowed_networks: Iterable[str] = ()) -> None:
        self._allowed = parse_networks(allowed_networks)

    def is_allowed_explicitly(self, address: IPAddress) -> bool:
        """Whether `address` (or the IPv4 address it embeds) is inside `allowed_networks`."""
        candidates: list[IPAddress] = [address]
        inner = embedded_ipv4(address)
        if inner is not None:
            candidates.append(inner)
        return any(
            c.version == net.version and c in net for c in candidates for net in self._allowed
        )

    def check_hostname(self, host: str) -> None:
        """Refuse cloud-metadata names before they are ever resolved."""
        name = host.rstrip(".").lower()
        if name in METADATA_HOSTNAMES:
            raise AddressBlocked(f"{host} is a cloud metadata host name")

    def check_address(self, address: IPAddress) -> None:
        """Raise `AddressBlocked` unless `address` may be connected to."""
        inner = embedded_ipv4(address)
        if address in METADATA_ADDRESSES or (inner is not None and inner in METADATA_ADDRESSES):
            raise AddressBlocked(f"{address} is a cloud metadata address")
        if self.is_allowed_explicitly(address):
            return
        reason = why_blocked(address)
        if reason is not None:
            raise AddressBlocked(f"{address} is a {reason}")

    def resolve(self, host: str, port: int, resolver: Resolver) -> list[IPAddress]:
        """Resolve `host` and vet every address; all must pass, or the host is refused.

        Refusing the whole name when any one address is bad (rather than picking a good one)
        keeps a hostile DNS answer from mixing a public and a private address.
        Returns IPv4 addresses first (workers often lack IPv6 routes).
        """
        self.check_hostname(host)
        literal = parse_ip(host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                raw = resolver(host, port)
            except (OSError, UnicodeError) as err:
                raise ResolutionFailed(f"{host} does not resolve: {err}") from err
            addresses = []
            for text in raw:
                parsed = parse_ip(text)
                if parsed is None:
                    raise ResolutionFailed(f"{host} resolved to a non-address {text!r}")
                if parsed not in addresses:
                    addresses.append(parsed)
            if not addresses:
                raise ResolutionFailed(f"{host} resolved to no address")
        for address in addresses:
            self.check_address(address)
        return sorted(addresses, key=lambda a: a.version)


def parse_ip(text: str) -> IPAddress | None:
    """`text` as an IP address (brackets and an IPv6 zone id tolerated), or None."""
    candidate = text.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None
