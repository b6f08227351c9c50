"""Two ingest passes and two digest runs at the same time against one PostgreSQL store (separate processes)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conftest import LoopbackServer, _free_port
from hostile import NewsSite, check_store, ingest_env, pipeline_env, record, start_pipeline, stop_group
from pipeline.store import Article, Digest, DigestStory, IngestRun, Store


class SlowSink:
    """aiosmtpd on loopback that takes ``delay`` seconds to accept each message (a run stays "sending")."""

    def __init__(self, delay: float) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[bytes] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001
                await asyncio.sleep(delay)
                sink.messages.append(envelope.original_content)
                return "250 OK"

        self.port = _free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def slow_sink():
    sink = SlowSink(delay=2.0)
    yield sink
    sink.stop()


def test_two_ingests_and_two_digests_at_once_store_and_send_everything_once(
    pg_url: str, tmp_path: Path, http_server: LoopbackServer, slow_sink: SlowSink
) -> None:
    store = Store(pg_url)
    store.migrate()
    site = NewsSite(http_server, feeds=3, visible=8, delay=0.05)
    site.publish(8)
    env = ingest_env(tmp_path / "home", pg_url, site.feed_list(tmp_path / "feeds.toml"),
                     ingest__extract_workers="1", http__max_concurrency="4")
    procs = []
    try:
        # 1. Two ingest passes over the same feeds, started together.
        procs = [start_pipeline(["ingest", "--json"], env, tmp_path, tmp_path / f"ingest{i}.log") for i in range(2)]
        codes = [p.wait(timeout=180) for p in procs]
        logs = [(tmp_path / f"ingest{i}.log").read_text() for i in range(2)]
        assert codes == [0, 0], logs
        reports = [json.loads(log.strip().splitlines()[-1]) for log in logs]
        with store.session() as s:
            runs = s.scalars(select(IngestRun)).all()
            overlap = max(r.started_at for r in runs) < min(r.finished_at for r in runs)
        figures = check_store(store, clustered=True, classified=True)
        expected = site.links()
        assert figures["articles"] == len(expected) and figures["entries"] == len(expected)
        # Copies and their originals end in one story, whichever pass clustered them.
        with store.session() as s:
            by_url = {a.url: a for a in s.scalars(select(Article))}
        copies = [u for u in expected if "/copy/" in u]
        for u in copies:
            n = int(u.rsplit("/", 1)[1]) % 100
            original = by_url[site.link(0, n)]
            assert by_url[u].story_id == original.story_id, u
            assert by_url[u].duplicate_of_id == original.id or original.duplicate_of_id == by_url[u].id
        # Between them the passes stored each article exactly once.
        new_total = sum(r["articles_extracted"] + r["articles_fallback"] for r in reports)
        assert new_total == len(expected), reports

        # 2. Two digest runs for the same period, started together: one message.
        since = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
        until = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()
        denv = pipeline_env(tmp_path / "home", pg_url, digest__transport="smtp", digest__recipients="desk@example.org",
                            digest__on_empty="send", smtp__host="127.0.0.1", smtp__port=str(slow_sink.port),
                            smtp__timeout="20")
        args = ["digest", "--send", "--since", since, "--until", until, "--json"]
        dprocs = [start_pipeline(args, denv, tmp_path, tmp_path / f"digest{i}.log") for i in range(2)]
        procs += dprocs
        dcodes = [p.wait(timeout=120) for p in dprocs]
        dlogs = [(tmp_path / f"digest{i}.log").read_text() for i in range(2)]
        statuses = sorted(json.loads(log.strip().splitlines()[-1])["status"] for log in dlogs)
        assert dcodes == [0, 0], dlogs
        assert statuses in (["delivered", "in-progress"], ["already-delivered", "delivered"]), statuses
        assert len(slow_sink.messages) == 1
        with store.session() as s:
            digests = s.scalars(select(Digest)).all()
            lines = s.scalar(select(func.count()).select_from(DigestStory)) or 0
        assert [d.status for d in digests] == ["delivered"]
        msg = message_from_bytes(slow_sink.messages[0], policy=policy.default)
        assert msg["Message-ID"] == digests[0].message_id
        figures = check_store(store, clustered=True, classified=True)
    finally:
        for p in procs:
            stop_group(p, grace=0)
        store.dispose()
    record("concurrency", backend="postgresql", ingests=2, overlapped=overlap, articles=figures["articles"],
           expected=len(expected), stories=figures["stories"], copies=len(copies), duplicates=0,
           digest_runs=2, digest_statuses=statuses, messages=len(slow_sink.messages), digests_per_period=len(digests),
           digest_lines=lines)
