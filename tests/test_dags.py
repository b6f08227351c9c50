"""The DAG files: they load, quickly, without heavy imports, with the structure the docs promise."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from airflow_harness import ROOT, VENV_BIN, base_env

# Each DAG file must parse well inside Airflow's 30 s import timeout and the dag
# processor's loop; measured ~0.05–0.15 s here (docs/airflow.md).
PARSE_BUDGET_S = 2.0

PROBE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    t0 = time.perf_counter()
    from airflow.dag_processing.dagbag import BundleDagBag
    t_airflow = time.perf_counter() - t0
    dags = Path(sys.argv[1])
    bag = BundleDagBag(str(dags), bundle_path=dags, bundle_name="dags-folder")
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("trafilatura", "feedparser", "datasketch", "aiosmtplib")
                   or m in ("pipeline.store", "pipeline.extract", "pipeline.feeds", "pipeline.dedupe",
                            "pipeline.classify", "pipeline.digest", "pipeline.fetcher", "airflow.providers.smtp.hooks.smtp"))
    out = {"import_errors": bag.import_errors, "airflow_import_s": t_airflow, "heavy": heavy,
           "stats": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats}, "dags": {}}
    for dag_id, dag in bag.dags.items():
        tasks = {}
        for t in dag.tasks:
            tasks[t.task_id] = {
                "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
                "pool": t.pool, "retries": t.retries, "backoff": t.retry_exponential_backoff,
                "owner": t.owner, "doc": bool(t.doc_md), "mapped": "Mapped" in type(t).__name__ or bool(getattr(t, "is_mapped", False)),
                "outlets": [getattr(o, "uri", str(o)) for o in (t.outlets or [])],
                "callbacks": len(t.on_failure_callback or []) if isinstance(t.on_failure_callback, list) else int(bool(t.on_failure_callback)),
            }
        tt = dag.timetable
        out["dags"][dag_id] = {
            "timetable": type(tt).__name__, "summary": getattr(tt, "expression", None),
            "timezone": str(getattr(tt, "timezone", "")), "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs, "tags": sorted(dag.tags), "doc": bool(dag.doc_md),
            "params": {k: dag.params.get_param(k).schema for k in dag.params}, "tasks": tasks,
            "fileloc": dag.fileloc,
        }
    print("JSON" + json.dumps(out, default=str))
    """
)


def _probe(tmp_path: Path, **env: str) -> dict:
    home = tmp_path / "af"
    home.mkdir(exist_ok=True)
    e = base_env(home, f"sqlite:///{home / 'airflow.db'}")
    e.update(env)
    p = subprocess.run([str(VENV_BIN / "python"), "-c", PROBE, str(ROOT / "dags")], env=e, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("JSON")), None)
    assert p.returncode == 0 and line, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(line[4:])


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _probe(tmp_path_factory.mktemp("dagbag"))


def test_every_dag_file_loads_without_errors(bag: dict) -> None:
    assert bag["import_errors"] == {}
    assert set(bag["dags"]) == {"news_ingest", "news_digest", "news_reprocess"}
    # helpers under dags/newsmon_airflow are not parsed as DAG files (.airflowignore)
    assert all("newsmon_airflow" not in f for f in bag["stats"])


def test_parse_time_budget_and_no_heavy_imports(bag: dict) -> None:
    print("parse times (s):", {k: round(v, 3) for k, v in bag["stats"].items()})
    for f, secs in bag["stats"].items():
        assert secs < PARSE_BUDGET_S, f"{f} took {secs:.2f}s to parse"
    # Stages, the store, HTTP and SMTP clients are imported inside tasks only.
    assert bag["heavy"] == []


def test_ingest_dag_structure(bag: dict) -> None:
    d = bag["dags"]["news_ingest"]
    assert d["timetable"] == "CronTriggerTimetable" or "Cron" in d["timetable"]
    assert d["summary"] == "*/30 * * * *"
    assert d["catchup"] is False and d["max_active_runs"] == 1
    assert d["doc"] and "newsmon" in d["tags"]
    t = d["tasks"]
    assert list(t) == ["start_run", "plan_batches", "fetch_batch", "extract", "cluster", "classify", "finish"]
    assert t["fetch_batch"]["mapped"] and t["fetch_batch"]["pool"] == "newsmon_http"
    assert t["extract"]["trigger_rule"] == "all_done" and t["finish"]["trigger_rule"] == "all_done"
    assert [u.rstrip("/") for u in t["finish"]["outlets"]] == ["newsmon://stories"]
    for name, task in t.items():
        assert task["owner"] == "newsmon" and task["doc"], name
        assert task["retries"] == 0  # NEWSMON_AIRFLOW__TASK_RETRIES=0 in tests; default 2 (below)
        assert task["backoff"] == 2.0
        assert task["callbacks"] == 0  # no failure recipients configured


