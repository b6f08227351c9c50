"""One ingest pass: the handler that composes the stages.

    due feeds → fetch + parse (entries queued) → extract (articles) → dedupe (stories) → classify

Pages are extracted as soon as their feed's entries are stored, while the other
feeds still download. Dedupe and classification run on each batch of articles as
it is committed, in a process of their own (:class:`Settler`), while the
extraction workers carry on with the next pages.

Every stage reads its work from the store and writes its results back keyed, so a
pass that is killed half-way is simply finished by the next one: queued entries
stay queued, unclustered articles stay unclustered, nothing is stored twice.
Airflow's ``news_ingest`` DAG calls the same stage functions as separate tasks.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import select, update

from pipeline import extract, feeds
from pipeline.config import Settings
from pipeline.settle import Settled, Settler, settle
from pipeline.store import IngestRun, Store, utcnow
from pipeline.types import FetchReport, IngestReport

# A run still "running" after this long belongs to a process that died.
STALE_RUN_AFTER = timedelta(hours=6)

Progress = Callable[[str, int, int], None]


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_run(store: Store, trigger: str = "cli") -> int:
    """Record a new ingest run (and close the books on runs whose process died)."""
    now = utcnow()
    with store.session() as s:
        for run in s.scalars(select(IngestRun).where(IngestRun.status == "running")):
            # Only this host's pids can be checked; elsewhere, age decides.
            if (run.pid and run.pid != os.getpid() and not _pid_alive(run.pid) and trigger == "cli") or (
                now - run.started_at > STALE_RUN_AFTER
            ):
                run.status = "aborted"
                run.finished_at = run.finished_at or now
        run = IngestRun(started_at=now, trigger=trigger, pid=os.getpid(), status="running")
        s.add(run)
        s.flush()
        return run.id


def finish_run(store: Store, run_id: int, report: IngestReport, status: str | None = None) -> None:
    if status is None:
        status = "partial" if report.failed_feeds or report.errors else "ok"
    with store.session() as s:
        s.execute(
            update(IngestRun)
            .where(IngestRun.id == run_id)
            .values(
                status=status,
                finished_at=utcnow(),
                feeds_total=report.feeds_total,
                feeds_ok=report.feeds_ok,
                feeds_not_modified=report.feeds_not_modified,
                feeds_failed=report.feeds_failed,
                entries_seen=report.entries_seen,
                entries_new=report.entries_new,
                entries_known=report.entries_known,
                articles_extracted=report.articles_extracted,
                articles_fallback=report.articles_fallback,
                articles_failed=report.articles_failed,
                duplicates=report.duplicates,
                stories_new=report.stories_new,
                classified=report.classified,
                relevant=report.relevant,
                errors=report.errors[:200],
                duration=report.duration,
            )
        )


def run_once(
    store: Store,
    settings: Settings,
    *,
    feed_ids: list[int] | None = None,
    force: bool = False,
    trigger: str = "cli",
    progress: Progress | None = None,
) -> IngestReport:
    """Fetch the due feeds (or ``feed_ids``), then extract, dedupe and classify what is new.

    ``force`` fetches feeds that are not yet due. Failures of single feeds or pages
    are recorded and counted; only a failure of the store itself raises. Feeds are
    fetched on a thread of their own while the pages of the entries already
    stored are extracted. When more than one batch of pages is extracted, each
    committed batch is clustered and classified by a :class:`Settler` while the
    next pages are extracted.
    """
    t0 = time.monotonic()
    report = IngestReport()
    report.run_id = start_run(store, trigger)
    settler: Settler | None = None
    settled = Settled()
    fetched, cancel = threading.Event(), threading.Event()
    fetching: Future[FetchReport] | None = None

    def on_batch(article_ids: list[int]) -> None:
        nonlocal settler
        if settler is None:
            if fetched.is_set() and not extract.count_pending(store):
                return  # the pass's only batch: settled below, without a second process
            settler = Settler(settings)
        settler.submit(article_ids)

    try:
        ids = feed_ids if feed_ids is not None else feeds.due_feed_ids(store, now=utcnow(), force=force)
        if ids or extract.count_pending(store):
            extract.warm_up()  # the extraction workers' imports overlap the first feed fetches
        fetch_seconds = time.perf_counter()

        def fetch() -> FetchReport:
            nonlocal fetch_seconds
            try:
                return feeds.fetch_feeds(store, settings, ids, run_id=report.run_id, progress=progress, cancel=cancel)
            finally:
                fetch_seconds = time.perf_counter() - fetch_seconds
                fetched.set()

        tp = ThreadPoolExecutor(1, thread_name_prefix="newsmon-feeds")
        fetching = tp.submit(fetch)
        tp.shutdown(wait=False)
        # Pending entries from earlier, interrupted passes are picked up too.
        t = time.perf_counter()
        er = extract.extract_pending(store, settings, progress=progress, on_batch=on_batch, fetched=fetched)
        fr = fetching.result()
        report.stage_seconds["fetch"] = fetch_seconds
        report.stage_seconds["extract"] = time.perf_counter() - t
        report.feeds_total, report.feeds_ok = fr.feeds_total, fr.feeds_ok
        report.feeds_not_modified, report.feeds_failed = fr.feeds_not_modified, fr.feeds_failed
        report.entries_seen, report.entries_new, report.entries_known = fr.entries_seen, fr.entries_new, fr.entries_known
        report.failed_feeds, report.errors = fr.failed_feeds, list(fr.errors)
        report.articles_extracted, report.articles_fallback = er.extracted, er.fallback
        report.articles_failed = er.failed
        report.errors += er.errors
        # Then whatever is still unclustered or unclassified: what an interrupted pass
        # left, and (without a settler, or when it failed) this pass's articles.
        settled_all = False
        if settler is not None:
            settled.add(settler.close(rest=True))
            report.errors += settler.errors
            settled_all, settler = not settler.errors, None
        if not settled_all:
            settled.add(settle(store, settings))
    except BaseException as exc:
        cancel.set()
        if fetching is not None:
            try:
                fetching.result()  # the feeds being fetched finish (each bounded by its timeouts)
            except BaseException:  # noqa: S110  (the first error is the one reported)
                pass
        if settler is not None:
            settler.close()
        report.duration = time.monotonic() - t0
        report.errors.append(f"ingest aborted: {type(exc).__name__}: {exc}")
        try:
            finish_run(store, report.run_id, report, status="failed")
        except Exception:  # the store itself is down: the next run marks this one aborted
            pass
        raise
    report.duplicates, report.stories_new = settled.duplicates, settled.stories_new
    report.classified, report.relevant = settled.classified, settled.relevant
    report.stage_seconds["dedupe"] = settled.dedupe_seconds
    report.stage_seconds["classify"] = settled.classify_seconds
    report.stage_seconds = {k: round(v, 3) for k, v in report.stage_seconds.items()}
    report.duration = time.monotonic() - t0
    finish_run(store, report.run_id, report)
    return report
