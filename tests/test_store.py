"""The store: migrations on both backends, keyed inserts, UTC datetimes."""

from __future__ import annotations

import multiprocessing as mp
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from pipeline.store import Article, Feed, Store, insert_ignore, utcnow


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
