"""The DAGs run by the real Airflow, end to end, against loopback servers only.

* ``airflow dags test news_ingest`` over the demo site, then ``news_digest``: the email
  arrives at a loopback SMTP server through the ``smtp_default`` connection;
* the same with PostgreSQL as Airflow's metadata database (and as the article store);
* ``airflow backfill create`` (run by a real scheduler) makes one digest per day, and a
  repeated backfill sends nothing;
* a digest task that dies after handing the message to the server does not send it again.
"""

from __future__ import annotations

import email
import json
import os
import signal
import sqlite3
import subprocess
import time
from datetime import datetime, timedelta, timezone
from email import policy

import pytest
from airflow_harness import VENV_BIN, AirflowHome, Newsmon, make_home, smtp_conn_uri
from conftest import SMTPSink, make_pg_database
from sqlalchemy import func, select

from pipeline.store import Digest, Feed, IngestRun, Store, Story

pytestmark = pytest.mark.slow


def _parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


def _wait_messages(sink: SMTPSink, n: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(sink.messages) < n and time.monotonic() < deadline:
        time.sleep(0.1)


def test_ingest_then_digest_arrives_by_smtp(airflow_home: AirflowHome, newsmon: Newsmon, ingested) -> None:
    # --- ingest: the run is recorded, stories are stored, the asset event carries the count
    store = Store(newsmon.store_url)
    try:
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(Feed)) == 3
            run = s.scalars(select(IngestRun).order_by(IngestRun.id.desc())).first()
            assert run.status == "ok" and run.trigger == "airflow" and run.feeds_total == 3
            relevant = list(s.scalars(select(Story).where(Story.relevant.is_(True))))
        assert relevant, "the demo feeds carry relevant stories"
        db = sqlite3.connect(airflow_home.home / "airflow.db", timeout=30)
        extra = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri LIKE 'newsmon://stories%' "
            "ORDER BY e.id DESC LIMIT 1"
        ).fetchone()
        db.close()
        assert extra and json.loads(extra[0])["new_stories"] == run.stories_new > 0

        # --- digest: a manual run for the last two hours (Params), delivered through smtp_default
        before = len(newsmon.sink.messages)
        t0 = time.monotonic()
        conf = {"period_start": _iso(datetime.now(timezone.utc) - timedelta(hours=2))}
        airflow_home.run("dags", "test", "news_digest", "-c", json.dumps(conf),
                         env=airflow_home.env(**newsmon.env), timeout=240, log="dags-test-digest.log")
        _wait_messages(newsmon.sink, before + 1)
        trigger_to_digest = time.monotonic() - t0
        print(f"\ningest (dags test): {ingested.seconds:.1f}s; digest trigger→email: {trigger_to_digest:.1f}s")
        assert len(newsmon.sink.messages) == before + 1
        mail_from, rcpts, raw = newsmon.sink.messages[-1]
        assert mail_from == "newsmon@example.org"  # the connection's from_email
        assert sorted(rcpts) == ["analyst@example.org", "desk@example.org"]
        msg = _parse(raw)
        assert msg.get_content_type() == "multipart/alternative"
        parts = {p.get_content_type(): p.get_content() for p in msg.iter_parts()}
        assert set(parts) == {"text/plain", "text/html"}
        titles = [st.title for st in relevant]
        assert any(t and t[:40] in parts["text/plain"] for t in titles)
        with store.session() as s:
            d = s.scalars(select(Digest).order_by(Digest.id.desc())).first()
            assert d.status == "delivered" and d.transport == "airflow-smtp" and d.message_id == msg["Message-ID"]
    finally:
        store.dispose()


