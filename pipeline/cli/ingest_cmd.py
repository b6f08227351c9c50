"""``ingest``: one pass (feeds → articles → stories → relevance); ``articles``: what is stored.

``ingest`` exits 0 when the pass ran, even if some feeds failed (they are listed
in the summary and recorded on the feed; `feeds list --failing` shows them). It
exits non-zero only when the pass itself could not run (store unreachable,
unreadable feed list).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.cli import _common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="fetch due feeds, extract, dedupe and classify new articles (one pass)",
        description="Run one ingest pass. Exit code 0 even when some feeds fail (see the summary); "
        "non-zero when the store or the feed list is unusable.",
    )
    p.add_argument("--demo", action="store_true", help="ingest the bundled sample feeds served on loopback (offline)")
    p.add_argument("--force", action="store_true", help="fetch every enabled feed, due or not")
    p.add_argument("--feed", action="append", default=[], metavar="ID|URL", help="fetch only this feed (repeatable)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_ingest)

    a = sub.add_parser("articles", help="list recently stored articles")
    a.add_argument("--limit", type=int, default=30, help="how many (default 30)")
    a.add_argument("--json", action="store_true", help="print JSON")
    a.set_defaults(func=_articles)


# ---------------------------------------------------------------- ingest


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, int] = {}
    with Progress(
        TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as bar:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 0))
            bar.update(tasks[stage], completed=done, total=max(total, done))

        yield update


def _resolve_feed_ids(store, refs: list[str]) -> list[int]:  # noqa: ANN001
    from sqlalchemy import select

    from pipeline.store import Feed

    ids: list[int] = []
    with store.session() as s:
        for ref in refs:
            if ref.isdigit():
                f = s.get(Feed, int(ref))
            else:
                f = s.scalars(select(Feed).where(Feed.url == ref.strip())).first()
            if f is None:
                raise _common.CLIError(f"no feed {ref!r} (see `python -m pipeline feeds list --all`)")
            ids.append(f.id)
    return ids


def _sync_feed_list(store, path: Path) -> None:  # noqa: ANN001
    from sqlalchemy import func, select

    from pipeline import feeds
    from pipeline.store import Feed

    if not path.is_file():
        with store.session() as s:
            if s.scalar(select(func.count()).select_from(Feed)):
                return  # feeds were added by hand; no list to sync
        raise _common.CLIError(f"feed list {path} not found and no feeds in the store (set NEWSMON_FEEDS_FILE)")
    try:
        specs = feeds.load_feed_list(path)
    except (ValueError, OSError) as exc:
        raise _common.CLIError(str(exc)) from None
    feeds.sync_feeds(store, specs)


def _ingest(args: argparse.Namespace) -> int:
    from pipeline import feeds, ingest
    from pipeline.store import Feed, Store

    settings = _common.settings()
    server = None
    if args.demo or settings.demo:
        from pipeline import demo

        settings = demo.demo_settings(settings)
        store = Store(settings.db_url)  # demo settings name a store of their own
        store.migrate()
        server = demo.start(settings)
    else:
        store = _common.open_store()
    try:
        if server is not None:
            feeds.sync_feeds(store, server.feeds)
            from sqlalchemy import select

            with store.session() as s:
                urls = [f.url for f in server.feeds]
                feed_ids = list(s.scalars(select(Feed.id).where(Feed.url.in_(urls)).order_by(Feed.id)))
            if args.feed:
                wanted = set(_resolve_feed_ids(store, args.feed))
                feed_ids = [i for i in feed_ids if i in wanted]
        else:
            _sync_feed_list(store, Path(settings.feeds_file))
            feed_ids = _resolve_feed_ids(store, args.feed) if args.feed else None
        show_bar = not args.json and sys.stdout.isatty()
        with _progress(show_bar) as progress:
            report = ingest.run_once(store, settings, feed_ids=feed_ids, force=args.force, progress=progress)
    finally:
        if server is not None:
            server.stop()
    if args.json:
        _common.print_json(dataclasses.asdict(report))
    else:
        _print_summary(report)
    return 0


def _print_summary(r) -> None:  # noqa: ANN001
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"ingest run {r.run_id} — {r.duration:.1f}s", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_column("detail")
    feeds = f"{r.feeds_ok} ok, {r.feeds_not_modified} not modified, {r.feeds_failed} failed"
    t.add_row("feeds", str(r.feeds_total), feeds)
    t.add_row("entries", str(r.entries_seen), f"{r.entries_new} new, {r.entries_known} already seen")
    t.add_row(
        "articles",
        str(r.articles_extracted + r.articles_fallback),
        f"{r.articles_extracted} extracted, {r.articles_fallback} from the feed text, {r.articles_failed} failed",
    )
    t.add_row("duplicates", str(r.duplicates), "near-identical copies folded into a story")
    t.add_row("stories", str(r.stories_new), "new")
    t.add_row("relevant", str(r.relevant), f"of {r.classified} classified")
    console.print(t)
    if r.errors:
        et = Table(title=f"{len(r.failed_feeds)} failed feeds, {len(r.errors)} problems", title_justify="left")
        et.add_column("problem", overflow="fold")
        for e in r.errors[:40]:
            et.add_row(e)
        if len(r.errors) > 40:
            et.add_row(f"… and {len(r.errors) - 40} more (`python -m pipeline feeds list --failing`)")
        console.print(et)


# ---------------------------------------------------------------- articles


def _articles(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from pipeline.store import Article, Classification

    if args.limit <= 0:
        raise _common.CLIError("--limit must be positive")
    store = _common.open_store()
    when = func.coalesce(Article.published_at, Article.fetched_at)
    with store.session() as s:
        rows = s.execute(
            select(Article, Classification.score, Classification.relevant)
            .outerjoin(Classification, Classification.article_id == Article.id)
            .order_by(when.desc(), Article.id.desc())
            .limit(args.limit)
        ).all()
    items = [
        {
            "id": a.id,
            "published_at": a.published_at,
            "outlet": a.outlet or a.site,
            "title": a.title,
            "url": a.url,
            "status": a.extraction_status,
            "story_id": a.story_id,
            "duplicate_of": a.duplicate_of_id,
            "score": None if score is None else round(score, 3),
            "relevant": relevant,
        }
        for a, score, relevant in rows
    ]
    if args.json:
        _common.print_json(items)
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(items)} most recent articles", title_justify="left", expand=True, box=None)
    for col, kw in (
        ("id", {"justify": "right", "no_wrap": True}), ("published", {"no_wrap": True}),
        ("outlet", {"max_width": 16, "no_wrap": True, "overflow": "ellipsis"}),
        ("title", {"ratio": 1, "min_width": 24, "no_wrap": True, "overflow": "ellipsis"}),
        ("status", {"no_wrap": True}),
        ("story", {"justify": "right", "no_wrap": True}), ("score", {"justify": "right", "no_wrap": True}),
    ):  # fmt: skip
        t.add_column(col, **kw)
    for it in items:
        score = "" if it["score"] is None else f"{it['score']:.2f}" + (" ✓" if it["relevant"] else "")
        story = "" if it["story_id"] is None else str(it["story_id"]) + (" dup" if it["duplicate_of"] else "")
        published = it["published_at"].strftime("%Y-%m-%d") if it["published_at"] else "—"
        t.add_row(str(it["id"]), published, it["outlet"], it["title"], it["status"], story, score)
    Console().print(t)
    return 0
