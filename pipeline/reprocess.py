"""Re-running stages on what is already stored, for a date range (the ``news_reprocess`` DAG).

* **extract**: entries of the range whose extraction failed for good are queued again
  (attempts reset) and extracted; articles already stored keep their text.
* **cluster**: articles of the range that have no story yet get one. Stories already
  formed are kept as they are: delivered digests refer to them, and re-forming them
  would present known events as new.
* **classify**: every article of the range is classified again by the current
  classifier (rules, data and watch profile), and its story's labels follow.

The range is half-open, ``[since, until)``, on an article's published time (fetched
time when undated) and an entry's published (or discovered) time.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update

from pipeline.config import Settings
from pipeline.store import Article, Entry, Store
from pipeline.types import ClassifyReport, DedupeReport, ExtractReport


def _check(since: datetime | None, until: datetime | None) -> None:
    for d in (since, until):
        if d is not None and d.tzinfo is None:
            raise ValueError(f"naive datetime {d!r}: use timezone-aware UTC values")
    if since is not None and until is not None and since >= until:
        raise ValueError(f"empty range: {since.isoformat()} is not before {until.isoformat()}")


def article_ids(store: Store, since: datetime | None, until: datetime | None) -> list[int]:
    """Stored articles published (or, undated, fetched) in ``[since, until)``."""
    _check(since, until)
    when = func.coalesce(Article.published_at, Article.fetched_at)
    q = select(Article.id)
    if since is not None:
        q = q.where(when >= since)
    if until is not None:
        q = q.where(when < until)
    with store.session() as s:
        return list(s.scalars(q.order_by(Article.id)))


def retry_failed_extractions(
    store: Store, settings: Settings, since: datetime | None, until: datetime | None
) -> ExtractReport:
    """Queue the range's failed entries again and extract them."""
    from pipeline import extract

    _check(since, until)
    when = func.coalesce(Entry.published_at, Entry.discovered_at)
    q = select(Entry.id).where(Entry.status == "failed")
    if since is not None:
        q = q.where(when >= since)
    if until is not None:
        q = q.where(when < until)
    with store.session() as s:
        ids = list(s.scalars(q))
        if ids:
            s.execute(update(Entry).where(Entry.id.in_(ids)).values(status="pending", attempts=0, error=None))
    if not ids:
        return ExtractReport()
    return extract.extract_pending(store, settings, entry_ids=ids)


def cluster_unassigned(store: Store, settings: Settings, since: datetime | None, until: datetime | None) -> DedupeReport:
    """Give the range's articles without a story one (others are left alone)."""
    from pipeline import dedupe

    ids = article_ids(store, since, until)
    if not ids:
        return DedupeReport()
    return dedupe.assign_pending(store, settings, article_ids=ids)


def reclassify(store: Store, settings: Settings, since: datetime | None, until: datetime | None) -> ClassifyReport:
    """Classify every article of the range again (whatever classifier version decided it)."""
    from pipeline import classify

    _check(since, until)
    return classify.reclassify(store, settings, since=since, until=until, force=True)
