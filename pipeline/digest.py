"""The daily digest and immediate alerts.

* :func:`build_digest` decides what a digest says (a :class:`~pipeline.types.DigestPlan`):
  which stories, in which order, with which members and sentences;
* :func:`render` turns a plan into ``(subject, text, html)``;
* :func:`deliver_digest` builds, records and delivers the digest of a period exactly
  once (see docs/digest.md for the state machine and the crash window);
* :func:`send_alerts` mails high-priority stories at once, once per story, rate-limited.

Periods are half-open, ``[start, end)``. Without an explicit start, a digest starts
where the last delivered digest ended, so a missed day is caught up and nothing is
sent twice. A story is *new* in a period when it is relevant, no delivered digest
covered it, and it was first seen, got a member or turned relevant in the period; a
story that was shown and then got members no digest showed comes back as an
*update*. ``digest_stories`` lists every story a digest covered, with
``article_ids`` = the members it showed (empty for stories past the cap).
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from pipeline import mail
from pipeline.config import PACKAGE_DIR, Settings
from pipeline.store import (
    Alert,
    Article,
    Classification,
    Digest,
    DigestStory,
    Feed,
    Store,
    Story,
    chunked,
    insert_ignore,
    lock,
    utcnow,
)
from pipeline.types import (
    AlertReport,
    DigestItem,
    DigestMember,
    DigestPlan,
    DigestResult,
    DigestStatus,
)
from pipeline.urls import site_of

__all__ = [
    "DeliveryFailed",
    "build_digest",
    "build_digest_message",
    "deliver_digest",
    "plan_to_dict",
    "render",
    "render_alert",
    "send_alerts",
    "summary_sentences",
]

log = logging.getLogger(__name__)

TEMPLATES_DIR = PACKAGE_DIR / "templates"
KIND = "digest"
# Digests whose stories count as shown: delivered, or possibly delivered (a resend is pending).
SENT_STATUSES = ("delivered", "sending", "unconfirmed")
# An update is worth less than a new story with the same score and coverage.
UPDATE_WEIGHT = 0.6
# Half-life of the recency factor, in hours.
RECENCY_HALF_LIFE_H = 24.0
# Articles are clustered some time after they are fetched; look this far back by fetch time.
FETCH_SLACK = timedelta(days=1)
_LOCK = "newsmon.digest"
_ALERT_LOCK = "newsmon.alerts"
MAX_TITLE_CHARS = 300
MAX_SENTENCE_CHARS = 320
MAX_SUMMARY_CHARS = 440
MAX_TOPICS = 6
# Gmail clips an HTML body past about 102 KB behind a "View entire message" link.
HTML_BUDGET = 96_000
KNOWN_DYADS = ("US-PK", "US-IN", "IN-PK")


class DeliveryFailed(Exception):
    """The digest (or alert) could not be delivered; ``result`` says which and why.

    The digest is recorded as failed (or, when the server may have accepted it, as
    unconfirmed) and the next run retries it.
    """

    def __init__(self, message: str, result: DigestResult | None = None) -> None:
        super().__init__(message)
        self.result = result


# ---------------------------------------------------------------- small text helpers


# Unicode category Cc, and the bidi embedding/override/isolate controls: a headline
# carrying U+202E would be shown reversed (text that reads differently from what it says).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _one_line(value: str | None, max_chars: int = MAX_TITLE_CHARS) -> str:
    """Printable single-line text: control characters and line breaks become spaces."""
    if not value:
        return ""
    return mail.shorten(" ".join(_CONTROL.sub(" ", value).split()), max_chars)


def _safe_url(url: str | None) -> str:
    """The URL if it is absolute http(s), with unsafe characters escaped; anything else is dropped."""
    from urllib.parse import quote

    url = (url or "").strip()
    if not re.match(r"(?i)^https?://[^\s/?#]+", url) or len(url) > 2048:
        return ""
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")


_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof gen lt col maj capt cmdr adm sgt gov sen rep rev st jr sr no nos vs etc inc ltd co corp
    jan feb mar apr jun jul aug sep sept oct nov dec approx dept est fig govt hon mt ft brig ret pvt sh smt shri
    mohd md dy asst addl spl supt insp""".split()
)
_BOUNDARY = re.compile(r"[.!?…]+[\"”’')\]]*\s+")
_BOILERPLATE = re.compile(
    r"(?i)\b(read more|also read|read also|click here|subscribe|sign up|follow us|all rights reserved|copyright|"
    r"advertisement|share this|whatsapp|newsletter|cookies?|download (the|our) app|get the latest|story continues)\b"
)
_CAPTION = re.compile(
    r"(?i)(\b(file )?(photo|image|picture|screengrab|screenshot|video grab)s?\b.{0,120}\b(afp|reuters|ap|pti|ani|ians|"
    r"getty|file|x|twitter)\b|[—–-]\s*(afp|reuters|ap|pti|ani|ians|app|file|x)\W*$|\((ap|afp|reuters|pti|ani)( file)? "
    r"photo\))"
)
# "The still image taken from a video …", "File photo shows …": a caption however it ends.
_CAPTION_START = re.compile(
    r"(?i)^(the )?(still |file |representational )?(image|photo|picture|screengrab|video grab)s? "
    r"(taken|shows?|of|from)\b"
)
_QUOTE = re.compile(r"[“\"]([^”\"]{20,})[”\"]")
_ATTRIBUTION = re.compile(
    r"(?i)\b(said|says|told|stated|added|noted|asserted|declared|remarked|warned|urged|insisted|stressed|"
    r"emphasi[sz]ed|maintained|announced|wrote|tweeted|according to)\b"
)


