"""The store: migrations on both backends, keyed inserts, UTC datetimes."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, inspect, select

from pipeline.store import Article, Classification, Feed, Store, alembic_config, insert_ignore, utcnow


def test_migrations_reach_head_and_are_idempotent(store: Store) -> None:
    head = store.current_revision()
    assert head is not None
    store.migrate()  # a second run changes nothing
    assert store.current_revision() == head


def test_datetimes_come_back_aware_utc(store: Store) -> None:
    when = datetime(2024, 6, 21, 9, 30, tzinfo=timezone(timedelta(hours=5)))
    with store.session() as s:
        s.add(Feed(name="Dawn", url="https://www.dawn.com/feeds/home", created_at=when))
    with store.session() as s:
        feed = s.scalars(select(Feed)).one()
        assert feed.created_at == when
        assert feed.created_at.tzinfo is not None and feed.created_at.utcoffset() == timedelta(0)


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        with store.session() as s:
            s.add(Feed(name="x", url="https://x.example/feed", created_at=datetime(2024, 1, 1)))


def _article_row(url: str) -> dict:
    return {"canonical_url": url, "url": url, "title": "t", "fetched_at": utcnow()}


def test_insert_ignore_never_stores_twice(store: Store) -> None:
    with store.session() as s:
        insert_ignore(s, Article, [_article_row("https://a.example/1")], "canonical_url")
        insert_ignore(s, Article, [_article_row("https://a.example/1")], "canonical_url")
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Article)) == 1


def _insert_many(url: str, n: int, barrier) -> None:
    store = Store(url)
    barrier.wait()
    for i in range(n):
        with store.session() as s:
            insert_ignore(s, Article, [_article_row(f"https://a.example/{i}")], "canonical_url")
    store.dispose()


def test_two_processes_inserting_the_same_articles_store_each_once(store: Store) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_insert_many, args=(store.url, 100, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Article)) == 100


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    """An empty database on each backend, not migrated: the test picks the revision."""
    url = f"sqlite:///{tmp_path / 'bare.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(url)
    yield store
    store.dispose()


def test_migration_0003_backfills_classified_version_and_downgrades_without_loss(bare_store: Store) -> None:
    from alembic import command

    store = bare_store
    store.migrate("0002")
    with store.session() as s:
        insert_ignore(s, Article, [_article_row(f"https://a.example/{i}") for i in range(3)], "canonical_url")
        ids = sorted(s.scalars(select(Article.id)))
        s.execute(Classification.__table__.insert(), [
            {"article_id": ids[0], "version": "0.9+old", "score": 0.2, "relevant": False, "dyads": [], "topics": [],
             "evidence": [], "classified_at": utcnow()},
            {"article_id": ids[1], "version": "1.0+cur", "score": 0.8, "relevant": True, "dyads": ["US-PK"],
             "topics": [], "evidence": [], "classified_at": utcnow()},
        ])  # fmt: skip

    def mirror() -> dict[int, str | None]:
        with store.session() as s:
            return dict(s.execute(select(Article.id, Article.classified_version)).tuples().all())

    store.migrate()
    assert store.current_revision() == "0003"
    assert mirror() == {ids[0]: "0.9+old", ids[1]: "1.0+cur", ids[2]: None}
    assert "ix_articles_classified_version" in {ix["name"] for ix in inspect(store.engine).get_indexes("articles")}

    # Down and up again: the column goes and comes back; no article or decision is lost
    # (a table copy on SQLite would have cascaded into classifications).
    command.downgrade(alembic_config(store.url), "0002")
    assert "classified_version" not in {c["name"] for c in inspect(store.engine).get_columns("articles")}
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Article)) == 3
        assert s.scalar(select(func.count()).select_from(Classification)) == 2
    store.migrate()
    assert mirror() == {ids[0]: "0.9+old", ids[1]: "1.0+cur", ids[2]: None}
