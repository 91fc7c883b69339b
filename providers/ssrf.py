"""The SSRF guard: outgoing requests reach public addresses only, unless ``SSRF_ALLOWLIST`` opens one.

A host is resolved once; every address it resolves to must be public (not loopback, private,
link-local, multicast, reserved, unspecified, shared or a cloud-metadata endpoint, in IPv4 or IPv6,
including IPv4 embedded in IPv6). The socket then connects to the address that was checked, so a
DNS answer that changes between the check and the connect (rebinding) cannot slip through. TLS
still verifies the certificate against the hostname (SNI) and the ``Host`` header is untouched,
because only the TCP connect is redirected. Redirects open new connections, which are checked the
same way.

Literal hosts are read the way ``inet_aton`` reads them, so ``2130706433``, ``0x7f.1`` and
``017700000001`` are recognised as 127.0.0.1 rather than sent to a resolver that would agree.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
import typing
import urllib.parse
from collections.abc import Iterable

import httpcore
import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names and addresses of cloud instance-metadata services (AWS, GCP, Azure, Alibaba, Oracle, ECS).
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "169.254.169.253", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
# IPv6 prefixes that embed an IPv4 address (NAT64); the embedded address is what gets reached.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
ALLOWED_SCHEMES = frozenset({"http", "https"})


class BlockedDestination(Exception):
    """The destination is not allowed by the SSRF guard. The message says which and why."""

    def __init__(self, host: str, reason: str):
        self.host = host
        self.reason = reason
        super().__init__(f"Destination blocked: {host} ({reason}). Add it to SSRF_ALLOWLIST to allow it.")


# -- parsing ------------------------------------------------------------------------------------
def _parse_int(part: str) -> int | None:
    """One inet_aton component: decimal, 0x-hex or 0-leading octal."""
    if not part:
        return None
    try:
        if part[:2].lower() == "0x":
            return int(part[2:], 16) if part[2:] else 0
        if len(part) > 1 and part[0] == "0":
            return int(part[1:], 8)
        if part.isdigit():
            return int(part, 10)
    except ValueError:
        return None
    return None


def parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` as ``inet_aton`` would: 1 to 4 parts, each decimal, hex or octal; the last fills the rest."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_parse_int(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    *head, last = typing.cast(list[int], numbers)
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(value)


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` denotes when it is an IP literal in any accepted spelling, else None."""
    host = host.strip().strip("[]")
    if "%" in host:  # an IPv6 zone id (fe80::1%eth0) only ever names a link-local address
        host = host.split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return parse_ipv4_loose(host) if host and all(c in "0123456789abcdefxABCDEFX." for c in host) else None


def normalise_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


# -- policy -------------------------------------------------------------------------------------
def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    for net in _NAT64:
        if ip in net:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be reached, or None when it is a public address."""
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = blocked_reason(embedded)
            if reason:
                return f"IPv4 {embedded} embedded in IPv6: {reason}"
    checks = (
        ("is_unspecified", "unspecified address"),
        ("is_loopback", "loopback address"),
        ("is_link_local", "link-local address"),
        ("is_multicast", "multicast address"),
        ("is_private", "private address"),
        ("is_reserved", "reserved address"),
    )
    for attribute, reason in checks:
        if getattr(ip, attribute):
            return reason
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local address"
    if not ip.is_global:
        return "non-public address"
    return None


class Allowlist:
    """``SSRF_ALLOWLIST`` parsed: host names (``*.example.com`` for subdomains), IPs and CIDR networks."""

    def __init__(self, entries: Iterable[str]):
        self.hosts: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = normalise_host(entry)
            if name.startswith("*."):
                self.suffixes.append(name[1:])
            else:
                self.hosts.add(name)

    def allows_host(self, host: str) -> bool:
        name = normalise_host(host)
        return name in self.hosts or any(name.endswith(suffix) for suffix in self.suffixes)

    def allows_ip(self, ip: IPAddress) -> bool:
        """Whether a listed network holds ``ip``. Metadata addresses need an exact entry: a broad
        ``0.0.0.0/0`` or ``169.254.0.0/16`` opens internal services, never the instance's credentials."""
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(
            c.version == net.version
            and c in net
            and (c not in METADATA_ADDRESSES or net.prefixlen == net.max_prefixlen)
            for c in candidates
            for net in self.networks
        )


def current_allowlist() -> Allowlist:
    return Allowlist(getattr(settings, "SSRF_ALLOWLIST", []) or [])


def resolve_checked(host: str, port: int, *, allowlist: Allowlist | None = None) -> str:
    """Resolve ``host`` once and return the address to connect to, or raise :class:`BlockedDestination`."""
    return resolve_checked_all(host, port, allowlist=allowlist)[0]


