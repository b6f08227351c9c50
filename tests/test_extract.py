"""Article extraction: clean_text, extract_html, the worker pool, extract_pending, the CLI, the eval."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings as hyp_settings, strategies as st
from sqlalchemy import func, select

from conftest import FIXTURES, LoopbackServer, Response, shared_path
from pipeline.config import Settings
from pipeline.extract import (
    ExtractionError,
    ExtractionPool,
    choose_published,
    clean_text,
    detect_language,
    extract_html,
    extract_pending,
    html_to_text,
    word_count,
)
from pipeline.store import Article, ArticleUrl, Entry, Feed, Store, utcnow
from pipeline.types import DateSource, ExtractionStatus

PAGES = FIXTURES / "pages"
UTC = timezone.utc


def page(name: str) -> bytes:
    return (PAGES / name).read_bytes()


# A page of many tiny tables: trafilatura's fallback scoring is quadratic on it
# (seconds for a few thousand tables), the kind of page the per-page timeout is for.
PATHOLOGICAL = ("<html><body>" + "<table><tr><td>cell</td></tr></table>" * 3000 + "</body></html>").encode()

# ---------------------------------------------------------------- clean_text

BODY = [
    "WASHINGTON: The United States on Thursday said it supported direct talks between India and "
    "Pakistan, but that the timing and agenda were for the two neighbours to settle between themselves.",
    "“We value our relationships with both countries and we encourage any step that lowers tensions,” "
    "a State Department spokesperson told the daily briefing.",
    "He declined to comment.",
    "The spokesperson added that Washington remained in regular contact with Pakistani officials on "
    "counterterrorism and would hold its annual dialogue with Islamabad early next year.",
]
NOISY = "\n".join(
    [
        "close",
        "Logo",
        "Thursday November 21, 2024",
        "",
        "US backs direct India-Pakistan talks, says agenda is theirs to set",
        "Washington says the pace and scope of any dialogue must be decided by the two countries",
        "By Ayesha Rahman",
        "June 21, 2024",
        "The State Department spokesperson speaks at a briefing in Washington on Wednesday. — AFP",
        "The State Department spokesperson speaks at a briefing in Washington on Wednesday. — AFP",
        "",
        BODY[0],
        "Advertisement",
        BODY[1],
        "Also Read: Rupee slides to a new low against the dollar",
        BODY[2],
        "Adsence 300X250",
        BODY[3],
        "Click here to join our WhatsApp channel for the latest news",
        "Share this article",
        "Advertisement",
    ]
)
DECK = "Washington says the pace and scope of any dialogue must be decided by the two countries"


def paragraphs(text: str) -> list[str]:
    return text.split("\n\n") if text else []


def test_clean_text_removes_news_page_furniture():
    out = clean_text(NOISY, title="US backs direct India-Pakistan talks, says agenda is theirs to set")
    assert paragraphs(out) == [DECK, *BODY]


def test_clean_text_second_layout():
    # Headline twice around the standfirst, a wire credit, a desk byline, a page date
    # with time, an inline caption with a photo credit, a trailing ad slot.
    text = "\n\n".join(
        [
            "Logo",
            "Pentagon says it wants better ties with Islamabad",
            "Officials said conversations on border safe havens would continue",
            "Pentagon says it wants better ties with Islamabad",
            "IANS",
            "Web DeskWeb Editor",
            "10th Aug, 2021. 02:16 pm",
            "Defence officials at a news conference in Arlington. (AP File Photo)",
            *BODY,
            "Updated at 1:23 p.m.",
            "Adsence 300X250",
        ]
    )
    out = clean_text(text)  # no title given: the repeat is still recognised
    assert paragraphs(out) == [
        "Pentagon says it wants better ties with Islamabad",
        "Officials said conversations on border safe havens would continue",
        *BODY,
    ]


@pytest.mark.parametrize(
    "text",
    [
        # Lines that start like furniture or calls to action but are reporting.
        "Sign up for the national voter list closes on Friday, the election commission reminded citizens in a statement on Monday.",
        "For the latest quarter, exports to the United States rose by nine per cent, the commerce ministry said.",
        "Published in 1998, the report found that both countries had underestimated the cost of the conflict.",
        "Listen to the people, the opposition leader told the assembly, before walking out with his party.",
        "“Subscribe to the idea of peace and the rest will follow,” the envoy told students in Lahore, drawing applause.",
        "Khan asked supporters to sign up for the march, which is expected to reach the capital next week.",
        "On June 21, 2024, the ministry said the talks had been postponed because of the weather.",
        "Share prices in Karachi closed higher for a third day.",
        "Tags on the shipments showed they had passed through three ports before reaching Gwadar.",
        # A one-paragraph wire story that ends in its credit.
        "Pakistan and India exchanged lists of nuclear installations under a 1988 agreement on Monday. — AFP",
        # Short paragraphs, numbers, a phone line and a question inside an article.
        f"{BODY[0]}\n\nWhat happens next?\n\nThe helpline is 051-920-1234.\n\n{BODY[3]}",
    ],
)
def test_clean_text_keeps_article_sentences(text):
    assert clean_text(text) == text


def test_clean_text_duplicates_and_whitespace():
    text = f"  {BODY[0]}  \n{BODY[0]}\n\n\n{BODY[1]}\u00a0\n{BODY[0]}\n\u200b\n"
    # Consecutive repeats collapse; a later repeat (a pull quote) stays; spaces normalise.
    assert paragraphs(clean_text(text)) == [BODY[0], BODY[1], BODY[0]]
    assert clean_text("") == "" and clean_text("\n \n") == ""
    assert clean_text("Advertisement\nLogo\nclose") == ""


def test_clean_text_footer_sign_offs():
    text = "\n".join(
        [
            *BODY,
            "(Reporting by Asif Shahzad; Editing by Kim Coghill)",
            "Published in The Daily Ledger, June 22nd, 2024",
            "Tags: Pakistan, United States, India",
            "There's more where that came from. Sign up for our free newsletter to get the news in your inbox.",
            "Copyright © 2024 The Daily Ledger. All rights reserved.",
        ]
    )
    assert paragraphs(clean_text(text)) == BODY


@hyp_settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([*BODY, *NOISY.split("\n"), "", "  ", "—", "x y z"]), max_size=25))
def test_clean_text_only_removes_whole_lines(lines):
    text = "\n".join(lines)
    out = clean_text(text)
    inputs = {" ".join(x.split()) for x in lines}
    assert all(p in inputs for p in paragraphs(out))
    assert clean_text(out) == out


# ---------------------------------------------------------------- extract_html

NOISE = [
    "Advertisement", "Logo", "close", "Thursday November 21, 2024", "Also Read", "Click here",
    "Comments", "heard such promises", "Related Stories", "Cricket board", "Copyright", "Tags",
    "Share this", "Facebook", "dataLayer", "Follow us", "meet at the Foreign Office in Islamabad on Wednesday",
    "By Sana Malik", "November 20, 2024",
]  # fmt: skip


def test_extract_html_news_page():
    url = "https://frontiertribune.example/news/pakistan-us-resume-dialogue"
    art = extract_html(page("dialogue_resumes.html"), url)
    assert art.status is ExtractionStatus.OK and art.error is None
    assert art.title == "Pakistan, US agree to resume counterterrorism dialogue"
    assert art.author == "Sana Malik"
    assert art.published == datetime(2024, 11, 20, 4, 15, tzinfo=UTC)
    assert art.site == "frontiertribune.example" and art.language == "en"
    assert art.summary.startswith("The two sides will meet again in Washington")
    paras = paragraphs(art.text)
    assert paras[0].startswith("ISLAMABAD: Pakistan and the United States on Wednesday agreed")
    assert paras[-1].startswith("The talks come weeks after a visit")
    assert len(paras) == 8
    for junk in NOISE:
        assert junk not in art.text, junk


def test_extract_html_inline_noise_and_feed_title():
    art = extract_html(page("engine_deal.html"), "https://capitalledger.example/defence/engine-talks", feed_title="India and US speed up engine talks")
    assert art.status is ExtractionStatus.OK
    assert art.title == "India and US speed up engine talks"  # the feed's headline wins
    assert art.language == "en" and art.published == datetime(2021, 8, 10, 8, 46, tzinfo=UTC)
    paras = paragraphs(art.text)
    assert paras[0].startswith("NEW DELHI: India and the United States have agreed")
    assert paras[-1].startswith("The US embassy in New Delhi declined")
    assert len(paras) == 6
    for junk in ["Adsence", "Advertisement", "Web Desk", "10th Aug", "Also Read", "WhatsApp", "File Photo", "fast-track"]:
        assert junk not in art.text, junk


def test_extract_html_language_from_page():
    art = extract_html(page("urdu_brief.html"), "https://urdu.example/a")
    assert art.status is ExtractionStatus.OK and art.language == "ur"
    assert art.text.startswith("اسلام آباد")
    assert art.published == datetime(2024, 11, 20, 5, 0, tzinfo=UTC)


def test_extract_html_falls_back_to_feed_text():
    feed_text = (
        "<p>The foreign minister arrived in Washington on Monday for three days of talks with senior "
        "officials on trade, security and Afghanistan.</p><p>He is expected to meet the secretary of "
        "state on Tuesday, the foreign office said in a statement issued in Islamabad.</p>"
    )
    art = extract_html(page("video_clip.html"), "https://ft.example/v/1", feed_title="FM arrives in Washington", feed_text=feed_text)
    assert art.status is ExtractionStatus.FALLBACK
    assert art.error.startswith("page text too short")
    assert art.title == "FM arrives in Washington"
    assert paragraphs(art.text) == [
        "The foreign minister arrived in Washington on Monday for three days of talks with senior officials on trade, security and Afghanistan.",
        "He is expected to meet the secretary of state on Tuesday, the foreign office said in a statement issued in Islamabad.",
    ]
    # A teaser page (paywall) against a feed that carries the whole article.
    teaser = "<p>" + " ".join(BODY[:2]) + " Subscribers can read the full story.</p>"
    full = "".join(f"<p>{p}</p>" for p in BODY * 4) + "<p>The post Talks resume appeared first on The Daily Ledger.</p>"
    html = f"<html><body><article><h1>Talks resume</h1>{teaser}</article></body></html>"
    art = extract_html(html, "https://ledger.example/a", feed_text=full)
    assert art.status is ExtractionStatus.FALLBACK and art.error.startswith("page text much shorter than the feed's")
    assert "appeared first" not in art.text and word_count(art.text) == 4 * sum(map(word_count, BODY))
    assert extract_html(html, "https://ledger.example/a", feed_text=BODY[3]).status is ExtractionStatus.OK
    # Without feed text the short page is what there is; with neither, FAILED.
    assert extract_html(page("video_clip.html")).status is ExtractionStatus.OK
    failed = extract_html(b"<html><body><nav>Home</nav></body></html>", "https://ft.example/x")
    assert failed.status is ExtractionStatus.FAILED and failed.error and failed.text == ""


@pytest.mark.parametrize(
    "html",
    [
        "",
        b"",
        bytes(range(256)) * 200,  # binary
        "<html><body>" + "<div>" * 20000 + "<p>Deep text.</p>" + "</div>" * 20000 + "</body></html>",
        "<html><body>" + "<div><span><b>" * 10000 + "unclosed",
        "<html><head><script>" + "var a = 1;" * 50000 + "</script></head><body></body></html>",
        "<html><body><p>Caf\xe9 \udcff broken surrogate</p></body></html>",
        b"<html><head><meta charset='no-such-charset'></head><body><p>\xff\xfe bytes</p></body></html>",
    ],
    ids=["empty-str", "empty-bytes", "binary", "deep", "unclosed", "scripts", "surrogate", "bad-charset"],
)
def test_extract_html_hostile_input_never_raises(html):
    art = extract_html(html, "https://x.example/a")
    assert art.status in (ExtractionStatus.OK, ExtractionStatus.FAILED)
    assert (art.error is None) == (art.status is ExtractionStatus.OK)


def test_extract_html_huge_page():
    paras = "".join(
        f"<p>Paragraph {i}: officials from delegation {i % 97} discussed trade quotas, visa rules and border security for item {i}.</p>"
        for i in range(16000)
    )
    html = f"<html><head><title>Long report</title></head><body><article>{paras}</article></body></html>"
    assert len(html) > 1_900_000
    art = extract_html(html, "https://x.example/long")
    assert art.status is ExtractionStatus.OK
    assert "Paragraph 15999:" in art.text and word_count(art.text) > 250_000


def _metadata_pages() -> list[tuple[str, bytes]]:
    pages = [(f"https://news.example/{p.stem}", p.read_bytes()) for p in sorted(PAGES.glob("*.html"))]
    pages.append(("https://news.example/wire", (FIXTURES / "dedupe" / "briefing_wire_page.html").read_bytes()))
    bench = shared_path("data", "article-extraction-benchmark", "html")
    if bench.is_dir():  # real pages of many sites, where present
        import gzip

        pages += [("", gzip.open(p).read()) for p in sorted(bench.glob("*.html.gz"))[:40]]
    return pages


def test_page_metadata_matches_trafilaturas_own():
    """The metadata steps taken from trafilatura give what its full ``extract_metadata``
    gives for the fields an article keeps (a guard for trafilatura upgrades)."""
    from copy import deepcopy

    import trafilatura
    from trafilatura.metadata import extract_metadata

    from pipeline.extract import DATE_PARAMS, _page_metadata

    pages = _metadata_pages()
    assert len(pages) >= 5
    dated = 0
    for url, html in pages:
        tree = trafilatura.load_html(html)
        ours = _page_metadata(deepcopy(tree), url)
        theirs = extract_metadata(deepcopy(tree), url or None, dict(DATE_PARAMS))
        for field in ("title", "author", "sitename", "description", "date", "url"):
            assert getattr(ours, field) == getattr(theirs, field), (url, field)
        dated += bool(ours.date)
    assert dated >= 3  # the comparison covers real dates, not only missing ones


def test_choose_published():
    fetched = datetime(2024, 6, 1, 12, tzinfo=UTC)
    feed, pg = datetime(2024, 5, 31, tzinfo=UTC), datetime(2024, 5, 30, tzinfo=UTC)
    assert choose_published(feed, pg, fetched) == (feed, DateSource.FEED)
    assert choose_published(None, pg, fetched) == (pg, DateSource.PAGE)
    assert choose_published(None, None, fetched) == (fetched, DateSource.FETCH)
    # A feed date days in the future or a page date from 1970 is an error, not a time.
    assert choose_published(fetched + timedelta(days=3), pg, fetched) == (pg, DateSource.PAGE)
    assert choose_published(None, datetime(1970, 1, 1, tzinfo=UTC), fetched) == (fetched, DateSource.FETCH)


def test_detect_language():
    assert detect_language(BODY[0]) == "en"
    assert detect_language("अमेरिका ने कहा है कि भारत और पाकिस्तान के बीच बातचीत का वह समर्थन करता है") == "hi"
    assert detect_language("امریکا نے کہا ہے کہ وہ پاکستان اور بھارت کے درمیان بات چیت کی حمایت کرتا ہے") == "ur"
    fr = "Les États-Unis ont dit que le dialogue entre l'Inde et le Pakistan est une affaire des deux pays et de la région."
    assert detect_language(fr, "en-US") == "fr"  # a template's lang="en" loses to the words
    assert detect_language(BODY[0], "en-GB") == "en"
    assert detect_language("", "pt-BR") == "pt"
    assert detect_language("12 34 56") == ""


def test_html_to_text():
    assert html_to_text("<p>One &amp; two.</p><p>Three<br>four</p><script>x()</script>") == "One & two.\nThree\nfour"
    assert html_to_text("Plain &quot;text&quot;") == 'Plain "text"'
    assert html_to_text("") == ""


# ---------------------------------------------------------------- worker pool


def test_pool_survives_timeouts_and_crashes():
    normal = page("dialogue_resumes.html")
    with ExtractionPool(workers=1, timeout=0.5) as pool:
        with pytest.raises(ExtractionError, match="longer than 0.5s"):
            pool.extract(PATHOLOGICAL, "https://x.example/slow")
        assert pool.pids() == []  # the hung worker was killed
        pool.timeout = 60
        assert pool.extract(normal, "https://x.example/a").status is ExtractionStatus.OK

        # A page that kills its worker fails alone.
        errors: list[Exception] = []

        def run() -> None:
            try:
                pool.extract(PATHOLOGICAL, "https://x.example/crash")
            except ExtractionError as exc:
                errors.append(exc)

        t = threading.Thread(target=run)
        t.start()
        (pid,) = pool.pids()
        time.sleep(0.3)  # let it start on the page
        os.kill(pid, 9)
        t.join(30)
        assert len(errors) == 1 and "crashed" in str(errors[0])
        assert pool.extract(normal, "https://x.example/a").title.startswith("Pakistan, US agree")
        pids = pool.pids()
    for p in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(p, 0)


# ---------------------------------------------------------------- extract_pending


def add_feed(store: Store, name: str = "The Frontier Tribune", country: str = "PK") -> int:
    with store.session() as s:
        f = Feed(name=name, url=f"https://{name.replace(' ', '').lower()}.example/rss", country=country, created_at=utcnow())
        s.add(f)
        s.flush()
        return f.id


def add_entry(store: Store, feed_id: int, link: str, **fields) -> int:
    with store.session() as s:
        e = Entry(
            feed_id=feed_id,
            guid_key=hashlib.sha256(f"{feed_id} {link}".encode()).hexdigest(),
            guid=link,
            link=link,
            discovered_at=utcnow(),
            **fields,
        )
        s.add(e)
        s.flush()
        return e.id


def entries(store: Store) -> dict[int, Entry]:
    with store.session() as s:
        return {e.id: e for e in s.scalars(select(Entry))}


def articles(store: Store) -> dict[str, Article]:
    with store.session() as s:
        return {a.canonical_url: a for a in s.scalars(select(Article))}


def aliases(store: Store) -> dict[str, int]:
    with store.session() as s:
        return {u.url: u.article_id for u in s.scalars(select(ArticleUrl))}


HTML = {"Content-Type": "text/html; charset=utf-8"}
SUMMARY = "<p>Officials from the two countries met in Islamabad to discuss counterterrorism cooperation.</p>"
CONTENT = (
    "<p>The foreign minister arrived in Washington on Monday for three days of talks with senior officials "
    "on trade, security and Afghanistan, the foreign office said.</p><p>He is expected to meet the secretary "
    "of state and members of Congress before travelling to New York for meetings at the United Nations.</p>"
)


def serve_site(srv: LoopbackServer) -> None:
    srv.routes.update(
        {
            "/news/dialogue": Response(200, page("dialogue_resumes.html"), HTML),
            "/go/engine": Response(301, b"", {"Location": "/defence/engine"}),
            "/defence/engine": Response(200, page("engine_deal.html"), HTML),
            "/files/report.pdf": Response(200, b"%PDF-1.7\n%binary report", {"Content-Type": "application/pdf"}),
            "/video/clip": Response(200, page("video_clip.html"), HTML),
            "/gone": Response(404, b"not here", {"Content-Type": "text/plain"}),
            "/busy": Response(503, b"try later", {"Content-Type": "text/plain"}),
        }
    )


def test_extract_pending_end_to_end(store: Store, settings: Settings, http_server: LoopbackServer):
    serve_site(http_server)
    u = http_server.url
    pk, us = add_feed(store), add_feed(store, "Capital Ledger", "IN")
    published = (utcnow() - timedelta(hours=2)).replace(microsecond=0)
    ids = {
        "ok": add_entry(store, pk, u("/news/dialogue"), title="Pakistan, US to resume CT dialogue", summary=SUMMARY, published_at=published, author="Staff Reporter"),
        "redirect": add_entry(store, us, u("/go/engine"), title="India, US speed up engine talks"),
        "same-link": add_entry(store, us, u("/news/dialogue?utm_source=rss"), title="Dialogue resumes"),
        "pdf": add_entry(store, pk, u("/files/report.pdf"), title="Annual report", summary=SUMMARY),
        "video": add_entry(store, pk, u("/video/clip"), title="FM arrives in Washington", content=CONTENT),
        "404+summary": add_entry(store, pk, u("/gone"), title="Old story", summary=SUMMARY),
        "404": add_entry(store, pk, u("/gone?id=2"), title="Nothing"),
        "503": add_entry(store, pk, u("/busy"), title="Busy"),
        "invalid": add_entry(store, pk, "javascript:alert(1)", title="Bad link"),
        "old": add_entry(store, pk, u("/news/old"), title="Old", published_at=utcnow() - timedelta(days=400)),
    }
    calls: list[tuple[str, int, int]] = []
    report = extract_pending(store, settings, progress=lambda *a: calls.append(a))

    assert (report.extracted, report.fallback, report.failed, report.known) == (2, 3, 3, 1)
    assert len(report.article_ids) == 5 and calls[-1] == ("extract", 10, 10)
    assert http_server.hits("/news/old") == 0

    arts = articles(store)
    ok = arts[f"https://127.0.0.1:{http_server.port}/news/dialogue"]
    assert ok.title == "Pakistan, US to resume CT dialogue"  # the feed's
    assert ok.extraction_status == "ok" and ok.extraction_error is None
    assert ok.outlet == "The Frontier Tribune" and ok.country == "PK" and ok.site == "127.0.0.1"
    assert ok.author == "Staff Reporter" and ok.language == "en"
    assert (ok.published_at, ok.published_source) == (published, "feed")
    assert ok.summary == "Officials from the two countries met in Islamabad to discuss counterterrorism cooperation."
    assert ok.text.startswith("ISLAMABAD:") and "Advertisement" not in ok.text
    assert ok.content_hash == "" and ok.word_count == word_count(ok.text) > 200  # dedupe fingerprints it
    assert ok.story_id is None and ok.fetched_at <= utcnow()

    eng = arts[f"https://127.0.0.1:{http_server.port}/defence/engine"]
    assert eng.url == u("/defence/engine") and eng.extraction_status == "ok"
    assert (eng.published_at, eng.published_source) == (datetime(2021, 8, 10, 8, 46, tzinfo=UTC), "page")
    assert eng.outlet == "Capital Ledger" and eng.country == "IN" and eng.author == ""

    pdf = arts[f"https://127.0.0.1:{http_server.port}/files/report.pdf"]
    assert pdf.extraction_status == "fallback" and pdf.extraction_error == "not an HTML page (application/pdf)"
    assert pdf.text == "Officials from the two countries met in Islamabad to discuss counterterrorism cooperation."
    assert pdf.published_source == "fetch"
    video = arts[f"https://127.0.0.1:{http_server.port}/video/clip"]
    assert video.extraction_status == "fallback" and video.extraction_error.startswith("page text too short")
    assert video.text.startswith("The foreign minister arrived") and video.word_count == word_count(video.text)
    gone = arts[f"https://127.0.0.1:{http_server.port}/gone"]
    assert gone.extraction_status == "fallback" and "HTTP 404" in gone.extraction_error

    al = aliases(store)
    assert al[u("/go/engine")] == al[u("/defence/engine")] == eng.id
    assert al[u("/news/dialogue")] == ok.id

    e = entries(store)
    for name in ("ok", "redirect", "same-link", "pdf", "video", "404+summary"):
        assert e[ids[name]].status == "done" and e[ids[name]].article_id is not None, name
    assert e[ids["same-link"]].article_id == ok.id
    assert (e[ids["404"]].status, e[ids["404"]].attempts) == ("failed", 1)  # cannot get better
    assert "HTTP 404" in e[ids["404"]].error
    assert (e[ids["503"]].status, e[ids["503"]].attempts) == ("pending", 1)  # retried next pass
    assert "HTTP 503" in e[ids["503"]].error
    assert e[ids["invalid"]].status == "failed" and "invalid link" in e[ids["invalid"]].error
    assert e[ids["old"]].status == "skipped"

    # The next pass only retries the 503; the third failure is final.
    for attempt in (2, 3):
        again = extract_pending(store, settings)
        assert (again.extracted, again.fallback, again.failed, again.known) == (0, 0, 1, 0)
        assert entries(store)[ids["503"]].attempts == attempt
    assert entries(store)[ids["503"]].status == "failed"
    assert extract_pending(store, settings).failed == 0
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Article)) == 5


def test_extract_pending_known_links_and_entry_ids(store: Store, settings: Settings, http_server: LoopbackServer):
    serve_site(http_server)
    u = http_server.url
    feed = add_feed(store)
    first = add_entry(store, feed, u("/news/dialogue"), title="Dialogue")
    long_ago = (utcnow() - timedelta(days=400)).replace(microsecond=0)
    other = add_entry(store, feed, u("/defence/engine"), title="Engine", published_at=long_ago)
    report = extract_pending(store, settings, entry_ids=[first])
    assert (report.extracted, report.known) == (1, 0)
    assert entries(store)[other].status == "pending" and http_server.hits("/defence/engine") == 0

    # Known by canonical link (tracking parameters, http/https, trailing slash): linked, not fetched.
    hits = http_server.hits("/news/dialogue")
    dup = add_entry(store, add_feed(store, "Wire"), u("/news/dialogue/?utm_campaign=x&fbclid=1"), title="Copy")
    report = extract_pending(store, settings, entry_ids=[dup])
    assert (report.extracted, report.known, report.article_ids) == (0, 1, [])
    assert http_server.hits("/news/dialogue") == hits
    e = entries(store)
    assert e[dup].status == "done" and e[dup].article_id == e[first].article_id
    assert aliases(store)[u("/news/dialogue/?utm_campaign=x&fbclid=1")] == e[first].article_id

    # Asked for by id, an entry older than max_entry_age_days is still extracted (reprocessing).
    assert extract_pending(store, settings, entry_ids=[other]).extracted == 1
    stored = articles(store)[f"https://127.0.0.1:{http_server.port}/defence/engine"]
    assert (stored.published_at, stored.published_source) == (long_ago, "feed")


def test_extract_pending_batches_survive_a_crash(store: Store, settings: Settings, http_server: LoopbackServer):
    serve_site(http_server)
    u = http_server.url
    feed = add_feed(store)
    ids = [add_entry(store, feed, u(p), title=p) for p in ("/news/dialogue", "/defence/engine", "/video/clip")]
    settings.ingest.batch_size = 1
    settings.http.max_concurrency = 1

    class Boom(Exception):
        pass

    def progress(stage: str, done: int, total: int) -> None:
        if done == 1:
            raise Boom

    with pytest.raises(Boom):
        extract_pending(store, settings, progress=progress)
    # The committed batch is whole: one article and its entry; the rest untouched.
    e = entries(store)
    done = [i for i in ids if e[i].status == "done"]
    assert len(done) == 1 and all(e[i].status == "pending" and e[i].attempts == 0 for i in ids if i not in done)
    assert list(articles(store).values())[0].id == e[done[0]].article_id
    report = extract_pending(store, settings)
    assert report.extracted + report.fallback == 2
    assert all(x.status == "done" for x in entries(store).values()) and len(articles(store)) == 3


def test_extract_pending_loads_entries_while_pages_are_in_flight(
    store: Store, settings: Settings, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
):
    """Entries are loaded in chunks while earlier pages are still being fetched; an
    entry whose page is already queued joins that job: one fetch, one article."""
    import pipeline.extract as extract_mod

    serve_site(http_server)
    u = http_server.url
    feed = add_feed(store)
    paths = ["/news/dialogue", "/defence/engine", "/video/clip", "/news/dialogue?utm_source=rss", "/files/report.pdf"]
    ids = [add_entry(store, feed, u(p), title=p, content=CONTENT) for p in paths]
    monkeypatch.setattr(extract_mod, "LOAD_CHUNK", 2)
    loads: list[int] = []
    load = extract_mod._load_jobs

    def counting_load(*args, **kwargs):
        out = load(*args, **kwargs)
        loads.append(len(out[0]))
        return out

    monkeypatch.setattr(extract_mod, "_load_jobs", counting_load)
    report = extract_pending(store, settings)

    assert loads[:3] == [2, 1, 1] and sum(loads) == 4  # the 4th entry joined the queued first page
    assert (report.extracted + report.fallback, report.known, report.failed) == (4, 1, 0)
    assert http_server.hits("/news/dialogue") == 1
    e = entries(store)
    assert all(e[i].status == "done" for i in ids)
    assert e[ids[3]].article_id == e[ids[0]].article_id is not None
    assert len(articles(store)) == 4


def test_extract_pending_takes_entries_queued_while_feeds_are_fetched(
    store: Store, settings: Settings, http_server: LoopbackServer
):
    """With ``fetched`` unset, the stage waits for entries still to come (a feed being
    fetched concurrently) and returns only once it is set and none is left."""
    serve_site(http_server)
    u = http_server.url
    feed = add_feed(store)
    first = add_entry(store, feed, u("/news/dialogue"), title="dialogue", content=CONTENT)
    fetched = threading.Event()
    out: list = []
    t = threading.Thread(target=lambda: out.append(extract_pending(store, settings, fetched=fetched)))
    t.start()
    try:
        deadline = time.monotonic() + 60
        while entries(store)[first].status == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert entries(store)[first].status == "done"
        assert t.is_alive()  # the fetch is not over: more entries may come
        late = add_entry(store, feed, u("/defence/engine"), title="engine", content=CONTENT)
        time.sleep(0.3)
        fetched.set()
    finally:
        fetched.set()
        t.join(60)
    assert not t.is_alive()
    report = out[0]
    assert report.extracted + report.fallback == 2 and report.failed == 0
    e = entries(store)
    assert e[late].status == "done" and e[late].article_id is not None
    assert len(articles(store)) == 2


def test_ingest_extracts_the_first_feeds_pages_while_a_slow_feed_downloads(
    sqlite_store: Store, settings: Settings, http_server: LoopbackServer
):
    """A pass does not wait for its slowest feed: the pages of a feed already stored
    are fetched while another feed is still being answered, and both are ingested."""
    from hostile import article_page, article_text, good_feed

    from pipeline import feeds, ingest
    from pipeline.types import FeedSpec

    store = sqlite_store
    base = http_server.url("")
    page_times: list[float] = []
    slow_answered: list[float] = []

    def page(n: int):
        title, paras = article_text(n)
        body = article_page(title, paras)

        def route(handler) -> Response:
            page_times.append(time.monotonic())
            return Response(200, body, {"Content-Type": "text/html; charset=utf-8"})

        return route

    def slow_feed(handler) -> Response:
        time.sleep(1.5)
        slow_answered.append(time.monotonic())
        return Response(200, good_feed(base, "s", 1, start=10).encode(), {"Content-Type": "application/rss+xml"})

    http_server.routes["/fast.xml"] = Response(200, good_feed(base, "f", 3).encode(), {"Content-Type": "application/rss+xml"})
    http_server.routes["/slow.xml"] = slow_feed
    for n in (0, 1, 2):
        http_server.routes[f"/f/{n}"] = page(n)
    http_server.routes["/s/10"] = page(10)
    feeds.sync_feeds(store, [FeedSpec(name="fast", url=http_server.url("/fast.xml")),
                             FeedSpec(name="slow", url=http_server.url("/slow.xml"))])
    http = settings.http.model_copy(update={"read_timeout": 5, "total_timeout": 10})
    report = ingest.run_once(store, settings.model_copy(update={"http": http, "database_url": store.url}))

    assert report.feeds_ok == 2 and not report.errors, report.errors
    assert report.articles_extracted == 4 and report.classified == 4
    assert len(page_times) == 4 and len(slow_answered) == 1
    assert sorted(page_times)[2] < slow_answered[0]  # the fast feed's three pages came first
    assert report.stage_seconds["fetch"] >= 1.5


def test_concurrent_runs_store_each_article_once(store: Store, settings: Settings, http_server: LoopbackServer):
    serve_site(http_server)
    u = http_server.url
    feed = add_feed(store)
    for p in ("/news/dialogue", "/defence/engine", "/video/clip", "/files/report.pdf"):
        add_entry(store, feed, u(p), title=p, content=CONTENT)
    reports, errors = [], []

    def run() -> None:
        try:
            reports.append(extract_pending(store, settings))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(articles(store)) == 4
    stored = sum(r.extracted + r.fallback for r in reports)
    assert stored == 4 and all(x.status == "done" for x in entries(store).values())


# ---------------------------------------------------------------- CLI


def run_cli(capsys, *args: str) -> tuple[int, list[dict], str]:
    from pipeline.cli import main

    rc = main(["extract", *args])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines()], err


def test_cli_files(tmp_path: Path, capsys):
    gz = tmp_path / "page.html.gz"
    gz.write_bytes(gzip.compress(page("dialogue_resumes.html")))
    txt = tmp_path / "story.txt"
    txt.write_text("Logo\n\nUS backs direct India-Pakistan talks\n\n" + "\n\n".join(BODY) + "\n\nAdvertisement\n", encoding="utf-8")
    rc, out, err = run_cli(capsys, str(PAGES / "engine_deal.html"), str(gz), str(txt))
    assert rc == 0 and err == ""
    assert [set(o) for o in out] == [{"file", "title", "text", "published", "author", "site", "language", "status"}] * 3
    assert out[0]["file"] == str(PAGES / "engine_deal.html") and out[0]["status"] == "ok"
    assert out[0]["published"] == "2021-08-10T08:46:00+00:00" and out[0]["site"] == "Capital Ledger"
    assert out[1]["author"] == "Sana Malik" and "Advertisement" not in out[1]["text"]
    assert out[2] == {
        "file": str(txt), "title": "US backs direct India-Pakistan talks", "text": "\n\n".join(BODY),
        "published": None, "author": "", "site": "", "language": "en", "status": "ok",
    }  # fmt: skip


def test_cli_errors(tmp_path: Path, capsys):
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    broken = tmp_path / "broken.html.gz"
    broken.write_bytes(b"not gzip at all")
    rc, out, err = run_cli(capsys, str(tmp_path / "missing.html"), str(binary), str(broken), str(PAGES / "urdu_brief.html"))
    assert rc == 2
    assert [o["language"] for o in out] == ["ur"]  # the readable input is still printed
    lines = err.strip().splitlines()
    assert lines[0] == f"error: {tmp_path / 'missing.html'}: no such file"
    assert lines[1] == f"error: {binary}: not a text or HTML file"
    assert lines[2].startswith(f"error: {broken}: cannot read:")
    assert "Traceback" not in err


def test_cli_urls(http_server: LoopbackServer, capsys, monkeypatch, tmp_path: Path):
    from pipeline.config import get_settings

    serve_site(http_server)
    monkeypatch.setenv("NEWSMON_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        # Loopback is refused by default (SSRF guard).
        rc, out, err = run_cli(capsys, http_server.url("/news/dialogue"))
        assert rc == 2 and out == [] and "loopback" in err
        monkeypatch.setenv("NEWSMON_HTTP__ALLOW_PRIVATE_ADDRESSES", "1")
        get_settings.cache_clear()
        rc, out, err = run_cli(capsys, http_server.url("/go/engine"), http_server.url("/files/report.pdf"), http_server.url("/gone"))
        assert rc == 2
        assert out[0]["url"] == http_server.url("/go/engine") and out[0]["site"] == "127.0.0.1"
        assert out[0]["text"].startswith("NEW DELHI:")
        assert "not an HTML page (application/pdf)" in err and "HTTP 404" in err
    finally:
        get_settings.cache_clear()


# ---------------------------------------------------------------- eval


def test_shingle_metric_known_cases():
    from eval.shingles import score_page, summarise

    same = score_page("The talks resumed in Islamabad today", "The talks resumed in Islamabad today")
    assert (same.precision, same.recall) == (1.0, 1.0)
    extra = score_page("a b c d e", "a b c d e f g")  # 2 gold shingles, 4 predicted, 2 shared
    assert (extra.tp, extra.fp, extra.fn) == (0.5, 0.5, 0.0) and extra.precision == 0.5 and extra.recall == 1.0
    repeated = score_page("x y z w x y z w", "x y z w")  # counts matter: xyzw occurs twice in gold
    assert repeated.precision == 1.0 and repeated.recall == pytest.approx(0.2)
    assert score_page("The cat sat down", "the cat sat down").precision == 0.0  # case kept
    assert score_page("a b", "a b").recall == 1.0  # shorter than one shingle
    empty_pred = score_page("a b c d e", "")
    both_empty = score_page("", "")
    s = summarise([same, extra, empty_pred, both_empty])
    # Precision over pages that predicted something, recall over pages with gold text.
    assert s.precision == pytest.approx((1.0 + 0.5) / 2)
    assert s.recall == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert s.f1 == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))


def test_extraction_eval_runs(tmp_path: Path):
    from eval import extraction

    data = shared_path("data", "article-extraction-benchmark")
    out = tmp_path / "extraction.json"
    results = extraction.run(limit=10, output=out, dataset=data)
    assert set(results) == {"bare", "newsmon"}
    for r in results.values():
        assert r.summary.pages == 10 and 0.5 < r.summary.f1 <= 1 and r.pages_per_second > 0
    doc = json.loads(out.read_text())
    assert doc["pages"] == 10 and set(doc["variants"]) == {"bare", "newsmon"}
    assert "F1" in extraction.format_table(results)


def test_extraction_eval_skips_without_data(tmp_path: Path, capsys, monkeypatch):
    from eval import extraction

    monkeypatch.setattr(extraction, "DATASET", tmp_path / "absent")
    assert extraction.main(["--output", str(tmp_path / "x.json")]) == 0
    assert "skipped: benchmark data not found" in capsys.readouterr().out
    assert not (tmp_path / "x.json").exists()
