"""Digest build time on a store of 100,000 articles with 1,000 relevant stories in the period.

    python bench/digest_build.py [--articles N] [--stories N] [--repeat N] [--pg URL] [--output PATH]

The store (SQLite in a temporary directory; PostgreSQL with ``--pg``, a database that
is emptied first) is filled with synthetic rows by bulk insert, nothing else running:

- 30 days of articles (``--articles``, default 100,000) with classifications, in
  stories of 1–6 articles from 40 outlets in PK, IN, US, GB, QA;
- in the last day (the period), ``--stories`` (default 1,000) relevant stories plus
  irrelevant ones in the same proportion as the rest of the month;
- 29 delivered daily digests before it, each recording the stories it covered (60
  shown, the rest counted), and a third of the stories shown yesterday getting a new
  member in the period (they become updates).

Timed, best of ``--repeat``: :func:`pipeline.digest.build_digest` (the queries and
the plan), :func:`pipeline.digest.render` (text and HTML; the first render of a
process, which compiles the templates, is reported apart), and one complete
:func:`pipeline.digest.deliver_digest` to the outbox (claim, record, write) on a copy
of the state. Results go to ``bench/results/digest_build.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, func, select, text  # noqa: E402

from pipeline import digest  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.store import (  # noqa: E402
    Article,
    Base,
    Classification,
    Digest,
    DigestStory,
    Store,
    Story,
)

RESULTS = ROOT / "bench" / "results" / "digest_build.json"
END = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)
DAYS = 30
OUTLETS = [(f"Outlet {i:02d}", ("PK", "IN", "US", "GB", "QA")[i % 5]) for i in range(40)]
DYADS = (["US-PK"], ["US-IN"], ["IN-PK"], ["US-PK", "IN-PK"])
TOPICS = ("diplomacy", "security", "trade", "water", "visas", "defence", "aid", "border")
SENTENCES = (
    "ISLAMABAD: Officials from the two countries met on {day} to discuss {topic} and agreed to meet again next month.",
    '"We have made progress on {topic}, and we expect more," the spokesperson said after the meeting.',
    "The talks followed weeks of contacts between the foreign ministries and the embassies in both capitals.",
    "Analysts said the outcome would be watched closely in New Delhi, Islamabad and Washington.",
)


def _body(rng: random.Random, topic: str) -> str:
    day = rng.choice(("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"))
    return "\n".join(s.format(day=day, topic=topic) for s in SENTENCES)


def populate(store: Store, *, articles: int, period_stories: int, seed: int = 7) -> dict:
    """Fill the store; returns counts."""
    rng = random.Random(seed)
    per_story = 3.0  # mean articles per story
    total_stories = int(articles / per_story)
    # The period holds 1/DAYS of the stories; relevant ones are period_stories of them.
    in_period = max(period_stories, total_stories // DAYS)
    relevant_share = period_stories / in_period
    stories, arts, cls, digests, shown = [], [], [], [], []
    aid = 0
    delivered: dict[int, list[int]] = {}  # story id → member ids, for stories delivered before
    for sid in range(1, total_stories + 1):
        last_day = sid > total_stories - in_period
        seen = END - timedelta(days=1) + timedelta(seconds=rng.randrange(86_000)) if last_day else \
            END - timedelta(days=rng.uniform(1.05, DAYS))
        relevant = rng.random() < (relevant_share if last_day else 0.25)
        n = max(1, min(6, int(rng.expovariate(1 / per_story)) + 1))
        topic = rng.choice(TOPICS)
        dyads = rng.choice(DYADS) if relevant else []
        members = []
        for k in range(n):
            aid += 1
            outlet, country = OUTLETS[rng.randrange(len(OUTLETS))]
            at = seen + timedelta(minutes=20 * k)
            arts.append(dict(id=aid, canonical_url=f"https://o{aid % 40}.example/a/{aid}", url=f"https://o{aid % 40}.example/a/{aid}",
                             title=f"Story {sid}: talks on {topic} ({outlet})", text=_body(rng, topic) if k == 0 else "",
                             outlet=outlet, country=country, published_at=at - timedelta(minutes=5), fetched_at=at,
                             clustered_at=at, story_id=sid, extraction_status="ok", word_count=80,
                             classified_version="bench"))
            cls.append(dict(article_id=aid, version="bench", score=0.9 if relevant else 0.1, relevant=relevant,
                            dyads=dyads, topics=[topic] if relevant else [], evidence=[], classified_at=at))
            members.append(aid)
        stories.append(dict(id=sid, lead_article_id=members[0], title=f"Story {sid}", first_seen_at=seen,
                            first_published_at=seen, updated_at=seen + timedelta(minutes=20 * (n - 1)),
                            article_count=n, outlet_count=min(n, 40), score=round(rng.uniform(0.5, 1.0), 3) if relevant else 0.1,
                            relevant=relevant, dyads=dyads, topics=[topic] if relevant else []))
        if relevant and not last_day:
            delivered[sid] = members
    # 29 delivered daily digests recording the relevant stories first seen in their day (capped at 60 shown).
    by_day: dict[int, list[int]] = {}
    for st in stories:
        if st["id"] in delivered:
            day = int((END - st["first_seen_at"]).total_seconds() // 86400)
            by_day.setdefault(day, []).append(st["id"])
    did = 0
    for day in range(1, DAYS):
        did += 1
        start, end = END - timedelta(days=day + 1), END - timedelta(days=day)
        ids = sorted(by_day.get(day, []))
        digests.append(dict(id=did, kind="digest", period_start=start, period_end=end, status="delivered",
                            created_at=end, sent_at=end, attempts=1, recipients=["desk@example.org"], subject="",
                            message_id=f"<bench.{did}@localhost>", transport="outbox", story_count=len(ids),
                            update_count=0, body_text="", body_html=""))
        # 60 shown with their members; the rest counted in "and N more" (no members shown).
        shown.extend(dict(digest_id=did, story_id=sid, rank=r, is_update=False,
                          article_ids=delivered[sid] if r <= 60 else []) for r, sid in enumerate(ids, 1))
    # Some stories sent yesterday get new members in the period: updates.
    recent = sorted(by_day.get(1, []))[:60]
    for sid in recent[: max(1, len(recent) // 3)]:
        aid += 1
        at = END - timedelta(hours=rng.uniform(1, 20))
        outlet, country = OUTLETS[rng.randrange(len(OUTLETS))]
        arts.append(dict(id=aid, canonical_url=f"https://o{aid % 40}.example/a/{aid}", url=f"https://o{aid % 40}.example/a/{aid}",
                         title=f"Story {sid}: follow-up ({outlet})", text=_body(rng, "follow-up"), outlet=outlet,
                         country=country, published_at=at, fetched_at=at, clustered_at=at, story_id=sid,
                         extraction_status="ok", word_count=80, classified_version="bench"))
        cls.append(dict(article_id=aid, version="bench", score=0.9, relevant=True, dyads=["US-PK"], topics=["aid"],
                        evidence=[], classified_at=at))
        stories[sid - 1]["updated_at"] = at
    with store.session() as s:
        for model, rows in ((Story, stories), (Article, arts), (Classification, cls), (Digest, digests),
                            (DigestStory, shown)):
            for i in range(0, len(rows), 5000):
                s.execute(model.__table__.insert(), rows[i : i + 5000])
    if store.dialect == "postgresql":
        with store.engine.begin() as c:
            for t in ("stories", "articles", "classifications", "digests", "digest_stories"):
                c.execute(text(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))")
                          if t != "classifications" else text("SELECT 1"))
            c.execute(text("ANALYZE"))
    else:
        with store.engine.begin() as c:
            c.exec_driver_sql("ANALYZE")
    return {"articles": len(arts), "stories": len(stories), "classifications": len(cls),
            "delivered_digests": len(digests), "digest_stories": len(shown)}


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(store: Store, *, articles: int, stories: int, repeat: int, home: Path) -> dict:
    t0 = time.perf_counter()
    counts = populate(store, articles=articles, period_stories=stories)
    fill = time.perf_counter() - t0
    settings = Settings(home=home)
    since, until = END - timedelta(days=1), END
    build_s, plan = _best(lambda: digest.build_digest(store, settings, since=since, until=until), repeat)
    digest._env.cache_clear()  # the first render of a process compiles the templates
    t1 = time.perf_counter()
    digest.render(plan)
    render_cold = time.perf_counter() - t1
    render_s, rendered = _best(lambda: digest.render(plan), repeat)
    subject, text_part, html_part = rendered

    def deliver():
        with store.session() as s:  # the same starting state each time
            ids = s.scalars(select(Digest.id).where(Digest.period_end == until)).all()
            if ids:
                s.execute(delete(DigestStory).where(DigestStory.digest_id.in_(ids)))
                s.execute(delete(Digest).where(Digest.id.in_(ids)))
        return digest.deliver_digest(store, settings, since=since, until=until)

    deliver_s, result = _best(deliver, repeat)
    with store.session() as s:
        recorded = s.scalar(select(func.count()).select_from(DigestStory).where(DigestStory.digest_id == result.digest_id))
    return {
        "store": store.dialect,
        "data": counts,
        "fill_seconds": round(fill, 2),
        "period_stories": len(plan.items),
        "updates": plan.update_count,
        "shown": len(plan.shown),
        "recorded_digest_stories": recorded,
        "build_seconds": round(build_s, 3),
        "render_seconds": round(render_s, 3),
        "render_first_seconds": round(render_cold, 3),
        "deliver_to_outbox_seconds": round(deliver_s, 3),
        "html_bytes": len(html_part.encode()),
        "text_bytes": len(text_part.encode()),
        "subject": subject,
        "status": result.status.value,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--articles", type=int, default=100_000)
    ap.add_argument("--stories", type=int, default=1_000, help="relevant stories in the period")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg", metavar="URL", help="also run on this PostgreSQL database (its tables are dropped first)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        store.migrate()
        runs.append(run(store, articles=args.articles, stories=args.stories, repeat=args.repeat, home=Path(tmp)))
        store.dispose()
        if args.pg:
            store = Store(args.pg)
            Base.metadata.drop_all(store.engine)
            with store.engine.begin() as c:
                c.execute(text("DROP TABLE IF EXISTS alembic_version"))
            store.migrate()
            runs.append(run(store, articles=args.articles, stories=args.stories, repeat=args.repeat, home=Path(tmp)))
            store.dispose()
    out = {
        "benchmark": "digest_build",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "articles": args.articles,
        "relevant_stories_in_period": args.stories,
        "repeat": args.repeat,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
