"""Which URLs may be fetched, which addresses may be connected to, and URLs made safe to show.

The host is checked exactly as the HTTP client will connect to it: the URL is parsed once with
yarl (aiohttp's own parser, which folds full-width digits, ideographic dots and other Unicode
spellings to ASCII) and that parsed URL is what gets requested. Hosts that only a legacy IPv4
parser reads as an address (``127.1``, ``2130706433``, ``0177.0.0.1``, ``0x7f.1``) are refused
outright: they are never real names, and libraries disagree about them. IPv6 addresses that
embed an IPv4 address (mapped, compatible, translated, NAT64, 6to4, Teredo) are judged by the
IPv4 address they lead to.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from yarl import URL

from modstream.contracts import MediaError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv4 ranges refused although Python may call them global.
_REFUSED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relays
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
# IPv6 ranges refused outright (after embedded IPv4 forms were unwrapped).
_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/8",  # unspecified, loopback, IPv4-compatible and other reserved forms
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo among them
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, still routed by some stacks)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_LEGACY_NUMERIC = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and would reach, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    value = int(address)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d (not :: or ::1)
        return ipaddress.IPv4Address(value)
    if address in _TRANSLATED or address in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:  # (server, client); Teredo space is refused as a whole
        return address.teredo[1]
    return None


def address_allowed(address: IPAddress, allow: Iterable[Network] = ()) -> bool:
    """Public unicast addresses, or anything inside an allowlisted network."""
    allow = tuple(allow)
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if any(address in network or (inner is not None and inner in network) for network in allow):
        return True
    if isinstance(address, ipaddress.IPv4Address):
        return address.is_global and not any(address in n for n in _REFUSED_V4)
    if inner is not None:
        if not address_allowed(inner):
            return False
        if any(address in n for n in _JUDGED_BY_IPV4):
            return True
    return address.is_global and not any(address in n for n in _REFUSED_V6)


# Forms judged by their IPv4 address alone: mapped, compatible and translated (reserved space
# otherwise) and NAT64 (how IPv6-only networks reach IPv4 hosts).
_JUDGED_BY_IPV4 = (ipaddress.IPv6Network("::/64"), _NAT64)


def fetchable_url(url: str | URL, allow: Iterable[Network] = ()) -> URL:
    """The URL as the HTTP client will request it, after checking its scheme and host; raises
    MediaError (``bad_url``, ``blocked_address``) otherwise. A host name is not resolved here:
    the checking resolver judges every address it resolves to, at connect time."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        host = parsed.host
    except ValueError as exc:  # UnicodeError (bad IDNA) is one
        raise MediaError("bad_url", f"malformed URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise MediaError("bad_url", "only http(s) URLs with a host are fetched")
    literal = host_address(host)
    if literal is not None:
        if not address_allowed(literal, allow):
            raise MediaError("blocked_address", f"{literal} is a refused address")
        return parsed
    name = host.rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or any(not 0 < len(label) <= 63 for label in labels):
        raise MediaError("bad_url", "host name is not a valid DNS name")
    if _LEGACY_NUMERIC.match(labels[-1]):
        raise MediaError("bad_url", f"numeric host {host!r} is not a canonical IP address")
    return parsed


def host_address(host: str) -> IPAddress | None:
    """The address a host is, if it is an IP literal in canonical form."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# Query parameters whose values are credentials in practice (signed URLs, API tokens).
_SECRET_PARAM = re.compile(
    r"(token|sig|signature|secret|key|password|passwd|pwd|auth|credential|session|code)",
    re.IGNORECASE,
)
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """The URL without user info and with secret-looking query values masked: what may leave
    the process in evidence, dead letters and logs."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return "<malformed URL>"
    if parsed.user is not None or parsed.password is not None:
        parsed = parsed.with_user(None)
    if parsed.query_string:
        parsed = parsed.with_query(
            [(k, "REDACTED" if _SECRET_PARAM.search(k) else v) for k, v in parsed.query.items()]
        )
    return str(parsed)


def redact_urls(text: str) -> str:
    """``text`` with every URL in it redacted (error messages quote URLs)."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
