"""Read-only queries behind the News Monitor view.

Each function takes a :class:`~pipeline.store.Store` and returns small frozen
dataclasses, so the web view only renders and the queries are testable on their
own. Nothing here writes to the store.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import String, case, cast, func, select

from pipeline.store import Article, Classification, Digest, Feed, IngestRun, Store, Story, utcnow
from pipeline.types import Evidence

DYADS = ("US-PK", "US-IN", "IN-PK")


@dataclass(frozen=True)
class StoryFilter:
    """What the analyst asked for; ``None`` means no restriction."""

    dyad: str | None = None
    topic: str | None = None
    since: datetime | None = None  # on the story's first published (or first seen) time
    until: datetime | None = None
    min_score: float | None = None
    relevant_only: bool = True
    limit: int = 50


@dataclass(frozen=True)
class OutletArticle:
    article_id: int
    outlet: str
    title: str
    url: str
    country: str = ""
    published_at: datetime | None = None
    duplicate: bool = False  # a near-identical copy of another member


@dataclass(frozen=True)
class StoryView:
    id: int
    title: str
    score: float
    relevant: bool
    dyads: tuple[str, ...]
    topics: tuple[str, ...]
    first_seen_at: datetime
    first_published_at: datetime | None
    updated_at: datetime
    article_count: int
    outlet_count: int
    articles: tuple[OutletArticle, ...] = ()
    evidence: tuple[Evidence, ...] = ()

    @property
    def outlets(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for a in self.articles:
            seen.setdefault(a.outlet or a.url, None)
        return tuple(seen)


@dataclass(frozen=True)
class FeedHealth:
    id: int
    name: str
    url: str
    country: str
    enabled: bool
    status: str  # ok | failing | gone | quiet | never | disabled | not_modified
    last_fetch_at: datetime | None
    last_success_at: datetime | None
    last_new_entry_at: datetime | None
    consecutive_failures: int
    last_status: int | None
    last_error: str | None
    articles_24h: int
    articles_7d: int
    quiet: bool


@dataclass(frozen=True)
class DigestSummary:
    id: int
    kind: str
    period_start: datetime
    period_end: datetime
    status: str
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    recipients: tuple[str, ...]
    subject: str
    transport: str
    story_count: int
    update_count: int
    last_error: str | None


@dataclass(frozen=True)
class DigestPreview:
    summary: DigestSummary
    body_html: str
    body_text: str


@dataclass(frozen=True)
class RunSummary:
    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    trigger: str
    feeds_total: int
    feeds_failed: int
    entries_new: int
    articles_extracted: int
    stories_new: int
    relevant: int
    duration: float | None


@dataclass(frozen=True)
class DailyCounts:
    """Relevant stories per day and dyad; ``days`` is every day of the window, oldest first."""

    days: tuple[date, ...]
    counts: dict[str, tuple[int, ...]] = field(default_factory=dict)  # dyad → one count per day

    @property
    def total(self) -> int:
        return sum(sum(v) for v in self.counts.values())


# ---------------------------------------------------------------- stories


def _evidence(raw: object) -> tuple[Evidence, ...]:
    out: list[Evidence] = []
    for item in raw or ():
        if isinstance(item, dict):
            out.append(
                Evidence(
                    sentence=str(item.get("sentence", "")),
                    terms=tuple(str(t) for t in item.get("terms", ()) or ()),
                    weight=float(item.get("weight", 0.0) or 0.0),
                )
            )
        elif isinstance(item, (list, tuple)) and item:
            out.append(Evidence(sentence=str(item[0])))
        elif isinstance(item, str):
            out.append(Evidence(sentence=item))
    return tuple(out)


def _json_has(column, value: str):
    # Labels are stored as JSON arrays of short tokens; matching the quoted token in
    # the serialised array works the same on SQLite and PostgreSQL.
    return cast(column, String).contains(f'"{value}"', autoescape=True)


def recent_stories(store: Store, flt: StoryFilter | None = None) -> list[StoryView]:
    """Stories newest first (by last update), with their articles and the classifier's evidence.

    The evidence shown is that of the story's best-scoring classified member.
    """
    flt = flt or StoryFilter()
    when = func.coalesce(Story.first_published_at, Story.first_seen_at)
    q = select(Story).where(Story.article_count > 0)
    if flt.relevant_only:
        q = q.where(Story.relevant.is_(True))
    if flt.dyad:
        q = q.where(_json_has(Story.dyads, flt.dyad))
    if flt.topic:
        q = q.where(_json_has(Story.topics, flt.topic))
    if flt.min_score is not None:
        q = q.where(Story.score >= flt.min_score)
    if flt.since is not None:
        q = q.where(when >= flt.since)
    if flt.until is not None:
        q = q.where(when < flt.until)
    q = q.order_by(Story.updated_at.desc(), Story.id.desc()).limit(max(1, min(flt.limit, 500)))

    with store.session() as s:
        stories = list(s.scalars(q))
        if not stories:
            return []
        ids = [st.id for st in stories]
        rows = s.execute(
            select(
                Article.id,
                Article.story_id,
                Article.outlet,
                Article.site,
                Article.title,
                Article.url,
                Article.country,
                Article.published_at,
                Article.duplicate_of_id,
                Classification.score,
                Classification.evidence,
            )
            .outerjoin(Classification, Classification.article_id == Article.id)
            .where(Article.story_id.in_(ids))
            .order_by(Article.published_at.asc().nulls_last(), Article.id)
        ).all()

    members: dict[int, list[OutletArticle]] = defaultdict(list)
    best: dict[int, tuple[float, object]] = {}
    for r in rows:
        members[r.story_id].append(
            OutletArticle(
                article_id=r.id,
                outlet=r.outlet or r.site,
                title=r.title,
                url=r.url,
                country=r.country,
                published_at=r.published_at,
                duplicate=r.duplicate_of_id is not None,
            )
        )
        if r.score is not None and r.evidence and (r.story_id not in best or r.score > best[r.story_id][0]):
            best[r.story_id] = (r.score, r.evidence)

    return [
        StoryView(
            id=st.id,
            title=st.title,
            score=st.score,
            relevant=st.relevant,
            dyads=tuple(st.dyads or ()),
            topics=tuple(st.topics or ()),
            first_seen_at=st.first_seen_at,
            first_published_at=st.first_published_at,
            updated_at=st.updated_at,
            article_count=st.article_count,
            outlet_count=st.outlet_count,
            articles=tuple(members.get(st.id, ())),
            evidence=_evidence(best.get(st.id, (0.0, ()))[1]),
        )
        for st in stories
    ]


def topics_in_use(store: Store, *, limit: int = 500) -> list[str]:
    """Topic labels on recent relevant stories, for the filter's choices."""
    with store.session() as s:
        rows = s.scalars(
            select(Story.topics).where(Story.relevant.is_(True)).order_by(Story.updated_at.desc()).limit(limit)
        ).all()
    return sorted({t for topics in rows for t in (topics or ())})


