"""The digest: what goes in, ranking, rendering, and delivery exactly once (real SMTP, both stores)."""

from __future__ import annotations

import email
import multiprocessing as mp
import re
import socket
from datetime import datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipeline import digest, mail
from pipeline.config import Settings
from pipeline.store import Alert, Article, Classification, Digest, DigestStory, Store, Story
from pipeline.types import DigestStatus

T = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)  # the morning the digest goes out
DAY = timedelta(days=1)

# Article bodies in our own words, shaped like the wire copy the product sees.
LEDE_TEXT = """Photo: The two delegations at the start of the meeting. — AFP
By Staff Reporter
ISLAMABAD: Pakistan and the United States agreed on Monday to resume a formal security dialogue that had been suspended for two years, officials from both sides said.
"We have agreed to meet every quarter and to keep the channel open whatever the weather," the deputy foreign minister said after the talks.
The delegations also discussed trade, visas and the situation along the western border.
Read more: earlier rounds of the dialogue
"""
QUOTE_TEXT = """NEW DELHI: India's external affairs ministry on Tuesday described the latest round of talks in Washington as productive.
The ministry spokesperson added that more meetings would follow in the coming months.
"Our partnership with the United States rests on shared interests in a stable region, and the talks advanced that," Mr. Rao told reporters in New Delhi.
"""


def story(
    store: Store,
    *,
    title: str,
    members: list[tuple[str, str]] | None = None,
    seen: datetime = T - timedelta(hours=6),
    score: float = 0.8,
    dyads: tuple[str, ...] = ("US-PK",),
    topics: tuple[str, ...] = ("diplomacy",),
    relevant: bool = True,
    text: str = LEDE_TEXT,
    url: str | None = None,
) -> int:
    """A story with one article per (outlet, country), joined 20 minutes apart from ``seen``."""
    members = members or [("Dawn", "PK")]
    with store.session() as s:
        st = Story(title=title, first_seen_at=seen, updated_at=seen, article_count=0, outlet_count=0, score=score,
                   relevant=relevant, dyads=list(dyads), topics=list(topics))
        s.add(st)
        s.flush()
        sid = st.id
    ids = [member(store, sid, outlet, country, title=title if i == 0 else f"{title} ({outlet})", text=text,
                  at=seen + timedelta(minutes=20 * i), url=url if i == 0 else None)
           for i, (outlet, country) in enumerate(members)]
    with store.session() as s:
        s.get(Story, sid).lead_article_id = ids[0]
    return sid


def member(store: Store, story_id: int, outlet: str, country: str, *, title: str = "", text: str = LEDE_TEXT,
           at: datetime, url: str | None = None) -> int:
    """Add an article to a story the way dedupe does (membership, counts, updated_at)."""
    with store.session() as s:
        n = s.scalar(select(func.count()).select_from(Article)) or 0
        link = url or f"https://{re.sub(r'[^a-z]', '', outlet.lower()) or 'x'}.example/news/{story_id}-{n}"
        a = Article(canonical_url=f"https://canon.example/{n}", url=link, title=title or f"Report {n}", text=text,
                    outlet=outlet, country=country, published_at=at - timedelta(minutes=5), fetched_at=at,
                    clustered_at=at, story_id=story_id)
        s.add(a)
        s.flush()
        st = s.get(Story, story_id)
        outlets = set(s.scalars(select(Article.outlet).where(Article.story_id == story_id)))
        st.article_count = (st.article_count or 0) + 1
        st.outlet_count = len(outlets)
        st.updated_at = max(st.updated_at, at)
        return a.id


def with_digest(settings: Settings, smtp=None, **digest_values) -> Settings:
    """Settings with digest fields changed and, given a server, the SMTP transport pointed at it."""
    values = {"recipients": ["desk@example.org", "editor@example.org"], **digest_values}
    update = {"digest": settings.digest.model_copy(update=values)}
    if smtp is not None:
        update["digest"] = update["digest"].model_copy(update={"transport": "smtp"})
        update["smtp"] = settings.smtp.model_copy(update={"host": smtp.host, "port": smtp.port, "timeout": 5})
    return settings.model_copy(update=update)


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def parts(msg: EmailMessage) -> tuple[str, str]:
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def flat(s: str) -> str:
    """Text with line wrapping undone, to look for phrases."""
    return " ".join(s.split())


