"""Which URLs the fetch stage may request: a guard against a hostile web (SSRF).

Photo URLs come from data anyone could have written. A URL (or a redirect) pointing at a
cloud metadata service, the cluster's own network or the machine itself must never be
requested, so every destination is checked on the address it resolves to, before any
connection, and again after every redirect. The caller then connects to the checked
address, so a second DNS answer cannot swap in another one (DNS rebinding).

Statuses (part of the fetch stage's closed set): bad_url, blocked_address, dns_error.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list]


class RefusedError(Exception):
    """A URL the fetcher must not request; `status` is the images table's status."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower-case, IPv6 without brackets
    port: int
    path: str  # path and query, never empty

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse_target(url: str) -> Target:
    """Split a URL into what the fetcher needs, refusing what it must not request."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise RefusedError("bad_url", f"unparseable URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise RefusedError("bad_url", f"scheme {scheme or '(none)'!r} is not http or https")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL would be sent to whoever the data points at.
        raise RefusedError("bad_url", "URL carries credentials")
    host = (parts.hostname or "").lower()
    if not host:
        raise RefusedError("bad_url", "URL has no host")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme, host, port or DEFAULT_PORTS[scheme], path)


def blocked_reason(ip: IPAddress) -> str | None:
    """Why an address must not be contacted, or None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return blocked_reason(ip.ipv4_mapped)
    # Most specific first: Python's "private" table also covers link-local and more.
    checks = (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    )
    for name, hit in checks:
        if hit:
            return name
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges, ...
        return "not globally routable"
    return None


class AddressGuard:
    """Resolves hosts and vets the addresses; `allow_hosts` opens named exceptions."""

    def __init__(self, allow_hosts: Iterable[str] = (), resolver: Resolver | None = None):
        self.allow_hosts = frozenset(_norm_host(h) for h in allow_hosts)
        self._resolve = resolver or socket.getaddrinfo

    def allowed_by_user(self, target: Target) -> bool:
        return target.host in self.allow_hosts or target.host_port in self.allow_hosts

    def addresses(self, target: Target) -> list[str]:
        """The addresses to connect to for `target`, all vetted; raises RefusedError."""
        literal = _ip_literal(target.host)
        if literal is not None:
            ips = [literal]
        else:
            try:
                infos = self._resolve(target.host, target.port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError, OSError) as e:
                raise RefusedError("dns_error", f"{target.host}: {e}") from None
            ips = list(dict.fromkeys(ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos))
            if not ips:
                raise RefusedError("dns_error", f"{target.host}: no address")
        if not self.allowed_by_user(target):
            # Every answer must be public: a mix of public and private answers is how
            # rebinding attacks hide the private one.
            for ip in ips:
                reason = blocked_reason(ip)
                if reason:
                    raise RefusedError("blocked_address", f"{target.host} -> {ip} ({reason})")
        return [str(ip) for ip in ips]


def _norm_host(h: str) -> str:
    h = h.strip().lower()
    if h.startswith("[") and "]" in h:  # [::1] or [::1]:8080
        inner, _, rest = h[1:].partition("]")
        return f"[{inner}]{rest}" if rest else inner
    return h


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