def stories_per_day(store: Store, *, days: int = 14, now: datetime | None = None) -> DailyCounts:
    """Relevant stories per UTC day and dyad over the last ``days`` days (today included).

    A story counts on the day the monitor first saw it (feeds' publication dates can be
    missing, wrong or years old for re-posted items), once for each dyad it concerns.
    """
    now = now or utcnow()
    first_day = now.date() - timedelta(days=days - 1)
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=timezone.utc)
    with store.session() as s:
        rows = s.execute(
            select(Story.first_seen_at, Story.dyads).where(Story.relevant.is_(True), Story.first_seen_at >= start)
        ).all()
    day_list = tuple(first_day + timedelta(days=i) for i in range(days))
    index = {d: i for i, d in enumerate(day_list)}
    counts = {d: [0] * days for d in DYADS}
    for seen, dyads in rows:
        i = index.get(seen.astimezone(timezone.utc).date()) if seen else None
        if i is None:
            continue
        for d in dyads or ():
            counts.setdefault(d, [0] * days)[i] += 1
    return DailyCounts(days=day_list, counts={k: tuple(v) for k, v in counts.items()})


# ---------------------------------------------------------------- feeds


def feed_health(store: Store, *, now: datetime | None = None, quiet_after_hours: float = 72.0) -> list[FeedHealth]:
    """Every feed with its fetch health and article counts; failing feeds first.

    A feed is *quiet* when it is enabled, fetched without error, and has not produced a
    new entry for ``quiet_after_hours`` (or never has, once it is that old).
    """
    now = now or utcnow()
    day, week = now - timedelta(hours=24), now - timedelta(days=7)
    quiet_before = now - timedelta(hours=quiet_after_hours)
    with store.session() as s:
        counts = {
            fid: (int(d or 0), int(w or 0))
            for fid, d, w in s.execute(
                select(
                    Article.feed_id,
                    func.sum(case((Article.fetched_at >= day, 1), else_=0)),
                    func.count(),
                )
                .where(Article.feed_id.is_not(None), Article.fetched_at >= week)
                .group_by(Article.feed_id)
            )
        }
        feeds = list(s.scalars(select(Feed).order_by(Feed.name, Feed.id)))

    out: list[FeedHealth] = []
    for f in feeds:
        a24, a7 = counts.get(f.id, (0, 0))
        failing = f.consecutive_failures > 0
        last_new = f.last_new_entry_at
        quiet = (
            f.enabled
            and not f.gone
            and not failing
            and f.last_success_at is not None
            and ((last_new is not None and last_new < quiet_before) or (last_new is None and f.created_at < quiet_before))
        )
        if not f.enabled:
            status = "disabled"
        elif f.gone:
            status = "gone"
        elif failing:
            status = "failing"
        elif f.last_fetch_at is None:
            status = "never"
        elif quiet:
            status = "quiet"
        else:
            status = "ok"
        out.append(
            FeedHealth(
                id=f.id,
                name=f.name,
                url=f.url,
                country=f.country,
                enabled=f.enabled,
                status=status,
                last_fetch_at=f.last_fetch_at,
                last_success_at=f.last_success_at,
                last_new_entry_at=last_new,
                consecutive_failures=f.consecutive_failures,
                last_status=f.last_status,
                last_error=f.last_error,
                articles_24h=a24,
                articles_7d=a7,
                quiet=bool(quiet),
            )
        )
    order = {"failing": 0, "gone": 1, "quiet": 2, "never": 3, "ok": 4, "disabled": 5}
    out.sort(key=lambda h: (order.get(h.status, 9), -h.consecutive_failures, h.name.lower()))
    return out