def row(store: Store, digest_id: int) -> Digest:
    with store.session() as s:
        return s.get(Digest, digest_id)


def _now(kw: dict) -> datetime:
    # Runs are "now" just after the period they deliver, whatever the machine's clock says.
    return (kw.get("until") or T) + timedelta(minutes=1)


def deliver(store: Store, settings: Settings, **kw):
    kw.setdefault("now", _now(kw))
    return digest.deliver_digest(store, settings, **kw)


def build(store: Store, settings: Settings, **kw):
    kw.setdefault("now", _now(kw))
    return digest.build_digest(store, settings, **kw)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- delivery over real SMTP


def test_digest_arrives_with_both_parts_and_the_expected_stories(store, settings, smtp_server) -> None:
    cfg = with_digest(settings, smtp_server)
    a = story(store, title="Pakistan and US resume security dialogue", members=[("Dawn", "PK"), ("Reuters", "GB")])
    b = story(store, title="India calls Washington talks productive", dyads=("US-IN",), text=QUOTE_TEXT,
              members=[("The Hindu", "IN")])
    story(store, title="Cricket board announces squad", relevant=False)
    story(store, title="Last week's summit", seen=T - 3 * DAY)

    result = deliver(store, cfg, since=T - DAY, until=T)

    assert result.status is DigestStatus.DELIVERED
    assert len(smtp_server.messages) == 1
    mail_from, rcpts, raw = smtp_server.messages[0]
    assert mail_from == "newsmon@localhost"
    assert sorted(rcpts) == ["desk@example.org", "editor@example.org"]
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Subject"] == "US–Pakistan–India digest, 24 Nov 2026: 2 stories"
    assert msg["Message-ID"] == result.message_id and msg["Date"]
    text, html = (flat(p) for p in parts(msg))
    for part in (text, html):
        assert "Pakistan and US resume security dialogue" in part
        assert "India calls Washington talks productive" in part
        assert "Cricket board" not in part and "Last week" not in part
    # What happened: the lede and the quotation with its speaker, not the caption or byline.
    assert "agreed on Monday to resume a formal security dialogue" in text
    assert "Mr. Rao told reporters" in html
    assert "Photo:" not in text and "By Staff Reporter" not in text
    assert "Also reported by Reuters (GB)" in text
    r = row(store, result.digest_id)
    assert r.status == "delivered" and r.attempts == 1 and r.sent_at is not None and r.message_id == msg["Message-ID"]
    with store.session() as s:
        items = s.execute(select(DigestStory.story_id, DigestStory.rank, DigestStory.is_update, DigestStory.article_ids)
                          .where(DigestStory.digest_id == result.digest_id).order_by(DigestStory.rank)).all()
    assert [(i.story_id, i.rank, i.is_update) for i in items] == [(a, 1, False), (b, 2, False)]
    assert len(items[0].article_ids) == 2


def test_a_second_run_delivers_nothing_new(store, settings, smtp_server) -> None:
    cfg = with_digest(settings, smtp_server)
    story(store, title="Pakistan and US resume security dialogue")
    first = deliver(store, cfg, now=T)  # the first digest ever: the last 24 hours
    assert first.status is DigestStatus.DELIVERED and first.story_count == 1
    assert (first.period_start, first.period_end) == (T - DAY, T)

    again = deliver(store, cfg, now=T + timedelta(hours=1))
    assert again.status is DigestStatus.EMPTY_SKIPPED
    assert again.period_start == T  # starts where the delivered one ended
    assert deliver(store, cfg, since=T - DAY, until=T).status is DigestStatus.ALREADY_DELIVERED
    assert len(smtp_server.messages) == 1


def test_smtp_server_down_is_a_clear_error_and_the_retry_delivers_once(store, settings, smtp_server) -> None:
    story(store, title="Pakistan and US resume security dialogue")
    down = with_digest(settings, smtp_server)
    down = down.model_copy(update={"smtp": down.smtp.model_copy(update={"port": closed_port()})})

    with pytest.raises(digest.DeliveryFailed, match=r"not reachable") as err:
        deliver(store, down, since=T - DAY, until=T)
    failed = row(store, err.value.result.digest_id)
    assert failed.status == "failed" and "not reachable" in failed.last_error

    up = with_digest(settings, smtp_server)
    assert deliver(store, up, since=T - DAY, until=T).status is DigestStatus.DELIVERED
    assert deliver(store, up, since=T - DAY, until=T).status is DigestStatus.ALREADY_DELIVERED
    assert len(smtp_server.messages) == 1
    done = row(store, failed.id)
    assert done.status == "delivered" and done.attempts == 2 and done.last_error is None


