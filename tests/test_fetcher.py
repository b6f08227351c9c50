"""The HTTP layer against a real loopback server: limits, redirects, retries, the SSRF guard."""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from functools import cache

import pytest

from pipeline.config import HttpSettings, Settings
from pipeline.fetcher import (
    BlockedURL,
    ConnectError,
    Fetcher,
    FetchTimeout,
    HTTPStatusError,
    ResponseTooLarge,
    TooManyRedirects,
    blocked_reason,
    parse_retry_after,
)
from conftest import LoopbackServer, Response


@pytest.fixture
def fetcher(settings: Settings):
    with Fetcher(settings.http) as f:
        yield f


def _http(settings: Settings, **changes) -> HttpSettings:
    return settings.http.model_copy(update=changes)


@cache
def gzip_bomb() -> bytes:
    # 64 MiB of zeros compress to about 64 KiB.
    return gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)


def test_plain_get_sends_honest_headers(fetcher: Fetcher, http_server: LoopbackServer) -> None:
    http_server.routes["/a"] = Response(200, b"hello", {"Content-Type": "text/plain", "ETag": '"v1"'})
    r = fetcher.get(http_server.url("/a"), accept="text/plain")
    assert (r.status, r.content, r.history, r.not_modified) == (200, b"hello", (), False)
    assert r.headers["etag"] == r.headers["ETag"] == '"v1"'
    assert r.content_type == "text/plain"
    sent = http_server.requests[-1][2]
    assert sent["User-Agent"].startswith("newsmon/")
    assert sent["Accept"] == "text/plain"
    assert "gzip" in sent["Accept-Encoding"] and "br" not in sent["Accept-Encoding"]


def test_conditional_request_and_304(fetcher: Fetcher, http_server: LoopbackServer) -> None:
    def route(h):
        if h.headers.get("If-None-Match") == '"v1"':
            return Response(304, b"")
        return Response(200, b"body", {"ETag": '"v1"'})

    http_server.routes["/c"] = route
    first = fetcher.get(http_server.url("/c"))
    modified = "Mon, 01 Jan 2024 00:00:00 GMT"
    second = fetcher.get(http_server.url("/c"), etag=first.headers["etag"], last_modified=modified)
    assert second.not_modified and second.content == b""
    sent = http_server.requests[-1][2]
    assert sent["If-None-Match"] == '"v1"' and sent["If-Modified-Since"] == modified


@pytest.mark.parametrize(
    "encoding,encode",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as the standard says
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as many servers send
    ],
)
def test_compressed_bodies_are_decoded(fetcher: Fetcher, http_server: LoopbackServer, encoding, encode) -> None:
    body = b"<rss>" + b"x" * 50_000 + b"</rss>"
    http_server.routes["/z"] = Response(200, encode(body), {"Content-Encoding": encoding})
    assert fetcher.get(http_server.url("/z")).content == body


def test_concatenated_gzip_members_are_one_body(fetcher: Fetcher, http_server: LoopbackServer) -> None:
    body = gzip.compress(b"abc") + gzip.compress(b"def")
    http_server.routes["/z"] = Response(200, body, {"Content-Encoding": "gzip"})
    assert fetcher.get(http_server.url("/z")).content == b"abcdef"


def test_gzip_bomb_is_capped_after_decompression(fetcher: Fetcher, http_server: LoopbackServer) -> None:
    http_server.routes["/bomb"] = Response(200, gzip_bomb(), {"Content-Encoding": "gzip"})
    t0 = time.monotonic()
    with pytest.raises(ResponseTooLarge, match="after decompression"):
        fetcher.get(http_server.url("/bomb"), max_bytes=1_000_000)
    assert time.monotonic() - t0 < 3


def test_oversize_bodies_are_refused(fetcher: Fetcher, http_server: LoopbackServer) -> None:
    http_server.routes["/big"] = Response(200, b"x" * 300_000)
    with pytest.raises(ResponseTooLarge, match="Content-Length"):
        fetcher.get(http_server.url("/big"), max_bytes=100_000)

    def endless(h) -> None:  # no Content-Length: the stream is cut while reading
        h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(10_000):
            h.wfile.write(b"y" * 16_384)

    http_server.routes["/endless"] = Response(200, endless)
    with pytest.raises(ResponseTooLarge):
        fetcher.get(http_server.url("/endless"), max_bytes=200_000)


