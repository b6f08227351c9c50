"""Hostile feeds served from loopback in one batch with good ones.

Every hostile feed must end in one clear, recorded outcome (a usable parse or a
one-line error on the feed row), within bounded time and memory, while the good
feeds of the same batch are stored in full and the store keeps its invariants.
"""

from __future__ import annotations

import resource
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import select

from conftest import LoopbackServer, Response
from hostile import HOSTILE, article_page, article_text, check_store, good_feed, record, rss, rss_item
from pipeline import feeds, ingest
from pipeline.config import Settings
from pipeline.store import Article, Entry, Feed, IngestRun, Store
from pipeline.types import FeedSpec

CANARY = "NEWSMON-XXE-CANARY-7f3a"
MAX_FEED_BYTES = 4 * 1024 * 1024


def _fixture(name: str, server: LoopbackServer, secret: Path | None = None, **extra: str) -> bytes:
    text = (HOSTILE / name).read_text(encoding="utf-8").replace("{BASE}", server.url(""))
    if secret is not None:
        text = text.replace("{SECRET_PATH}", str(secret))
    for k, v in extra.items():
        text = text.replace("{" + k + "}", v)
    return text.encode("utf-8")


def _chunked(total: int, chunk: bytes = b"<item><title>x</title></item>" * 2000):
    """A body callable: a chunked response of ``total`` bytes (endless when 0) that stops when the client hangs up."""

    def write(h) -> None:
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sent = 0
        head = b'<?xml version="1.0"?><rss version="2.0"><channel><title>big</title>'
        try:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(head), head))
            while not total or sent < total:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    return write


def _quadratic_blowup() -> bytes:
    # One 100 KB entity named 20,000 times: 2 GB once expanded, from a 160 KB document.
    return (b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "' + b"A" * 100_000 + b'">\n]>\n'
            b'<rss version="2.0"><channel><title>q</title><item><title>Quadratic</title>'
            b"<link>http://quadratic.example/1</link><guid>quad-1</guid><description>"
            + b"&a;" * 20_000 + b"</description></item></channel></rss>")


def _deep(depth: int) -> bytes:
    return (b'<?xml version="1.0"?><rss version="2.0"><channel><title>deep</title>' + b"<x>" * depth + b"</x>" * depth
            + b"<item><title>After the nesting</title><link>http://deep.example/1</link><guid>deep-1</guid>"
            b"<description>" + b"&lt;div&gt;" * depth + b"text" + b"</description></item></channel></rss>")


def _bad_bytes_utf8(server: LoopbackServer) -> bytes:
    item = (b"<item><title>Gwadar port \xff\xfe expansion \xc0\xaf \xed\xa0\x80 plan\x00</title>"
            b"<link>" + server.url("/bad/1").encode() + b"</link><guid>bad-1</guid>"
            b"<description>Shipping \x80\x81 lines \xf8\x88\x80\x80\x80 return.</description></item>")
    return b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>bytes</title>' + item + b"</channel></rss>"


def _bad_bytes_cp1252(server: LoopbackServer) -> bytes:
    item = (b"<item><title>Caf\xe9 talks \x81\x8d\x8f\x90\x9d end</title><link>" + server.url("/bad/2").encode()
            + b"</link><guid>bad-2</guid></item>")
    return (b'<?xml version="1.0" encoding="windows-1252"?><rss version="2.0"><channel><title>cp</title>' + item
            + b"</channel></rss>")


def _many_entries(server: LoopbackServer, n: int = 10_000) -> bytes:
    now = datetime.now(timezone.utc)
    items = [rss_item(server.url(f"/many/{i}"), title=f"Bulletin {i}", guid=f"many-{i}",
                      published=now - timedelta(seconds=30 * i)) for i in range(n)]
    return rss(items, title="Ten thousand entries").encode()


