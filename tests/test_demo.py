"""The offline demo end to end: feeds → articles → stories → classification (→ digest)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import pytest
from sqlalchemy import func, select

from pipeline import demo, feeds, ingest
from pipeline.config import Settings
from pipeline.store import Article, Feed, Store, Story

NOISE = re.compile(
    r"^(Advertisement|Logo|close|Adsence 300X250|Also Read:.*|Share on Facebook.*|Subscribe to our newsletter.*)$",
    re.M,
)


@pytest.fixture
def demo_run(settings: Settings, store: Store):
    settings = demo.demo_settings(settings.model_copy(update={"demo_port": 0}))
    server = demo.start(settings)
    feeds.sync_feeds(store, server.feeds)
    yield settings, store, server
    server.stop()


def test_demo_ingest_stores_clean_articles_then_gets_304s(demo_run) -> None:
    settings, store, server = demo_run
    first = ingest.run_once(store, settings)
    assert first.feeds_ok == 3 and first.feeds_failed == 0
    assert first.entries_new == 6
    assert first.articles_extracted == 6 and first.articles_fallback == 0

    with store.session() as s:
        articles = {a.title: a for a in s.scalars(select(Article))}
    assert len(articles) == 6
    for source in server.site.articles:
        stored = articles[source.title]
        assert stored.published_at == source.published
        assert stored.published_source == "feed"
        assert not NOISE.search(stored.text), NOISE.search(stored.text).group(0)
        # The caption is printed twice on some pages; the body must not carry it twice.
        if source.caption:
            assert stored.text.count(source.caption) <= 1
        # Every paragraph of the article is kept.
        for paragraph in source.paragraphs:
            assert paragraph[:60] in stored.text
        assert "utm_source" not in stored.canonical_url

    second = ingest.run_once(store, settings, force=True)
    assert second.feeds_not_modified == 3 and second.feeds_ok == 0
    assert second.entries_new == 0 and second.articles_extracted == 0
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Article)) == 6
        feed_rows = s.scalars(select(Feed)).all()
        assert all(f.last_status == 304 and f.etag for f in feed_rows)


def test_demo_stories_and_relevance(demo_run) -> None:
    settings, store, server = demo_run
    ingest.run_once(store, settings)
    with store.session() as s:
        stories = s.scalars(select(Story).where(Story.relevant.is_(True))).all()
        members = {
            st.id: sorted(a.title for a in s.scalars(select(Article).where(Article.story_id == st.id)))
            for st in stories
        }
        unclustered = s.scalar(select(func.count()).select_from(Article).where(Article.story_id.is_(None)))
    assert unclustered == 0
    # Five relevant articles in three stories; the cricket report is not relevant.
    assert sorted(len(m) for m in members.values()) == [1, 2, 2]
    assert not any("Rizwan" in t for m in members.values() for t in m)


def test_cli_demo_ingest_twice(tmp_path, free_port) -> None:
    env = {
        "NEWSMON_HOME": str(tmp_path / "home"),
        "NEWSMON_DEMO_PORT": str(free_port),
        "NEWSMON_INGEST__EXTRACT_WORKERS": "1",
        "PATH": "/usr/bin:/bin",
    }
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pipeline", *a], env=env, capture_output=True, text=True, timeout=300
    )
    first = run("ingest", "--demo", "--json")
    assert first.returncode == 0, first.stderr
    second = run("ingest", "--demo", "--json")
    assert second.returncode == 0, second.stderr
    r1, r2 = json.loads(first.stdout), json.loads(second.stdout)
    assert r1["entries_new"] == 6 and r1["feeds_failed"] == 0
    assert r2["entries_new"] == 0 and r2["feeds_not_modified"] == 3
    # The demo keeps its own store.
    assert (tmp_path / "home" / "demo.db").exists()
