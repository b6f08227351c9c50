"""The article store's schema (SQLAlchemy 2 typed models).

Every change goes through an Alembic migration in ``migrations/versions``.
Uniqueness that matters for correctness is enforced by the database, not by
application checks, so two processes racing cannot store anything twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from pipeline.store.types import UTCDateTime

# Stable constraint names so migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict: JSON, list: JSON}


class Feed(Base):
    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    site_url: Mapped[str] = mapped_column(String(2048), default="")
    country: Mapped[str] = mapped_column(String(8), default="")
    tags: Mapped[list] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    # Fetch state and health.
    etag: Mapped[str | None] = mapped_column(String(512))
    last_modified: Mapped[str | None] = mapped_column(String(128))
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_fetch_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_new_entry_at: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    next_fetch_at: Mapped[datetime | None] = mapped_column(index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_bozo: Mapped[str | None] = mapped_column(Text)
    gone: Mapped[bool] = mapped_column(Boolean, default=False)


class Entry(Base):
    """A feed entry seen by a fetch; the queue between fetching and extraction."""

    __tablename__ = "entries"
    __table_args__ = (
        UniqueConstraint("feed_id", "guid_key", name="uq_entries_feed_guid"),
        Index("ix_entries_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feeds.id", ondelete="CASCADE"))
    # The GUID, or the link where the feed gives none; hashed to fit an index.
    guid_key: Mapped[str] = mapped_column(String(64))
    guid: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str] = mapped_column(Text, default="")
    canonical_link: Mapped[str] = mapped_column(String(2048), default="", index=True)
    title: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    content: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(512), default="")
    published_at: Mapped[datetime | None]
    discovered_at: Mapped[datetime]
    # pending → done | failed | skipped
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="SET NULL"), index=True)
    run_id: Mapped[int | None] = mapped_column(Integer)


class Story(Base):
    """One event, told by one or more articles."""

    __tablename__ = "stories"

    id: Mapped[int] = mapped_column(primary_key=True)
    # No FK: articles already reference stories, and a cycle complicates migrations.
    lead_article_id: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text, default="")
    first_seen_at: Mapped[datetime] = mapped_column(index=True)
    # Earliest published time among members: what the story window is measured on.
    first_published_at: Mapped[datetime | None] = mapped_column(index=True)
    updated_at: Mapped[datetime] = mapped_column(index=True)
    article_count: Mapped[int] = mapped_column(Integer, default=0)
    outlet_count: Mapped[int] = mapped_column(Integer, default=0)
    # Derived from members' classifications (max score, union of labels).
    score: Mapped[float] = mapped_column(Float, default=0.0)
    relevant: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    dyads: Mapped[list] = mapped_column(default=list)
    topics: Mapped[list] = mapped_column(default=list)


class Article(Base):
    __tablename__ = "articles"
    __table_args__ = (
        Index("ix_articles_published_at", "published_at"),
        Index("ix_articles_fetched_at", "fetched_at"),
        Index("ix_articles_story_pending", "story_id", "id"),
        # Same-article lookup by feed GUID (dedupe); hash on PostgreSQL: GUIDs are unbounded text.
        Index("ix_articles_guid", "guid", postgresql_using="hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    canonical_url: Mapped[str] = mapped_column(String(2048), unique=True)
    url: Mapped[str] = mapped_column(Text)
    feed_id: Mapped[int | None] = mapped_column(ForeignKey("feeds.id", ondelete="SET NULL"), index=True)
    guid: Mapped[str] = mapped_column(Text, default="")
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(512), default="")
    site: Mapped[str] = mapped_column(String(256), default="")
    outlet: Mapped[str] = mapped_column(String(200), default="")
    country: Mapped[str] = mapped_column(String(8), default="")
    language: Mapped[str] = mapped_column(String(16), default="")
    published_at: Mapped[datetime | None]
    published_source: Mapped[str] = mapped_column(String(8), default="fetch")
    fetched_at: Mapped[datetime]
    extraction_status: Mapped[str] = mapped_column(String(16), default="ok")
    extraction_error: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), index=True, default="")
    word_count: Mapped[int] = mapped_column(Integer, default=0)
    # Set by dedupe. NULL story_id = not yet clustered.
    story_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id", ondelete="SET NULL"))
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="SET NULL"))
    dedupe_reason: Mapped[str | None] = mapped_column(String(32))
    similarity: Mapped[float | None] = mapped_column(Float)
    clustered_at: Mapped[datetime | None]
    # The version of the article's current classification (NULL: never classified), kept in
    # step by every writer of ``classifications``: the pending queue is then an index range
    # on this table instead of an anti-join over the whole store.
    classified_version: Mapped[str | None] = mapped_column(String(32), index=True)

    aliases: Mapped[list[ArticleUrl]] = relationship(back_populates="article", cascade="all, delete-orphan")
    classification: Mapped[Classification | None] = relationship(
        back_populates="article", cascade="all, delete-orphan", uselist=False
    )


class ArticleUrl(Base):
    """Every URL an article was reached by (original links, redirects, AMP variants)."""

    __tablename__ = "article_urls"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), index=True)
    article: Mapped[Article] = relationship(back_populates="aliases")


class Classification(Base):
    """The current relevance decision for one article, with its classifier version."""

    __tablename__ = "classifications"

    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), index=True)
    score: Mapped[float] = mapped_column(Float)
    relevant: Mapped[bool] = mapped_column(Boolean, index=True)
    dyads: Mapped[list] = mapped_column(default=list)
    topics: Mapped[list] = mapped_column(default=list)
    evidence: Mapped[list] = mapped_column(default=list)
    classified_at: Mapped[datetime]
    article: Mapped[Article] = relationship(back_populates="classification")


class MinhashBand(Base):
    """LSH band signatures for near-duplicate candidate lookup (shared by all workers)."""

    __tablename__ = "minhash_bands"
    __table_args__ = (
        Index("ix_minhash_bands_lookup", "band", "hash"),
        UniqueConstraint("article_id", "band", name="uq_minhash_bands_article_band"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    band: Mapped[int] = mapped_column(SmallInteger)
    hash: Mapped[int] = mapped_column(BigInteger)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))


class StoryKey(Base):
    """Discriminative keys (rare phrases, quotations, names) for same-story candidates.

    Looked up by (key, published time) so a candidate search touches only the
    articles that share a key inside the story window, however large the store.
    """

    __tablename__ = "story_keys"
    __table_args__ = (Index("ix_story_keys_lookup", "key", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[int] = mapped_column(SmallInteger, default=0)
    at: Mapped[datetime]
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), index=True)
    story_id: Mapped[int | None] = mapped_column(Integer)


class IngestRun(Base):
    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]
    # running → ok | partial | failed; a run left "running" by a killed process
    # is marked "aborted" by the next run.
    status: Mapped[str] = mapped_column(String(16), default="running")
    trigger: Mapped[str] = mapped_column(String(32), default="cli")
    pid: Mapped[int | None] = mapped_column(Integer)
    feeds_total: Mapped[int] = mapped_column(Integer, default=0)
    feeds_ok: Mapped[int] = mapped_column(Integer, default=0)
    feeds_not_modified: Mapped[int] = mapped_column(Integer, default=0)
    feeds_failed: Mapped[int] = mapped_column(Integer, default=0)
    entries_seen: Mapped[int] = mapped_column(Integer, default=0)
    entries_new: Mapped[int] = mapped_column(Integer, default=0)
    entries_known: Mapped[int] = mapped_column(Integer, default=0)
    articles_extracted: Mapped[int] = mapped_column(Integer, default=0)
    articles_fallback: Mapped[int] = mapped_column(Integer, default=0)
    articles_failed: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    stories_new: Mapped[int] = mapped_column(Integer, default=0)
    classified: Mapped[int] = mapped_column(Integer, default=0)
    relevant: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list] = mapped_column(default=list)
    duration: Mapped[float | None] = mapped_column(Float)


class Digest(Base):
    """One digest (or alert) for one period; the unique key makes a period deliverable once."""

    __tablename__ = "digests"
    __table_args__ = (UniqueConstraint("kind", "period_start", "period_end", name="uq_digests_period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="digest")  # digest | alert
    period_start: Mapped[datetime]
    period_end: Mapped[datetime] = mapped_column(index=True)
    # pending → sending → delivered | failed; "empty" when skipped by the on_empty setting.
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    recipients: Mapped[list] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str] = mapped_column(String(255), default="")
    transport: Mapped[str] = mapped_column(String(16), default="outbox")
    story_count: Mapped[int] = mapped_column(Integer, default=0)
    update_count: Mapped[int] = mapped_column(Integer, default=0)
    body_text: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str] = mapped_column(Text, default="")

    items: Mapped[list[DigestStory]] = relationship(back_populates="digest", cascade="all, delete-orphan")


class DigestStory(Base):
    __tablename__ = "digest_stories"
    __table_args__ = (UniqueConstraint("digest_id", "story_id", name="uq_digest_stories_digest_story"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"), index=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    is_update: Mapped[bool] = mapped_column(Boolean, default=False)
    # Members shown, so a later digest can tell what is new in an update.
    article_ids: Mapped[list] = mapped_column(default=list)
    digest: Mapped[Digest] = relationship(back_populates="items")


class Alert(Base):
    """An immediate alert; one per story, ever."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    sent_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    message_id: Mapped[str] = mapped_column(String(255), default="")
    last_error: Mapped[str | None] = mapped_column(Text)
