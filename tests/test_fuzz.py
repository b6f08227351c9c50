"""Property tests (hypothesis) of the pure functions that see raw input from the internet.

Each property runs a bounded number of generated examples with a per-example
deadline, so the module stays within a few seconds in CI.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.extract import HEADER_MAX_LINES, clean_text, word_count
from pipeline.feeds import parse_feed
from pipeline.urls import TRACKING_PARAMS, TRACKING_PREFIXES, InvalidURL, canonical_url

# NEWSMON_FUZZ_SCALE=20 runs twenty times as many examples (a deeper search, off CI).
SCALE = float(os.environ.get("NEWSMON_FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=int(300 * SCALE), deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow])
FUZZ_SLOW = settings(max_examples=int(120 * SCALE), deadline=timedelta(seconds=3),
                     suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- URLs

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?", fullmatch=True)
_unicode_label = st.text(st.characters(whitelist_categories=("Ll", "Lo")), min_size=1, max_size=8)
_host = st.one_of(
    st.lists(_label, min_size=2, max_size=4).map(".".join),
    st.tuples(_unicode_label, st.sampled_from(["example", "उदाहरण", "пример", "مثال"])).map(".".join),
    st.sampled_from(["m.dawn.com", "www.thehindu.com", "amp.example.org", "127.0.0.1", "[::1]", "EXAMPLE.COM.",
                     "www-dawn-com.cdn.ampproject.org", "www.google.com", "xn--p1b6ci4b4b3a.xn--11b4c3d"]),
)
_segment = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"), max_size=12),
    st.sampled_from(["amp", "index.html", "news", "%2F", "%E0%A4", "..", ".", "a%20b", "Ü", "2026", "s"]),
)
_tracking = st.one_of(st.sampled_from(sorted(TRACKING_PARAMS)), st.sampled_from(TRACKING_PREFIXES).map(lambda p: p + "x"))
_param = st.tuples(st.one_of(_tracking, st.text(max_size=6), st.sampled_from(["id", "page", "amp", "outputType"])),
                   st.text(max_size=8))
_url = st.builds(
    lambda scheme, host, port, segs, params, frag: (
        f"{scheme}://{host}{port}/" + "/".join(segs)
        + ("?" + "&".join(f"{k}={v}" for k, v in params) if params else "") + (f"#{frag}" if frag else "")
    ),
    st.sampled_from(["http", "https", "HTTP", "HttpS", "ftp", "javascript", "file", ""]),
    _host,
    st.sampled_from(["", ":80", ":443", ":8080", ":0", ":99999", ":x"]),
    st.lists(_segment, max_size=5),
    st.lists(_param, max_size=5),
    st.text(max_size=5),
)


def _is_tracking(name: str) -> bool:
    low = name.lower()
    return low in TRACKING_PARAMS or low.startswith(TRACKING_PREFIXES)


@FUZZ
@given(st.one_of(_url, st.text(max_size=80), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
@example("https://www.dawn.com/news/1?utm_source=twitter&fbclid=x#frag")
@example("http://[::1]:80/a")
@example("https://xn--/a")
@example("http://a.example:65536/")
def test_canonical_url_is_total_idempotent_and_clean(url: str) -> None:
    try:
        key = canonical_url(url)
    except InvalidURL:
        return  # the one way it may fail
    assert isinstance(key, str) and key.isascii() and key == key.strip()
    parts = urlsplit(key)  # the key parses, with a host
    assert parts.scheme == "https" and parts.hostname and not parts.fragment
    assert parts.port is None or 0 <= parts.port < 65536
    assert not [k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if _is_tracking(k)]
    assert canonical_url(key) == key  # idempotent


# ---------------------------------------------------------------- the boilerplate cleaner

SENTENCES = [
    "Pakistan and the United States agreed on Monday to resume a formal security dialogue that had been "
    "suspended for two years, officials from both governments told reporters in the capital.",
    "The delegations also discussed trade, visas and the situation along the western border, according to "
    "a joint statement released by the foreign ministry late in the evening.",
    "Indian officials said the new agreement would allow exporters in Gujarat and Punjab to ship textiles "
    "through the corridor without paying the additional levy introduced last spring.",
    "Analysts in Washington cautioned that the talks had stalled twice before over the sequencing of "
    "sanctions relief and the release of detained fishermen from both sides.",
    "The minister told parliament that the commission would publish its findings on the water dispute "
    "before the monsoon session, and that both provinces had been consulted.",
]
FURNITURE = [
    "Advertisement", "ADVERTISEMENT", "Read more: Talks resume in Geneva", "Also Read: Flood aid pledged",
    "Follow us on Twitter", "Share this article", "12 comments", "Subscribe to our newsletter",
    "Copyright © 2026 The Frontier Ledger. All rights reserved.", "By Staff Reporter", "Web Desk",
    "Thursday November 21, 2024", "Photo: The delegations meet. — AFP", "Click here to download our app",
    "Tags: Pakistan, India, trade", "Published in Dawn, June 22nd, 2026", "—", "***", "[caption id=1]x[/caption]",
]
_line = st.one_of(
    st.sampled_from(SENTENCES), st.sampled_from(FURNITURE), st.text(max_size=120),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
)


@FUZZ
@given(st.lists(_line, max_size=25), st.one_of(st.just(""), st.text(max_size=60), st.sampled_from(SENTENCES)))
def test_clean_text_never_raises_and_never_grows(lines: list[str], title: str) -> None:
    text = "\n".join(lines)
    out = clean_text(text, title=title)
    assert isinstance(out, str)
    assert word_count(out) <= word_count(text)
    assert len(re.sub(r"\s", "", out)) <= len(re.sub(r"\s", "", text))


# One line each (str.splitlines also breaks at \r, \x1c–\x1e, \x85, \u2028…): ten of them keep the
# lede inside the header window (extract.HEADER_MAX_LINES), the premise of the idempotence test.
_one_line = st.text(st.characters(blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=30)


@FUZZ
@given(
    st.lists(st.one_of(st.sampled_from(FURNITURE), _one_line), max_size=10),
    st.sampled_from(SENTENCES),
    st.lists(_line, max_size=20),
    st.one_of(st.just(""), st.sampled_from(SENTENCES), st.text(max_size=40)),
)
def test_clean_text_is_idempotent_on_article_shaped_text(head: list[str], lede: str, rest: list[str], title: str) -> None:
    """Cleaning cleaned text changes nothing, for text whose first paragraph of prose comes
    within the header window (what extraction hands over). Text with no prose there is
    judged by line position, so a second pass can remove more (docs/reliability.md)."""
    assert len(head) < HEADER_MAX_LINES
    out = clean_text("\n".join([*head, lede, *rest]), title=title)
    assert clean_text(out, title=title) == out


@FUZZ
@given(
    st.lists(st.sampled_from(FURNITURE), max_size=8),
    st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=5),
    st.lists(st.sampled_from(FURNITURE), max_size=8),
)
def test_clean_text_keeps_every_real_sentence(head: list[str], body: list[str], tail: list[str]) -> None:
    out = clean_text("\n".join([*head, *body, *tail]))
    for sentence in body:
        assert sentence in out


# ---------------------------------------------------------------- the feed-entry normaliser

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_date = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(
        [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))])).map(
        lambda d: d.strftime("%a, %d %b %Y %H:%M:%S %z") if d.year >= 1000 else d.isoformat()),
    st.sampled_from(["Thu, 01 Jan 1970 00:00:00 GMT", "0000-00-00", "Feb 30 2025", "yesterday", "", "2026-13-45T99:99",
                     "Mon, 31 Dec 2999 23:59:59 +2500", "1e308", "-1"]),
    _text,
)


def _xml(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_item = st.builds(
    lambda title, link, date, desc, raw: (
        f"<item><title>{_xml(title)}</title><link>{_xml(link)}</link><pubDate>{_xml(date)}</pubDate>"
        f"<description>{_xml(desc)}</description>{raw}</item>"
    ),
    _text, st.one_of(_url, _text), _date, _text,
    st.sampled_from(["", "<guid>g</guid>", "<dc:date>2026-11-20</dc:date>", "<content:encoded><![CDATA[<p>x</p>]]>"
                     "</content:encoded>", "<unclosed>", "&undefined;", "<![CDATA[ ]]>", "\x00", "\ud7ff"]),
)
_entry_atom = st.builds(
    lambda title, link, date: f'<entry><title>{_xml(title)}</title><link href="{_xml(link)}"/>'
                              f"<updated>{_xml(date)}</updated><id>{_xml(link)}</id></entry>",
    _text, st.one_of(_url, _text), _date,
)
_feed = st.one_of(
    st.lists(_item, max_size=6).map(lambda items: '<?xml version="1.0"?><rss version="2.0" '
                                    'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>t</title>'
                                    + "".join(items) + "</channel></rss>"),
    st.lists(_entry_atom, max_size=6).map(lambda es: '<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
                                          + "".join(es) + "</feed>"),
)


@FUZZ_SLOW
@given(st.one_of(_feed.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=300)),
       st.sampled_from([{}, {"content-type": "application/rss+xml; charset=iso-8859-1"},
                        {"content-type": "text/html"}, {"content-type": "application/xml; charset=utf-16"}]))
def test_parse_feed_never_raises_and_dates_are_aware_utc_or_none(content: bytes, headers: dict) -> None:
    now = datetime.now(timezone.utc)
    entries, bozo = parse_feed(content, headers, "http://feeds.example/rss")
    assert bozo is None or isinstance(bozo, str)
    for e in entries:
        if e.published is not None:
            assert e.published.tzinfo is not None and e.published.utcoffset() == timedelta(0)
            assert datetime(1990, 1, 1, tzinfo=timezone.utc) <= e.published <= now + timedelta(days=1, minutes=1)
        for field in (e.guid, e.link, e.title, e.summary, e.content, e.author):
            assert isinstance(field, str) and "\x00" not in field
            assert not re.search(r"[\ud800-\udfff]", field)
        assert e.guid  # every entry has a key