def test_a_refusing_server_leaves_the_digest_undelivered_until_the_retry(store, settings, smtp_server) -> None:
    cfg = with_digest(settings, smtp_server)
    story(store, title="Pakistan and US resume security dialogue")
    smtp_server.refuse_with = "451 4.3.0 Try again later"
    with pytest.raises(digest.DeliveryFailed, match="451") as err:
        deliver(store, cfg, since=T - DAY, until=T)
    assert row(store, err.value.result.digest_id).status == "failed"
    assert smtp_server.messages == []

    smtp_server.refuse_with = None
    ok = deliver(store, cfg, since=T - DAY, until=T)
    assert ok.status is DigestStatus.DELIVERED
    assert ok.message_id == err.value.result.message_id  # nothing went out before: same message
    assert len(smtp_server.messages) == 1


def test_a_missed_run_is_caught_up_and_a_failed_one_covers_up_to_its_retry(sqlite_store, settings, smtp_server) -> None:
    store = sqlite_store
    cfg = with_digest(settings, smtp_server)
    story(store, title="Day one story", seen=T - timedelta(hours=3))
    deliver(store, cfg, now=T)
    story(store, title="Day two story", seen=T + timedelta(hours=10))
    story(store, title="Day three story", seen=T + timedelta(hours=30))
    # No run on day two; the run of day three covers both days.
    down = cfg.model_copy(update={"smtp": cfg.smtp.model_copy(update={"port": closed_port()})})
    with pytest.raises(digest.DeliveryFailed):
        deliver(store, down, now=T + 2 * DAY)
    story(store, title="Story during the outage", seen=T + 2 * DAY + timedelta(minutes=30))
    late = deliver(store, cfg, now=T + 2 * DAY + timedelta(hours=1))
    assert (late.period_start, late.period_end) == (T, T + 2 * DAY + timedelta(hours=1))
    assert late.subject == "US–Pakistan–India digest, 24–26 Nov 2026: 3 stories"
    text = flat(parts(parse(smtp_server.messages[-1][2]))[0])
    assert "Day two story" in text and "Day three story" in text and "Story during the outage" in text
    assert "Day one story" not in text
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Digest)) == 2


def test_an_update_to_a_sent_story_comes_back_marked_as_update(store, settings, smtp_server) -> None:
    cfg = with_digest(settings, smtp_server)
    a = story(store, title="Pakistan and US resume security dialogue", members=[("Dawn", "PK")])
    first = deliver(store, cfg, now=T)
    assert first.update_count == 0

    member(store, a, "The Hindu", "IN", title="India watches revived US-Pakistan dialogue", text=QUOTE_TEXT,
           at=T + timedelta(hours=2))
    b = story(store, title="India calls Washington talks productive", seen=T + timedelta(hours=3), dyads=("US-IN",))
    second = deliver(store, cfg, now=T + DAY)
    assert second.status is DigestStatus.DELIVERED
    assert (second.story_count, second.update_count) == (2, 1)
    assert second.subject.endswith(": 1 new story, 1 update")
    plan = second.plan
    upd = next(i for i in plan.items if i.story_id == a)
    assert upd.is_update and upd.first_sent is not None
    assert [m.outlet for m in upd.new_members] == ["The Hindu"]
    assert upd.headline == "Pakistan and US resume security dialogue"  # the story they know
    assert "Mr. Rao told reporters" in " ".join(upd.summary)  # what is new: the new write-up
    assert not next(i for i in plan.items if i.story_id == b).is_update
    text, html = (flat(p) for p in parts(parse(smtp_server.messages[-1][2])))
    assert "[UPDATE] Pakistan and US resume security dialogue" in text
    assert "New since the digest of 24 Nov 2026: The Hindu (IN)" in text
    assert ">UPDATE</span>" in html
    with store.session() as s:
        shown = dict(s.execute(select(DigestStory.story_id, DigestStory.is_update)
                               .where(DigestStory.digest_id == second.digest_id)).all())
    assert shown == {a: True, b: False}

    # Nothing new since: the story does not come back again.
    third = deliver(store, cfg, now=T + 2 * DAY)
    assert third.status is DigestStatus.EMPTY_SKIPPED


