"""Settings, store, default task arguments and failure notifications for the DAGs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.store import Store

OWNER = "newsmon"
STORIES_URI = "newsmon://stories"


def settings() -> Settings:
    """The pipeline settings (env ``NEWSMON_…``), with the demo's adjustments when demo mode is on."""
    from pipeline.config import get_settings

    s = get_settings()
    if s.demo:
        from pipeline import demo

        s = demo.demo_settings(s)
    return s


@lru_cache(maxsize=1)
def store() -> Store:
    """The article store (its own database, never Airflow's), migrated once per process."""
    from pipeline.store import Store

    st = Store(settings().db_url)
    st.migrate()
    return st


@contextmanager
def demo_site(s: Settings) -> Iterator[None]:
    """In demo mode, make sure the sample site answers while a task fetches from it.

    Reuses a demo server already listening (``scripts/airflow.sh --demo`` starts one);
    otherwise serves it from this task's process for the task's duration.
    """
    if not s.demo:
        yield
        return
    from pipeline import demo

    server = demo.start(s)
    try:
        yield
    finally:
        server.stop()


def sync_feed_list(st: Store, s: Settings) -> int:
    """Add feeds from the configured list (or the demo's) that the store does not have yet."""
    from pipeline import feeds

    if s.demo:
        from pipeline import demo

        specs = demo.load_site(f"http://127.0.0.1:{s.demo_port}").feeds
    elif Path(s.feeds_file).is_file():
        specs = feeds.load_feed_list(Path(s.feeds_file))
    else:  # no list: feeds are managed by hand (`python -m pipeline feeds add`)
        return 0
    return feeds.sync_feeds(st, specs)


def batches(ids: list[int], size: int, max_batches: int) -> list[list[int]]:
    """Split ``ids`` into batches of ``size``, larger if needed to stay within ``max_batches``."""
    if not ids:
        return []
    size = max(1, size, math.ceil(len(ids) / max(1, max_batches)))
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def failure_notifier(s: Settings) -> Any | None:
    """An SmtpNotifier for task failures, or None when no failure recipients are configured."""
    if not s.airflow.failure_recipients:
        return None
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(
        to=list(s.airflow.failure_recipients),
        from_email=s.digest.sender,
        smtp_conn_id=s.airflow.smtp_conn_id,
        subject="[newsmon] {{ ti.dag_id }}.{{ ti.task_id }} failed (try {{ ti.try_number }})",
        html_content=(
            "<p>Task <b>{{ ti.task_id }}</b> of DAG <b>{{ ti.dag_id }}</b>, run {{ run_id }}, failed"
            " on try {{ ti.try_number }} of {{ ti.max_tries + 1 }}.</p>"
            "<p>{{ exception | e }}</p>"
        ),
    )


def default_args(s: Settings) -> dict[str, Any]:
    """Owner, retries with exponential backoff, and the failure notification."""
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": s.airflow.task_retries,
        "retry_delay": timedelta(seconds=s.airflow.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=s.airflow.max_retry_delay_seconds),
    }
    notifier = failure_notifier(s)
    if notifier is not None:
        args["on_failure_callback"] = [notifier]
    return args


def resolve_period(
    *,
    params: dict[str, Any],
    logical_date: Any,
    data_interval_start: Any,
    data_interval_end: Any,
    now: Any,
) -> tuple[Any, Any, str]:
    """The digest period for one run: ``(start, end, source)``; both None = since the last delivered, up to now.

    Explicit Params win; a run with a logical date (scheduled, backfill, ``dags test DATE``)
    covers its data interval; a manual run without one covers the time since the last
    delivered digest up to now.
    """
    from datetime import datetime

    def parse(v: Any) -> datetime | None:
        if v in (None, ""):
            return None
        d = v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        if d.tzinfo is None:
            raise ValueError(f"period times need a time zone: {v!r}")
        return d

    p_start, p_end = parse(params.get("period_start")), parse(params.get("period_end"))
    if p_start or p_end:
        end = p_end or now
        if p_start and p_start >= end:
            raise ValueError(f"period_start {p_start.isoformat()} is not before period_end {end.isoformat()}")
        return p_start, end, "params"
    if logical_date is not None and data_interval_start is not None and data_interval_end is not None:
        if data_interval_end > data_interval_start:
            return data_interval_start, data_interval_end, "data_interval"
    return None, None, "since_last_delivered"
