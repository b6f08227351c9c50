"""news_ingest: fetch the due feeds, extract, dedupe and classify — one pass per schedule tick."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import Asset, Param, dag, get_current_context, task
from newsmon_airflow import common

from pipeline.config import get_settings

_s = get_settings()

STORIES = Asset(common.STORIES_URI, extra={"description": "stories in the newsmon article store"})

DOC = """
### News ingest

One pass of the newsmon pipeline over the configured feeds (`pipeline/` does the work;
each task is a thin call into one stage):

1. **start_run** — load new feeds from the feed list into the store, open an `ingest_runs` row.
2. **plan_batches** — the feeds that are due (honouring each feed's back-off), split into
   batches of `NEWSMON_AIRFLOW__FETCH_BATCH_SIZE` feeds (never more batches than
   `[core] max_map_length`).
3. **fetch_batch** — one mapped task per batch, in the `newsmon_http` pool: conditional GET,
   parse, queue new entries. A feed that fails is recorded on the feed (health, back-off),
   not raised: the run goes on.
4. **extract** → **cluster** → **classify** — the store's queues: pending entries become
   articles, unclustered articles join stories, unclassified articles get a relevance score.
5. **finish** — closes the run (`ok`, `partial` with the failed feeds listed, or `failed`)
   and emits the `newsmon://stories` asset with the new-story count.

Only ids and counts travel through XCom. Params: **force** fetches every enabled feed,
due or not.
"""


@task(doc_md="Load new feeds from the feed list, then open an ingest run; returns its id.")
def start_run() -> int:
    from pipeline import ingest

    s = common.settings()
    st = common.store()
    added = common.sync_feed_list(st, s)
    ingest_run_id = ingest.start_run(st, trigger="airflow")
    print(f"ingest run {ingest_run_id}; {added} new feeds from the feed list")
    return ingest_run_id


@task(doc_md="The due feeds, in batches for the mapped fetch (ids only).")
def plan_batches(ingest_run_id: int) -> list[list[int]]:
    from airflow.sdk import conf

    from pipeline import feeds
    from pipeline.store import utcnow

    s = common.settings()
    force = bool(get_current_context()["params"].get("force"))
    ids = feeds.due_feed_ids(common.store(), now=utcnow(), force=force)
    max_map = conf.getint("core", "max_map_length", fallback=1024)
    out = common.batches(ids, s.airflow.fetch_batch_size, max_map)
    print(f"run {ingest_run_id}: {len(ids)} feeds due, {len(out)} batches")
    return out


@task(
    pool=_s.airflow.http_pool,
    doc_md="Fetch and parse one batch of feeds; new entries are queued in the store. "
    "Per-feed failures are recorded on the feed and listed, not raised.",
)
def fetch_batch(feed_ids: list[int], ingest_run_id: int) -> dict:
    from pipeline import feeds

    s = common.settings()
    with common.demo_site(s):
        r = feeds.fetch_feeds(common.store(), s, feed_ids, run_id=ingest_run_id)
    if r.failed_feeds:
        print(f"{len(r.failed_feeds)} of {r.feeds_total} feeds failed: " + "; ".join(r.errors[:20]))
    return {
        "feeds_total": r.feeds_total,
        "feeds_ok": r.feeds_ok,
        "feeds_not_modified": r.feeds_not_modified,
        "feeds_failed": r.feeds_failed,
        "entries_seen": r.entries_seen,
        "entries_new": r.entries_new,
        "entries_known": r.entries_known,
        "failed_feeds": list(r.failed_feeds),
        "errors": list(r.errors[:50]),
    }


# all_done: whatever the batches queued gets extracted even if one batch task failed
# (its feeds are retried next run); the failure still fails the run in `finish`.
@task(trigger_rule="all_done", doc_md="Pending entries → articles (page fetch + text extraction).")
def extract() -> dict:
    from pipeline import extract as stage

    s = common.settings()
    with common.demo_site(s):
        r = stage.extract_pending(common.store(), s)
    return {
        "extracted": r.extracted,
        "fallback": r.fallback,
        "failed": r.failed,
        "known": r.known,
        "articles": len(r.article_ids),
        "errors": list(r.errors[:50]),
    }


@task(doc_md="Unclustered articles → stories (same URL, same text, near-duplicates, same event).")
def cluster() -> dict:
    from pipeline import dedupe

    r = dedupe.assign_pending(common.store(), common.settings())
    return {"assigned": r.assigned, "duplicates": r.duplicates, "stories_new": r.stories_new}


@task(doc_md="Unclassified articles → relevance score, country pairs, topics, evidence.")
def classify() -> dict:
    from pipeline import classify as stage

    r = stage.classify_pending(common.store(), common.settings())
    return {"classified": r.classified, "relevant": r.relevant, "stories": len(r.story_ids)}


@task(
    trigger_rule="all_done",
    outlets=[STORIES],
    doc_md="Close the ingest run with its counts and failed feeds; emit the stories asset.",
)
def finish(ingest_run_id: int) -> dict:
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline import ingest
    from pipeline.types import IngestReport

    ctx = get_current_context()
    ti = ctx["ti"]
    pulled = ti.xcom_pull(task_ids="fetch_batch", default=None)
    # One value per successful batch; a single batch comes back unwrapped.
    fetched = [pulled] if isinstance(pulled, dict) else [x for x in (pulled or []) if isinstance(x, dict)]
    stages = {t: ti.xcom_pull(task_ids=t, default=None) for t in ("extract", "cluster", "classify")}
    n_batches = len(ti.xcom_pull(task_ids="plan_batches", default=None) or [])

    rep = IngestReport(run_id=ingest_run_id)
    for f in fetched:
        for k in ("feeds_total", "feeds_ok", "feeds_not_modified", "feeds_failed", "entries_seen", "entries_new", "entries_known"):
            setattr(rep, k, getattr(rep, k) + int(f.get(k, 0)))
        rep.failed_feeds += f.get("failed_feeds", [])
        rep.errors += f.get("errors", [])
    if e := stages["extract"]:
        rep.articles_extracted, rep.articles_fallback, rep.articles_failed = e["extracted"], e["fallback"], e["failed"]
        rep.errors += e.get("errors", [])
    if c := stages["cluster"]:
        rep.duplicates, rep.stories_new = c["duplicates"], c["stories_new"]
    if c := stages["classify"]:
        rep.classified, rep.relevant = c["classified"], c["relevant"]

    broken = [t for t, v in stages.items() if v is None]
    missing_batches = max(0, n_batches - len(fetched))
    if missing_batches:
        broken.append(f"fetch_batch ({missing_batches} of {n_batches} batches)")
    rep.errors += [f"task failed: {b}" for b in broken]
    start = ctx["dag_run"].start_date
    rep.duration = (datetime.now(timezone.utc) - start).total_seconds() if start else 0.0
    status = "failed" if broken else None  # None: ok, or partial when feeds failed
    ingest.finish_run(common.store(), ingest_run_id, rep, status=status)

    summary = {
        "ingest_run_id": ingest_run_id,
        "feeds": rep.feeds_total,
        "feeds_failed": rep.feeds_failed,
        "failed_feeds": rep.failed_feeds[:100],
        "entries_new": rep.entries_new,
        "articles": rep.articles_extracted + rep.articles_fallback,
        "stories_new": rep.stories_new,
        "relevant": rep.relevant,
    }
    print(f"ingest run {ingest_run_id}: {summary}")
    if broken:
        raise AirflowFailException("ingest run incomplete, failed: " + ", ".join(broken))
    ctx["outlet_events"][STORIES].extra = {
        "new_stories": rep.stories_new,
        "relevant": rep.relevant,
        "ingest_run_id": ingest_run_id,
    }
    return summary


@dag(
    dag_id="news_ingest",
    description="Fetch feeds → extract → dedupe → classify (US–Pakistan–India news)",
    schedule=_s.ingest.schedule,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=common.default_args(_s),
    params={
        "force": Param(False, type="boolean", title="Fetch all feeds", description="Fetch every enabled feed, due or not."),
    },
    tags=["newsmon", "ingest"],
    doc_md=DOC,
    owner_links={common.OWNER: "https://github.com/newsmon/newsmon"},
)
def news_ingest():
    ingest_run_id = start_run()
    planned = plan_batches(ingest_run_id)
    fetched = fetch_batch.partial(ingest_run_id=ingest_run_id).expand(feed_ids=planned)
    extracted = extract()
    fetched >> extracted
    clustered = cluster()
    classified = classify()
    extracted >> clustered >> classified
    classified >> finish(ingest_run_id)


news_ingest()