def test_postgres_metadata_and_store(tmp_path, smtp_server: SMTPSink, free_port: int) -> None:
    meta_url, drop_meta = make_pg_database()
    store_url, drop_store = make_pg_database()
    af = None
    try:
        t0 = time.monotonic()
        af = make_home(tmp_path / "airflow-pg", sql_conn=meta_url)
        migrate_s = time.monotonic() - t0
        env = af.env(
            NEWSMON_HOME=str(tmp_path / "newsmon"),
            NEWSMON_DATABASE_URL=store_url,
            NEWSMON_DEMO="1",
            NEWSMON_DEMO_PORT=str(free_port),
            AIRFLOW_CONN_SMTP_DEFAULT=smtp_conn_uri(smtp_server.host, smtp_server.port),
        )
        af.run("dags", "test", "news_ingest", env=env, timeout=300, log="ingest.log")
        t1 = time.monotonic()
        conf = {"period_start": _iso(datetime.now(timezone.utc) - timedelta(hours=2))}
        af.run("dags", "test", "news_digest", "-c", json.dumps(conf), env=env, timeout=240, log="digest.log")
        _wait_messages(smtp_server, 1)
        print(f"\nPostgreSQL metadata: db migrate {migrate_s:.1f}s, digest trigger→email {time.monotonic() - t1:.1f}s")
        assert len(smtp_server.messages) == 1
        # The article store is its own database: Airflow's tables are not in it, ours are not in Airflow's.
        from sqlalchemy import create_engine, inspect

        for url, has, lacks in ((store_url, "digests", "dag_run"), (meta_url, "dag_run", "digests")):
            eng = create_engine(url)
            names = set(inspect(eng).get_table_names())
            eng.dispose()
            assert has in names and lacks not in names
        store = Store(store_url)
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(Story).where(Story.relevant.is_(True))) > 0
            assert s.scalar(select(Digest.status)) == "delivered"
        store.dispose()
    finally:
        if af is not None:
            af.stop_all()
        drop_meta()
        drop_store()


def _backfill_count(af: AirflowHome) -> int:
    db = sqlite3.connect(af.home / "airflow.db", timeout=30)
    try:
        return db.execute("SELECT count(*) FROM backfill WHERE dag_id='news_digest'").fetchone()[0]
    finally:
        db.close()


def _create_backfill(af: AirflowHome, *extra: str, env: dict, log: str) -> None:
    """``airflow backfill create`` next to a running scheduler.

    SQLite takes one writer at a time: the command can fail with "database is locked",
    sometimes after the backfill row was committed. Retry only while no backfill was created.
    """
    args = ("backfill", "create", "--dag-id", "news_digest", "--from-date", "2026-11-01", "--to-date", "2026-11-04", *extra)
    before = _backfill_count(af)
    for attempt in range(4):
        r = af.run(*args, env=env, timeout=120, check=False, log=f"{attempt}-{log}")
        if r.returncode == 0 or _backfill_count(af) > before:
            return
        if "database is locked" not in r.stdout:
            break
        time.sleep(2)
    raise AssertionError(f"airflow {' '.join(args)} exited {r.returncode}:\n{r.stdout[-4000:]}")


def _periods(sink: SMTPSink, start: int) -> list[str]:
    return [_parse(raw)["X-Newsmon-Period"] for _, _, raw in sink.messages[start:]]


def _backfill_runs(af: AirflowHome) -> list[tuple[str, str]]:
    db = sqlite3.connect(af.home / "airflow.db", timeout=30)
    try:
        return db.execute(
            "SELECT logical_date, state FROM dag_run WHERE dag_id='news_digest' AND run_type='backfill' "
            "ORDER BY logical_date"
        ).fetchall()
    finally:
        db.close()


def _wait_backfill_done(af: AirflowHome, n_runs: int, timeout: float) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    runs: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        db = sqlite3.connect(af.home / "airflow.db", timeout=30)
        try:
            open_backfills = db.execute(
                "SELECT count(*) FROM backfill WHERE dag_id='news_digest' AND completed_at IS NULL"
            ).fetchone()[0]
        finally:
            db.close()
        runs = _backfill_runs(af)
        if open_backfills == 0 and len(runs) >= n_runs and all(s in ("success", "failed") for _, s in runs):
            return runs
        time.sleep(1)
    raise AssertionError(f"backfill not finished in {timeout}s: {runs}\n{af.log_text('scheduler.log')[-4000:]}")