def resolve_checked_all(host: str, port: int, *, allowlist: Allowlist | None = None) -> list[str]:
    """Resolve ``host`` once; return every address it has, all checked, in resolver order.

    Every address the name resolves to must pass, so a name that answers with one public and one
    private address is refused rather than left to chance.
    """
    allowlist = allowlist or current_allowlist()
    name = normalise_host(host)
    if not name:
        raise BlockedDestination(host or "(empty)", "no host")
    host_allowed = allowlist.allows_host(name)
    literal = ip_literal(name)
    if literal is not None:
        if host_allowed or allowlist.allows_ip(literal):
            return [str(literal)]
        reason = blocked_reason(literal)
        if reason:
            raise BlockedDestination(host, reason)
        return [str(literal)]
    if not host_allowed and (name in METADATA_HOSTS or name.endswith(".metadata.google.internal")):
        raise BlockedDestination(host, "cloud metadata host")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"Cannot resolve host {host!r}: {exc}") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise httpcore.ConnectError(f"Host {host!r} has no address")
    if host_allowed:
        return [str(ip) for ip in addresses]
    for ip in addresses:
        if allowlist.allows_ip(ip):
            continue
        reason = blocked_reason(ip)
        if reason:
            raise BlockedDestination(host, f"resolves to {ip}, a {reason}")
    return [str(ip) for ip in addresses]


def check_url(url: str, *, allowlist: Allowlist | None = None) -> None:
    """Cheap checks before any network use: the scheme, and a host that is a blocked literal or name.

    Names that need DNS are checked when the connection is made (resolved once, connected to that
    address), so this never resolves anything itself.
    """
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise BlockedDestination(url[:100], f"scheme {scheme or '(none)'!r} is not http or https")
    host = parsed.hostname or ""
    if not host:
        raise BlockedDestination(url[:100], "no host")
    allowlist = allowlist or current_allowlist()
    name = normalise_host(host)
    literal = ip_literal(name)
    if allowlist.allows_host(name) or (literal is not None and allowlist.allows_ip(literal)):
        return
    if literal is not None:
        reason = blocked_reason(literal)
        if reason:
            raise BlockedDestination(host, reason)
    elif name in METADATA_HOSTS or name.endswith(".metadata.google.internal"):
        raise BlockedDestination(host, "cloud metadata host")


# -- httpx plumbing -------------------------------------------------------------------------------
class GuardedNetworkBackend(httpcore.SyncBackend):
    """httpcore backend that resolves and checks each host, then connects to the checked address.

    It also remembers its sockets so :meth:`abort` can shut them down from another thread, which
    wakes a read blocked inside httpx (used for cancellation).
    """

    def __init__(self, allowlist: Allowlist | None = None):
        self.allowlist = allowlist
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.aborted = False

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        if self.aborted:
            raise httpcore.ConnectError("Request aborted")
        addresses = resolve_checked_all(host, port, allowlist=self.allowlist or current_allowlist())
        # Try each checked address in turn (an IPv6 answer may be unreachable while IPv4 works).
        stream: httpcore.NetworkStream | None = None
        for index, address in enumerate(addresses):
            try:
                stream = super().connect_tcp(address, port, timeout, local_address, socket_options)
                break
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                if index == len(addresses) - 1 or self.aborted:
                    raise
        assert stream is not None
        sock = stream.get_extra_info("socket")
        if sock is not None:
            with self._lock:
                self._sockets.append(sock)
        if self.aborted:
            self.abort()
        return stream

    def abort(self) -> None:
        """Shut down every socket this backend opened (safe from any thread)."""
        self.aborted = True
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


_default_context: ssl.SSLContext | None = None
_context_lock = threading.Lock()


def _ssl_context(verify: bool | ssl.SSLContext) -> ssl.SSLContext:
    """Loading the CA bundle costs tens of milliseconds, so the verifying context is built once and shared."""
    global _default_context
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        return httpx.create_ssl_context(verify=False, trust_env=False)
    with _context_lock:
        if _default_context is None:
            _default_context = httpx.create_ssl_context(verify=True, trust_env=False)
        return _default_context


class GuardedTransport(httpx.HTTPTransport):
    """An ``httpx.HTTPTransport`` whose connections go through :class:`GuardedNetworkBackend`."""

    def __init__(
        self, *, verify: bool | ssl.SSLContext = True, allowlist: Allowlist | None = None, **kwargs: typing.Any
    ):
        # The parent's pool is replaced below, so it gets a cheap unverified context it never uses.
        super().__init__(verify=False, trust_env=False, **kwargs)
        self.backend = GuardedNetworkBackend(allowlist)
        limits = kwargs.get("limits", httpx.Limits(max_connections=10, max_keepalive_connections=5))
        # httpx builds its pool without a way to pass a network backend; rebuild it with ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        check_url(str(request.url), allowlist=self.backend.allowlist)
        return super().handle_request(request)


def guarded_client(
    *, timeout: float = 30.0, follow_redirects: bool = False, max_redirects: int = 5, **kwargs: typing.Any
) -> httpx.Client:
    """An httpx client that only reaches destinations the SSRF guard allows (never through env proxies)."""
    transport = GuardedTransport(verify=kwargs.pop("verify", True), allowlist=kwargs.pop("allowlist", None))
    return httpx.Client(
        transport=transport,
        timeout=timeout,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        trust_env=False,
        **kwargs,
    )


def unwrap_blocked(exc: BaseException) -> BlockedDestination | None:
    """The :class:`BlockedDestination` behind ``exc`` (httpx may wrap it), if any."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, BlockedDestination):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None
