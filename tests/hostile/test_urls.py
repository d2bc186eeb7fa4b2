"""SSRF: every spelling of a refused address is refused before any connection is made.

Hosts are checked as the HTTP client will connect to them (after yarl's Unicode folding), legacy
numeric IPv4 forms are refused, and IPv6 forms that embed an IPv4 address are judged by it.
"""

from __future__ import annotations

import ipaddress

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streaming import http_server

from modstream.contracts import MediaError
from modstream.ingest.fetch import Fetcher, FetchPolicy
from modstream.ingest.urls import address_allowed, fetchable_url, redact_url, redact_urls

REFUSED_V4 = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
]

# Unicode digits that IDNA folds to ASCII: full-width, mathematical bold, double-struck, sans.
DIGIT_FORMS = [
    lambda d: d,
    lambda d: chr(0xFF10 + int(d)),
    lambda d: chr(0x1D7CE + int(d)),
    lambda d: chr(0x1D7D8 + int(d)),
    lambda d: chr(0x1D7E2 + int(d)),
    lambda d: "⓪" if d == "0" else chr(0x245F + int(d)),  # circled
]
DOTS = [".", "。", "．", "｡"]


@st.composite
def refused_addresses(draw) -> ipaddress.IPv4Address:
    network = ipaddress.IPv4Network(draw(st.sampled_from(REFUSED_V4)))
    offset = draw(st.integers(0, network.num_addresses - 1))
    return network[offset]


@st.composite
def spellings(draw) -> str:
    """One way of writing a refused IPv4 address as a URL host."""
    address = draw(refused_addresses())
    octets = [int(o) for o in str(address).split(".")]
    value = int(address)
    kind = draw(st.sampled_from(["unicode", "decimal", "octal", "hex", "short", "padded", "ipv6"]))
    if kind == "unicode":
        dot = draw(st.sampled_from(DOTS))
        forms = [draw(st.sampled_from(DIGIT_FORMS)) for _ in range(4)]
        return dot.join("".join(f(c) for c in str(o)) for f, o in zip(forms, octets, strict=True))
    if kind == "decimal":
        return str(value)
    if kind == "octal":
        return ".".join(f"0{o:o}" for o in octets) if draw(st.booleans()) else f"0{value:o}"
    if kind == "hex":
        return ".".join(f"0x{o:x}" for o in octets) if draw(st.booleans()) else f"0x{value:x}"
    if kind == "short":  # a.b.c16 and a.b24, as inet_aton reads them
        if draw(st.booleans()):
            return f"{octets[0]}.{octets[1]}.{(octets[2] << 8) | octets[3]}"
        return f"{octets[0]}.{value & 0xFFFFFF}"
    if kind == "padded":
        return ".".join(f"{o:03d}" for o in octets)
    hi, lo = value >> 16, value & 0xFFFF
    form = draw(st.sampled_from(["compat", "mapped", "translated", "nat64", "6to4"]))
    text = {
        "compat": f"::{address}",
        "mapped": f"::ffff:{address}",
        "translated": f"::ffff:0:{address}",
        "nat64": f"64:ff9b::{hi:x}:{lo:x}",
        "6to4": f"2002:{hi:x}:{lo:x}::1",
    }[form]
    return f"[{text.upper() if draw(st.booleans()) else text}]"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host=spellings(), port=st.sampled_from(["", ":80", ":8080"]))
def test_every_spelling_of_a_refused_address_is_refused_without_resolving(host, port):
    with pytest.raises(MediaError) as error:
        fetchable_url(f"http://{host}{port}/a.jpg")
    assert error.value.reason in ("blocked_address", "bad_url")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_the_url_check_raises_nothing_but_media_errors(text):
    for url in (text, f"http://{text}/", f"https://{text}"):
        try:
            checked = fetchable_url(url)
        except MediaError:
            continue
        assert checked.scheme in ("http", "https") and checked.host


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",
        "::ffff:0:127.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of the cloud metadata address
        "2002:a9fe:a9fe::1",  # 6to4 of it
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fec0::1",  # site-local
        "64:ff9b:1::808:808",  # local-use NAT64
        "2001:db8::1",
        "::",
        "::1",
    ],
)
def test_ipv6_transition_and_reserved_forms_are_refused(address):
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_stay_allowed(address):
    assert address_allowed(ipaddress.ip_address(address))