def test_hostile_article_text_is_escaped_and_cannot_inject_headers(store, settings, smtp_server) -> None:
    cfg = with_digest(settings, smtp_server, alerts_enabled=True, alert_min_outlets=1, alert_min_score=0.5)
    title = '<script>alert("x")</script> Talks\r\nBcc: victim@example.org\r\nSubject: pwned ünïcødé — “quoted”'
    text = ('<img src=x onerror=alert(1)> The minister met his counterpart on Monday and the two sides signed '
            'three agreements on trade and transit.\n"We will not be told what to do <b>by anyone</b>," the minister '
            'said.\x1b[31m\n')
    story(store, title=title, members=[('Evil "Outlet" <b>', "PK")], text=text, url="javascript:alert(1)")
    story(store, title="Second story", members=[("Dawn", "PK")], url="https://dawn.example/a?x=1&y=\"2\"")

    result = deliver(store, cfg, since=T - DAY, until=T)
    report = digest.send_alerts(store, cfg, now=T)
    assert report.sent == 2

    assert len(smtp_server.messages) == 3
    for _, rcpts, raw in smtp_server.messages:
        assert sorted(rcpts) == ["desk@example.org", "editor@example.org"]
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert not re.search(rb"^(Bcc|Subject: pwned)", head, re.M | re.I)
        msg = parse(raw)
        assert msg["Bcc"] is None and len(msg.get_all("Subject")) == 1
        plain, html = parts(msg)
        assert "<script>" not in html and "<img src=x" not in html and "<b>by anyone" not in html
        assert 'href="javascript:' not in html.lower()
        assert "\x1b" not in plain and "\x1b" not in html
        if "Talks" in plain:
            assert "&lt;script&gt;" in html and "Evil &#34;Outlet&#34; &lt;b&gt;" in html
            assert "ünïcødé" in plain and "ünïcødé" in html
        if "Second story" in plain:
            assert 'href="https://dawn.example/a?x=1&amp;y=%222%22"' in html
    alert = parse(smtp_server.messages[1][2])
    assert "\n" not in alert["Subject"] and "ünïcødé" in alert["Subject"]
    assert result.status is DigestStatus.DELIVERED


# ---------------------------------------------------------------- exactly once


class _Crash(BaseException):
    """The process dying: no exception handler runs."""


def test_a_crash_after_the_server_accepted_resends_the_same_message(store, settings, smtp_server) -> None:
    cfg = with_digest(settings, smtp_server)
    story(store, title="Pakistan and US resume security dialogue")
    smtp = mail.SmtpTransport(cfg.smtp)

    def accept_then_die(msg: EmailMessage):
        smtp.send(msg)
        raise _Crash()

    with pytest.raises(_Crash):
        deliver(store, cfg, since=T - DAY, until=T, transport=accept_then_die, now=T)
    with store.session() as s:
        r = s.scalars(select(Digest)).one()
    assert r.status == "sending" and len(smtp_server.messages) == 1

    # Within the lease another run might still be sending: leave it alone.
    soon = deliver(store, cfg, since=T - DAY, until=T, now=T + timedelta(seconds=30))
    assert soon.status is DigestStatus.IN_PROGRESS and len(smtp_server.messages) == 1

    # Past the lease: the same message again (receivers drop it by Message-ID), then recorded.
    later = T + timedelta(seconds=cfg.digest.send_lease_seconds + 1)
    again = deliver(store, cfg, since=T - DAY, until=T, now=later)
    assert again.status is DigestStatus.DELIVERED and again.resent
    first, second = (parse(m[2]) for m in smtp_server.messages)
    assert first["Message-ID"] == second["Message-ID"] == r.message_id
    assert parts(first) == parts(second)
    assert deliver(store, cfg, since=T - DAY, until=T, now=later).status is DigestStatus.ALREADY_DELIVERED
    assert len(smtp_server.messages) == 2