def _split_sentences(paragraph: str) -> list[str]:
    out, start = [], 0
    for m in _BOUNDARY.finditer(paragraph):
        seg = paragraph[start : m.end()]
        punct_at = m.start()
        before = paragraph[start:punct_at].rstrip()
        last = before.rsplit(None, 1)[-1].lstrip("\"“‘'(") if before.split() else ""
        nxt = paragraph[m.end() : m.end() + 1]
        if paragraph[punct_at] == "." and (
            last.lower().rstrip(".") in _ABBREVIATIONS
            or re.fullmatch(r"[A-Z]", last)
            or re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", last)
        ):
            continue
        if nxt and (nxt.islower() or nxt.isdigit() and paragraph[punct_at] == "."):
            continue
        # Inside an open quotation: the quotation's sentences belong to the one that attributes them.
        if len(seg) < 600 and (seg.count("“") > seg.count("”") or seg.count('"') % 2 == 1):
            continue
        out.append(seg.strip())
        start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


def _words(s: str) -> set[str]:
    return set(re.findall(r"\w+", s.casefold()))


def _similar(a: set[str], b: set[str], threshold: float = 0.6) -> bool:
    """Jaccard similarity of two word sets at least ``threshold``."""
    if not a or not b:
        return False
    return len(a & b) / len(a | b) >= threshold


def _substantive(s: str) -> bool:
    words = s.split()
    if len(words) < 8 or len(s) < 40:
        return False
    if not re.search(r"[.!?…][\"”’')\]]*$", s):  # headings, bylines, captions, datelines
        return False
    if not re.search(r"[a-z]", s) or _BOILERPLATE.search(s) or _CAPTION.search(s):
        return False
    return True


def _is_quotation(s: str) -> bool:
    return bool(_QUOTE.search(s) and _ATTRIBUTION.search(s))


def _truncate(s: str, max_chars: int) -> str:
    out = _one_line(s, max_chars)
    if out.endswith("…"):  # close a quotation the cut left open
        if out.count("“") > out.count("”"):
            out += "”"
        elif out.count('"') % 2:
            out += '"'
    return out


def summary_sentences(text: str, title: str = "", *, fallback: str = "", max_sentences: int = 3) -> tuple[str, ...]:
    """Two or three sentences from an article that say what happened.

    The first substantive sentence (the lead), then the first quotation with its
    attribution ("…," X said) if one comes early, otherwise the next sentence; a
    third when the first two are short. Headings, bylines, photo captions, page
    furniture and restatements of the title are skipped. ``fallback`` (the feed's
    summary) is used when the text has nothing usable.
    """
    for source in (text, _strip_html(fallback)):
        if not source:
            continue
        title_words = _words(title)
        seen: list[set[str]] = [title_words] if title_words else []
        sents: list[str] = []
        for para in re.split(r"\n+", source):
            para = " ".join(para.split())
            if not para or _CAPTION.search(para) or _CAPTION_START.match(para):
                continue
            for s in _split_sentences(para):
                if not _substantive(s):
                    continue
                w = _words(s)
                if any(_similar(w, o, 0.6) for o in seen):
                    continue
                seen.append(w)
                sents.append(s)
            if len(sents) >= 14:
                break
        if not sents:
            continue
        picked = {0: _truncate(sents[0], MAX_SENTENCE_CHARS)}
        quote = next((i for i in range(1, min(len(sents), 12)) if _is_quotation(sents[i])), None)
        second = quote if quote is not None and not _is_quotation(sents[0]) else (1 if len(sents) > 1 else None)
        for i in (second, next((j for j in range(1, len(sents)) if j != second), None)):
            if i is None or len(picked) >= max_sentences:
                break
            room = MAX_SUMMARY_CHARS - sum(len(x) + 1 for x in picked.values())
            if len(picked) >= 2 and len(sents[i]) > room:
                break  # a third sentence only when it fits whole
            if room < 80:
                break
            picked[i] = _truncate(sents[i], min(MAX_SENTENCE_CHARS, room))
        return tuple(picked[i] for i in sorted(picked))
    # No sentence at all (a feed that gives only a teaser): its first line, shortened.
    first = next((ln for ln in re.split(r"\n+", _strip_html(fallback) or text or "") if ln.strip()), "")
    return (_truncate(first, MAX_SENTENCE_CHARS),) if first and not _similar(_words(first), _words(title), 0.9) else ()


def _strip_html(s: str) -> str:
    if not s or "<" not in s:
        return s or ""
    try:
        import lxml.html

        return lxml.html.fromstring(s).text_content()
    except Exception:  # malformed fragments: fall back to dropping tags
        return re.sub(r"<[^>]*>", " ", s)


# ---------------------------------------------------------------- periods


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got {value.isoformat()})")
    return value.astimezone(timezone.utc)


def _last_delivered_end(s: Session) -> datetime | None:
    return s.scalar(select(func.max(Digest.period_end)).where(Digest.kind == KIND, Digest.status == "delivered"))


def _default_start(s: Session, settings: Settings, now: datetime) -> datetime:
    return _last_delivered_end(s) or now - timedelta(hours=settings.digest.initial_lookback_hours)


def _resolve(s: Session, settings: Settings, since: datetime | None, until: datetime | None, now: datetime):
    if until is not None and until > now + timedelta(minutes=1):
        # Stories arriving before that end would fall behind the next digest's start.
        raise ValueError(f"the period cannot end in the future ({until.isoformat()})")
    start = since or _default_start(s, settings, now)
    end = until or now.replace(microsecond=0)
    if start >= end:
        raise ValueError(
            f"empty period: {start.isoformat()} is not before {end.isoformat()}"
            + ("" if since else " (the last delivered digest already covers it)")
        )
    return start, end


def _row_for(s: Session, start: datetime, end: datetime) -> Digest | None:
    return s.scalar(
        select(Digest).where(Digest.kind == KIND, Digest.period_start == start, Digest.period_end == end)
    )


# ---------------------------------------------------------------- planning


@dataclass
class _Member:
    id: int
    story_id: int
    outlet: str
    country: str
    title: str
    url: str
    published: datetime | None
    joined: datetime  # when it joined the story (clustered)
    duplicate_of: int | None
    judged_relevant_at: datetime | None = None  # when the classifier found it relevant


