"""The small typed values passed between stages.

Stages never hand each other ORM rows or dicts of dicts: each takes and returns
these frozen dataclasses, so every stage is testable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class ExtractionStatus(str, Enum):
    OK = "ok"  # text from the article page
    FALLBACK = "fallback"  # page unavailable or empty: the feed's content/summary
    FAILED = "failed"  # nothing usable at all


class DateSource(str, Enum):
    FEED = "feed"
    PAGE = "page"
    FETCH = "fetch"


class FetchOutcome(str, Enum):
    OK = "ok"
    NOT_MODIFIED = "not_modified"
    FAILED = "failed"
    GONE = "gone"


@dataclass(frozen=True)
class FeedSpec:
    """One configured feed (from the feed list or OPML)."""

    name: str
    url: str
    country: str = ""  # ISO 3166 alpha-2 of the outlet: PK, IN, US, GB, QA, ...
    tags: tuple[str, ...] = ()
    site_url: str = ""


@dataclass(frozen=True)
class Entry:
    """One feed entry, normalised from feedparser's output."""

    guid: str
    link: str
    title: str = ""
    summary: str = ""
    content: str = ""
    author: str = ""
    published: datetime | None = None  # timezone-aware UTC


@dataclass(frozen=True)
class FeedResult:
    """What one feed fetch produced."""

    feed_url: str
    outcome: FetchOutcome
    status: int | None = None
    entries: tuple[Entry, ...] = ()
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    bozo: str | None = None  # feedparser's complaint about a malformed but usable feed
    retry_after: float | None = None
    elapsed: float = 0.0


@dataclass(frozen=True)
class ExtractedArticle:
    """Clean article text and metadata from a page (or the feed, as fallback)."""

    url: str
    title: str
    text: str
    status: ExtractionStatus
    author: str = ""
    site: str = ""
    language: str = ""
    published: datetime | None = None
    summary: str = ""
    error: str | None = None


@dataclass(frozen=True)
class StoryAssignment:
    """Where dedupe put an article."""

    article_id: int
    story_id: int
    duplicate_of: int | None = None  # set for a near-duplicate copy of another article
    new_story: bool = False
    similarity: float = 0.0
    reason: str = ""  # "url", "guid", "hash", "near-duplicate", "story", "new"


@dataclass(frozen=True)
class Evidence:
    sentence: str
    terms: tuple[str, ...] = ()
    weight: float = 0.0