def test_backfill_three_days_once_each(airflow_home: AirflowHome, newsmon: Newsmon, api_server) -> None:
    env = airflow_home.env(
        **newsmon.env,
        NEWSMON_DIGEST__ON_EMPTY="send",  # the backfilled days are quiet: send "no new stories" digests
        AIRFLOW__API__BASE_URL=api_server.base,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=api_server.base + "/execution/",
    )
    airflow_home.run("dags", "reserialize", env=env, timeout=120, log="reserialize.log")
    # Only the backfill should run here, not the ingest schedule.
    airflow_home.run("dags", "pause", "news_ingest", env=env, timeout=60, log="pause.log")
    scheduler = airflow_home.start("scheduler", env=env, log="scheduler.log")
    try:
        before = len(newsmon.sink.messages)
        t0 = time.monotonic()
        _create_backfill(airflow_home, env=env, log="backfill-1.log")
        runs = _wait_backfill_done(airflow_home, 3, timeout=240)
        print(f"\nbackfill of 3 days: {time.monotonic() - t0:.1f}s; runs: {runs}")
        assert [s for _, s in runs] == ["success"] * 3
        _wait_messages(newsmon.sink, before + 3)
        # (The scheduler may also run today's scheduled digest: only the backfilled days count here.)
        periods = sorted(p for p in _periods(newsmon.sink, before) if p.startswith("2026-11-0"))
        assert periods == [
            "2026-11-01T07:00:00Z/2026-11-02T07:00:00Z",
            "2026-11-02T07:00:00Z/2026-11-03T07:00:00Z",
            "2026-11-03T07:00:00Z/2026-11-04T07:00:00Z",
        ], periods

        # The same backfill again, re-running the completed runs: every period is already delivered.
        _create_backfill(airflow_home, "--reprocess-behavior", "completed", env=env, log="backfill-2.log")
        runs = _wait_backfill_done(airflow_home, 3, timeout=240)
        assert [s for _, s in runs] == ["success"] * 3
        time.sleep(1)
        again = sorted(p for p in _periods(newsmon.sink, before) if p.startswith("2026-11-0"))
        assert again == periods, "a repeated backfill sent a digest twice"
    finally:
        airflow_home.stop(scheduler)


def test_task_dying_after_handing_over_the_message_does_not_resend(airflow_home: AirflowHome, tmp_path, free_port: int) -> None:
    """The worker dies while the server takes the digest; the retried run must not send a second copy."""
    af_env_home = tmp_path / "newsmon"
    victim: dict[str, subprocess.Popen] = {}

    class KillingSink(SMTPSink):
        pass

    sink = KillingSink()
    # Accept the message, then kill the task's process before it hears the reply.
    original = sink.controller.handler.handle_DATA

    async def handle_data(server, session, envelope):  # noqa: ANN001
        result = await original(server, session, envelope)
        if "proc" in victim:
            os.killpg(victim["proc"].pid, signal.SIGKILL)
        return result

    sink.controller.handler.handle_DATA = handle_data
    sink.start()
    af = airflow_home
    try:
        env = af.env(
            NEWSMON_HOME=str(af_env_home),
            NEWSMON_DEMO="1",
            NEWSMON_DEMO_PORT=str(free_port),
            NEWSMON_DIGEST__ON_EMPTY="send",
            AIRFLOW_CONN_SMTP_DEFAULT=smtp_conn_uri(sink.host, sink.port),
        )
        conf = json.dumps({"period_start": "2026-11-20T07:00:00+00:00", "period_end": "2026-11-21T07:00:00+00:00"})
        cmd = [str(VENV_BIN / "airflow"), "dags", "test", "news_digest", "-c", conf]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        victim["proc"] = proc
        assert proc.wait(timeout=240) == -signal.SIGKILL, "the task process should have been killed mid-send"
        victim.clear()
        assert len(sink.messages) == 1

        # Airflow runs the digest again (a retry, or the next manual run for the same period).
        r = af.run("dags", "test", "news_digest", "-c", conf, env=env, timeout=240, check=False, log="retry.log")
        assert len(sink.messages) == 1, "the digest was sent twice"
        assert "being sent by another run" in r.stdout
        store = Store(f"sqlite:///{af_env_home / 'demo.db'}")
        with store.session() as s:
            row = s.scalars(select(Digest)).one()
        store.dispose()
        # Left "sending": after digest.send_lease_seconds the same message (same Message-ID) may go
        # out once more, so a receiver can recognise it (docs/digest.md).
        assert row.status == "sending" and row.message_id == _parse(sink.messages[0][2])["Message-ID"]
    finally:
        if "proc" in victim and victim["proc"].poll() is None:
            os.killpg(victim["proc"].pid, signal.SIGKILL)
        sink.stop()


