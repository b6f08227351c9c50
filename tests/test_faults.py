"""Faults injected into real runs: the ingest process killed, the store stopped, the mail relay failing.

Each test checks what the brief of the product promises after a failure: nothing
that was stored is lost, nothing is stored or sent twice, the run log tells the
truth, and the next run finishes the work.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import smtplib
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from conftest import LoopbackServer, SMTPSink
from hostile import (
    NewsSite,
    PrivatePostgres,
    check_store,
    group_alive,
    ingest_env,
    record,
    start_pipeline,
    stop_group,
)
from pipeline import digest
from pipeline.config import Settings
from pipeline.store import Article, Digest, Entry, Feed, IngestRun, Store, Story, utcnow
from pipeline.types import DigestStatus

KILLS = int(os.environ.get("NEWSMON_FAULT_KILLS", "5"))


def _canonical_urls(store: Store) -> set[str]:
    with store.session() as s:
        return set(s.scalars(select(Article.canonical_url)))


def _run_of(store: Store, pid: int) -> IngestRun | None:
    with store.session() as s:
        return s.scalars(select(IngestRun).where(IngestRun.pid == pid)).first()


def _stage_at_kill(store: Store, pid: int) -> str:
    """Where the killed pass was, judged from the store (for the figures only)."""
    run = _run_of(store, pid)
    if run is None:
        return "startup"
    with store.session() as s:
        mine = s.scalar(select(func.count()).select_from(Entry).where(Entry.run_id == run.id)) or 0
        pending = s.scalar(select(func.count()).select_from(Entry).where(Entry.status == "pending")) or 0
        unclustered = s.scalar(select(func.count()).select_from(Article).where(Article.story_id.is_(None))) or 0
        unclassified = s.scalar(
            select(func.count()).select_from(Article).where(Article.classification == None)  # noqa: E711
        ) or 0
    if not mine:
        return "fetch"
    if pending:
        return "extract"
    if unclustered:
        return "dedupe"
    if unclassified:
        return "classify"
    return "finishing"


STAGES = ("startup", "fetch", "extract", "dedupe", "classify")


def _reached(store: Store, pid: int, stage: str, articles_before: int) -> bool:
    """Whether the pass ``pid`` has begun ``stage`` (as far as the store shows)."""
    run = _run_of(store, pid)
    if run is None:
        return False
    if stage == "fetch":
        return True
    with store.session() as s:
        mine = s.scalar(select(func.count()).select_from(Entry).where(Entry.run_id == run.id)) or 0
        pending = s.scalar(select(func.count()).select_from(Entry).where(Entry.status == "pending")) or 0
        unclustered = s.scalar(select(func.count()).select_from(Article).where(Article.story_id.is_(None))) or 0
    if stage == "extract":  # some of this pass's articles are committed, others are not
        return pending > 0 and _articles(store) > articles_before
    if stage == "dedupe":
        return mine > 0 and pending == 0 and unclustered > 0
    return mine > 0 and pending == 0 and unclustered == 0  # classify


def _articles(store: Store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Article)) or 0


def _kill_in(store: Store, proc, stage: str, rng: random.Random) -> float:
    """Wait for ``stage`` of the pass, then a random moment more; returns the seconds since it was started."""
    t0 = time.monotonic()
    before = _articles(store)
    if stage == "startup":
        time.sleep(rng.uniform(0.3, 1.5))
        return time.monotonic() - t0
    deadline = t0 + 90
    while time.monotonic() < deadline and proc.poll() is None and not _reached(store, proc.pid, stage, before):
        time.sleep(0.02)
    time.sleep(rng.uniform(*{"fetch": (0.0, 0.3), "extract": (0.0, 0.3)}.get(stage, (0.0, 0.1))))
    return time.monotonic() - t0


# ---------------------------------------------------------------- SIGKILL at random points


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_ingest_killed_at_random_points_loses_nothing_and_stores_nothing_twice(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, http_server: LoopbackServer
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(url)
    request.addfinalizer(store.dispose)
    store.migrate()
    site = NewsSite(http_server, feeds=3, visible=3, delay=0.03)
    env = ingest_env(tmp_path / "home", url, site.feed_list(tmp_path / "feeds.toml"))
    seed = int(os.environ.get("NEWSMON_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"kill loop seed {seed} (NEWSMON_FAULT_SEED={seed} repeats it)")  # shown when the test fails
    kills: list[dict] = []
    procs = []
    try:
        stored_before: set[str] = set()
        for round_no in range(KILLS):
            site.publish(3 + 3 * round_no)  # every pass finds new work
            proc = start_pipeline(["ingest", "--force"], env, tmp_path, tmp_path / f"run{round_no}.log")
            procs.append(proc)
            # Each pass is killed in another stage, at a random moment inside it.
            target = STAGES[round_no % len(STAGES)]
            delay = _kill_in(store, proc, target, rng)
            killed = proc.poll() is None
            stage = _stage_at_kill(store, proc.pid) if killed else "finished"
            killed_at = utcnow()
            if killed:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            # The extraction workers notice their parent is gone and exit on their own.
            t0 = time.monotonic()
            while group_alive(proc.pid) and time.monotonic() - t0 < 10:
                time.sleep(0.05)
            orphans_gone = not group_alive(proc.pid)
            stop_group(proc, grace=0)
            stored = _canonical_urls(store)
            lost = stored_before - stored
            assert not lost, f"round {round_no} (seed {seed}): {len(lost)} stored articles disappeared"
            figures = check_store(store, clustered=False)
            kills.append({"round": round_no, "pid": proc.pid, "delay": round(delay, 2), "killed": killed,
                          "target": target, "stage": stage, "articles": figures["articles"],
                          "orphans_gone": orphans_gone, "killed_at": killed_at})
            assert orphans_gone, f"worker processes of the killed pass {proc.pid} outlived it"
            stored_before = stored

        # The final, clean pass finishes everything the killed ones left.
        final = start_pipeline(["ingest", "--force"], env, tmp_path, tmp_path / "final.log")
        procs.append(final)
        assert final.wait(timeout=120) == 0, (tmp_path / "final.log").read_text()[-3000:]
        stop_group(final, grace=5)
    finally:
        for p in procs:
            stop_group(p, grace=0)

    figures = check_store(store, clustered=True, classified=True)
    stored = _canonical_urls(store)
    assert stored_before <= stored
    expected = site.links()
    with store.session() as s:
        entries = dict(s.execute(select(Entry.status, func.count()).group_by(Entry.status)).all())
        runs = {r.pid: r for r in s.scalars(select(IngestRun))}
        linked = {a.url for a in s.scalars(select(Article))}
    # Every page is fine: every entry ends as an article of its own (a copy is one too, marked as such).
    assert entries == {"done": len(expected)}, entries
    assert figures["articles"] == len(expected), (figures, len(expected))
    assert linked == expected
    # The run log is honest: a killed pass is never "ok", none is left "running".
    statuses = {}
    for k in kills:
        r = runs.get(k["pid"])
        status = r.status if r is not None else "no row (killed before it started)"
        statuses[k["pid"]] = status
        if k["killed"]:
            # "ok" only when the pass had recorded its finish before the signal (it was exiting).
            finished_first = r is not None and r.status == "ok" and r.finished_at <= k["killed_at"]
            assert r is None or r.status in ("aborted", "failed") or finished_first, (k, status)
    assert runs[final.pid].status == "ok", runs[final.pid].errors
    assert not [r for r in runs.values() if r.status == "running"]
    record(
        "sigkill-ingest", backend=backend, seed=seed, kills=sum(k["killed"] for k in kills), rounds=len(kills),
        targets=[k["target"] for k in kills], stages=[k["stage"] for k in kills], delays=[k["delay"] for k in kills],
        articles_after_each=[k["articles"] for k in kills], final_articles=figures["articles"],
        entries=figures["entries"], stories=figures["stories"], duplicates=0, lost=0,
        run_statuses=sorted(statuses.values()),
    )


# ---------------------------------------------------------------- the store goes away during a pass


@pytest.fixture
def private_pg():
    try:
        pg = PrivatePostgres()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"cannot create a private PostgreSQL cluster: {exc}")
    try:
        try:
            pg.init()
            pg.start()
        except (subprocess.SubprocessError, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            pytest.fail(f"cannot start a private PostgreSQL cluster: {exc} {detail.decode(errors='replace')[-500:]}")
        yield pg
    finally:
        pg.destroy()


def _wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _count_articles(url: str) -> int:
    store = Store(url)
    try:
        with store.session() as s:
            return s.scalar(select(func.count()).select_from(Article)) or 0
    except Exception:  # noqa: BLE001 - the store may be down or not migrated yet
        return -1
    finally:
        store.dispose()


@pytest.mark.slow
def test_store_down_during_a_pass_fails_clearly_and_the_retry_completes(
    private_pg: PrivatePostgres, tmp_path: Path, http_server: LoopbackServer
) -> None:
    url = private_pg.create_database("newsmon")
    store = Store(url)
    store.migrate()
    store.dispose()
    site = NewsSite(http_server, feeds=2, visible=8, delay=0.15)
    site.publish(8)
    env = ingest_env(tmp_path / "home", url, site.feed_list(tmp_path / "feeds.toml"))

    # 1. Down before the pass starts: a clear one-line error at once, not a hang.
    private_pg.stop()
    t0 = time.monotonic()
    early = start_pipeline(["ingest"], env, tmp_path, tmp_path / "down.log")
    try:
        code = early.wait(timeout=60)
    finally:
        stop_group(early, grace=0)
    fail_after = time.monotonic() - t0
    out = (tmp_path / "down.log").read_text()
    assert code == 3 and "error: the store is not reachable" in out and "Traceback" not in out, out[-2000:]

    # 2. Down in the middle of a pass: the pass fails clearly, the retry completes.
    private_pg.start()
    proc = start_pipeline(["ingest"], env, tmp_path, tmp_path / "mid.log")
    try:
        assert _wait_for(lambda: _count_articles(url) >= 2, 60), (tmp_path / "mid.log").read_text()[-2000:]
        private_pg.stop("fast")  # every client connection is cut
        code = proc.wait(timeout=60)
    finally:
        stop_group(proc, grace=2)
    out = (tmp_path / "mid.log").read_text()
    assert code == 3 and "error: the store is not reachable" in out and "Traceback" not in out, out[-2000:]
    time.sleep(1.0)  # unavailable for a while
    private_pg.start()

    store = Store(url)
    try:
        # Nothing half-written: each committed batch is whole.
        before = check_store(store, clustered=False)
        assert 2 <= before["articles"] < 16
        with store.session() as s:
            (failed_run,) = s.scalars(select(IngestRun).where(IngestRun.pid == proc.pid)).all()
            assert failed_run.status in ("running", "failed")  # the store was gone: it could not say more

        retry = start_pipeline(["ingest", "--force"], env, tmp_path, tmp_path / "retry.log")
        try:
            assert retry.wait(timeout=120) == 0, (tmp_path / "retry.log").read_text()[-3000:]
        finally:
            stop_group(retry, grace=5)
        after = check_store(store, clustered=True, classified=True)
        with store.session() as s:
            runs = {r.pid: r.status for r in s.scalars(select(IngestRun))}
            statuses = dict(s.execute(select(Entry.status, func.count()).group_by(Entry.status)).all())
        assert after["articles"] == 16 and statuses == {"done": 16}, (after, statuses)
        assert runs[proc.pid] in ("aborted", "failed") and runs[retry.pid] == "ok", runs
    finally:
        store.dispose()
    record("store-down", faults=2, fail_after_seconds=round(fail_after, 2), articles_before_outage=before["articles"],
           articles_after_retry=after["articles"], duplicates=0, partial_rows=0, run_statuses=sorted(runs.values()))


def test_an_extraction_pass_cut_off_from_the_store_leaves_no_work_running(
    private_pg: PrivatePostgres, settings: Settings, http_server: LoopbackServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store goes away while pages are still being fetched: the stage raises at once
    and, when it returns, none of its fetch threads is still at work on a closed fetcher."""
    from pipeline import extract, feeds
    from pipeline.types import FeedSpec

    url = private_pg.create_database("cutoff")
    store = Store(url)
    store.migrate()
    site = NewsSite(http_server, feeds=2, visible=6, delay=0.02)
    site.publish(6)
    page = site.page_route()
    stopping = threading.Event()

    def slow_page(h):  # noqa: ANN001, ANN202
        # The first slow page cuts the store off; the slow pages are still in flight then.
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=private_pg.stop, daemon=True).start()
        time.sleep(3)
        return page(h)

    for i in range(6):
        http_server.routes[f"/a/{100 + i}"] = http_server.routes[f"/copy/{100 + i}"] = slow_page
    cfg = settings.model_copy(update={
        "http": settings.http.model_copy(update={"per_host_concurrency": 16, "retries": 0}),
        "ingest": settings.ingest.model_copy(update={"batch_size": 2}),
    })
    feeds.sync_feeds(store, [FeedSpec(name=f"Outlet {f}", url=http_server.url(f"/feed{f}.xml")) for f in range(2)])
    with store.session() as s:
        feed_ids = list(s.scalars(select(Feed.id)))
    assert feeds.fetch_feeds(store, cfg, feed_ids).entries_new == 12
    caplog.set_level(logging.ERROR)
    try:
        with pytest.raises(OperationalError):
            extract.extract_pending(store, cfg)
        left = [t.name for t in threading.enumerate() if t.name.startswith("newsmon-extract") and t.is_alive()]
        assert left == [], f"fetch threads still running after the stage returned: {left}"
        noise = [r.getMessage() for r in caplog.records if r.name == "pipeline.extract"]
        assert noise == [], noise
    finally:
        store.dispose()
        private_pg.start()  # so that the fixture stops it cleanly