def _serve_hostile(server: LoopbackServer, secret: Path) -> dict[str, str]:
    """Routes for every hostile feed; returns name → path."""
    now = datetime.now(timezone.utc)
    r = server.routes
    xml = {"Content-Type": "application/rss+xml"}
    r["/h/laughs.xml"] = Response(200, _fixture("feed_billion_laughs.xml", server), xml)
    r["/h/quadratic.xml"] = Response(200, _quadratic_blowup(), xml)
    r["/h/xxe-file.xml"] = Response(200, _fixture("feed_xxe_file.xml", server, secret), xml)
    r["/h/xxe-oob.xml"] = Response(200, _fixture("feed_xxe_parameter.xml", server, secret), xml)
    r["/xxe/evil.dtd"] = Response(200, _fixture("evil.dtd", server), {"Content-Type": "application/xml-dtd"})
    r["/xxe/general.txt"] = Response(200, CANARY.encode(), {"Content-Type": "text/plain"})
    r["/h/huge-declared.xml"] = Response(200, b"<rss>" + b" " * (50 * 1024 * 1024) + b"</rss>", xml)
    r["/h/huge-streamed.xml"] = Response(200, _chunked(50 * 1024 * 1024), xml)
    r["/h/endless.xml"] = Response(200, _chunked(0), xml)
    r["/h/deep.xml"] = Response(200, _deep(20_000), xml)
    r["/h/bad-utf8.xml"] = Response(200, _bad_bytes_utf8(server), {"Content-Type": "application/rss+xml; charset=utf-8"})
    r["/h/bad-cp1252.xml"] = Response(200, _bad_bytes_cp1252(server), xml)
    r["/h/lying-charset.xml"] = Response(200, _bad_bytes_utf8(server), {"Content-Type": "text/xml; charset=shift_jis"})
    r["/h/html.xml"] = Response(200, (HOSTILE / "page_served_as_feed.html").read_bytes(),
                                {"Content-Type": "text/html; charset=utf-8"})
    r["/h/empty.xml"] = Response(200, b"", xml)
    r["/h/blank.xml"] = Response(200, b"  \r\n\t ", xml)
    r["/h/png.xml"] = Response(200, b"\x89PNG\r\n\x1a\n" + bytes(2000), xml)
    r["/h/no-links.xml"] = Response(200, _fixture("feed_no_links_no_dates.xml", server), xml)
    r["/h/dates.xml"] = Response(200, _fixture(
        "feed_odd_dates.xml", server, FUTURE=format_datetime(now + timedelta(hours=36), usegmt=True),
        RECENT=format_datetime(now - timedelta(hours=2), usegmt=True)), xml)
    r["/h/many.xml"] = Response(200, _many_entries(server), xml)
    r["/h/markup.xml"] = Response(200, _fixture("feed_hostile_text.xml", server), xml)
    return {p.rsplit("/", 1)[1].removesuffix(".xml"): p for p in r if p.startswith("/h/")}


def _add_feeds(store: Store, server: LoopbackServer, paths: dict[str, str]) -> dict[str, int]:
    feeds.sync_feeds(store, [FeedSpec(name=name, url=server.url(path)) for name, path in paths.items()])
    with store.session() as s:
        by_url = {f.url: f.id for f in s.scalars(select(Feed))}
    return {name: by_url[server.url(path)] for name, path in paths.items()}


def _entries(store: Store, feed_id: int) -> list[Entry]:
    with store.session() as s:
        return list(s.scalars(select(Entry).where(Entry.feed_id == feed_id).order_by(Entry.id)))


def _feed(store: Store, feed_id: int) -> Feed:
    with store.session() as s:
        return s.get(Feed, feed_id)


def _hostile_settings(settings: Settings) -> Settings:
    http = settings.http.model_copy(update={"max_feed_bytes": MAX_FEED_BYTES, "read_timeout": 1.5,
                                            "total_timeout": 4, "retries": 0, "max_concurrency": 8})
    return settings.model_copy(update={"http": http})