def test_slow_drip_hits_the_total_deadline_and_is_not_retried(settings: Settings, http_server: LoopbackServer) -> None:
    def drip(h) -> None:
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(1000):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.1)  # always well inside the read timeout

    http_server.routes["/drip"] = Response(200, drip)
    with Fetcher(_http(settings, read_timeout=1, total_timeout=1.5, retries=2)) as f:
        t0 = time.monotonic()
        with pytest.raises(FetchTimeout, match="no complete response within 1.5s"):
            f.get(http_server.url("/drip"))
        assert time.monotonic() - t0 < 2.5
    assert http_server.hits("/drip") == 1


def test_stalled_server_times_out_and_is_retried(settings: Settings, http_server: LoopbackServer) -> None:
    stop = threading.Event()

    def stall(h) -> None:
        h.send_header("Content-Length", "10")
        h.end_headers()
        stop.wait(5)

    http_server.routes["/stall"] = Response(200, stall)
    try:
        with Fetcher(_http(settings, read_timeout=0.3, total_timeout=3, retries=1)) as f:
            with pytest.raises(FetchTimeout, match="read timeout after 0.3s"):
                f.get(http_server.url("/stall"))
    finally:
        stop.set()
    assert http_server.hits("/stall") == 2


def test_redirects_followed_capped_and_loops_detected(fetcher: Fetcher, http_server: LoopbackServer) -> None:
    http_server.routes["/final"] = Response(200, b"done")
    http_server.routes["/r1"] = Response(301, b"", {"Location": "/r2"})  # relative target
    http_server.routes["/r2"] = Response(308, b"", {"Location": http_server.url("/final")})
    r = fetcher.get(http_server.url("/r1"))
    assert r.content == b"done" and r.url == http_server.url("/final")
    assert r.history == (http_server.url("/r1"), http_server.url("/r2"))

    for i in range(10):
        http_server.routes[f"/chain{i}"] = Response(302, b"", {"Location": f"/chain{i + 1}"})
    with pytest.raises(TooManyRedirects, match="more than 5 redirects"):
        fetcher.get(http_server.url("/chain0"))
    assert http_server.hits("/chain6") == 0

    http_server.routes["/loopa"] = Response(302, b"", {"Location": "/loopb"})
    http_server.routes["/loopb"] = Response(307, b"", {"Location": "/loopa"})
    with pytest.raises(TooManyRedirects, match="redirect loop"):
        fetcher.get(http_server.url("/loopa"))

    http_server.routes["/noloc"] = Response(302, b"")
    with pytest.raises(HTTPStatusError, match="without a Location"):
        fetcher.get(http_server.url("/noloc"))


def test_redirect_to_another_scheme_is_refused(fetcher: Fetcher, http_server: LoopbackServer) -> None:
    http_server.routes["/to-file"] = Response(302, b"", {"Location": "file:///etc/passwd"})
    with pytest.raises(BlockedURL, match="only http and https"):
        fetcher.get(http_server.url("/to-file"))


def test_retry_after_short_is_waited_for(fetcher: Fetcher, http_server: LoopbackServer) -> None:
    calls = []

    def route(h):
        calls.append(time.monotonic())
        return Response(503, b"busy", {"Retry-After": "1"}) if len(calls) == 1 else Response(200, b"ok")

    http_server.routes["/busy"] = route
    assert fetcher.get(http_server.url("/busy")).content == b"ok"
    assert calls[1] - calls[0] >= 0.95


def test_retry_after_long_is_raised_for_rescheduling(fetcher: Fetcher, http_server: LoopbackServer) -> None:
    http_server.routes["/limited"] = Response(429, b"slow down", {"Retry-After": "3600"})
    t0 = time.monotonic()
    with pytest.raises(HTTPStatusError) as info:
        fetcher.get(http_server.url("/limited"))
    assert time.monotonic() - t0 < 1
    assert info.value.status == 429 and info.value.retry_after == 3600
    assert http_server.hits("/limited") == 1
    assert "Retry-After 3600s" in info.value.message


def test_retry_after_http_date() -> None:
    now = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", now) == 0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None