def test_a_connection_lost_during_data_is_unconfirmed_and_resent_as_is(sqlite_store, settings, smtp_server) -> None:
    store = sqlite_store
    cfg = with_digest(settings, smtp_server)
    story(store, title="Pakistan and US resume security dialogue")
    smtp = mail.SmtpTransport(cfg.smtp)

    def accepted_but_reply_lost(msg: EmailMessage):
        smtp.send(msg)
        raise TimeoutError("timed out waiting for the reply to DATA")

    with pytest.raises(digest.DeliveryFailed, match="may have been delivered") as err:
        deliver(store, cfg, since=T - DAY, until=T, transport=accepted_but_reply_lost)
    assert row(store, err.value.result.digest_id).status == "unconfirmed"
    story(store, title="A story that arrives before the retry", seen=T - timedelta(hours=1))
    again = deliver(store, cfg, since=T - DAY, until=T)
    assert again.status is DigestStatus.DELIVERED and again.resent
    first, second = (parse(m[2]) for m in smtp_server.messages)
    assert first["Message-ID"] == second["Message-ID"]
    assert "A story that arrives" not in parts(second)[0]  # the very same content


def _deliver_in_process(url: str, settings: Settings, barrier, results) -> None:
    store = Store(url)
    barrier.wait()
    try:
        results.put(deliver(store, settings, since=T - DAY, until=T).status.value)
    except BaseException as exc:
        results.put(f"error: {exc!r}")
    finally:
        store.dispose()


def test_concurrent_runs_for_one_period_send_once(store, settings, smtp_server) -> None:
    cfg = with_digest(settings, smtp_server)
    for i in range(30):
        story(store, title=f"Story {i}", members=[("Dawn", "PK"), ("The Hindu", "IN")])
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_deliver_in_process, args=(store.url, cfg, barrier, results)) for _ in range(3)]
    for proc in procs:
        proc.start()
    statuses = sorted(results.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert statuses.count("delivered") == 1, statuses
    assert set(statuses) <= {"delivered", "in-progress", "already-delivered"}
    assert len(smtp_server.messages) == 1
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Digest)) == 1


def test_force_sends_a_delivered_period_again_as_a_new_message(sqlite_store, settings, smtp_server) -> None:
    store = sqlite_store
    cfg = with_digest(settings, smtp_server)
    story(store, title="Pakistan and US resume security dialogue")
    first = deliver(store, cfg, since=T - DAY, until=T)
    again = deliver(store, cfg, force=True, now=T + timedelta(hours=2))  # the latest delivered
    assert again.status is DigestStatus.DELIVERED and again.digest_id == first.digest_id
    assert again.message_id != first.message_id and again.story_count == 1
    assert len(smtp_server.messages) == 2
    assert parts(parse(smtp_server.messages[0][2])) == parts(parse(smtp_server.messages[1][2]))


# ---------------------------------------------------------------- what goes in, and how it reads


def test_a_backfilled_period_gives_the_same_digest_twice(store, settings) -> None:
    cfg = with_digest(settings)
    for i, (score, outlets) in enumerate([(0.9, 1), (0.6, 4), (0.6, 4), (0.75, 2)]):
        story(store, title=f"Story {i}", score=score, seen=T - DAY - timedelta(hours=10 - i),
              members=[("Dawn", "PK"), ("The Hindu", "IN"), ("Reuters", "GB"), ("Geo", "PK")][:outlets])
    since, until = T - 2 * DAY, T - DAY
    one = build(store, cfg, since=since, until=until)
    two = build(store, cfg, since=since, until=until)
    assert one == two and digest.render(one) == digest.render(two)
    assert [i.rank for i in one.items] == [1, 2, 3, 4]

    a = deliver(store, cfg, since=since, until=until, preview=True)
    eml_one = Path(a.paths[0]).read_bytes()
    b = deliver(store, cfg, since=since, until=until, preview=True)
    eml_two = Path(b.paths[0]).read_bytes()
    strip_date = lambda raw: re.sub(rb"^Date: .*\r\n", b"", raw, flags=re.M)  # noqa: E731
    assert strip_date(eml_one) == strip_date(eml_two)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Digest)) == 0  # previews record nothing

    sent = deliver(store, cfg, since=since, until=until)
    assert sent.status is DigestStatus.DELIVERED
    # Once delivered, the period still builds to the digest that went out.
    assert build(store, cfg, since=since, until=until) == one
    assert sent.subject == digest.render(one)[0]