def _candidates(s: Session, horizon: datetime, end: datetime, open_since: datetime) -> set[int]:
    """Ids of relevant stories that may be in the period (a superset; _plan decides)."""
    relevant = Story.relevant.is_(True)
    ids = set(s.scalars(select(Story.id).where(relevant, Story.first_seen_at >= horizon, Story.first_seen_at < end)))
    # Stories a member joined since the horizon (updated_at = when the last member joined).
    ids.update(s.scalars(select(Story.id).where(relevant, Story.updated_at >= horizon)))
    # Belt and braces for stories whose updated_at was not touched: members fetched lately.
    ids.update(
        s.scalars(
            select(Article.story_id)
            .join(Story, Story.id == Article.story_id)
            .where(Article.fetched_at >= horizon - FETCH_SLACK, Article.fetched_at < end, relevant)
            .distinct()
        )
    )
    # Open stories that became relevant lately: a member classified after it joined.
    ids.update(
        s.scalars(
            select(Story.id)
            .join(Article, Article.story_id == Story.id)
            .join(Classification, Classification.article_id == Article.id)
            .where(relevant, Story.first_seen_at >= open_since, Story.first_seen_at < end,
                   Classification.relevant.is_(True), Classification.classified_at >= horizon)
            .distinct()
        )
    )
    ids.discard(None)  # type: ignore[arg-type]
    return ids


def _members(s: Session, story_ids: Iterable[int]) -> dict[int, list[_Member]]:
    out: dict[int, list[_Member]] = defaultdict(list)
    cols = (
        Article.id,
        Article.story_id,
        Article.outlet,
        Article.site,
        Article.country,
        Article.title,
        Article.url,
        Article.canonical_url,
        Article.published_at,
        Article.fetched_at,
        Article.clustered_at,
        Article.duplicate_of_id,
        Feed.name,
        Feed.country,
        Classification.relevant,
        Classification.classified_at,
    )
    for chunk in chunked(sorted(story_ids)):
        q = (
            select(*cols)
            .outerjoin(Feed, Feed.id == Article.feed_id)
            .outerjoin(Classification, Classification.article_id == Article.id)
            .where(Article.story_id.in_(chunk))
        )
        for r in s.execute(q):
            url = _safe_url(r[6]) or _safe_url(r[7])
            outlet = _one_line(r[2] or r[12] or r[3] or (site_of(url) if url else ""), 80) or "Unknown outlet"
            out[r[1]].append(
                _Member(
                    id=r[0],
                    story_id=r[1],
                    outlet=outlet,
                    country=_one_line(r[4] or r[13] or "", 8).upper(),
                    title=_one_line(r[5]),
                    url=url,
                    published=r[8],
                    joined=r[10] or r[9],
                    duplicate_of=r[11],
                    judged_relevant_at=r[15] if r[14] else None,
                )
            )
    return out


@dataclass
class _Coverage:
    """What earlier digests did with a story."""

    shown: set[int]  # member ids shown (empty: only counted in an "and N more")
    first_shown: datetime | None  # end of the first period that showed it
    covered_until: datetime  # end of the latest period that covered it


def _coverage(s: Session, story_ids: Iterable[int], exclude_digest: int | None) -> dict[int, _Coverage]:
    out: dict[int, _Coverage] = {}
    for chunk in chunked(sorted(story_ids)):
        q = (
            select(DigestStory.story_id, DigestStory.article_ids, Digest.period_end)
            .join(Digest, Digest.id == DigestStory.digest_id)
            .where(DigestStory.story_id.in_(chunk), Digest.kind == KIND, Digest.status.in_(SENT_STATUSES))
        )
        if exclude_digest is not None:
            q = q.where(Digest.id != exclude_digest)
        for sid, aids, pend in s.execute(q):
            c = out.setdefault(sid, _Coverage(set(), None, pend))
            c.covered_until = max(c.covered_until, pend)
            if aids:
                c.shown.update(int(a) for a in aids)
                # "New since <date of the digest that first showed it>".
                c.first_shown = pend if c.first_shown is None else min(c.first_shown, pend)
    return out


def _section(dyads: Sequence[str]) -> str:
    known = [d for d in KNOWN_DYADS if d in dyads]
    if len(known) >= 2:  # two pairs cover all three countries
        return "Trilateral"
    return known[0] if known else "Other"


def priority(score: float, outlets: int, age_hours: float, is_update: bool) -> float:
    """The ranking value: relevance × breadth of coverage × recency (docs/digest.md).

    ``score × (1 + ln outlets) × (0.5 + 0.5 · 2^(−age/24 h))``, times 0.6 for an update.
    """
    fresh = 0.5 + 0.5 * 2 ** (-max(0.0, age_hours) / RECENCY_HALF_LIFE_H)
    value = max(0.0, score) * (1.0 + math.log(max(1, outlets))) * fresh
    return value * (UPDATE_WEIGHT if is_update else 1.0)


def _order_members(members: list[_Member], lead_id: int | None) -> list[_Member]:
    def when(m: _Member) -> tuple:
        return (m.published or m.joined, m.id)

    ms = sorted(members, key=when)
    lead = next((m for m in ms if m.id == lead_id), None)
    if lead is None:
        # No lead, or it joined after the period: the earliest original write-up leads.
        lead = next((m for m in ms if m.duplicate_of is None), ms[0])
    return [lead] + [m for m in ms if m is not lead]


_STORY_COLS = (Story.id, Story.lead_article_id, Story.title, Story.first_seen_at, Story.score, Story.dyads,
               Story.topics)


@dataclass
class _Draft:
    story: Any
    members: list[_Member]
    new_ids: set[int]
    is_update: bool
    first_sent: datetime | None
    priority: float
    outlets: int
    latest: datetime