def test_digest_dag_uses_data_intervals_and_has_a_trigger_form(bag: dict) -> None:
    d = bag["dags"]["news_digest"]
    assert d["timetable"] == "CronDataIntervalTimetable"
    assert d["summary"] == "0 7 * * *" and d["timezone"] == "UTC"
    assert d["catchup"] is False
    p = d["params"]
    assert set(p) == {"period_start", "period_end", "recipients", "preview_only", "force_resend"}
    assert p["period_start"]["format"] == "date-time" and p["preview_only"]["type"] == "boolean"
    assert p["recipients"]["type"] == "array"
    assert list(d["tasks"]) == ["period", "deliver"]


def test_reprocess_dag_is_manual_with_steps(bag: dict) -> None:
    d = bag["dags"]["news_reprocess"]
    assert d["timetable"] == "NullTimetable"
    assert d["params"]["steps"]["items"]["enum"] == ["extract", "cluster", "classify"]
    assert list(d["tasks"]) == ["select_range", "extract", "cluster", "classify"]


def test_schedules_retries_and_notifications_follow_settings(tmp_path: Path) -> None:
    b = _probe(
        tmp_path,
        NEWSMON_INGEST__SCHEDULE="*/10 * * * *",
        NEWSMON_DIGEST__SCHEDULE="30 6 * * 1-5",
        NEWSMON_DIGEST__TIMEZONE="Asia/Karachi",
        NEWSMON_AIRFLOW__TASK_RETRIES="3",
        NEWSMON_AIRFLOW__FAILURE_RECIPIENTS="ops@example.org, oncall@example.org",
    )
    assert b["import_errors"] == {}
    assert b["dags"]["news_ingest"]["summary"] == "*/10 * * * *"
    dg = b["dags"]["news_digest"]
    assert dg["summary"] == "30 6 * * 1-5" and dg["timezone"] == "Asia/Karachi"
    for dag in b["dags"].values():
        for name, task in dag["tasks"].items():
            assert task["retries"] == 3, name
            assert task["callbacks"] == 1, name  # SmtpNotifier on failure
    # The notifier needs the SMTP provider at parse time; nothing else heavy comes with it.
    assert [m for m in b["heavy"] if not m.startswith(("aiosmtplib", "airflow.providers.smtp"))] == []


# ---------------------------------------------------------------- helpers (no Airflow process)

sys.path.insert(0, str(ROOT / "dags"))
from newsmon_airflow import common  # noqa: E402


def test_batches_respect_size_and_max_map_length() -> None:
    assert common.batches([], 25, 1024) == []
    assert common.batches(list(range(60)), 25, 1024) == [list(range(25)), list(range(25, 50)), list(range(50, 60))]
    big = common.batches(list(range(10_000)), 25, 100)
    assert len(big) <= 100 and sum(map(len, big)) == 10_000
    assert sorted(x for b in big for x in b) == list(range(10_000))


def test_digest_period_resolution() -> None:
    now = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
    day0, day1 = now - timedelta(days=1, hours=2), now - timedelta(hours=2)
    # scheduled / backfill: the data interval
    assert common.resolve_period(params={}, logical_date=day0, data_interval_start=day0,
                                 data_interval_end=day1, now=now) == (day0, day1, "data_interval")
    # manual without logical date: since the last delivered digest
    assert common.resolve_period(params={}, logical_date=None, data_interval_start=None,
                                 data_interval_end=None, now=now) == (None, None, "since_last_delivered")
    # Params win, end defaults to now
    s, e, src = common.resolve_period(params={"period_start": "2026-11-20T00:00:00+05:00"}, logical_date=day0,
                                      data_interval_start=day0, data_interval_end=day1, now=now)
    assert (s, e, src) == (datetime(2026, 11, 19, 19, 0, tzinfo=timezone.utc), now, "params")
    with pytest.raises(ValueError):
        common.resolve_period(params={"period_start": "2026-11-20T00:00:00"}, logical_date=None,
                              data_interval_start=None, data_interval_end=None, now=now)
    with pytest.raises(ValueError):
        common.resolve_period(params={"period_start": "2026-11-25T00:00:00Z", "period_end": "2026-11-24T00:00:00Z"},
                              logical_date=None, data_interval_start=None, data_interval_end=None, now=now)