def test_ranking_by_score_outlets_and_recency_grouped_by_country_pair(sqlite_store, settings) -> None:
    store = sqlite_store
    cfg = with_digest(settings)
    wide = story(store, title="Told by four outlets", score=0.6, dyads=("US-IN",),
                 members=[("Dawn", "PK"), ("The Hindu", "IN"), ("Reuters", "GB"), ("AP", "US")])
    sure = story(store, title="High score, one outlet", score=0.95, dyads=("IN-PK",))
    old = story(store, title="Same score, older", score=0.7, seen=T - timedelta(hours=23))
    new = story(store, title="Same score, newer", score=0.7, seen=T - timedelta(hours=1))
    tri = story(store, title="All three", score=0.65, dyads=("US-PK", "IN-PK"))
    plan = build(store, cfg, since=T - DAY, until=T)
    order = [i.story_id for i in plan.items]
    assert order.index(wide) < order.index(sure)  # breadth of coverage outweighs a small score gap
    assert order.index(new) < order.index(old)
    assert {i.story_id: i.section for i in plan.items}[tri] == "Trilateral"
    assert [sec.key for sec in plan.sections][0] == plan.items[0].section  # best story's section first
    assert digest.priority(0.7, 1, 1, False) > digest.priority(0.7, 1, 23, False)
    assert digest.priority(0.7, 3, 1, False) > digest.priority(0.7, 1, 1, False)
    assert digest.priority(0.7, 3, 1, True) < digest.priority(0.7, 3, 1, False)


def test_the_cap_keeps_a_big_digest_readable_and_says_how_many_more(sqlite_store, settings) -> None:
    store = sqlite_store
    cfg = with_digest(settings, max_stories=5)
    for i in range(40):
        story(store, title=f"Story number {i}", score=0.5 + i / 100, dyads=(("US-PK",), ("US-IN",), ("IN-PK",))[i % 3])
    result = deliver(store, cfg, since=T - DAY, until=T)
    assert result.story_count == 40
    plan = result.plan
    assert len(plan.shown) == 5 and plan.more == 35
    assert all(i.summary for i in plan.shown) and not any(i.summary for i in plan.items[5:])
    text, html = (flat(p) for p in digest.render(plan)[1:])
    assert "35 lower-ranked stories are not shown (5 of 40)" in text
    assert re.search(r"\+ \d+ more US–India stories not shown", html)
    assert text.count("Story number") == 5
    with store.session() as s:
        rows = s.execute(select(DigestStory.story_id, DigestStory.article_ids).order_by(DigestStory.rank)).all()
    assert len(rows) == 40 and [bool(r.article_ids) for r in rows] == [True] * 5 + [False] * 35

    # Next day: a story that was only counted comes back (as new, never shown) only with new coverage.
    counted = [r.story_id for r in rows[5:]]
    member(store, counted[0], "AP", "US", at=T + timedelta(hours=2))
    nxt = build(store, cfg, since=T, until=T + DAY)
    assert [(i.story_id, i.is_update) for i in nxt.items] == [(counted[0], False)]


def test_an_html_part_over_the_clipping_budget_drops_the_lowest_ranked_sentences(sqlite_store, settings,
                                                                                   monkeypatch) -> None:
    cfg = with_digest(settings)
    for i in range(12):
        story(sqlite_store, title=f"Story number {i}", score=0.9 - i / 100)
    plan = build(sqlite_store, cfg, since=T - DAY, until=T)
    full = digest.render(plan)[2]
    monkeypatch.setattr(digest, "HTML_BUDGET", len(full.encode()) - 500)
    subject, text, html = digest.render(plan)
    assert len(html.encode()) <= digest.HTML_BUDGET
    assert html.count("agreed on Monday to resume") == 10 and text.count("Story number") == 12
    assert "Story number 11" in html  # the entry stays, without its sentences


def test_empty_period_skip_records_and_sends_nothing(sqlite_store, settings, smtp_server) -> None:
    cfg = with_digest(settings, smtp_server, on_empty="skip")
    result = deliver(sqlite_store, cfg, since=T - DAY, until=T)
    assert result.status is DigestStatus.EMPTY_SKIPPED
    assert row(sqlite_store, result.digest_id).status == "empty"
    assert smtp_server.messages == []
    # A story that turns up later for that period is still delivered (nothing was sent).
    story(sqlite_store, title="Late but in the period", seen=T - timedelta(hours=2))
    assert deliver(sqlite_store, cfg, since=T - DAY, until=T).status is DigestStatus.DELIVERED