def _plan(
    s: Session,
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    exclude_digest: int | None,
) -> DigestPlan:
    cfg = settings.digest
    horizon = start - timedelta(minutes=cfg.late_arrival_grace_minutes)
    story_window = timedelta(hours=settings.dedupe.story_window_hours)
    ids = _candidates(s, horizon, end, end - story_window)
    stories = {}
    for chunk in chunked(sorted(ids)):
        for st in s.execute(
            select(*_STORY_COLS).where(Story.id.in_(chunk))
        ):
            stories[st.id] = st
    members = _members(s, stories)
    covered = _coverage(s, stories, exclude_digest)
    drafts: list[_Draft] = []
    for sid, st in stories.items():
        ms = [m for m in members.get(sid, ()) if m.joined < end]
        if not ms or st.first_seen_at >= end:
            continue
        cov = covered.get(sid)
        if cov is not None and cov.shown:
            # Shown before: back as an update when members no digest showed have joined since.
            new = [m for m in ms if m.id not in cov.shown]
            if not new or not any(m.joined >= horizon for m in new):
                continue
            is_update, new_ids, first_sent = True, {m.id for m in new}, cov.first_shown
        elif cov is not None:
            # Only counted in an earlier "and N more": new again only with coverage that came after.
            if not any(m.joined >= cov.covered_until for m in ms):
                continue
            is_update, new_ids, first_sent = False, set(), None
        else:
            if not (
                st.first_seen_at >= horizon
                or any(m.joined >= horizon for m in ms)
                # Relevance that came late (classification lag, a changed watch profile) counts
                # only while the story is still open: old news does not come back as new.
                or (st.first_seen_at >= end - story_window
                    and any(m.judged_relevant_at and horizon <= m.judged_relevant_at < end for m in ms))
            ):
                continue
            is_update, new_ids, first_sent = False, set(), None
        outlets = len({m.outlet.casefold() for m in ms})
        latest = max(m.joined for m in ms)
        age_h = (end - latest).total_seconds() / 3600
        drafts.append(
            _Draft(st, _order_members(ms, st.lead_article_id), new_ids, is_update, first_sent,
                   priority(float(st.score or 0.0), outlets, age_h, is_update), outlets, latest)
        )
    drafts.sort(key=lambda d: (-d.priority, -d.outlets, -d.latest.timestamp(), d.story.id))
    cap = max(1, cfg.max_stories)
    texts = _texts(s, [_summary_source(d) for d in drafts[:cap]])
    items = []
    for rank, d in enumerate(drafts, 1):
        src = _summary_source(d) if rank <= cap else None
        items.append(_item(d, rank, texts.get(src) if src else None))
    return DigestPlan(
        period_start=start,
        period_end=end,
        items=tuple(items),
        max_stories=cap,
        timezone=cfg.timezone,
        title=_one_line(cfg.subject_prefix, 80),
    )


def _summary_source(d: _Draft) -> int:
    """The article whose sentences the entry quotes: the lead, or for an update the newest new write-up."""
    if d.is_update:
        fresh = [m for m in d.members if m.id in d.new_ids and m.duplicate_of is None]
        if fresh:
            return max(fresh, key=lambda m: (m.joined, m.id)).id
    return d.members[0].id


