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