def test_hostile_feeds_fail_alone_and_the_good_ones_are_stored(
    store: Store, settings: Settings, http_server: LoopbackServer, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(CANARY)
    paths = _serve_hostile(http_server, secret)
    for name in ("good-a", "good-b"):
        http_server.routes[f"/g/{name}.xml"] = Response(200, good_feed(http_server.url(""), name, 12).encode(),
                                                         {"Content-Type": "application/rss+xml"})
        paths[name] = f"/g/{name}.xml"
    ids = _add_feeds(store, http_server, paths)
    cfg = _hostile_settings(settings)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    report = feeds.fetch_feeds(store, cfg, list(ids.values()))
    elapsed = time.monotonic() - t0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024

    assert report.feeds_total == len(ids) and report.feeds_ok + report.feeds_failed == len(ids)
    assert elapsed < 45, f"the hostile batch took {elapsed:.1f}s"
    assert grown_mb < 400, f"parsing the hostile batch grew the process by {grown_mb:.0f} MB"
    rows = {name: _feed(store, fid) for name, fid in ids.items()}
    entries = {name: _entries(store, fid) for name, fid in ids.items()}

    # The good feeds: every entry queued.
    for name in ("good-a", "good-b"):
        assert rows[name].last_outcome == "ok" and rows[name].last_error is None
        assert [e.status for e in entries[name]] == ["pending"] * 12

    # Failures: recorded on the feed, one line each, the batch went on.
    expected_errors = {
        "huge-declared": "larger than 4,194,304 bytes",
        "huge-streamed": "larger than 4,194,304 bytes",
        "endless": "larger than 4,194,304 bytes",
        "html": "not an RSS/Atom feed (text/html)",
        "empty": "empty response",
        "blank": "empty response",
        "png": "not an RSS/Atom feed",
    }
    for name, fragment in expected_errors.items():
        row = rows[name]
        assert row.last_outcome == "failed" and fragment in (row.last_error or ""), (name, row.last_error)
        assert "\n" not in row.last_error and len(row.last_error) <= 500
        assert row.consecutive_failures == 1 and row.next_fetch_at > row.last_fetch_at
        assert entries[name] == []
    assert sorted(f.split(" <")[0] for f in report.failed_feeds) == sorted(expected_errors)

    # Entity attacks: parsed without expanding anything, nothing read from disk or network.
    every_text = " ".join(
        f"{e.title} {e.summary} {e.content} {e.author} {e.link}" for es in entries.values() for e in es
    ) + " ".join(f"{r.last_error} {r.last_bozo}" for r in rows.values())
    assert CANARY not in every_text
    assert http_server.hits("/xxe/evil.dtd") == http_server.hits("/xxe/general.txt") == 0
    assert not [p for _, p, _ in http_server.requests if p.startswith("/xxe/collect")]
    (laugh,) = entries["laughs"]
    assert "lollol" not in laugh.title + laugh.summary and len(laugh.title) < 200
    (quad,) = entries["quadratic"]
    assert len(quad.summary) <= feeds.MAX_SUMMARY_CHARS and "AAAAAAAAAA" not in quad.summary
    # (In lenient mode feedparser resolves a GUID against the feed URL.)
    assert [e.guid.rsplit("/", 1)[-1] for e in entries["xxe-file"] + entries["xxe-oob"]] == ["xxe-1", "xxe-2"]

    # Deep nesting and broken bytes: the entries after them survive, the text is clean.
    assert [e.title for e in entries["deep"]] == ["After the nesting"]
    for name in ("bad-utf8", "bad-cp1252", "lying-charset"):
        (e,) = entries[name]
        assert rows[name].last_outcome == "ok" and e.status == "pending", (name, rows[name].last_error)
        assert "\x00" not in e.title and "\ud800" not in e.title and e.title.strip()
    assert "Gwadar port" in entries["bad-utf8"][0].title and "talks" in entries["bad-cp1252"][0].title

    # Entries without links or dates: none queued, each kept once (skipped) or dropped when empty.
    nolinks = entries["no-links"]
    assert nolinks and all(e.status == "skipped" and e.error.startswith("no usable link") for e in nolinks)
    assert len({e.guid_key for e in nolinks}) == len(nolinks) == 8
    assert all(e.published_at is None for e in nolinks)

    # Impossible dates are unknown (None), never 1970 or the year 2999.
    dated = {e.guid.rsplit("/", 1)[-1]: e.published_at for e in entries["dates"]}
    assert all(dated[f"dates-{i}"] is None for i in range(1, 7)), dated
    assert dated["dates-7"] is not None and dated["dates-7"].tzinfo is not None

    # Ten thousand entries: the newest max_entries_per_feed are taken.
    many = entries["many"]
    cap = cfg.ingest.max_entries_per_feed
    assert len(many) == cap and {e.guid for e in many} == {f"many-{i}" for i in range(cap)}

    # Markup, control characters and line breaks in feed text: stored as plain text.
    (mk,) = entries["markup"]
    assert "<script" not in mk.summary and "document.cookie" not in mk.summary and "onclick" not in mk.summary
    assert "Ministers met in Kabul." in mk.summary and "اسلام آباد" in mk.summary
    assert "\x1b" not in mk.author and "<b>" not in mk.author

    figures = check_store(store, clustered=False)
    record("hostile-feeds", backend=store.dialect, feeds=len(ids), hostile=len(ids) - 2,
           failed=report.feeds_failed, ok=report.feeds_ok, entries=figures["entries"], seconds=round(elapsed, 1),
           maxrss_growth_mb=round(grown_mb), canary_leaks=0, duplicates=0)


def test_a_cap_sized_entity_bomb_stays_within_a_memory_limit(tmp_path: Path) -> None:
    """The worst entity attack that fits under the default feed cap, parsed under a 1 GB address-space limit."""
    import subprocess
    import sys

    size_cap = Settings().http.max_feed_bytes
    value, refs = 4_000_000, 2_500  # a 4 MB document that would expand to 10 GB
    doc = (b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "' + b"B" * value + b'">\n]>\n'
           b'<rss version="2.0"><channel><title>q</title><item><title>Bomb</title><link>http://bomb.example/1</link>'
           b"<description>" + b"&a;" * refs + b"</description></item></channel></rss>")
    assert len(doc) <= size_cap
    path = tmp_path / "bomb.xml"
    path.write_bytes(doc)
    code = (
        "import resource, sys, time\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from pipeline import feeds\n"
        "t = time.monotonic()\n"
        "entries, bozo = feeds.parse_feed(open(sys.argv[1], 'rb').read(), {}, 'http://bomb.example/feed')\n"
        "print(len(entries), len(entries[0].summary), round(time.monotonic() - t, 1))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    n, summary_len, seconds = out.stdout.split()
    # 10 GB of expansion refused: the references stay as written, the feed is still read.
    assert int(n) == 1 and int(summary_len) <= feeds.MAX_SUMMARY_CHARS
    record("entity-bomb-at-cap", document_bytes=len(doc), would_expand_to_bytes=value * refs,
           parse_seconds=float(seconds), memory_limit_mb=1024)


def test_hostile_feeds_in_a_full_ingest_pass(
    sqlite_store: Store, settings: Settings, http_server: LoopbackServer, tmp_path: Path
) -> None:
    """ingest.run_once over good and hostile feeds: the good articles are stored, clustered and classified."""
    store = sqlite_store
    secret = tmp_path / "secret.txt"
    secret.write_text(CANARY)
    all_paths = _serve_hostile(http_server, secret)
    paths = {k: all_paths[k] for k in ("laughs", "quadratic", "xxe-file", "xxe-oob", "huge-streamed", "html",
                                       "empty", "bad-utf8", "no-links", "dates", "markup")}
    base = http_server.url("")
    http_server.routes["/g/good.xml"] = Response(200, good_feed(base, "good", 8).encode(),
                                                 {"Content-Type": "application/rss+xml"})
    paths["good"] = "/g/good.xml"
    for n in range(8):
        title, paras = article_text(n)
        http_server.routes[f"/good/{n}"] = Response(200, article_page(title, paras),
                                                    {"Content-Type": "text/html; charset=utf-8"})
    ids = _add_feeds(store, http_server, paths)
    cfg = _hostile_settings(settings)

    report = ingest.run_once(store, cfg, feed_ids=list(ids.values()))

    assert report.feeds_failed == 3 and report.feeds_ok == len(ids) - 3, report.errors
    assert report.articles_extracted >= 8
    with store.session() as s:
        good = s.scalars(select(Article).where(Article.feed_id == ids["good"])).all()
        run = s.get(IngestRun, report.run_id)
        texts = " ".join(f"{a.title} {a.text} {a.summary}" for a in s.scalars(select(Article)))
    assert len(good) == 8 and all(a.extraction_status == "ok" and a.word_count > 50 for a in good)
    assert run.status == "partial" and len(run.errors) == len(report.errors) >= 3
    assert CANARY not in texts and "<script" not in texts
    figures = check_store(store, clustered=True, classified=True)
    record("hostile-feeds-ingest", feeds=len(ids), hostile=len(ids) - 1, failed=report.feeds_failed,
           articles=figures["articles"], good_articles=len(good), run_status=run.status, duplicates=0)