def _texts(s: Session, article_ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
    out = {}
    for chunk in chunked(sorted(set(article_ids))):
        for aid, text, summary, title in s.execute(
            select(Article.id, Article.text, Article.summary, Article.title).where(Article.id.in_(chunk))
        ):
            out[aid] = (text or "", summary or "", title or "")
    return out


def _item(d: _Draft, rank: int, text: tuple[str, str, str] | None) -> DigestItem:
    st = d.story
    lead = d.members[0]
    dyads = tuple(x for x in KNOWN_DYADS if x in (st.dyads or ()))
    topics = tuple(dict.fromkeys(_one_line(str(t), 40) for t in (st.topics or ()) if str(t).strip()))[:MAX_TOPICS]
    summary: tuple[str, ...] = ()
    if text is not None:
        body, teaser, title = text
        summary = summary_sentences(body, title, fallback=teaser)
    return DigestItem(
        story_id=st.id,
        rank=rank,
        priority=round(d.priority, 6),
        is_update=d.is_update,
        section=_section(dyads),
        headline=lead.title or _one_line(st.title) or "(untitled)",
        url=lead.url,
        members=tuple(
            DigestMember(m.id, m.outlet, m.country, m.title, m.url, m.published, m.id in d.new_ids) for m in d.members
        ),
        dyads=dyads,
        topics=topics,
        summary=summary,
        score=round(float(st.score or 0.0), 4),
        first_seen=st.first_seen_at,
        latest=d.latest,
        first_sent=d.first_sent,
    )


def build_digest(
    store: Store,
    settings: Settings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> DigestPlan:
    """The digest of ``[since, until)`` as it stands now, without recording anything.

    ``since`` defaults to the end of the last delivered digest (the first digest
    ever covers ``digest.initial_lookback_hours``), ``until`` to now. Building the
    same period twice gives the same plan; so does building a period that was
    delivered (its own record is not counted as "shown before").
    """
    since, until = _aware(since, "since"), _aware(until, "until")
    now = _aware(now, "now") or utcnow()
    with store.session() as s:
        start, end = _resolve(s, settings, since, until, now)
        row = _row_for(s, start, end)
        return _plan(s, settings, start, end, exclude_digest=row.id if row else None)


# ---------------------------------------------------------------- rendering

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DYAD_LABELS = {"US-PK": "US–PK", "US-IN": "US–IN", "IN-PK": "IN–PK"}


def _tz(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception:  # an unknown zone name must not stop the digest
        return ZoneInfo("UTC")


def _local(dt: datetime, tz: str) -> datetime:
    return dt.astimezone(_tz(tz))


def fmt_date(dt: datetime, tz: str = "UTC") -> str:
    d = _local(dt, tz)
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


def fmt_time(dt: datetime | None, tz: str = "UTC", *, year: bool = False) -> str:
    if dt is None:
        return ""
    d = _local(dt, tz)
    y = f" {d.year}" if year else ""
    return f"{d.day} {_MONTHS[d.month - 1]}{y}, {d:%H:%M} {d.tzname() or tz}"


def _date_label(start: datetime, end: datetime, tz: str) -> str:
    """The digest's date: the day it ends on, or a range for a catch-up over several days."""
    last = _local(end - timedelta(microseconds=1), tz)
    first = _local(start, tz)
    if end - start <= timedelta(hours=36) or first.date() == last.date():
        return fmt_date(last, tz)
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{last.day} {_MONTHS[last.month - 1]} {last.year}"
    if first.year == last.year:
        return f"{first.day} {_MONTHS[first.month - 1]} – {last.day} {_MONTHS[last.month - 1]} {last.year}"
    return f"{fmt_date(first, tz)} – {fmt_date(last, tz)}"


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _counts(plan: DigestPlan) -> str:
    new, upd = plan.new_count, plan.update_count
    if not new and not upd:
        return "no new stories"
    if not upd:
        return _plural(new, "story", "stories")
    if not new:
        return _plural(upd, "update")
    return f"{_plural(new, 'new story', 'new stories')}, {_plural(upd, 'update')}"


def subject_for(plan: DigestPlan) -> str:
    day = _date_label(plan.period_start, plan.period_end, plan.timezone)
    return mail.sanitize_header(f"{plan.title} digest, {day}: {_counts(plan)}")


def _wrap(text: str, width: int = 76, indent: str = "", first: str | None = None) -> str:
    import textwrap

    return textwrap.fill(text, width=width, initial_indent=indent if first is None else first,
                         subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def _outlet_label(outlet: str, country: str) -> str:
    return f"{outlet} ({country})" if country else outlet


def _also(item: DigestItem, limit: int = 6) -> tuple[list[tuple[str, str]], int]:
    """Other outlets of a story as (label, url of its first article), up to ``limit``, and how many more."""
    lead = item.lead.outlet.casefold()
    seen: dict[str, tuple[str, str]] = {}
    for m in item.members[1:]:
        key = m.outlet.casefold()
        if key != lead and key not in seen:
            seen[key] = (_outlet_label(m.outlet, m.country), m.url)
    others = list(seen.values())
    return others[:limit], max(0, len(others) - limit)


def _new_outlets(item: DigestItem) -> list[str]:
    seen: dict[str, str] = {}
    for m in item.new_members:
        seen.setdefault(m.outlet.casefold(), _outlet_label(m.outlet, m.country))
    return list(seen.values())


def _labels(item: DigestItem) -> str:
    return " ".join(f"[{x}]" for x in [_DYAD_LABELS.get(d, d) for d in item.dyads] + list(item.topics))


@lru_cache(maxsize=1)
def _env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        # Every article-derived string is escaped in the HTML templates; text templates are plain.
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        wrap=_wrap, also=_also, new_outlets=_new_outlets, dyad=lambda d: _DYAD_LABELS.get(d, d), num=lambda n: f"{n:,}",
        labels=_labels,
    )
    env.globals.update(fmt_date=fmt_date, fmt_time=fmt_time, plural=_plural,
                       digest_day=lambda end, tz: fmt_date(end - timedelta(microseconds=1), tz))
    return env


def period_label(start: datetime, end: datetime, tz: str) -> str:
    return f"{fmt_time(start, tz, year=True)} – {fmt_time(end, tz, year=True)}"


def render(plan: DigestPlan) -> tuple[str, str, str]:
    """``(subject, text, html)`` of a digest. The same plan always renders the same."""
    env = _env()
    outlets = {m.outlet.casefold() for i in plan.items for m in i.members}
    ctx = {
        "plan": plan,
        "tz": plan.timezone,
        # Dates in another year than the digest's show their year.
        "ref_year": _local(plan.period_end, plan.timezone).year,
        "subject": subject_for(plan),
        "date_label": _date_label(plan.period_start, plan.period_end, plan.timezone),
        "period_label": period_label(plan.period_start, plan.period_end, plan.timezone),
        "sections": plan.sections,
        "counts": _counts(plan),
        "reports": sum(len(i.members) for i in plan.items),
        "outlet_count": len(outlets),
        "backfill_hint": (
            f"python -m pipeline digest --preview --json --since {plan.period_start.isoformat()} "
            f"--until {plan.period_end.isoformat()}"
        ),
    }
    html = env.get_template("digest.html.j2").render(ctx)
    shown = list(plan.shown)
    cut = len(shown)
    while len(html.encode()) > HTML_BUDGET and cut > 10:
        # Gmail clips longer messages: drop the sentences of the lowest-ranked entries first
        # (five at a time), keeping them for the top ten.
        cut = max(10, cut - 5)
        shown[cut:] = [replace(i, summary=()) for i in shown[cut:]]
        ctx["sections"] = replace(plan, items=tuple(shown) + plan.items[len(shown):]).sections
        html = env.get_template("digest.html.j2").render(ctx)
    text = env.get_template("digest.txt.j2").render(ctx)
    return ctx["subject"], text, html


def render_alert(item: DigestItem, *, title: str, tz: str) -> tuple[str, str, str]:
    """``(subject, text, html)`` of an alert about one story."""
    env = _env()
    subject = mail.sanitize_header(f"{title} alert: {item.headline}", 160)
    ctx = {"item": item, "tz": tz, "subject": subject, "title": title, "ref_year": _local(item.first_seen or datetime.now(timezone.utc), tz).year}
    return subject, env.get_template("alert.txt.j2").render(ctx), env.get_template("alert.html.j2").render(ctx)


def plan_to_dict(plan: DigestPlan) -> dict[str, Any]:
    """The plan as plain JSON-able data (``--json``)."""
    return {
        "period": {"start": plan.period_start.isoformat(), "end": plan.period_end.isoformat()},
        "subject": subject_for(plan),
        "story_count": len(plan.items),
        "new_count": plan.new_count,
        "update_count": plan.update_count,
        "shown": len(plan.shown),
        "more": plan.more,
        "sections": {sec.key: {"shown": len(sec.items), "more": sec.more} for sec in plan.sections},
        "stories": [_jsonable(asdict(i)) | {"shown": i.rank <= plan.max_stories} for i in plan.items],
    }


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


# ---------------------------------------------------------------- delivery


def _iso_z(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_digest_message(
    plan: DigestPlan,
    settings: Settings,
    *,
    message_id: str | None = None,
    recipients: Sequence[str] | None = None,
    ref: str = "preview",
) -> EmailMessage:
    """The complete email for ``plan`` (text and HTML parts, headers), ready for any transport.

    ``message_id`` defaults to one derived from the period (stable across previews);
    ``ref`` goes into the ``X-Newsmon-Digest`` header (the digest id, or "preview").
    """
    subject, text, html = render(plan)
    start, end = plan.period_start, plan.period_end
    mid = message_id or f"<digest.{_iso_z(start)}.{_iso_z(end)}.{ref}@{mail.sender_domain(settings.digest.sender)}>"
    return _message(settings, subject=subject, text=text, html=html,
                    recipients=recipients or settings.digest.recipients, message_id=mid, start=start, end=end, ref=ref)


def _message(
    settings: Settings,
    *,
    subject: str,
    text: str,
    html: str,
    recipients: Sequence[str],
    message_id: str,
    start: datetime,
    end: datetime,
    ref: str,
) -> EmailMessage:
    return mail.build_message(
        subject=subject,
        text=text,
        html=html,
        sender=settings.digest.sender,
        recipients=recipients,
        message_id=message_id,
        headers={"X-Newsmon-Digest": ref, "X-Newsmon-Period": f"{_iso_z(start)}/{_iso_z(end)}"},
    )


@dataclass
class _Claim:
    digest_id: int
    attempts: int
    start: datetime
    end: datetime
    subject: str
    text: str
    html: str
    message_id: str
    recipients: tuple[str, ...]
    story_count: int
    update_count: int
    resend: bool
    plan: DigestPlan | None


def _result(status: DigestStatus, row: Digest | _Claim, **kw: Any) -> DigestResult:
    if isinstance(row, _Claim):
        base = dict(period_start=row.start, period_end=row.end, digest_id=row.digest_id, story_count=row.story_count,
                    update_count=row.update_count, subject=row.subject, message_id=row.message_id,
                    recipients=row.recipients, plan=row.plan)
    else:
        base = dict(period_start=row.period_start, period_end=row.period_end, digest_id=row.id,
                    story_count=row.story_count, update_count=row.update_count, subject=row.subject,
                    message_id=row.message_id, transport=row.transport, recipients=tuple(row.recipients or ()),
                    error=row.last_error)
    base.update(kw)
    return DigestResult(status=status, **base)


def _claim(
    store: Store,
    settings: Settings,
    *,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    force: bool,
    recipients: tuple[str, ...],
    transport: str,
) -> _Claim | DigestResult:
    """Pick the period, record the digest and move it to ``sending``, in one locked transaction.

    Returns what to send, or the final result when there is nothing to send.
    """
    cfg = settings.digest
    lease = timedelta(seconds=cfg.send_lease_seconds)
    with store.session() as s:
        lock(s, _LOCK)
        row: Digest | None = None
        if since is None and until is None and force:
            # A forced run without a period resends the latest delivered digest.
            row = s.scalar(
                select(Digest)
                .where(Digest.kind == KIND, Digest.status == "delivered")
                .order_by(Digest.period_end.desc(), Digest.id.desc())
                .limit(1)
            )
        if row is None and since is None:
            start = _default_start(s, settings, now)
            if until is None:
                # An unfinished attempt on this same stretch comes first: finish it, never start a second.
                open_rows = s.scalars(
                    select(Digest).where(
                        Digest.kind == KIND,
                        Digest.period_start == start,
                        Digest.status.in_(("sending", "unconfirmed", "failed", "pending")),
                    )
                ).all()
                order = {"sending": 0, "unconfirmed": 1, "failed": 2, "pending": 2}
                open_rows.sort(key=lambda r: (order[r.status], -r.period_end.timestamp()))
                row = open_rows[0] if open_rows else None
        if row is None:
            start, end = _resolve(s, settings, since, until, now)
            insert_ignore(
                s,
                Digest,
                [dict(kind=KIND, period_start=start, period_end=end, status="pending", created_at=now,
                      recipients=list(recipients), transport=transport)],
                "kind",
                "period_start",
                "period_end",
            )
            row = _row_for(s, start, end)
            assert row is not None
        status, attempts = row.status, row.attempts
        if status == "delivered" and not force:
            return _result(DigestStatus.ALREADY_DELIVERED, row)
        if status == "sending" and row.sent_at is not None and now - row.sent_at < lease:
            return _result(DigestStatus.IN_PROGRESS, row)
        start, end = row.period_start, row.period_end
        if status in ("failed", "pending") and since is None and until is None:
            # Nothing of a failed attempt reached anyone: let it cover up to now.
            end = max(end, now.replace(microsecond=0))
        values: dict[str, Any]
        resend = status in ("sending", "unconfirmed") and not force
        plan = None
        if resend:
            # The server may have accepted the earlier attempt: the very same message again,
            # so that receivers recognise the copy by its Message-ID.
            values = {}
            rcpts = tuple(row.recipients or recipients)
            subject, text, html, message_id = row.subject, row.body_text, row.body_html, row.message_id
            story_count, update_count = row.story_count, row.update_count
        else:
            plan = _plan(s, settings, start, end, exclude_digest=row.id)
            rcpts = recipients
            s.execute(delete(DigestStory).where(DigestStory.digest_id == row.id))
            if plan.is_empty and cfg.on_empty == "skip":
                r = s.execute(
                    update(Digest)
                    .where(Digest.id == row.id, Digest.status == status, Digest.attempts == attempts)
                    .values(status="empty", period_end=end, story_count=0, update_count=0, last_error=None,
                            subject=subject_for(plan), body_text="", body_html="")
                    .execution_options(synchronize_session=False)
                )
                if r.rowcount != 1:
                    return _result(DigestStatus.IN_PROGRESS, row)
                return DigestResult(DigestStatus.EMPTY_SKIPPED, start, end, digest_id=row.id, plan=plan,
                                    subject=subject_for(plan))
            subject, text, html = render(plan)
            # A delivered digest sent again is a new message; an undelivered one keeps its id.
            keep_id = row.message_id and status in ("failed", "pending", "empty")
            message_id = row.message_id if keep_id else mail.new_message_id(cfg.sender, f"digest.{row.id}")
            story_count, update_count = len(plan.items), plan.update_count
            values = dict(period_end=end, subject=subject, body_text=text, body_html=html,
                          story_count=story_count, update_count=update_count)
            if plan.items:
                # Every story the digest covers; those past the cap show no members (article_ids []).
                shown = len(plan.shown)
                s.execute(
                    DigestStory.__table__.insert(),
                    [dict(digest_id=row.id, story_id=i.story_id, rank=i.rank, is_update=i.is_update,
                          article_ids=[m.article_id for m in i.members] if i.rank <= shown else [])
                     for i in plan.items],
                )
        # Compare-and-set: only the run that moves the row out of the state it read may send.
        r = s.execute(
            update(Digest)
            .where(Digest.id == row.id, Digest.status == status, Digest.attempts == attempts)
            .values(status="sending", sent_at=now, attempts=attempts + 1, message_id=message_id,
                    recipients=list(rcpts), transport=transport, last_error=None, **values)
            .execution_options(synchronize_session=False)
        )
        if r.rowcount != 1:
            return _result(DigestStatus.IN_PROGRESS, row)
        return _Claim(row.id, attempts + 1, start, end, subject, text, html, message_id, tuple(rcpts),
                      story_count, update_count, resend, plan)


def _finish(store: Store, claim: _Claim, **values: Any) -> bool:
    with store.session() as s:
        r = s.execute(
            update(Digest)
            .where(Digest.id == claim.digest_id, Digest.status == "sending", Digest.attempts == claim.attempts)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return r.rowcount == 1


def _as_transport(transport: Any, settings: Settings) -> mail.Transport:
    return mail.transport_from_settings(settings) if transport is None else mail.as_transport(transport)


def deliver_digest(
    store: Store,
    settings: Settings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    preview: bool = False,
    force: bool = False,
    transport: mail.Transport | Callable[[EmailMessage], Any] | None = None,
    recipients: Sequence[str] | None = None,
    now: datetime | None = None,
) -> DigestResult:
    """Build, record and deliver the digest of ``[since, until)``; at most one delivery per period.

    Without ``since``, the period starts where the last delivered digest ended (an
    unfinished attempt on it is finished first). A delivered period is not sent
    again (``already-delivered``) unless ``force``; an empty one follows
    ``digest.on_empty``; a period another run is sending is left alone
    (``in-progress``). ``preview`` writes ``…-preview.eml/.html`` to the outbox and
    records nothing. ``transport`` is a :class:`pipeline.mail.Transport` or a
    function ``send(message)``; default: the one ``digest.transport`` names.
    ``recipients`` replaces ``digest.recipients``; ``now`` is the time of the run.

    Raises :class:`DeliveryFailed` when the transport fails; the digest is then
    recorded as ``failed`` (or ``unconfirmed`` when the server may have accepted it)
    and the next call retries it.
    """
    since, until = _aware(since, "since"), _aware(until, "until")
    now = _aware(now, "now") or utcnow()
    rcpts = tuple(recipients or settings.digest.recipients)
    if not rcpts:
        raise ValueError("no recipients: set digest.recipients (NEWSMON_DIGEST__RECIPIENTS)")
    if preview:
        plan = build_digest(store, settings, since=since, until=until, now=now)
        msg = build_digest_message(plan, settings, recipients=rcpts)
        d = mail.OutboxTransport(settings.outbox).send(msg)
        return DigestResult(DigestStatus.PREVIEW, plan.period_start, plan.period_end, story_count=len(plan.items),
                            update_count=plan.update_count, subject=str(msg["Subject"]), transport="outbox",
                            recipients=rcpts, paths=d.paths, plan=plan)
    tr = _as_transport(transport, settings)
    claim = _claim(store, settings, since=since, until=until, now=now, force=force, recipients=rcpts,
                   transport=tr.name[:16])
    if isinstance(claim, DigestResult):
        return claim
    msg = _message(settings, subject=claim.subject, text=claim.text, html=claim.html, recipients=claim.recipients,
                   message_id=claim.message_id, start=claim.start, end=claim.end, ref=str(claim.digest_id))
    try:
        delivery = mail.send(msg, tr)
    except mail.DeliveryError as exc:
        state = "unconfirmed" if exc.maybe_delivered else "failed"
        _finish(store, claim, status=state, last_error=exc.message)
        log.warning("digest %s for %s–%s not delivered (%s): %s", claim.digest_id, claim.start, claim.end, state, exc)
        result = _result(DigestStatus.FAILED, claim, transport=tr.name, error=exc.message, resent=claim.resend)
        raise DeliveryFailed(f"digest #{claim.digest_id} not delivered: {exc.message}", result) from exc
    note = "; ".join(f"refused {a}: {why}" for a, why in delivery.refused) or None
    if not _finish(store, claim, status="delivered", sent_at=utcnow(), last_error=note):
        # The lease ran out while this run was still sending and another run took over.
        log.warning("digest %s was taken over by another run while being sent", claim.digest_id)
    return _result(DigestStatus.DELIVERED, claim, transport=tr.name, paths=delivery.paths, resent=claim.resend,
                   error=note, recipients=delivery.recipients or claim.recipients)


# ---------------------------------------------------------------- alerts


def send_alerts(
    store: Store,
    settings: Settings,
    *,
    now: datetime | None = None,
    transport: mail.Transport | Callable[[EmailMessage], Any] | None = None,
    recipients: Sequence[str] | None = None,
) -> AlertReport:
    """Mail each high-priority story at once: never twice, at most ``alert_max_per_day`` a day.

    A story qualifies when it is relevant, scores at least ``alert_min_score``, is
    told by at least ``alert_min_outlets`` outlets and was first seen within
    ``alert_window_hours``. The ``alerts`` row (unique per story) is written before
    the message is sent; a failed alert is retried by the next call, one left
    ``sending`` past the lease is resent with the same Message-ID. Does nothing
    unless ``digest.alerts_enabled``.
    """
    cfg = settings.digest
    report = AlertReport()
    if not cfg.alerts_enabled:
        return report
    now = _aware(now, "now") or utcnow()
    rcpts = tuple(recipients or cfg.recipients)
    if not rcpts:
        raise ValueError("no recipients: set digest.recipients (NEWSMON_DIGEST__RECIPIENTS)")
    tr = _as_transport(transport, settings)
    lease = timedelta(seconds=cfg.send_lease_seconds)
    with store.session() as s:
        lock(s, _ALERT_LOCK)
        day = now - timedelta(days=1)
        used = s.scalar(
            select(func.count()).select_from(Alert).where(
                Alert.created_at >= day, Alert.status.in_(("sent", "sending", "unconfirmed"))
            )
        ) or 0
        # Attempts whose outcome is unknown go out again first (already counted against the limit).
        redo = s.scalars(
            select(Alert).where(
                or_(Alert.status == "unconfirmed", (Alert.status == "sending") & (Alert.sent_at < now - lease))
            )
        ).all()
        candidates = s.execute(
            select(Story.id, Alert.id, Alert.status, Alert.message_id)
            .outerjoin(Alert, Alert.story_id == Story.id)
            .where(
                Story.relevant.is_(True),
                Story.score >= cfg.alert_min_score,
                Story.outlet_count >= cfg.alert_min_outlets,
                Story.first_seen_at >= now - timedelta(hours=cfg.alert_window_hours),
                Story.first_seen_at <= now,
                or_(Alert.id.is_(None), Alert.status == "failed"),
            )
            .order_by(Story.score.desc(), Story.outlet_count.desc(), Story.first_seen_at.desc(), Story.id)
        ).all()
        report.candidates = len(candidates)
        budget = max(0, cfg.alert_max_per_day - used)
        report.rate_limited = max(0, len(candidates) - budget)
        jobs: list[tuple[int, int, str]] = []  # (story id, alert id, message id)
        for a in redo:
            a.sent_at = now
            a.status = "sending"
            jobs.append((a.story_id, a.id, a.message_id))
        for sid, aid, astatus, mid in candidates[:budget]:
            if aid is None:
                mid = mail.new_message_id(cfg.sender, f"alert.{sid}")
                insert_ignore(s, Alert, [dict(story_id=sid, created_at=now, sent_at=now, status="sending",
                                              message_id=mid)], "story_id")
                aid = s.scalar(select(Alert.id).where(Alert.story_id == sid))
            else:
                s.execute(update(Alert).where(Alert.id == aid, Alert.status == "failed")
                          .values(status="sending", sent_at=now, created_at=now)
                          .execution_options(synchronize_session=False))
            jobs.append((sid, aid, mid))
        items = _alert_items(s, settings, [j[0] for j in jobs], now)
    for sid, aid, mid in jobs:
        item = items.get(sid)
        try:
            if item is None:
                raise mail.DeliveryError(f"story {sid} has no members to show")
            subject, text, html = render_alert(item, title=_one_line(cfg.subject_prefix, 80), tz=cfg.timezone)
            msg = mail.build_message(subject=subject, text=text, html=html, sender=cfg.sender, recipients=rcpts,
                                     message_id=mid, headers={"X-Newsmon-Alert": f"{sid}-{aid}"})
            mail.send(msg, tr)
        except mail.DeliveryError as exc:
            state = "unconfirmed" if exc.maybe_delivered else "failed"
            _finish_alert(store, aid, status=state, last_error=exc.message)
            report.failed += 1
            report.errors.append(f"story {sid}: {exc.message}")
            continue
        _finish_alert(store, aid, status="sent", sent_at=utcnow(), last_error=None)
        report.sent += 1
        report.story_ids.append(sid)
    return report


def _finish_alert(store: Store, alert_id: int, **values: Any) -> None:
    with store.session() as s:
        s.execute(
            update(Alert).where(Alert.id == alert_id, Alert.status == "sending").values(**values)
            .execution_options(synchronize_session=False)
        )


def _alert_items(s: Session, settings: Settings, story_ids: Sequence[int], now: datetime) -> dict[int, DigestItem]:
    if not story_ids:
        return {}
    members = _members(s, story_ids)
    out = {}
    rows = s.execute(select(*_STORY_COLS).where(Story.id.in_(list(story_ids)))).all()
    for st in rows:
        ms = members.get(st.id)
        if not ms:
            continue
        ordered = _order_members(ms, st.lead_article_id)
        latest = max(m.joined for m in ms)
        outlets = len({m.outlet.casefold() for m in ms})
        d = _Draft(st, ordered, set(), False, None, priority(float(st.score or 0), outlets, 0, False), outlets, latest)
        out[st.id] = _item(d, 1, _texts(s, [ordered[0].id]).get(ordered[0].id))
    return out