# ---------------------------------------------------------------- the mail relay fails


T = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)


class FlakyRelay:
    """A misbehaving SMTP server on loopback (one thread per connection).

    ``mode``: ``silent`` (accepts TCP, never greets), ``drop-before-data`` (greets,
    then hangs up at MAIL FROM), ``drop-after-data`` (takes the whole message, then
    hangs up without a reply), ``slow-data`` (takes the message, answers 250 only
    after the client gave up). ``received`` holds what it took in.
    """

    def __init__(self, mode: str, reply_after: float = 3.0) -> None:
        self.mode = mode
        self.reply_after = reply_after
        self.received: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop_event.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        f = conn.makefile("rwb")
        try:
            if self.mode == "silent":
                self.stop_event.wait(10)
                return
            f.write(b"220 flaky.example ESMTP\r\n")
            f.flush()
            while not self.stop_event.is_set():
                line = f.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    f.write(b"250 flaky.example\r\n")
                elif verb == b"MAIL":
                    if self.mode == "drop-before-data":
                        return
                    f.write(b"250 OK\r\n")
                elif verb == b"RCPT":
                    f.write(b"250 OK\r\n")
                elif verb == b"DATA":
                    f.write(b"354 go ahead\r\n")
                    f.flush()
                    data = bytearray()
                    while not data.endswith(b"\r\n.\r\n"):
                        chunk = f.readline()
                        if not chunk:
                            return
                        data += chunk
                    self.received.append(bytes(data[:-5]))
                    if self.mode == "drop-after-data":
                        return
                    self.stop_event.wait(self.reply_after)  # slow-data: answer after the client gave up
                    f.write(b"250 OK queued\r\n")
                elif verb == b"QUIT":
                    f.write(b"221 bye\r\n")
                    f.flush()
                    return
                else:
                    f.write(b"250 OK\r\n")
                f.flush()
        except OSError:
            return
        finally:
            try:
                f.close()
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop_event.set()
        self.sock.close()
        self.acceptor.join(2)
        for t in self.threads:
            t.join(2)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed_story(store: Store, title: str) -> None:
    text = ("ISLAMABAD: Pakistan and the United States agreed on Monday to reopen a trade dialogue that had "
            "been paused for a year, officials from both sides said after the meeting.\n"
            "The delegations will meet again in the spring, the commerce ministry said in a statement.")
    with store.session() as s:
        st = Story(title=title, first_seen_at=T - timedelta(hours=5), updated_at=T - timedelta(hours=5),
                   article_count=1, outlet_count=1, score=0.9, relevant=True, dyads=["US-PK"], topics=["trade"])
        s.add(st)
        s.flush()
        a = Article(canonical_url=f"https://dawn.example/{st.id}", url=f"https://dawn.example/{st.id}", title=title,
                    text=text, outlet="Dawn", country="PK", published_at=T - timedelta(hours=5, minutes=5),
                    fetched_at=T - timedelta(hours=5), clustered_at=T - timedelta(hours=5), story_id=st.id)
        s.add(a)
        s.flush()
        st.lead_article_id = a.id


