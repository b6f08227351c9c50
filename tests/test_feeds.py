"""Feed list, OPML, parsing, and fetch_feeds against a real loopback server and real stores."""

from __future__ import annotations

import gzip
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from conftest import LoopbackServer, Response
from sqlalchemy import func, select

from pipeline import feeds
from pipeline.config import DATA_DIR, Settings
from pipeline.store import Entry, Feed, Store, utcnow
from pipeline.types import FeedSpec

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def item(n: int, *, age_hours: float = 1, link: str | None = None, guid: str | None = None, title: str = "") -> str:
    when = format_datetime(NOW - timedelta(hours=age_hours), usegmt=True)
    link = f"https://news.example.com/story/{n}" if link is None else link
    guid_xml = f"<guid isPermaLink='false'>{guid}</guid>" if guid is not None else ""
    return (
        f"<item><title>{title or f'Story {n}'}</title><link>{link}</link>{guid_xml}"
        f"<pubDate>{when}</pubDate><description>Summary of story {n}.</description></item>"
    )


def rss(items: list[str], *, encoding: str = "utf-8", decl: bool = True) -> str:
    head = f'<?xml version="1.0" encoding="{encoding}"?>\n' if decl else ""
    return f'{head}<rss version="2.0"><channel><title>Example</title><link>https://news.example.com/</link>{"".join(items)}</channel></rss>'


MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"


def feed_route(body: bytes, *, etag: str = '"e1"', modified: str = MODIFIED, ctype: str = "application/rss+xml"):
    """A feed that answers conditional requests like a well-behaved server."""

    def route(h):
        if h.headers.get("If-None-Match") == etag or h.headers.get("If-Modified-Since") == modified:
            return Response(304, b"", {"ETag": etag})
        return Response(200, body, {"Content-Type": ctype, "ETag": etag, "Last-Modified": modified})

    return route


def add_feeds(store: Store, server: LoopbackServer, *paths: str) -> list[int]:
    specs = [FeedSpec(name=p.strip("/"), url=server.url(p), country="PK") for p in paths]
    feeds.sync_feeds(store, specs)
    with store.session() as s:
        by_url = {f.url: f.id for f in s.scalars(select(Feed))}
    return [by_url[sp.url] for sp in specs]


def feed_row(store: Store, feed_id: int) -> Feed:
    with store.session() as s:
        return s.get(Feed, feed_id)


def entry_rows(store: Store, feed_id: int | None = None) -> list[Entry]:
    with store.session() as s:
        q = select(Entry).order_by(Entry.id)
        if feed_id is not None:
            q = q.where(Entry.feed_id == feed_id)
        return list(s.scalars(q))


# ---------------------------------------------------------------- feed list and OPML


def test_default_feed_list_is_valid() -> None:
    specs = feeds.load_feed_list(DATA_DIR / "feeds.toml")
    assert len(specs) >= 30
    assert len({s.url for s in specs}) == len(specs)
    assert all(s.url.startswith("https://") and s.name and s.country for s in specs)
    countries = {s.country for s in specs}
    assert {"PK", "IN", "US", "GB", "QA"} <= countries
    names = " ".join(s.name for s in specs)
    for outlet in ("Dawn", "Express Tribune", "Geo News", "The News", "Times of India", "The Hindu",
                   "Hindustan Times", "Indian Express", "NDTV", "State Department", "Google News",
                   "Reuters", "AP", "Al Jazeera", "BBC", "VOA", "The Diplomat"):  # fmt: skip
        assert outlet in names, outlet