ISSUE_SPELLINGS = [
    "１２７.０.０.１",
    "127。0。0。1",
    "127．0．0．1",
    "①②⑦.0.0.1",
    "127.1",
    "2130706433",
    "0177.0.0.1",
    "017700000001",
    "127.000.000.001",
    "0x7f.0.0.1",
    "[::127.0.0.1]",
    "[::ffff:0:127.0.0.1]",
    "[::ffff:127.0.0.1]",
    "localhost",
    "ｌｏｃａｌｈｏｓｔ",
]


async def test_no_spelling_of_loopback_reaches_a_loopback_server():
    """A real server on 127.0.0.1: none of the spellings gets a request to it."""
    hits = []

    async def photo(request):
        hits.append(request.path)
        return web.Response(body=b"\xff\xd8image")

    async with http_server({"/a.jpg": photo}) as base:
        port = base.rsplit(":", 1)[1]
        fetcher = Fetcher(FetchPolicy())
        try:
            for host in ISSUE_SPELLINGS:
                with pytest.raises(MediaError) as error:
                    await fetcher.fetch(f"http://{host}:{port}/a.jpg")
                assert error.value.reason in ("blocked_address", "bad_url"), host
        finally:
            await fetcher.close()
        # The same server is reachable when allowlisted: the refusals above were the check's.
        allowed = Fetcher(FetchPolicy(allow=("127.0.0.1/32",)))
        try:
            assert await allowed.fetch(f"http://127.0.0.1:{port}/a.jpg") == b"\xff\xd8image"
        finally:
            await allowed.close()
    assert hits == ["/a.jpg"]


@pytest.mark.parametrize("target", ["127.1", "①⓪.0.0.1", "[::ffff:169.254.169.254]"])
async def test_a_redirect_to_a_refused_spelling_is_refused(target):
    """Each hop is checked: an allowlisted server cannot bounce the fetcher elsewhere."""
    hits = []

    async def hop(request):
        hits.append("hop")
        raise web.HTTPFound(f"http://{target}:{request.url.port}/a.jpg")

    async def photo(request):
        hits.append("photo")
        return web.Response(body=b"x")

    async with http_server({"/hop": hop, "/a.jpg": photo}) as base:
        fetcher = Fetcher(FetchPolicy(allow=("127.0.0.1/32",)))
        try:
            with pytest.raises(MediaError) as error:
                await fetcher.fetch(f"{base}/hop")
        finally:
            await fetcher.close()
    assert error.value.reason in ("blocked_address", "bad_url")
    assert hits == ["hop"]


@pytest.mark.parametrize(
    "url",
    [
        "http://[127.0.0.6]:1/",
        "http://" + "a" * 64 + ".example.com/",
        "http://" + ("a" * 60 + ".") * 5 + "com/",
        "http:///nohost",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
    ],
)
async def test_malformed_urls_are_media_errors(url):
    fetcher = Fetcher(FetchPolicy())
    try:
        with pytest.raises(MediaError) as error:
            await fetcher.fetch(url)
    finally:
        await fetcher.close()
    assert error.value.reason == "bad_url"


def test_urls_leave_without_credentials():
    url = "https://alice:hunter2@cdn.example.com/a.jpg?X-Amz-Signature=abc123&size=2&token=t0k"
    shown = redact_url(url)
    assert "alice" not in shown and "hunter2" not in shown
    assert "abc123" not in shown and "t0k" not in shown
    assert "size=2" in shown and shown.startswith("https://cdn.example.com/a.jpg")
    message = f"HTTP 404 from {url} (see {url})"
    assert "hunter2" not in redact_urls(message) and "abc123" not in redact_urls(message)


async def test_fetch_errors_carry_no_credentials():
    async def missing(request):
        raise web.HTTPNotFound()

    async with http_server({"/gone.jpg": missing}) as base:
        url = base.replace("http://", "http://user:s3cret@") + "/gone.jpg?token=t0ken"
        fetcher = Fetcher(FetchPolicy(allow=("127.0.0.1/32",)))
        try:
            with pytest.raises(MediaError) as error:
                await fetcher.fetch(url)
        finally:
            await fetcher.close()
    assert error.value.reason == "http_status"
    assert "s3cret" not in str(error.value) and "t0ken" not in str(error.value)