@dataclass(frozen=True)
class Classification:
    score: float
    relevant: bool
    dyads: tuple[str, ...] = ()  # subset of ("US-PK", "US-IN", "IN-PK")
    topics: tuple[str, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    version: str = ""


@dataclass
class IngestReport:
    """Counts for one ingest pass; also stored as an IngestRun row."""

    run_id: int | None = None
    feeds_total: int = 0
    feeds_ok: int = 0
    feeds_not_modified: int = 0
    feeds_failed: int = 0
    entries_seen: int = 0
    entries_new: int = 0
    entries_known: int = 0
    articles_extracted: int = 0
    articles_fallback: int = 0
    articles_failed: int = 0
    duplicates: int = 0
    stories_new: int = 0
    classified: int = 0
    relevant: int = 0
    failed_feeds: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duration: float = 0.0
    # Seconds spent in each stage (fetch, extract, dedupe, classify), summed over its calls;
    # dedupe and classification overlap with extraction, so these add up to more than ``duration``.
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class FetchReport:
    feeds_total: int = 0
    feeds_ok: int = 0
    feeds_not_modified: int = 0
    feeds_failed: int = 0
    entries_seen: int = 0
    entries_new: int = 0
    entries_known: int = 0
    failed_feeds: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    entry_ids: list[int] = field(default_factory=list)


@dataclass
class ExtractReport:
    extracted: int = 0
    fallback: int = 0
    failed: int = 0
    known: int = 0  # entries whose URL was already stored (linked, not extracted again)
    article_ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class DedupeReport:
    assigned: int = 0
    duplicates: int = 0
    stories_new: int = 0
    story_ids: list[int] = field(default_factory=list)


@dataclass
class ClassifyReport:
    classified: int = 0
    relevant: int = 0
    story_ids: list[int] = field(default_factory=list)


# ---------------------------------------------------------------- digest and alerts

# Digest sections by country pair, in the order they appear in the email.
DIGEST_SECTIONS: tuple[tuple[str, str], ...] = (
    ("US-PK", "US–Pakistan"),
    ("US-IN", "US–India"),
    ("IN-PK", "India–Pakistan"),
    ("Trilateral", "Trilateral"),
    ("Other", "Other"),
)


@dataclass(frozen=True)
class DigestMember:
    """One article of a story as the digest shows it."""

    article_id: int
    outlet: str
    country: str  # ISO 3166 alpha-2 of the outlet, "" when unknown
    title: str
    url: str
    published: datetime | None
    is_new: bool = False  # in an update: not shown in an earlier digest


@dataclass(frozen=True)
class DigestItem:
    """One story in a digest. ``members[0]`` is the lead article."""

    story_id: int
    rank: int  # 1 = first; over the whole digest, shown or not
    priority: float  # the ranking value (docs/digest.md)
    is_update: bool
    section: str  # a key of DIGEST_SECTIONS
    headline: str
    url: str
    members: tuple[DigestMember, ...]
    dyads: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    summary: tuple[str, ...] = ()  # two or three sentences; empty for stories past the cap
    score: float = 0.0
    first_seen: datetime | None = None
    latest: datetime | None = None  # newest member's time
    first_sent: datetime | None = None  # updates: end of the period of the digest that first showed it

    @property
    def lead(self) -> DigestMember:
        return self.members[0]

    @property
    def outlets(self) -> tuple[tuple[str, str], ...]:
        """Distinct (outlet, country), lead's first, in member order."""
        seen: dict[str, tuple[str, str]] = {}
        for m in self.members:
            seen.setdefault(m.outlet.casefold(), (m.outlet, m.country))
        return tuple(seen.values())

    @property
    def new_members(self) -> tuple[DigestMember, ...]:
        return tuple(m for m in self.members if m.is_new)


@dataclass(frozen=True)
class DigestSection:
    key: str
    label: str
    items: tuple[DigestItem, ...]  # shown, best first
    more: int = 0  # stories of this section past the digest's cap


@dataclass(frozen=True)
class DigestPlan:
    """Everything one digest says, before rendering: period, ranked stories, cap."""

    period_start: datetime
    period_end: datetime
    items: tuple[DigestItem, ...]  # every eligible story, best first
    max_stories: int
    timezone: str = "UTC"
    title: str = "US–Pakistan–India"

    @property
    def shown(self) -> tuple[DigestItem, ...]:
        return self.items[: self.max_stories]

    @property
    def more(self) -> int:
        return max(0, len(self.items) - self.max_stories)

    @property
    def update_count(self) -> int:
        return sum(1 for i in self.items if i.is_update)

    @property
    def new_count(self) -> int:
        return len(self.items) - self.update_count

    @property
    def is_empty(self) -> bool:
        return not self.items

    @property
    def sections(self) -> tuple[DigestSection, ...]:
        """Shown stories grouped by country pair; the section holding the best-ranked story first."""
        shown = {i.story_id for i in self.shown}
        out = []
        for key, label in DIGEST_SECTIONS:
            items = [i for i in self.items if i.section == key]
            if items:
                vis = tuple(i for i in items if i.story_id in shown)
                out.append(DigestSection(key, label, vis, len(items) - len(vis)))
        return tuple(sorted(out, key=lambda sec: min((i.rank for i in sec.items), default=len(self.items) + 1)))


class DigestStatus(str, Enum):
    DELIVERED = "delivered"  # sent now
    ALREADY_DELIVERED = "already-delivered"  # the period was delivered before; nothing sent
    EMPTY_SKIPPED = "empty-skipped"  # nothing new and on_empty = skip; recorded, nothing sent
    IN_PROGRESS = "in-progress"  # another run is sending this period right now
    PREVIEW = "preview"  # built and written for review; nothing recorded
    FAILED = "failed"  # the transport failed; recorded, retried by the next run


@dataclass(frozen=True)
class DigestResult:
    status: DigestStatus
    period_start: datetime
    period_end: datetime
    digest_id: int | None = None
    story_count: int = 0
    update_count: int = 0
    subject: str = ""
    message_id: str = ""
    transport: str = ""
    recipients: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()  # outbox files (.eml, .html)
    resent: bool = False  # the same message again, after an attempt whose outcome was unknown
    error: str | None = None
    plan: DigestPlan | None = None


@dataclass
class AlertReport:
    candidates: int = 0
    sent: int = 0
    failed: int = 0
    rate_limited: int = 0
    story_ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
