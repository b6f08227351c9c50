"""Hostile article pages through the extraction stage (real loopback server, real worker processes).

Each hostile page must end its entry with a clear, recorded reason (the feed's text
is used instead where the page is unusable), in bounded time, while the good pages
of the same pass are extracted and the store keeps its invariants.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from functools import cache

import idna
import pytest
from sqlalchemy import select

from conftest import LoopbackServer, Response
from hostile import allow_only, article_page, article_text, check_store, record, resolve_as, rss, rss_item
from pipeline import extract, feeds
from pipeline.config import Settings
from pipeline.fetcher import BlockedURL, Fetcher, TooManyRedirects
from pipeline.store import Article, ArticleUrl, Entry, Feed, Store
from pipeline.types import FeedSpec
from pipeline.urls import canonical_url

MAX_PAGE = 2 * 1024 * 1024
FEED_TEXT = ("Officials from the three capitals met on the sidelines of the summit to discuss trade, visas and the "
             "security of shipping lanes, according to a statement released after the meeting ended late on Friday.")
IDN_HOST = "समाचार.उदाहरण"  # "news.example" in Hindi
IDN_PUNY = idna.encode(IDN_HOST, uts46=True).decode()


@cache
def _gzip_bomb() -> bytes:
    return gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)  # 64 MiB of zeros in ~64 KiB


@cache
def _deflate_bomb() -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate, as many servers send it
    return c.compress(bytes(64 * 1024 * 1024)) + c.flush()


def _drip(stop: threading.Event):
    def write(h) -> None:
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        try:
            while not stop.is_set():
                h.wfile.write(b"<p>")
                h.wfile.flush()
                stop.wait(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass

    return write


def _endless(stop: threading.Event):
    def write(h) -> None:
        h.send_header("Content-Type", "text/html")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        chunk = b"<p>" + b"endless page text " * 3000 + b"</p>"
        try:
            while not stop.is_set():
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass

    return write


def _stall(stop: threading.Event):
    def write(h) -> None:
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", "5000")
        h.end_headers()
        try:
            h.wfile.write(b"<html><body><p>Half a page")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        stop.wait(15)

    return write


def _giant_html() -> bytes:
    title, paras = article_text(7)
    filler = [f"Paragraph {i} of the annex lists the tariff lines agreed for the {i}th schedule of goods." for i in range(12_000)]
    return article_page(title, paras + filler)[: MAX_PAGE - 1024]


def _nested_html(depth: int = 60_000) -> bytes:
    title, paras = article_text(8)
    return (b"<!doctype html><html><head><title>Nested</title></head><body>" + b"<div><span>" * depth
            + article_page(title, paras) + b"</span></div>" * depth + b"</body></html>")


HOSTILE_PAGES = {
    # name: (expected article status set, fragment of the recorded reason or None)
    "gzip-bomb": ({"fallback"}, "larger than 2,097,152 bytes (after decompression)"),
    "deflate-bomb": ({"fallback"}, "larger than 2,097,152 bytes (after decompression)"),
    "double-gzip-bomb": ({"fallback"}, "larger than 2,097,152 bytes (after decompression)"),
    "drip": ({"fallback"}, "no complete response within 3s"),
    "endless": ({"fallback"}, "larger than 2,097,152 bytes"),
    "stall": ({"fallback"}, "timeout"),
    "pdf": ({"fallback"}, "not an HTML page (application/pdf)"),
    "jpeg": ({"fallback"}, "not an HTML page (image/jpeg)"),
    "pdf-as-html": ({"fallback"}, "not an HTML page (text/html)"),
    "zip-as-html": ({"fallback"}, "not an HTML page"),
    "brotli-unasked": ({"fallback", "ok"}, None),
    "giant-html": ({"ok", "fallback"}, None),
    "nested-html": ({"ok", "fallback"}, None),
    "redirect-loop": ({"fallback"}, "redirect loop"),
    "redirect-chain": ({"fallback"}, "more than 5 redirects"),
    "redirect-to-ftp": ({"fallback"}, "only http and https are fetched"),
    "redirect-with-credentials": ({"fallback"}, "refused URL with credentials"),
    "not-found": ({"fallback"}, "HTTP 404"),
    "empty": ({"fallback"}, "the page is empty"),
    "idn-unreachable": ({"fallback"}, "cannot resolve host"),
}


def _serve(server: LoopbackServer, stop: threading.Event) -> None:
    r = server.routes
    html = {"Content-Type": "text/html; charset=utf-8"}
    r["/p/gzip-bomb"] = Response(200, _gzip_bomb(), {**html, "Content-Encoding": "gzip"})
    r["/p/deflate-bomb"] = Response(200, _deflate_bomb(), {**html, "Content-Encoding": "deflate"})
    r["/p/double-gzip-bomb"] = Response(200, gzip.compress(_gzip_bomb()), {**html, "Content-Encoding": "gzip, gzip"})
    r["/p/drip"] = Response(200, _drip(stop))
    r["/p/endless"] = Response(200, _endless(stop))
    r["/p/stall"] = Response(200, _stall(stop))
    r["/p/pdf"] = Response(200, b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n" + bytes(5000), {"Content-Type": "application/pdf"})
    r["/p/jpeg"] = Response(200, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(5000), {"Content-Type": "image/jpeg"})
    r["/p/pdf-as-html"] = Response(200, b"%PDF-1.4\n" + bytes(5000), html)
    r["/p/zip-as-html"] = Response(200, b"PK\x03\x04" + bytes(5000), html)
    r["/p/brotli-unasked"] = Response(200, bytes(range(256)) * 20, {**html, "Content-Encoding": "br"})
    r["/p/giant-html"] = Response(200, _giant_html(), html)
    r["/p/nested-html"] = Response(200, _nested_html(), html)
    r["/p/redirect-loop"] = Response(302, b"", {"Location": "/p/redirect-loop-2"})
    r["/p/redirect-loop-2"] = Response(302, b"", {"Location": "/p/redirect-loop"})
    for i in range(7):
        r[f"/p/redirect-chain{'' if i == 0 else f'-{i}'}"] = Response(302, b"", {"Location": f"/p/redirect-chain-{i + 1}"})
    r["/p/redirect-to-ftp"] = Response(301, b"", {"Location": "ftp://files.example/article.pdf"})
    r["/p/redirect-with-credentials"] = Response(301, b"", {"Location": f"http://editor:s3cret@127.0.0.1:{server.port}/g/0"})
    r["/p/empty"] = Response(200, b"", html)
    for n in range(4):
        title, paras = article_text(100 + n)
        r[f"/g/{n}"] = Response(200, article_page(title, paras), html)
    title, paras = article_text(200)
    r["/idn/1"] = Response(200, article_page(title, paras), html)


def _feed(server: LoopbackServer) -> bytes:
    items = [rss_item(server.url(f"/p/{name}"), title=f"Hostile page {name}", guid=f"page-{name}",
                      description=FEED_TEXT) for name in HOSTILE_PAGES if name != "idn-unreachable"]
    items.append(rss_item(f"http://unreachable.{IDN_HOST}/a/1", title="IDN host that does not resolve",
                          guid="page-idn-unreachable", description=FEED_TEXT))
    items += [rss_item(server.url(f"/g/{n}"), title=article_text(100 + n)[0], guid=f"good-{n}", description=FEED_TEXT)
              for n in range(4)]
    # One article linked by its Unicode and its punycode host name: one article.
    items.append(rss_item(f"http://{IDN_HOST}:{server.port}/idn/1", title=article_text(200)[0], guid="idn-unicode"))
    items.append(rss_item(f"http://{IDN_PUNY}:{server.port}/idn/1?utm_source=x", title=article_text(200)[0],
                          guid="idn-punycode"))
    return rss(items).encode()


def _page_settings(settings: Settings) -> Settings:
    http = settings.http.model_copy(update={"max_page_bytes": MAX_PAGE, "read_timeout": 1.5, "total_timeout": 3,
                                            "retries": 0, "max_concurrency": 8, "per_host_concurrency": 8})
    ingest_cfg = settings.ingest.model_copy(update={"extract_timeout": 20, "extract_workers": 2, "batch_size": 10})
    return settings.model_copy(update={"http": http, "ingest": ingest_cfg})


def test_hostile_pages_fail_alone_with_a_reason_and_good_pages_are_extracted(
    store: Store, settings: Settings, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    _serve(http_server, stop)
    http_server.routes["/feed.xml"] = Response(200, _feed(http_server), {"Content-Type": "application/rss+xml"})
    resolve_as(monkeypatch, {IDN_PUNY: ["127.0.0.1"]})
    cfg = _page_settings(settings)
    feeds.sync_feeds(store, [FeedSpec(name="Hostile pages", url=http_server.url("/feed.xml"))])
    with store.session() as s:
        (fid,) = s.scalars(select(Feed.id))
    fetched = feeds.fetch_feeds(store, cfg, [fid])
    assert fetched.entries_new == len(HOSTILE_PAGES) + 6

    t0 = time.monotonic()
    try:
        report = extract.extract_pending(store, cfg)
    finally:
        stop.set()
    elapsed = time.monotonic() - t0
    assert elapsed < 60, f"the hostile pages held the stage for {elapsed:.0f}s"

    with store.session() as s:
        rows = {e.guid.rsplit("/", 1)[-1]: e for e in s.scalars(select(Entry))}
        arts = {a.id: a for a in s.scalars(select(Article))}
        aliases = {u.url: u.article_id for u in s.scalars(select(ArticleUrl))}
    outcomes = {}
    for name, (statuses, fragment) in HOSTILE_PAGES.items():
        e = rows[f"page-{name}"]
        assert e.status == "done", (name, e.status, e.error)
        a = arts[e.article_id]
        reason = a.extraction_error or ""
        outcomes[name] = (a.extraction_status, reason[:120])
        assert a.extraction_status in statuses, (name, a.extraction_status, reason)
        if fragment:
            assert fragment in reason, (name, reason)
        assert "\n" not in reason and len(reason) < 1000
        if a.extraction_status == "fallback":
            assert a.text.startswith("Officials from the three capitals"), name
    for n in range(4):
        a = arts[rows[f"good-{n}"].article_id]
        assert a.extraction_status == "ok" and a.word_count > 60, (n, a.extraction_error)
    # The IDN article: fetched through its punycode name, keyed once for both spellings.
    uni, puny = rows["idn-unicode"], rows["idn-punycode"]
    assert uni.article_id == puny.article_id and arts[uni.article_id].extraction_status == "ok"
    key = f"https://{IDN_PUNY}:{http_server.port}/idn/1"
    assert arts[uni.article_id].canonical_url == key and aliases[key] == uni.article_id
    # Nothing with credentials was stored.
    assert not [u for u in [*aliases, *(a.url for a in arts.values())] if "s3cret" in u]
    assert http_server.hits("/g/0") == 1  # the credentialed redirect never reached it

    figures = check_store(store, clustered=False)
    record("hostile-pages", backend=store.dialect, pages=len(HOSTILE_PAGES), good=5, seconds=round(elapsed, 1),
           articles=figures["articles"], extracted=report.extracted, fallback=report.fallback, failed=report.failed,
           outcomes=outcomes, duplicates=0)


# ---------------------------------------------------------------- SSRF through redirects, at the stage


@pytest.fixture
def internal_service() -> LoopbackServer:
    """A second loopback server standing for an internal admin service: it must never be reached."""
    server = LoopbackServer().start()
    server.routes["/admin"] = Response(200, b"<html><body><p>internal secrets</p></body></html>",
                                       {"Content-Type": "text/html"})
    yield server
    server.stop()


def test_redirects_into_private_space_are_refused_during_extraction(
    sqlite_store: Store, settings: Settings, http_server: LoopbackServer, internal_service: LoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """allow_private_addresses off, with the test server alone let through: every redirect into
    loopback, private or link-local space (by literal, by name, in disguise) is refused."""
    store = sqlite_store
    port = internal_service.port
    targets = {
        "metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "rfc1918": "http://10.0.0.5/admin",
        "internal-loopback": f"http://127.0.0.1:{port}/admin",
        "localhost": f"http://localhost:{port}/admin",
        "ipv6-loopback": f"http://[::1]:{port}/admin",
        "mapped-ipv6": f"http://[::ffff:127.0.0.1]:{port}/admin",
        "decimal": f"http://2130706433:{port}/admin",
        "octal": f"http://0177.0.0.1:{port}/admin",
        "short": f"http://127.1:{port}/admin",
        "zero": f"http://0.0.0.0:{port}/admin",
        "rebinding-name": f"http://internal.news.example:{port}/admin",
        "mixed-answers": f"http://mixed.news.example:{port}/admin",
    }
    resolve_as(monkeypatch, {"internal.news.example": ["127.0.0.1"], "mixed.news.example": ["93.184.216.34", "10.1.2.3"]})
    allow_only(monkeypatch, "127.0.0.1", http_server.port)
    for name, target in targets.items():
        http_server.routes[f"/r/{name}"] = Response(302, b"", {"Location": target})
    items = [rss_item(http_server.url(f"/r/{name}"), title=f"Redirect {name}", guid=f"ssrf-{name}", description=FEED_TEXT)
             for name in targets]
    http_server.routes["/feed.xml"] = Response(200, rss(items).encode(), {"Content-Type": "application/rss+xml"})
    strict = settings.model_copy(update={
        "http": settings.http.model_copy(update={"allow_private_addresses": False, "retries": 0})})
    feeds.sync_feeds(store, [FeedSpec(name="Redirects", url=http_server.url("/feed.xml"))])
    with store.session() as s:
        (fid,) = s.scalars(select(Feed.id))
    assert feeds.fetch_feeds(store, strict, [fid]).entries_new == len(targets)

    extract.extract_pending(store, strict)

    with store.session() as s:
        arts = {e.guid: s.get(Article, e.article_id) for e in s.scalars(select(Entry))}
    for name in targets:
        a = arts[f"ssrf-{name}"]
        # Refused by the guard, or (an octal address) not even a URL to httpx: never connected.
        reason = a.extraction_error or ""
        assert a.extraction_status == "fallback" and ("refused" in reason or "Invalid IPv4" in reason), (name, reason)
        assert "secrets" not in a.text
    assert internal_service.requests == []
    assert all(http_server.hits(f"/r/{name}") == 1 for name in targets)  # refused at once, never retried
    record("ssrf-redirects", targets=len(targets), refused=len(targets), internal_hits=len(internal_service.requests))


def test_fetcher_refuses_odd_urls_before_connecting(settings: Settings, http_server: LoopbackServer) -> None:
    """Links no feed should give: never fetched, each refused with its reason."""
    http_server.routes["/x"] = Response(200, b"<p>x</p>", {"Content-Type": "text/html"})
    odd = [
        "javascript:alert(document.cookie)",
        "JaVaScRiPt:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "file:///etc/passwd",
        "ftp://files.example/report.pdf",
        "gopher://127.0.0.1:70/_SET%20x",
        f"http://user:pass@127.0.0.1:{http_server.port}/x",
        f"http://:@127.0.0.1:{http_server.port}/x",
        f"http://127.0.0.1:{http_server.port}@evil.example/x",
        "http:///nohost",
        "//127.0.0.1/x",
        "\x00http://127.0.0.1/x",
    ]
    with Fetcher(settings.http) as f:
        for url in odd:
            with pytest.raises(BlockedURL) as info:
                f.get(url)
            assert info.value.message and "\n" not in info.value.message
    assert http_server.requests == []
    record("odd-urls", urls=len(odd), refused=len(odd), requests_made=0)


def test_redirect_loops_through_several_names_are_caught(settings: Settings, http_server: LoopbackServer) -> None:
    base = http_server.url("")
    http_server.routes["/a"] = Response(301, b"", {"Location": f"http://localhost:{http_server.port}/b"})
    http_server.routes["/b"] = Response(302, b"", {"Location": f"{base}/c?x=1"})
    http_server.routes["/c"] = Response(307, b"", {"Location": "/a"})
    with Fetcher(settings.http) as f, pytest.raises(TooManyRedirects, match="redirect loop"):
        f.get(base + "/a")
    assert http_server.hits("/a") == 1


def test_idn_homographs_keep_distinct_keys() -> None:
    latin = canonical_url("https://paypal.example/a")
    cyrillic = canonical_url("https://раураl.example/a")  # Cyrillic letters that look Latin
    assert latin != cyrillic and cyrillic.startswith("https://xn--")
    assert canonical_url(f"http://{IDN_HOST}/a") == canonical_url(f"https://{IDN_PUNY}/a")
