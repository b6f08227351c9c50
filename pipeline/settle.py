"""Clustering and classification of committed articles, in a process of their own.

:func:`settle` runs dedupe, then classification, on some articles (or on everything
still pending). :class:`Settler` runs it for each batch an ingest pass commits, in
a process forked from the extraction fork server, so the pass's extraction workers
keep both cores busy meanwhile. This module imports neither the feed parser nor
the HTTP client: the process starts on what it needs.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, fields
from typing import Any

from pipeline import classify, dedupe, extract
from pipeline.config import Settings
from pipeline.store import Store

__all__ = ["REST", "Settled", "Settler", "settle"]


@dataclass
class Settled:
    duplicates: int = 0
    stories_new: int = 0
    classified: int = 0
    relevant: int = 0
    dedupe_seconds: float = 0.0
    classify_seconds: float = 0.0

    def add(self, other: Settled) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def settle(store: Store, settings: Settings, article_ids: list[int] | None = None) -> Settled:
    """Cluster, then classify, ``article_ids`` (or everything still pending)."""
    out = Settled()
    t0 = time.perf_counter()
    dr = dedupe.assign_pending(store, settings, article_ids=article_ids)
    t1 = time.perf_counter()
    cr = classify.classify_pending(store, settings, article_ids=article_ids)
    out.dedupe_seconds, out.classify_seconds = t1 - t0, time.perf_counter() - t1
    out.duplicates, out.stories_new = dr.duplicates, dr.stories_new
    out.classified, out.relevant = cr.classified, cr.relevant
    return out


def _settler_main(conn: Any, settings: Settings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    store = Store(settings.db_url)
    try:
        while True:
            try:
                ids = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            if ids is None:
                return
            try:
                reply: tuple[str, Any] = ("ok", settle(store, settings, None if ids == REST else ids))
            except Exception as exc:  # the articles stay pending: the parent's final pass retries them
                reply = ("error", f"{type(exc).__name__}: {exc}")
            try:
                conn.send(reply)
            except (OSError, ValueError):
                return
    finally:
        store.dispose()


# Asks the settler for everything still pending (what earlier, interrupted passes left).
REST = "rest"


class Settler:
    """Clusters and classifies committed batches in a process of its own.

    The main process fetches pages and feeds the extraction workers; were it also
    to cluster and classify, those CPU-bound stages would hold its interpreter
    lock and starve the workers. In a process of its own they run alongside, and
    all cores stay busy. Batches it could not settle (an error, or the process
    died) stay pending in the store for the caller's final pass.
    """

    def __init__(self, settings: Settings) -> None:
        ctx = extract.process_context()
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_settler_main, args=(child, settings), daemon=True, name="newsmon-settle")
        self.proc.start()
        child.close()
        self.outstanding = 0
        self.result = Settled()
        self.errors: list[str] = []

    def submit(self, article_ids: list[int]) -> None:
        self._collect(block=False)
        self._send(list(article_ids))

    def _send(self, message: list[int] | str) -> None:
        try:
            self.conn.send(message)
            self.outstanding += 1
        except (OSError, ValueError):
            self._gone()

    def _gone(self) -> None:
        self.outstanding = 0
        self.errors.append("the clustering process is gone; its batches are settled at the end of the pass")

    def _collect(self, block: bool) -> None:
        while self.outstanding:
            try:
                if not self.conn.poll(1.0 if block else 0):
                    if not block:
                        return
                    if not self.proc.is_alive():
                        return self._gone()
                    continue
                status, value = self.conn.recv()
            except (EOFError, OSError):
                return self._gone()
            self.outstanding -= 1
            if status == "ok":
                self.result.add(value)
            else:
                self.errors.append(f"clustering a batch failed: {value}")

    def close(self, rest: bool = False) -> Settled:
        """Wait for the batches sent so far (and, with ``rest``, a last pass over
        everything still pending), then stop the process."""
        if rest:
            self._send(REST)
        self._collect(block=True)
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()
        return self.result