# ---------------------------------------------------------------- digests and runs


def _digest_summary(d: Digest) -> DigestSummary:
    return DigestSummary(
        id=d.id,
        kind=d.kind,
        period_start=d.period_start,
        period_end=d.period_end,
        status=d.status,
        created_at=d.created_at,
        sent_at=d.sent_at,
        attempts=d.attempts,
        recipients=tuple(d.recipients or ()),
        subject=d.subject,
        transport=d.transport,
        story_count=d.story_count,
        update_count=d.update_count,
        last_error=d.last_error,
    )


def recent_digests(store: Store, *, limit: int = 30) -> list[DigestSummary]:
    """Digests and alerts, newest period first."""
    with store.session() as s:
        rows = s.scalars(select(Digest).order_by(Digest.period_end.desc(), Digest.id.desc()).limit(limit))
        return [_digest_summary(d) for d in rows]


def digest_preview(store: Store, digest_id: int) -> DigestPreview | None:
    """One digest's stored bodies, exactly as they were (or would be) sent."""
    with store.session() as s:
        d = s.get(Digest, digest_id)
        if d is None:
            return None
        return DigestPreview(summary=_digest_summary(d), body_html=d.body_html, body_text=d.body_text)


def recent_runs(store: Store, *, limit: int = 10) -> list[RunSummary]:
    with store.session() as s:
        rows = s.scalars(select(IngestRun).order_by(IngestRun.started_at.desc(), IngestRun.id.desc()).limit(limit))
        return [
            RunSummary(
                id=r.id,
                started_at=r.started_at,
                finished_at=r.finished_at,
                status=r.status,
                trigger=r.trigger,
                feeds_total=r.feeds_total,
                feeds_failed=r.feeds_failed,
                entries_new=r.entries_new,
                articles_extracted=r.articles_extracted,
                stories_new=r.stories_new,
                relevant=r.relevant,
                duration=r.duration,
            )
            for r in rows
        ]

