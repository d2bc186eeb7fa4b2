"""Media fetching over real HTTP on loopback: limits and SSRF protection."""

import ipaddress

import pytest
from aiohttp import web
from streaming import http_server

from modstream.contracts import MediaError
from modstream.ingest.fetch import Fetcher, FetchPolicy
from modstream.ingest.sources import read_local
from modstream.ingest.urls import address_allowed


@pytest.fixture
async def server():
    async def photo(request):
        return web.Response(body=b"\xff\xd8" + b"x" * 1000, content_type="image/jpeg")

    async def big(request):
        return web.Response(body=b"x" * 100_000)

    async def slow(request):
        import asyncio

        await asyncio.sleep(3)
        return web.Response(body=b"late")

    async def hop(request):
        raise web.HTTPFound("/photo")

    async def missing(request):
        raise web.HTTPNotFound()

    routes = {"/photo": photo, "/big": big, "/slow": slow, "/hop": hop, "/missing": missing}
    async with http_server(routes) as base:
        yield base


async def fetch(url, **policy):
    fetcher = Fetcher(FetchPolicy(**policy))
    try:
        return await fetcher.fetch(url)
    finally:
        await fetcher.close()


async def reason(url, **policy) -> str:
    with pytest.raises(MediaError) as error:
        await fetch(url, **policy)
    return error.value.reason


async def test_allowlisted_loopback_is_fetched_and_redirects_followed(server):
    allow = ("127.0.0.1/32",)
    assert (await fetch(f"{server}/photo", allow=allow)).startswith(b"\xff\xd8")
    assert (await fetch(f"{server}/hop", allow=allow)).startswith(b"\xff\xd8")


async def test_loopback_is_refused_by_default_by_ip_and_by_name(server):
    assert await reason(f"{server}/photo") == "blocked_address"
    port = server.rsplit(":", 1)[1]
    assert await reason(f"http://localhost:{port}/photo") == "blocked_address"


async def test_limits(server):
    allow = ("127.0.0.1/32",)
    assert await reason(f"{server}/big", allow=allow, max_bytes=10_000) == "too_large"
    assert await reason(f"{server}/slow", allow=allow, timeout_s=0.5) == "timeout"
    assert await reason(f"{server}/missing", allow=allow) == "http_status"
    assert await reason(f"{server}/hop", allow=allow, max_redirects=0) == "too_many_redirects"


async def test_unreachable_port_is_reported():
    assert await reason("http://127.0.0.1:9/x", allow=("127.0.0.0/8",)) == "unreachable"


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("2606:4700::1111", True),
    ],
)
def test_address_policy(address, allowed):
    assert address_allowed(ipaddress.ip_address(address), []) is allowed


def test_paths_stay_under_the_media_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"ok")
    (tmp_path / "secret").write_bytes(b"no")
    (root / "link").symlink_to(tmp_path / "secret")
    assert read_local("a.jpg", root, 100) == b"ok"
    for bad in ("../secret", "/etc/passwd", "link"):
        with pytest.raises(MediaError) as error:
            read_local(bad, root, 100)
        assert error.value.reason == "path_outside_root"
    with pytest.raises(MediaError, match="disabled"):
        read_local("a.jpg", None, 100)


async def test_videos_stream_to_a_scratch_file_that_is_always_removed(server, tmp_path):
    """A video URL is downloaded to a file (not memory) under the video limits; the file
    exists while it is hashed and is gone afterwards, also when the download fails."""
    from modstream.contracts import MediaRef
    from modstream.ingest.sources import clear_scratch, video_file

    scratch = tmp_path / "scratch"
    (scratch).mkdir()
    (scratch / "modstream-video-left-by-a-crash.video").write_bytes(b"old")
    clear_scratch(scratch)
    assert list(scratch.iterdir()) == []
    fetcher = Fetcher(FetchPolicy(allow=("127.0.0.1/32",), video_max_bytes=50_000))
    try:
        ref = MediaRef(media_id="v", kind="video", url=f"{server}/photo")
        async with video_file(ref, fetcher, None, scratch) as path:
            assert path.parent == scratch and path.read_bytes().startswith(b"\xff\xd8")
        assert list(scratch.iterdir()) == []
        too_big = MediaRef(media_id="v", kind="video", url=f"{server}/big")
        with pytest.raises(MediaError) as error:
            async with video_file(too_big, fetcher, None, scratch):
                pass
        assert error.value.reason == "too_large"
        assert list(scratch.iterdir()) == []
    finally:
        await fetcher.close()