def test_empty_period_send_mails_a_short_note(sqlite_store, settings, smtp_server) -> None:
    cfg = with_digest(settings, smtp_server, on_empty="send")
    result = deliver(sqlite_store, cfg, since=T - DAY, until=T)
    assert result.status is DigestStatus.DELIVERED and result.story_count == 0
    msg = parse(smtp_server.messages[0][2])
    assert msg["Subject"] == "US–Pakistan–India digest, 24 Nov 2026: no new stories"
    assert "Nothing new about US–Pakistan–India relations" in flat(parts(msg)[0])
    assert deliver(sqlite_store, cfg, since=T - DAY, until=T).status is DigestStatus.ALREADY_DELIVERED


def test_a_story_committed_late_is_not_lost_between_two_digests(sqlite_store, settings) -> None:
    store = sqlite_store
    cfg = with_digest(settings)
    deliver(store, cfg, now=T)  # empty, recorded
    story(store, title="Seen before the cut", seen=T - timedelta(hours=2))
    deliver(store, cfg, now=T + timedelta(minutes=1))
    # An ingest transaction stamped just before the last cut-off but committed after it.
    late = story(store, title="Stamped before, committed after", seen=T + timedelta(seconds=50))
    nxt = build(store, cfg, now=T + DAY)
    assert [i.story_id for i in nxt.items] == [late]


def classify_relevant(store: Store, story_id: int, at: datetime) -> None:
    """What classify does when it finds a story's members relevant (at ``at``)."""
    with store.session() as s:
        for aid in s.scalars(select(Article.id).where(Article.story_id == story_id)):
            s.add(Classification(article_id=aid, version="test", score=0.9, relevant=True, dyads=["US-PK"],
                                 topics=[], evidence=[], classified_at=at))
        st = s.get(Story, story_id)
        st.relevant, st.score = True, 0.9


def test_a_story_classified_relevant_after_the_last_digest_is_sent_next_time(sqlite_store, settings) -> None:
    store = sqlite_store
    cfg = with_digest(settings)
    lagging = story(store, title="Clustered before the cut, classified after", seen=T - timedelta(hours=5),
                    relevant=False)
    ancient = story(store, title="Old story reclassified", seen=T - 10 * DAY, relevant=False)
    assert deliver(store, cfg, now=T).status is DigestStatus.EMPTY_SKIPPED
    classify_relevant(store, lagging, T + timedelta(hours=3))
    classify_relevant(store, ancient, T + timedelta(hours=3))
    nxt = build(store, cfg, now=T + DAY)
    assert [i.story_id for i in nxt.items] == [lagging]  # and old news stays old


def test_summary_sentences_pick_the_lede_and_the_attributed_quotation() -> None:
    got = digest.summary_sentences(LEDE_TEXT, "Pakistan and US resume security dialogue")
    assert got[0].startswith("ISLAMABAD: Pakistan and the United States agreed on Monday")
    assert got[1].startswith('"We have agreed to meet every quarter') and got[1].endswith("after the talks.")
    assert not any("Photo" in s or "Read more" in s or "Staff Reporter" in s for s in got)

    got = digest.summary_sentences(QUOTE_TEXT, "India calls talks productive")
    assert got[-1].startswith('"Our partnership') and got[-1].endswith("Mr. Rao told reporters in New Delhi.")

    assert digest.summary_sentences("", "t", fallback="<p>Only a <b>teaser</b> from the feed</p>") == (
        "Only a teaser from the feed",
    )
    assert digest.summary_sentences("", "Headline") == ()
    long = "The talks, " + "which covered many subjects in great detail and at length, " * 20 + "ended."
    assert all(len(s) <= digest.MAX_SENTENCE_CHARS for s in digest.summary_sentences(long))


# ---------------------------------------------------------------- alerts


