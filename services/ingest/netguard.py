"""Which network addresses a source may reach: server-side request forgery is refused by default.

A source URL makes this server connect somewhere. Left open, anyone who may start a stream could
make it fetch cloud metadata (credentials), this host's own ports (the NATS monitor, the other
services) or the private network behind it. So a source's host is resolved here (every address
it resolves to, however it is spelled: `127.0.0.1`, `0x7f000001`, `2130706433`, `[::1]`,
`[::ffff:127.0.0.1]` all come out as loopback) and refused when any address falls under a rule:

  metadata     169.254.169.254, 169.254.170.2, 100.100.100.200, fd00:ec2::254, and the names
               metadata.google.internal / metadata.goog / metadata (refused by name as well)
  loopback     127.0.0.0/8, ::1
  link-local   169.254.0.0/16, fe80::/10
  private      10/8, 172.16/12, 192.168/16, 100.64/10 (carrier NAT), fc00::/7, ...
  unspecified  0.0.0.0, ::
  multicast / reserved

A lab opens ranges one by one (`ingest.allow_networks`, CIDRs, e.g. ["127.0.0.0/8"]); metadata
names stay refused whatever is opened. HTTP(S) redirects are followed here, each hop checked
before it is requested, and FFmpeg is handed the final URL with redirects off (`max_redirects=0`),
so it never follows one unchecked. Checks run before every connection (reconnects included).

What this does not close: FFmpeg resolves the name again when it connects, so a DNS answer that
changes between the two lookups (rebinding) is not caught; segments an HLS playlist names on
other hosts are fetched by FFmpeg without this check (with redirects still off).
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ErrorCode, IngestError

MAX_REDIRECTS = 5
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_CARRIER_NAT = ipaddress.ip_network("100.64.0.0/10")
SETTING = "ingest.allow_networks (STREAMSIGHT_INGEST_ALLOW_NETWORKS)"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """CIDRs from settings; ValueError names the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP network (CIDR such as 127.0.0.0/8): {exc}") from None
    return tuple(networks)


def rule_for(address: Address) -> str | None:
    """The rule that refuses `address`, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in _CARRIER_NAT):
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


@dataclass(frozen=True)
class NetworkPolicy:
    """Ranges opened on purpose (a lab's loopback, say); everything else follows the rules above."""

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, values: Iterable[str]) -> "NetworkPolicy":
        return cls(parse_networks(values))

    def refusal(self, address: Address) -> str | None:
        """The rule refusing `address` here; metadata addresses stay refused whatever is opened."""
        rule = rule_for(address)
        if rule is None or rule == "metadata":
            return rule
        return None if self._opened(address) else rule

    def _opened(self, address: Address) -> bool:
        plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped else address
        return any(plain.version == n.version and plain in n for n in self.allow)

    def check_host(self, host: str, port: int | None, source: str) -> None:
        """Resolve `host` and refuse it when any of its addresses is under a rule not opened."""
        name = host.strip("[]").rstrip(".").lower()
        if name in METADATA_NAMES:
            raise _refused(source, host, None, "metadata")
        try:
            infos = socket.getaddrinfo(name, port or 0, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise IngestError(ErrorCode.UNREACHABLE, f"cannot resolve the host {host!r} of {source}: {exc}") from None
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            rule = self.refusal(address)
            if rule is not None:
                raise _refused(source, host, address, rule)

    def check_url(self, url: str, source: str) -> None:
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise IngestError(ErrorCode.INVALID_SOURCE, f"{url[:200]!r} is not a valid URL ({exc})") from None
        if not host:
            raise IngestError(ErrorCode.INVALID_SOURCE, f"{source} has no host")
        self.check_host(host, port, source)

    def follow_redirects(self, url: str, source: str, timeout: float) -> str:
        """The URL an HTTP(S) source ends at, every hop checked before it is requested.

        Answers other than redirects (404, a refused connection) are left to FFmpeg, which
        opens the URL next and reports them with their own codes.
        """
        self.check_url(url, source)
        policy = self

        class Checked(urllib.request.HTTPRedirectHandler):
            max_redirections = MAX_REDIRECTS

            def redirect_request(self, req, fp, code, msg, headers, newurl):
                if urlsplit(newurl).scheme.lower() not in ("http", "https"):
                    raise IngestError(ErrorCode.INVALID_SOURCE, f"{source} redirects to {newurl!r}, which is not http(s)")
                policy.check_url(newurl, source)
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        opener = urllib.request.build_opener(Checked)
        request = urllib.request.Request(url, headers={"User-Agent": "streamsight-ingest", "Range": "bytes=0-0"})
        try:
            with opener.open(request, timeout=timeout) as response:
                return response.geturl()
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                raise IngestError(ErrorCode.INVALID_SOURCE, f"{source} redirects more than {MAX_REDIRECTS} times") from None
            return exc.geturl() or url
        except (urllib.error.URLError, OSError, ValueError):
            return url


def _refused(source: str, host: str, address: Address | None, rule: str) -> IngestError:
    where = f"{host} ({address})" if address is not None and str(address) != host.strip("[]") else host
    opened = "" if rule == "metadata" else f"; a lab may open a range in {SETTING}"
    return IngestError(ErrorCode.REFUSED_SOURCE, f"source {source} refused by rule '{rule}': {where} is a {rule} address, which sources may not reach{opened}")
