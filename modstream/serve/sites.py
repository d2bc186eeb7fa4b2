"""Which sites may talk to the HTTP API from a browser: the ``Host`` a request names and,
for a request that changes something, the page it comes from.

Without keys (loopback, ``--allow-anonymous``) a browser is the one caller that can be
tricked into calling: a page elsewhere may POST a form here (no preflight is needed for
multipart), or rebind its own name to 127.0.0.1 and then read the answers as its own. A
rebound page names its own host in ``Host``, so only this server's names are answered; a
form from elsewhere carries a foreign ``Origin`` or ``Sec-Fetch-Site: cross-site``, so a
state-changing request from another site is refused. Clients that are not browsers send
neither header and are not affected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Methods that only read (a browser may send these cross-site; the answer stays unread).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: ``Sec-Fetch-Site`` values of requests a page of this server, or no page, made.
OWN_FETCH_SITES = frozenset({"same-origin", "none"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


@dataclass(frozen=True)
class SitePolicy:
    """``names``: host names answered besides loopback ones (lower case); ``any_address``:
    bound to a wildcard address, so any IP literal may name this server; ``addresses``: the
    IP literals that may otherwise (the bind address)."""

    names: frozenset[str] = frozenset()
    addresses: frozenset[str] = frozenset()
    any_address: bool = False

    @classmethod
    def for_server(cls, bind_host: str, allowed_hosts: Iterable[str] = ()) -> SitePolicy:
        """The loopback names and addresses, the bind address, and the operator's names."""
        names = {name.strip().lower().rstrip(".") for name in allowed_hosts if name.strip()}
        address = _address(bind_host)
        if address is None:
            names.add(bind_host.lower())
            return cls(frozenset(names))
        return cls(frozenset(names), frozenset({str(address)}), address.is_unspecified)

    def host_allowed(self, host_header: str) -> bool:
        """Whether ``Host`` (``name[:port]``) names this server. An IP literal cannot be
        a rebound name: it is allowed when it is loopback or an address bound here."""
        host = host_name(host_header)
        if not host:
            return False
        address = _address(host)
        if address is None:
            return host in LOOPBACK_NAMES or host.endswith(".localhost") or host in self.names
        return address.is_loopback or self.any_address or str(address) in self.addresses

    def refusal(self, method: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        """The status and message a request is refused with, or None. ``headers`` have
        lower-case names."""
        host = headers.get("host", "")
        if not self.host_allowed(host):
            return 400, "this server does not answer for that host name"
        if method.upper() in SAFE_METHODS:
            return None
        fetch_site = headers.get("sec-fetch-site", "").strip().lower()
        origin = headers.get("origin")
        if (fetch_site and fetch_site not in OWN_FETCH_SITES) or (
            origin is not None and not self._own_origin(origin.strip(), host)
        ):
            return 403, "requests from another site may not change anything here"
        return None

    def _own_origin(self, origin: str, host: str) -> bool:
        """An ``Origin`` is this server's when it names the same authority as ``Host``, or a
        host name the operator listed (a proxy in front may rewrite ``Host``)."""
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (sandboxed pages, file://) and anything odd
        if parts.netloc.lower() == host.strip().lower():
            return True
        return (parts.hostname or "").lower() in self.names


def host_name(host_header: str) -> str:
    """The host of a ``Host`` header, without its port or IPv6 brackets, lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