def test_alerts_are_rate_limited_and_never_repeat(store, settings, smtp_server) -> None:
    cfg = with_digest(settings, smtp_server, alerts_enabled=True, alert_min_score=0.85, alert_min_outlets=3,
                      alert_max_per_day=2, alert_window_hours=72)
    three = [("Dawn", "PK"), ("The Hindu", "IN"), ("Reuters", "GB")]
    hot = [story(store, title=f"Major story {i}", score=0.9 + i / 100, members=three) for i in range(4)]
    story(store, title="Low score", score=0.5, members=three)
    story(store, title="One outlet", score=0.99)

    first = digest.send_alerts(store, cfg, now=T)
    assert (first.sent, first.rate_limited, first.candidates) == (2, 2, 4)
    assert first.story_ids == [hot[3], hot[2]]  # best first
    again = digest.send_alerts(store, cfg, now=T + timedelta(hours=1))
    assert again.sent == 0 and again.rate_limited == 2
    next_day = digest.send_alerts(store, cfg, now=T + DAY + timedelta(hours=1))
    assert sorted(next_day.story_ids) == sorted(hot[:2])
    assert digest.send_alerts(store, cfg, now=T + 2 * DAY).sent == 0

    assert len(smtp_server.messages) == 4
    subjects = [parse(m[2])["Subject"] for m in smtp_server.messages]
    assert len(set(subjects)) == 4 and all(s.startswith("US–Pakistan–India alert: Major story") for s in subjects)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Alert)) == 4
        assert set(s.scalars(select(Alert.status))) == {"sent"}
    assert digest.send_alerts(store, with_digest(settings, smtp_server), now=T).sent == 0  # off by default


def test_a_failed_alert_is_retried_not_duplicated(sqlite_store, settings, smtp_server) -> None:
    store = sqlite_store
    cfg = with_digest(settings, smtp_server, alerts_enabled=True, alert_min_outlets=1, alert_min_score=0.5)
    story(store, title="Major story")
    smtp_server.refuse_with = "451 4.3.0 busy"
    report = digest.send_alerts(store, cfg, now=T)
    assert report.failed == 1 and "451" in report.errors[0]
    smtp_server.refuse_with = None
    assert digest.send_alerts(store, cfg, now=T + timedelta(minutes=5)).sent == 1
    assert digest.send_alerts(store, cfg, now=T + timedelta(minutes=10)).sent == 0
    assert len(smtp_server.messages) == 1


# ---------------------------------------------------------------- outbox and command line


def test_outbox_is_the_default_and_writes_eml_and_html(sqlite_store, settings) -> None:
    story(sqlite_store, title="Pakistan and US resume security dialogue")
    result = deliver(sqlite_store, settings, since=T - DAY, until=T)
    assert result.transport == "outbox"
    eml, html = (Path(p) for p in result.paths)
    assert eml.name == f"20261123T070000Z_20261124T070000Z-{result.digest_id}.eml"
    assert eml.parent == settings.outbox and html.suffix == ".html"
    msg = parse(eml.read_bytes())
    assert msg["Message-ID"] == result.message_id
    assert html.read_bytes().decode() == parts(msg)[1].replace("\r\n", "\n")


def test_cli_digest_preview_send_and_json(sqlite_store, settings, monkeypatch, capsys) -> None:
    from pipeline import cli
    from pipeline.cli import _common

    # The command runs at the real time: a period that ended an hour ago.
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    story(sqlite_store, title="Pakistan and US resume security dialogue", members=[("Dawn", "PK"), ("AP", "US")],
          seen=end - timedelta(hours=6))
    cfg = settings.model_copy(update={"database_url": sqlite_store.url})
    monkeypatch.setattr(_common, "settings", lambda: cfg)
    # A time without a zone is in digest.timezone (UTC here).
    period = ["--since", f"{end - DAY:%Y-%m-%dT%H:%M}", "--until", end.isoformat()]

    assert cli.main(["digest", *period, "--preview"]) == 0
    out = capsys.readouterr()
    assert "Pakistan and US resume security dialogue" in out.out and "nothing recorded" in out.err

    assert cli.main(["digest", *period, "--json"]) == 0
    data = __import__("json").loads(capsys.readouterr().out)
    assert data["status"] == "delivered"
    (entry,) = data["digest"]["stories"]
    assert entry["rank"] == 1 and [m["outlet"] for m in entry["members"]] == ["Dawn", "AP"]

    assert cli.main(["digest", *period]) == 0
    assert "already delivered" in capsys.readouterr().out
    assert cli.main(["digest", "--until", (end + 2 * DAY).isoformat()]) == 2
    assert "cannot end in the future" in capsys.readouterr().err
    assert cli.main(["digest", "--since", "yesterday"]) == 2
    assert "not an ISO 8601" in capsys.readouterr().err