def _smtp_settings(settings: Settings, port: int, timeout: float = 1.0) -> Settings:
    return settings.model_copy(update={
        "digest": settings.digest.model_copy(update={"transport": "smtp", "recipients": ["desk@example.org"]}),
        "smtp": settings.smtp.model_copy(update={"host": "127.0.0.1", "port": port, "timeout": timeout}),
    })


@pytest.mark.parametrize("mode", ["down", "silent", "drop-before-data", "drop-after-data", "slow-data"])
def test_mail_relay_failures_deliver_the_digest_once_after_recovery(
    mode: str, sqlite_store: Store, settings: Settings, smtp_server: SMTPSink
) -> None:
    store = sqlite_store
    _seed_story(store, "Pakistan and US reopen trade dialogue")
    relay = None if mode == "down" else FlakyRelay(mode)
    port = _closed_port() if relay is None else relay.port
    broken = _smtp_settings(settings, port)
    now = T + timedelta(minutes=1)
    t0 = time.monotonic()
    try:
        with pytest.raises(digest.DeliveryFailed) as failure:
            digest.deliver_digest(store, broken, since=T - timedelta(days=1), until=T, now=now)
    finally:
        if relay is not None:
            relay.close()
    took = time.monotonic() - t0
    assert took < 10, f"a failing relay held the digest run for {took:.1f}s"
    result = failure.value.result
    with store.session() as s:
        row = s.get(Digest, result.digest_id)
        status_after_failure, message_id = row.status, row.message_id
    ambiguous = mode in ("drop-after-data", "slow-data")
    assert status_after_failure == ("unconfirmed" if ambiguous else "failed"), (mode, row.last_error)
    assert row.last_error and "\n" not in row.last_error

    # The relay is back: the next run delivers; a third run has nothing to send.
    good = _smtp_settings(settings, smtp_server.port, timeout=5)
    again = digest.deliver_digest(store, good, since=T - timedelta(days=1), until=T, now=now + timedelta(minutes=10))
    third = digest.deliver_digest(store, good, since=T - timedelta(days=1), until=T, now=now + timedelta(minutes=20))
    assert again.status is DigestStatus.DELIVERED and third.status is DigestStatus.ALREADY_DELIVERED
    copies = [message_from_bytes(raw, policy=policy.default) for _, _, raw in smtp_server.messages]
    if relay is not None:
        copies += [message_from_bytes(raw, policy=policy.default) for raw in relay.received]
    ids = {m["Message-ID"] for m in copies}
    assert len(smtp_server.messages) == 1
    assert len(ids) == 1, ids  # one message; a copy the failing relay may have taken has the same Message-ID
    if ambiguous:
        assert again.resent and ids == {message_id}
    with store.session() as s:
        digests = s.scalars(select(Digest)).all()
    assert [(d.status, d.attempts) for d in digests] == [("delivered", 2)]
    record("smtp-fault", mode=mode, first_status=status_after_failure, delivered_messages=len(smtp_server.messages),
           copies_with_same_message_id=len(copies), distinct_message_ids=len(ids), digests_per_period=len(digests),
           fail_seconds=round(took, 2))


def test_a_relay_that_takes_the_message_then_hangs_up_is_not_retried_blindly(
    sqlite_store: Store, settings: Settings
) -> None:
    """The transport itself: data handed over, then the line dropped → "maybe delivered", never a silent success."""
    from pipeline import mail

    relay = FlakyRelay("drop-after-data")
    try:
        msg = mail.build_message(subject="s", text="t", html="<p>t</p>", sender="newsmon@localhost",
                                 recipients=["desk@example.org"], message_id="<x@localhost>")
        with pytest.raises(mail.DeliveryError) as err:
            mail.SmtpTransport(_smtp_settings(settings, relay.port).smtp).send(msg)
    finally:
        relay.close()
    assert err.value.maybe_delivered and len(relay.received) == 1
    assert isinstance(err.value.__cause__, (smtplib.SMTPServerDisconnected, OSError))