def test_5xx_is_retried_with_backoff_4xx_is_not(fetcher: Fetcher, http_server: LoopbackServer) -> None:
    seq = iter([Response(502, b""), Response(200, b"ok")])
    http_server.routes["/flaky"] = lambda h: next(seq)
    assert fetcher.get(http_server.url("/flaky")).content == b"ok"
    assert http_server.hits("/flaky") == 2

    with pytest.raises(HTTPStatusError, match="HTTP 404 Not Found") as info:
        fetcher.get(http_server.url("/missing"))
    assert info.value.status == 404 and http_server.hits("/missing") == 1

    http_server.routes["/down"] = Response(500, b"")
    with pytest.raises(HTTPStatusError, match="HTTP 500"):
        fetcher.get(http_server.url("/down"))
    assert http_server.hits("/down") == 2  # retries=1 in the test settings


def test_connection_refused(fetcher: Fetcher, free_port: int) -> None:
    with pytest.raises(ConnectError, match=f"cannot connect to 127.0.0.1:{free_port}"):
        fetcher.get(f"http://127.0.0.1:{free_port}/feed")


def test_per_host_concurrency_is_limited(settings: Settings, http_server: LoopbackServer) -> None:
    lock = threading.Lock()
    active = [0, 0]  # current, peak

    def slow(h):
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return Response(200, b"ok")

    http_server.routes["/slow"] = slow
    with Fetcher(_http(settings, per_host_concurrency=2)) as f, ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: f.get(http_server.url("/slow")).content, range(6)))
    assert results == [b"ok"] * 6
    assert active[1] == 2


# ---------------------------------------------------------------- the SSRF guard


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/feed",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "gopher://127.0.0.1:25/",
        "//example.com/feed",
        "http://user:secret@example.com/feed",
        "https://token@example.com/feed",
        "http:///nohost",
    ],
)
def test_odd_schemes_and_credentials_are_refused(fetcher: Fetcher, url: str) -> None:
    with pytest.raises(BlockedURL):
        fetcher.get(url)


def test_private_addresses_refused_unless_allowed(settings: Settings, http_server: LoopbackServer) -> None:
    http_server.routes["/feed"] = Response(200, b"secret")
    port = http_server.port
    with Fetcher(_http(settings, allow_private_addresses=False)) as f:
        for url in (
            f"http://127.0.0.1:{port}/feed",
            f"http://localhost:{port}/feed",
            f"http://127.1:{port}/feed",
            f"http://2130706433:{port}/feed",  # 127.0.0.1 as one number
            f"http://[::1]:{port}/feed",
            f"http://[::ffff:127.0.0.1]:{port}/feed",
            f"http://0.0.0.0:{port}/feed",
        ):
            with pytest.raises(BlockedURL, match="refused") as info:
                f.get(url)
            assert "address" in info.value.message
    assert http_server.hits("/feed") == 0
    with Fetcher(_http(settings, allow_private_addresses=True)) as f:
        assert f.get(f"http://localhost:{port}/feed").content == b"secret"


def test_redirect_into_private_space_is_refused(settings: Settings, http_server: LoopbackServer) -> None:
    # The guard runs at every connect: once the first (loopback) hop has been
    # served, it is switched to refuse private space, so the redirect target is
    # checked on its own.
    with Fetcher(_http(settings, allow_private_addresses=True)) as f:

        def jump(h):
            f._guard._allow_private = False
            return Response(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})

        http_server.routes["/jump"] = jump
        with pytest.raises(BlockedURL, match="169.254.169.254 is a link-local address"):
            f.get(http_server.url("/jump"))
    assert http_server.hits("/jump") == 1


@pytest.mark.parametrize(
    "address,blocked",
    [
        ("127.0.0.1", True), ("10.0.0.8", True), ("172.16.5.4", True), ("192.168.1.1", True),
        ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True),
        ("240.0.0.1", True), ("255.255.255.255", True), ("192.0.2.1", True), ("::1", True), ("::", True),
        ("fe80::1", True), ("fc00::1", True), ("ff02::1", True), ("::ffff:10.0.0.1", True),
        ("2002:7f00:1::", True),  # 6to4 wrapping 127.0.0.1
        ("8.8.8.8", False), ("151.101.1.69", False), ("2606:4700:4700::1111", False),
    ],
)  # fmt: skip
def test_blocked_reason(address: str, blocked: bool) -> None:
    assert (blocked_reason(address) is not None) is blocked