def test_feed_list_errors_name_the_feed(tmp_path: Path) -> None:
    bad = tmp_path / "feeds.toml"
    bad.write_text('[[feed]]\nname = "A"\nurl = "https://a.example/rss"\n\n[[feed]]\nname = "B"\nurl = "ftp://b.example/"\n')
    with pytest.raises(ValueError, match=r"feed #2 \(B\).*only http and https"):
        feeds.load_feed_list(bad)
    bad.write_text("[[feed]\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        feeds.load_feed_list(bad)
    dup = tmp_path / "dup.toml"
    dup.write_text('[[feed]]\nurl = "https://a.example/rss"\n[[feed]]\nname="again"\nurl = "https://a.example/rss"\ntags="x, y"\n')
    (spec,) = feeds.load_feed_list(dup)
    assert spec.name == "a.example"


OPML = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE opml [<!ENTITY xxe SYSTEM "file:///etc/passwd"><!ENTITY lol "lol">]>
<opml version="1.0">
  <head><title>My feeds</title></head>
  <body>
    <outline text="Pakistan">
      <outline text="Dawn" title="Dawn" type="rss" xmlUrl="https://www.dawn.com/feeds/home" htmlUrl="https://www.dawn.com/"/>
      <outline text="Geo" xmlurl="https://www.geo.tv/rss/1/1" country="pk" category="/news/top,wire"/>
      <outline text="Broken" xmlUrl="javascript:alert(1)"/>
      <outline text="Secret &xxe;" xmlUrl="https://leak.example/&lol;"/>
    </outline>
    <outline text="No url here"/>
    <outline text="India"><outline text="Deep"><outline text="The Hindu" xmlUrl="https://www.thehindu.com/news/national/feeder/default.rss"/></outline></outline>
    <junk>ignored</junk>
    <outline text="Dawn again" xmlUrl="https://www.dawn.com/feeds/home"/>
  </body>
</opml>"""


def test_opml_import_nested_junk_and_no_entities(tmp_path: Path) -> None:
    specs = feeds.import_opml(OPML)
    by_url = {s.url: s for s in specs}
    assert list(by_url) == [
        "https://www.dawn.com/feeds/home",
        "https://www.geo.tv/rss/1/1",
        "https://leak.example/lol",  # a small internal entity is harmless
        "https://www.thehindu.com/news/national/feeder/default.rss",
    ]
    assert by_url["https://www.dawn.com/feeds/home"].site_url == "https://www.dawn.com/"
    assert by_url["https://www.dawn.com/feeds/home"].tags == ("pakistan",)
    geo = by_url["https://www.geo.tv/rss/1/1"]
    assert geo.country == "PK" and geo.tags == ("pakistan", "news", "top", "wire")
    assert by_url["https://www.thehindu.com/news/national/feeder/default.rss"].tags == ("india", "deep")
    # External entities are never fetched, exponential ones never expanded.
    assert "root:" not in by_url["https://leak.example/lol"].name
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10 if i else "lol"}">' for i in range(10))
    bomb = f'<?xml version="1.0"?><!DOCTYPE opml [{laughs}]><opml><body><outline text="&l9;" xmlUrl="https://a.example/&l9;"/></body></opml>'
    assert all(len(s.url) < 1000 for s in feeds.import_opml(bomb.encode()))
    path = tmp_path / "f.opml"
    path.write_bytes(OPML)
    assert feeds.load_feed_list(path) == specs
    with pytest.raises(ValueError, match="not an OPML"):
        feeds.import_opml(b"<html><body>no</body></html>")
    with pytest.raises(ValueError, match="not an OPML"):
        feeds.import_opml(b"\x00\x01 garbage")


def test_opml_and_toml_round_trip(tmp_path: Path) -> None:
    specs = [
        FeedSpec("Dawn & Co <1>", "https://www.dawn.com/feeds/home?a=1&b=2", "PK", ("outlet", "pakistan"), "https://www.dawn.com/"),
        FeedSpec('Quote "q"', "https://example.org/rss", "", (), ""),
    ]
    assert feeds.import_opml(feeds.export_opml(specs).encode()) == specs
    path = tmp_path / "out.toml"
    path.write_text(feeds.export_toml(specs), encoding="utf-8")
    assert feeds.load_feed_list(path) == specs


# ---------------------------------------------------------------- store: sync and due


def test_sync_feeds_inserts_updates_never_deletes(store: Store) -> None:
    a = FeedSpec("A", "https://a.example/rss", "PK", ("x",))
    b = FeedSpec("B", "https://b.example/rss", "IN")
    assert feeds.sync_feeds(store, [a, b]) == 2
    assert feeds.sync_feeds(store, [a, b]) == 0
    with store.session() as s:
        s.scalars(select(Feed).where(Feed.url == b.url)).one().enabled = False
    assert feeds.sync_feeds(store, [FeedSpec("A renamed", a.url, "US", ("y", "z")), b]) == 0
    with store.session() as s:
        rows = {f.url: f for f in s.scalars(select(Feed))}
    assert (rows[a.url].name, rows[a.url].country, rows[a.url].tags) == ("A renamed", "US", ["y", "z"])
    assert rows[b.url].enabled is False  # a removed feed stays removed
    assert feeds.sync_feeds(store, []) == 0
    assert len(rows) == 2


def test_due_feed_ids(sqlite_store: Store) -> None:
    store = sqlite_store
    feeds.sync_feeds(store, [FeedSpec(str(i), f"https://{i}.example/rss") for i in range(5)])
    now = utcnow()
    with store.session() as s:
        f = {x.name: x for x in s.scalars(select(Feed))}
        f["1"].next_fetch_at = now + timedelta(minutes=5)
        f["2"].next_fetch_at = now - timedelta(minutes=5)
        f["3"].gone = True
        f["4"].enabled = False
        ids = {k: v.id for k, v in f.items()}
    assert feeds.due_feed_ids(store, now=now) == [ids["0"], ids["2"]]
    assert feeds.due_feed_ids(store, now=now, force=True) == [ids["0"], ids["2"], ids["1"]]


# ---------------------------------------------------------------- parsing


def test_parse_feed_normalises_entries() -> None:
    old = format_datetime(datetime(1970, 1, 2, tzinfo=timezone.utc), usegmt=True)
    future = format_datetime(NOW + timedelta(days=30), usegmt=True)
    body = f"""<?xml version="1.0"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel><title>T</title>
<item><title>Relative &amp; guid-less</title><link>/news/a?x=1</link><pubDate>Tue, 02 Jan 2024 10:00:00 +0500</pubDate>
  <description>&lt;p&gt;First &lt;b&gt;para&lt;/b&gt;.&lt;/p&gt;&lt;script&gt;evil()&lt;/script&gt;&lt;p&gt;Second.&lt;/p&gt;</description>
  <content:encoded><![CDATA[<p>Full text</p><p>More text &eacute;</p>]]></content:encoded>
  <dc:creator>Staff Reporter</dc:creator></item>
<item><title>Too old</title><link>https://x.example/b</link><guid isPermaLink="false">id-b</guid><pubDate>{old}</pubDate></item>
<item><title>From the future</title><link>https://x.example/c</link><pubDate>{future}</pubDate></item>
<item><title>No link at all</title><description>Only words.</description></item>
<item></item>
</channel></rss>""".encode()
    entries, bozo = feeds.parse_feed(body, {"Content-Type": "application/rss+xml"}, "https://x.example/feeds/main.xml")
    assert bozo is None
    a = entries[0]
    assert a.title == "Relative & guid-less"
    assert a.link == a.guid == "https://x.example/news/a?x=1"
    assert a.published == datetime(2024, 1, 2, 5, 0, tzinfo=timezone.utc)
    assert a.summary == "First para.\nSecond." and "evil" not in a.summary
    assert a.content == "Full text\nMore text é"
    assert a.author == "Staff Reporter"
    by_title = {e.title: e for e in entries}
    assert by_title["Too old"].published is None and by_title["Too old"].guid == "id-b"
    assert by_title["From the future"].published is None
    assert by_title["No link at all"].link == "" and by_title["No link at all"].guid.startswith("sha256:")
    assert len(entries) == 4  # the empty item has nothing to key on


def test_parse_feed_caps_newest_first(settings: Settings) -> None:
    body = rss([item(i, age_hours=i) for i in (5, 1, 3, 2, 4)]).encode()
    parsed = feeds.parse_feed_full(body, {}, "https://news.example.com/rss", max_entries=3)
    assert [e.title for e in parsed.entries] == ["Story 1", "Story 2", "Story 3"]
    assert parsed.version == "rss20" and parsed.title == "Example"


def test_atom_with_content_location_base() -> None:
    body = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><id>urn:x</id><updated>2024-01-01T00:00:00Z</updated>
<entry><id>urn:e1</id><title type="html">&lt;em&gt;Emph&lt;/em&gt; title</title><link rel="alternate" href="e1.html"/>
<updated>2024-01-01T00:00:00Z</updated><author><name>A. Writer</name></author><summary type="text">Plain &lt;text&gt;</summary></entry></feed>"""
    (e,), bozo = feeds.parse_feed(body, {"Content-Location": "/atom/"}, "https://y.example/feeds/atom.xml")
    assert bozo is None
    assert e.link == "https://y.example/atom/e1.html" and e.guid == "urn:e1"
    assert e.title == "Emph title" and e.summary == "Plain <text>" and e.author == "A. Writer"


# ---------------------------------------------------------------- fetch_feeds


def test_conditional_get_second_pass_stores_nothing(
    settings: Settings, store: Store, http_server: LoopbackServer
) -> None:
    http_server.routes["/rss"] = feed_route(rss([item(i) for i in range(3)]).encode())
    (fid,) = add_feeds(store, http_server, "/rss")
    first = feeds.fetch_feeds(store, settings, [fid], run_id=7)
    assert (first.feeds_ok, first.entries_new, first.entries_known) == (1, 3, 0)
    assert len(first.entry_ids) == 3
    rows = entry_rows(store, fid)
    assert all(r.status == "pending" and r.run_id == 7 and r.canonical_link for r in rows)
    f = feed_row(store, fid)
    assert (f.etag, f.last_modified, f.last_status, f.last_outcome) == ('"e1"', MODIFIED, 200, "ok")
    assert f.last_new_entry_at == f.last_fetch_at == f.last_success_at
    assert f.next_fetch_at - f.last_fetch_at == timedelta(minutes=settings.ingest.feed_interval_minutes)

    second = feeds.fetch_feeds(store, settings, [fid])
    assert (second.feeds_ok, second.feeds_not_modified, second.entries_seen, second.entries_new) == (0, 1, 0, 0)
    sent = http_server.requests[-1][2]
    assert sent["If-None-Match"] == '"e1"' and sent["If-Modified-Since"] == MODIFIED
    assert len(entry_rows(store, fid)) == 3
    f2 = feed_row(store, fid)
    assert f2.last_status == 304 and f2.last_outcome == "not_modified" and f2.etag == '"e1"'
    assert f2.last_new_entry_at == f.last_new_entry_at


def test_ingest_twice_without_validators_stores_nothing_twice(
    settings: Settings, store: Store, http_server: LoopbackServer
) -> None:
    http_server.routes["/plain"] = Response(200, rss([item(i) for i in range(4)] + [item(1)]).encode())
    (fid,) = add_feeds(store, http_server, "/plain")
    r1 = feeds.fetch_feeds(store, settings, [fid])
    r2 = feeds.fetch_feeds(store, settings, [fid])
    assert (r1.entries_seen, r1.entries_new) == (4, 4)  # the repeated item counts once
    assert (r2.entries_seen, r2.entries_new, r2.entries_known, r2.entry_ids) == (4, 0, 4, [])
    assert len(entry_rows(store, fid)) == 4
    assert feed_row(store, fid).etag is None


@pytest.mark.parametrize(
    "body,headers,title",
    [
        # Declared in the XML and the header alike.
        (rss([item(1, title="Caf\xe9 \u2013 na\xefve \u201cquotes\u201d")], encoding="windows-1252").encode("cp1252"),
         {"Content-Type": "application/rss+xml; charset=windows-1252"}, "Caf\xe9 \u2013 na\xefve \u201cquotes\u201d"),
        # The XML declaration alone.
        (rss([item(1, title="Se\xf1or \u20ac5")], encoding="windows-1252").encode("cp1252"),
         {"Content-Type": "application/xml"}, "Se\xf1or \u20ac5"),
        # UTF-8 with a byte-order mark and no declaration.
        (b"\xef\xbb\xbf" + rss([item(1, title="\u0627\u0631\u062f\u0648 \u0939\u093f\u0902\u0926\u0940")], decl=False).encode(),
         {"Content-Type": "application/rss+xml"}, "\u0627\u0631\u062f\u0648 \u0939\u093f\u0902\u0926\u0940"),
        # The header says UTF-8, the bytes are windows-1252: bozo, but still readable.
        (rss([item(1, title="d\xe9j\xe0 vu")], encoding="utf-8").encode("cp1252"),
         {"Content-Type": "application/rss+xml; charset=utf-8"}, None),
    ],
)  # fmt: skip
def test_encodings(settings: Settings, sqlite_store: Store, http_server: LoopbackServer, body, headers, title) -> None:
    http_server.routes["/enc"] = Response(200, body, headers)
    (fid,) = add_feeds(sqlite_store, http_server, "/enc")
    report = feeds.fetch_feeds(sqlite_store, settings, [fid])
    assert report.feeds_ok == 1 and report.entries_new == 1
    (row,) = entry_rows(sqlite_store, fid)
    if title is None:
        assert feed_row(sqlite_store, fid).last_bozo
        assert row.title.startswith("d") and row.title.endswith("vu")
    else:
        assert row.title == title
        assert feed_row(sqlite_store, fid).last_bozo is None


def test_malformed_feed_is_used_and_bozo_recorded(
    settings: Settings, sqlite_store: Store, http_server: LoopbackServer
) -> None:
    body = rss([item(1), item(2, title="Tom &amp; Jerry &nbsp; <b>bold"), item(3)]).replace("</channel></rss>", "")
    http_server.routes["/bad"] = Response(200, body.encode(), {"Content-Type": "application/rss+xml"})
    (fid,) = add_feeds(sqlite_store, http_server, "/bad")
    report = feeds.fetch_feeds(sqlite_store, settings, [fid])
    assert report.feeds_ok == 1 and report.entries_new == 3
    f = feed_row(sqlite_store, fid)
    assert f.last_bozo and "SAXParseException" in f.last_bozo and f.last_error is None


def test_html_page_is_not_a_feed(settings: Settings, sqlite_store: Store, http_server: LoopbackServer) -> None:
    page = b"<!doctype html><html><body><p>Hello</p></body></html>"
    http_server.routes["/page"] = Response(200, page, {"Content-Type": "text/html"})
    http_server.routes["/empty"] = Response(200, b"")
    ids = add_feeds(sqlite_store, http_server, "/page", "/empty")
    report = feeds.fetch_feeds(sqlite_store, settings, ids)
    assert report.feeds_failed == 2
    assert "not an RSS/Atom feed (text/html)" in feed_row(sqlite_store, ids[0]).last_error
    assert feed_row(sqlite_store, ids[1]).last_error == "empty response"


def test_entries_with_bad_links_or_too_old_are_skipped(
    settings: Settings, sqlite_store: Store, http_server: LoopbackServer
) -> None:
    body = rss([
        item(1),
        item(2, link="javascript:alert(1)", guid="g2"),
        item(3, age_hours=24 * 400),
        item(4, link="", guid="g4"),
    ])  # fmt: skip
    http_server.routes["/mixed"] = Response(200, body.encode())
    (fid,) = add_feeds(sqlite_store, http_server, "/mixed")
    report = feeds.fetch_feeds(sqlite_store, settings, [fid])
    rows = {r.title: r for r in entry_rows(sqlite_store, fid)}
    assert report.entries_new == 4 and len(report.entry_ids) == 1
    assert rows["Story 1"].status == "pending" and rows["Story 1"].id == report.entry_ids[0]
    assert rows["Story 2"].status == "skipped" and rows["Story 2"].canonical_link == ""
    assert "no usable link" in rows["Story 2"].error
    assert rows["Story 3"].status == "skipped" and "older than 30 days" in rows["Story 3"].error
    assert rows["Story 4"].status == "skipped"


def test_failures_404_410_and_backoff(settings: Settings, store: Store, http_server: LoopbackServer) -> None:
    http_server.routes["/gone"] = Response(410, b"")
    http_server.routes["/ok"] = Response(200, rss([item(1)]).encode())
    ids = add_feeds(store, http_server, "/missing", "/gone", "/ok")
    r = feeds.fetch_feeds(store, settings, ids)
    assert (r.feeds_total, r.feeds_ok, r.feeds_failed) == (3, 1, 2)
    assert any("HTTP 404 Not Found" in e for e in r.errors) and any("HTTP 410 Gone" in e for e in r.errors)
    missing, gone = feed_row(store, ids[0]), feed_row(store, ids[1])
    interval = timedelta(minutes=settings.ingest.feed_interval_minutes)
    assert (missing.last_status, missing.last_outcome, missing.consecutive_failures) == (404, "failed", 1)
    assert missing.gone is False
    assert missing.last_error == "HTTP 404 Not Found"
    assert missing.next_fetch_at - missing.last_fetch_at == 2 * interval
    assert gone.gone is True and gone.last_outcome == "gone"
    due = feeds.due_feed_ids(store, now=utcnow() + timedelta(days=2))
    assert ids[1] not in due and ids[0] in due

    feeds.fetch_feeds(store, settings, [ids[0]])
    feeds.fetch_feeds(store, settings, [ids[0]])
    missing = feed_row(store, ids[0])
    assert missing.consecutive_failures == 3
    assert missing.next_fetch_at - missing.last_fetch_at == 8 * interval
    for _ in range(6):
        feeds.fetch_feeds(store, settings, [ids[0]])
    missing = feed_row(store, ids[0])
    assert missing.next_fetch_at - missing.last_fetch_at == timedelta(hours=settings.ingest.max_backoff_hours)

    # A success resets the failure count.
    http_server.routes["/missing"] = Response(200, rss([item(2)]).encode())
    feeds.fetch_feeds(store, settings, [ids[0]])
    missing = feed_row(store, ids[0])
    assert (missing.consecutive_failures, missing.last_error, missing.last_outcome) == (0, None, "ok")


def test_retry_after(settings: Settings, sqlite_store: Store, http_server: LoopbackServer) -> None:
    http_server.routes["/later"] = Response(429, b"", {"Retry-After": "7200"})
    seq = iter([Response(503, b"", {"Retry-After": "1"}), Response(200, rss([item(1)]).encode())])
    http_server.routes["/soon"] = lambda h: next(seq)
    later, soon = add_feeds(sqlite_store, http_server, "/later", "/soon")
    r = feeds.fetch_feeds(sqlite_store, settings, [later, soon])
    assert (r.feeds_ok, r.feeds_failed) == (1, 1)
    f = feed_row(sqlite_store, later)
    assert f.last_status == 429 and "Retry-After 7200s" in f.last_error
    assert f.next_fetch_at - f.last_fetch_at == timedelta(hours=2)  # Retry-After beats the 1-hour backoff
    assert http_server.hits("/later") == 1  # not waited for inside the run
    assert http_server.hits("/soon") == 2  # a short one is
    assert feed_row(sqlite_store, soon).last_outcome == "ok"


def test_slow_big_and_bombing_feeds_do_not_stop_the_batch(
    settings: Settings, sqlite_store: Store, http_server: LoopbackServer
) -> None:
    http = settings.http.model_copy(update={"read_timeout": 0.5, "total_timeout": 1.5, "max_feed_bytes": 1_000_000})
    settings = settings.model_copy(update={"http": http})
    stop = threading.Event()

    def stall(h) -> None:
        h.send_header("Content-Length", "100000")
        h.end_headers()
        h.wfile.write(b"<rss>")
        h.wfile.flush()
        stop.wait(10)

    http_server.routes["/stall"] = Response(200, stall)
    http_server.routes["/big"] = Response(200, b"<rss>" + b" " * 2_000_000 + b"</rss>")
    http_server.routes["/bomb"] = Response(200, gzip.compress(bytes(50_000_000), 9), {"Content-Encoding": "gzip"})
    http_server.routes["/good"] = Response(200, rss([item(1), item(2)]).encode())
    ids = add_feeds(sqlite_store, http_server, "/stall", "/big", "/bomb", "/good")
    t0 = time.monotonic()
    try:
        r = feeds.fetch_feeds(sqlite_store, settings, ids)
    finally:
        stop.set()
    assert time.monotonic() - t0 < 6
    assert (r.feeds_ok, r.feeds_failed, r.entries_new) == (1, 3, 2)
    errors = [feed_row(sqlite_store, i).last_error for i in ids]
    assert "timeout" in errors[0]
    assert "larger than 1,000,000 bytes" in errors[1]
    assert "larger than 1,000,000 bytes (after decompression)" in errors[2]
    assert errors[3] is None


def test_redirected_feed_and_redirect_loop(
    settings: Settings, sqlite_store: Store, http_server: LoopbackServer
) -> None:
    http_server.routes["/old"] = Response(301, b"", {"Location": "/new"})
    http_server.routes["/new"] = Response(200, rss([item(1, link="/relative/1")]).encode())
    http_server.routes["/loop"] = Response(302, b"", {"Location": "/loop"})
    moved, loop = add_feeds(sqlite_store, http_server, "/old", "/loop")
    r = feeds.fetch_feeds(sqlite_store, settings, [moved, loop])
    assert (r.feeds_ok, r.feeds_failed) == (1, 1)
    (row,) = entry_rows(sqlite_store, moved)
    # Relative links resolve against the final URL of the feed.
    assert row.link == http_server.url("/relative/1")
    assert "redirect loop" in feed_row(sqlite_store, loop).last_error


def test_private_addresses_refused_when_not_allowed(
    settings: Settings, sqlite_store: Store, http_server: LoopbackServer
) -> None:
    strict = settings.model_copy(update={"http": settings.http.model_copy(update={"allow_private_addresses": False})})
    http_server.routes["/rss"] = Response(200, rss([item(1)]).encode())
    (fid,) = add_feeds(sqlite_store, http_server, "/rss")
    r = feeds.fetch_feeds(sqlite_store, strict, [fid])
    assert r.feeds_failed == 1 and http_server.hits("/rss") == 0
    assert "127.0.0.1 is a loopback address" in feed_row(sqlite_store, fid).last_error


def test_unknown_ids_and_progress(settings: Settings, sqlite_store: Store, http_server: LoopbackServer) -> None:
    http_server.routes["/rss"] = Response(200, rss([item(1)]).encode())
    (fid,) = add_feeds(sqlite_store, http_server, "/rss")
    calls = []
    r = feeds.fetch_feeds(sqlite_store, settings, [fid, 9999], progress=lambda *a: calls.append(a))
    assert r.feeds_total == 1 and r.feeds_ok == 1 and "9999" in r.errors[0]
    assert calls == [("fetch", 0, 1), ("fetch", 1, 1)]
    assert feeds.fetch_feeds(sqlite_store, settings, []).feeds_total == 0


def test_concurrent_passes_store_each_entry_once(settings: Settings, store: Store, http_server: LoopbackServer) -> None:
    paths = [f"/c{i}" for i in range(4)]
    for n, p in enumerate(paths):
        # No validators: both passes download and parse everything.
        http_server.routes[p] = Response(200, rss([item(n * 100 + i) for i in range(25)]).encode())
    ids = add_feeds(store, http_server, *paths)
    barrier = threading.Barrier(2)
    reports = []

    def run() -> None:
        barrier.wait()
        reports.append(feeds.fetch_feeds(store, settings, ids))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(reports) == 2
    with store.session() as s:
        total = s.scalar(select(func.count()).select_from(Entry))
        distinct = s.scalar(select(func.count(func.distinct(Entry.canonical_link))))
    assert total == distinct == 100
    assert sum(r.entries_new for r in reports) == 100
    assert sum(r.entries_known for r in reports) == 100
    assert sorted(reports[0].entry_ids + reports[1].entry_ids) == [e.id for e in entry_rows(store)]


# ---------------------------------------------------------------- command line


def test_cli_feeds_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, http_server: LoopbackServer
) -> None:
    import json

    from pipeline.cli import main
    from pipeline.config import get_settings

    monkeypatch.setenv("NEWSMON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NEWSMON_HTTP__ALLOW_PRIVATE_ADDRESSES", "true")
    monkeypatch.delenv("NEWSMON_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        opml = tmp_path / "in.opml"
        opml.write_bytes(OPML)
        assert main(["feeds", "import", str(opml)]) == 0
        assert "4 feeds" in capsys.readouterr().out
        add = ["feeds", "add", "https://extra.example/rss", "--name", "Extra", "--country", "in", "--tag", "x"]
        assert main(add) == 0
        assert "added feed 5: Extra" in capsys.readouterr().out
        assert main(["feeds", "remove", "https://extra.example/rss"]) == 0
        assert main(["feeds", "remove", "999"]) == 2
        capsys.readouterr()
        assert main(["feeds", "list", "--all", "--json"]) == 0
        listed = {f["url"]: f for f in json.loads(capsys.readouterr().out)}
        assert len(listed) == 5 and listed["https://extra.example/rss"]["enabled"] is False
        assert listed["https://extra.example/rss"]["country"] == "IN"
        out = tmp_path / "out.toml"
        assert main(["feeds", "export", "-o", str(out)]) == 0
        assert [s.url for s in feeds.load_feed_list(out)] == list(listed)[:4]
        assert main(["feeds", "add", "https://extra.example/rss"]) == 0  # enables it again
        assert "updated and enabled" in capsys.readouterr().out

        http_server.routes["/rss"] = Response(200, rss([item(1), item(2)]).encode())
        assert main(["feeds", "check", http_server.url("/rss")]) == 0
        assert "2 entries" in capsys.readouterr().out
        assert main(["feeds", "check", http_server.url("/nothing")]) == 1
        assert "HTTP 404 Not Found" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
