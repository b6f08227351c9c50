"""news_reprocess: re-run extraction, clustering or classification on stored articles of a date range."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from airflow.sdk import Param, dag, get_current_context, task
from newsmon_airflow import common

from pipeline.config import get_settings

_s = get_settings()
STEPS = ["extract", "cluster", "classify"]

DOC = """
### Reprocess stored articles

Manual only. Re-runs the chosen steps on the articles of a date range (published date,
fetched date when undated), in pipeline order:

* **extract** — entries whose extraction failed for good are queued again and extracted;
* **cluster** — articles without a story get one (existing stories are kept: delivered
  digests refer to them);
* **classify** — every article in the range is classified again by the current rules,
  data and watch profile; stories' labels follow.

Params: **date_from**, **date_to** (inclusive, UTC days) and **steps**. Steps not chosen
show as *skipped*. The next digest includes stories that became relevant.
"""


def _range(params: dict) -> tuple[datetime, datetime]:
    today = datetime.now(timezone.utc).date()
    first = date.fromisoformat(params["date_from"]) if params.get("date_from") else today - timedelta(days=7)
    last = date.fromisoformat(params["date_to"]) if params.get("date_to") else today
    start = datetime.combine(first, time.min, tzinfo=timezone.utc)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=timezone.utc)
    if start >= end:
        raise ValueError(f"date_from {first} is after date_to {last}")
    return start, end


def _step(name: str) -> tuple[datetime, datetime]:
    from airflow.sdk.exceptions import AirflowSkipException

    params = get_current_context()["params"]
    if name not in (params.get("steps") or []):
        raise AirflowSkipException(f"step {name!r} not chosen")
    return _range(params)


@task(doc_md="Check the Params; report how many stored articles the range holds.")
def select_range() -> dict:
    from pipeline import reprocess

    params = get_current_context()["params"]
    start, end = _range(params)
    steps = [s for s in STEPS if s in (params.get("steps") or [])]
    if not steps:
        raise ValueError("choose at least one step")
    n = len(reprocess.article_ids(common.store(), start, end))
    print(f"{n} stored articles in [{start.isoformat()}, {end.isoformat()}); steps: {', '.join(steps)}")
    return {"since": start.isoformat(), "until": end.isoformat(), "articles": n, "steps": steps}


@task(doc_md="Queue failed entries of the range again and extract them.")
def extract() -> dict:
    from pipeline import reprocess

    start, end = _step("extract")
    s = common.settings()
    with common.demo_site(s):
        r = reprocess.retry_failed_extractions(common.store(), s, start, end)
    return {"extracted": r.extracted, "fallback": r.fallback, "failed": r.failed, "known": r.known}


@task(trigger_rule="none_failed", doc_md="Give the range's articles without a story one.")
def cluster() -> dict:
    from pipeline import reprocess

    start, end = _step("cluster")
    r = reprocess.cluster_unassigned(common.store(), common.settings(), start, end)
    return {"assigned": r.assigned, "duplicates": r.duplicates, "stories_new": r.stories_new}


@task(trigger_rule="none_failed", doc_md="Classify every article of the range again.")
def classify() -> dict:
    from pipeline import reprocess

    start, end = _step("classify")
    r = reprocess.reclassify(common.store(), common.settings(), start, end)
    return {"classified": r.classified, "relevant": r.relevant, "stories": len(r.story_ids)}


@dag(
    dag_id="news_reprocess",
    description="Re-run extract / cluster / classify on stored articles of a date range",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=common.default_args(_s),
    params={
        "date_from": Param(
            None, type=["null", "string"], format="date", title="From (UTC day)", description="Empty: 7 days ago."
        ),
        "date_to": Param(
            None, type=["null", "string"], format="date", title="To (UTC day, inclusive)", description="Empty: today."
        ),
        "steps": Param(
            ["classify"],
            type="array",
            items={"type": "string", "enum": STEPS},
            uniqueItems=True,
            minItems=1,
            title="Steps",
            description="Which steps to re-run: extract, cluster, classify (run in that order).",
        ),
    },
    tags=["newsmon", "maintenance"],
    doc_md=DOC,
)
def news_reprocess():
    select_range() >> extract() >> cluster() >> classify()


news_reprocess()