def test_failed_task_is_mailed_to_failure_recipients(airflow_home: AirflowHome, newsmon: Newsmon) -> None:
    before = len(newsmon.sink.messages)
    env = airflow_home.env(**newsmon.env, NEWSMON_AIRFLOW__FAILURE_RECIPIENTS="ops@example.org")
    bad = json.dumps({"date_from": "2026-11-10", "date_to": "2026-11-01", "steps": ["classify"]})
    r = airflow_home.run("dags", "test", "news_reprocess", "-c", bad, env=env, timeout=240, check=False,
                         log="dags-test-reprocess-fail.log")
    assert "is after date_to" in r.stdout
    _wait_messages(newsmon.sink, before + 1)
    mails = [(f, to, _parse(raw)) for f, to, raw in newsmon.sink.messages[before:]]
    assert len(mails) == 1, [m[2]["Subject"] for m in mails]
    _, to, msg = mails[0]
    assert to == ["ops@example.org"]
    assert msg["Subject"].startswith("[newsmon] news_reprocess.select_range failed")


def test_celery_executor_delivers_the_digest(tmp_path, smtp_server: SMTPSink, free_port: int) -> None:
    """Scheduler + Celery worker (Redis broker, PostgreSQL metadata and result backend) + API server."""
    import secrets
    import socket

    from airflow_harness import start_api_server
    from sqlalchemy import create_engine, text

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError as exc:
        pytest.skip(f"Redis not reachable on 127.0.0.1:6379 ({exc})")
    meta_url, drop_meta = make_pg_database()
    queue = "newsmon-test-" + secrets.token_hex(4)  # keeps this worker apart from any other on the broker
    celery_env = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta_url,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "NEWSMON_HOME": str(tmp_path / "newsmon"),
        "NEWSMON_DEMO": "1",
        "NEWSMON_DEMO_PORT": str(free_port),
        "NEWSMON_DIGEST__ON_EMPTY": "send",
        "AIRFLOW_CONN_SMTP_DEFAULT": smtp_conn_uri(smtp_server.host, smtp_server.port),
    }
    af = None
    try:
        af = make_home(tmp_path / "airflow-celery", sql_conn=meta_url)
        api = start_api_server(af, celery_env)
        env = af.env(**celery_env, AIRFLOW__API__BASE_URL=api.base,
                     AIRFLOW__CORE__EXECUTION_API_SERVER_URL=api.base + "/execution/")
        af.run("dags", "reserialize", env=env, timeout=120, log="reserialize.log")
        af.run("dags", "pause", "news_ingest", env=env, timeout=60, log="pause.log")
        af.start("scheduler", env=env, log="scheduler.log")
        af.start("celery", "worker", "-q", queue, env=env, log="worker.log")
        t0 = time.monotonic()
        conf = json.dumps({"period_start": "2026-11-10T07:00:00+00:00", "period_end": "2026-11-11T07:00:00+00:00"})
        af.run("dags", "trigger", "news_digest", "-r", "celery_digest", "-c", conf, env=env, timeout=60, log="trigger.log")
        eng = create_engine(meta_url)
        state = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with eng.connect() as c:
                state = c.execute(text("SELECT state FROM dag_run WHERE run_id='celery_digest'")).scalar()
            if state in ("success", "failed"):
                break
            time.sleep(1)
        with eng.connect() as c:
            executors = c.execute(
                text("SELECT DISTINCT executor, queue FROM task_instance WHERE run_id='celery_digest'")
            ).all()
        eng.dispose()
        print(f"\nCeleryExecutor: trigger → run {state} in {time.monotonic() - t0:.1f}s")
        assert state == "success", af.log_text("worker.log")[-3000:] + af.log_text("scheduler.log")[-3000:]
        assert {q for _, q in executors} == {queue}
        _wait_messages(smtp_server, 1)
        # (The scheduler may also have run the latest scheduled digest; only the triggered period counts.)
        assert _periods(smtp_server, 0).count("2026-11-10T07:00:00Z/2026-11-11T07:00:00Z") == 1
    finally:
        if af is not None:
            af.stop_all()
        drop_meta()
