"""The benchmark suite: one command, every stage, baselines in the same run.

    .venv/bin/python -m bench.run            # full run (~3–5 min; the first one also builds the stores, ~20 min)
    .venv/bin/python -m bench.run --quick    # smoke run (~1–2 min)

Sections (``--only`` picks some):

* ``workload``  — generate the synthetic workload (:mod:`bench.workload`) and serve it on loopback;
* ``baselines`` — bare ``feedparser.parse`` on the same feeds and bare ``trafilatura.extract``
  (default settings, one process) on the same pages;
* ``parallel``  — the pipeline's extraction pool with one worker process against one per core;
* ``e2e``       — :func:`pipeline.ingest.run_once` on a fresh store (per backend), timed per stage
  (feeds, extraction, store writes, dedupe, classification), a second pass (all feeds 304),
  the digest build, and the ratio of end-to-end to bare-extraction throughput;
* ``classify``  — classification per article on the workload (``bench.classify_speed``);
* ``scaling``   — per-article dedupe (the real ``assign_pending``; and the write-free check of
  ``bench.dedupe_scaling``), store write (the extraction stage's write path), classification
  stage and digest build on stores of 10k, 100k and 1M background articles
  (:mod:`bench.stores`), SQLite and PostgreSQL, in rounds that alternate between the sizes;
* ``digest``    — ``bench.digest_build`` (digest of a 100k-article store with 1,000 stories).

Outputs: ``bench/results/bench.json`` (everything), ``bench/results/table.md`` (the README
table) and ``bench/results/scaling.png`` (:mod:`bench.plot`).

Peak memory is the resident set: the main process's high-water mark (reset per stage
through ``/proc/self/clear_refs``) plus the sampled peak of its child processes (the
extraction workers). The machine may be shared: every rate is reported with the CPU
time it took and the load average at the start, and the verdicts use wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECTIONS = ("workload", "baselines", "parallel", "e2e", "classify", "scaling", "digest")

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "feeds": 24, "entries_per_feed": 25, "sizes": [10_000, 100_000, 1_000_000],
        "backends": ["sqlite", "postgresql"], "e2e_backends": ["sqlite", "postgresql"],
        "probes": 200, "writes": 200, "repeat": 3, "digest_articles": 100_000, "digest_stories": 1000,
        "check_repeat": 3, "e2e_rounds": 5, "scaling_rounds": 5,
    },
    "quick": {
        "feeds": 4, "entries_per_feed": 6, "sizes": [2_000, 6_000],
        "backends": ["sqlite"], "e2e_backends": ["sqlite"],
        "probes": 12, "writes": 12, "repeat": 1, "digest_articles": 2_000, "digest_stories": 40,
        "check_repeat": 1, "e2e_rounds": 1, "scaling_rounds": 2,
    },
}
# Targets stated in the brief for this suite.
E2E_MIN_RATIO = 0.8
SCALING_MAX_RATIO = 1.5


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ----------------------------------------------------------------------------- measuring


_ACTIVE: list[PeakMemory] = []
_ACTIVE_LOCK = threading.Lock()
# Child processes that are not the pipeline's (the loopback site standing in for the web).
NOT_MEASURED: set[int] = set()
# CPU times are read every 100 ms (cheap), so that a worker's last figures are caught
# before it exits. A process's proportional set size costs ~1 ms to read (the kernel walks
# its pages), so memory is read every fifth poll: reading it every time took ~4% of a core
# away from the pipeline being measured. One poll serves every nested block.
SAMPLE_SECONDS = 0.1
MEMORY_EVERY = 5


def _descendants(memory: bool = True) -> dict[int, tuple[float, int | None]]:
    """pid → (CPU seconds, proportional set size in bytes or None) of the processes below this one."""
    import psutil

    out: dict[int, tuple[float, int | None]] = {}
    with contextlib.suppress(psutil.Error):
        for c in psutil.Process().children(recursive=True):
            if c.pid in NOT_MEASURED:
                continue
            with contextlib.suppress(psutil.Error):
                t = c.cpu_times()
                pss = None
                if memory:
                    with contextlib.suppress(psutil.Error):  # the process ended before its memory was read
                        pss = c.memory_full_info().pss
                out[c.pid] = (t.user + t.system, pss)
    return out


class PeakMemory:
    """Peak memory over a block: this process (kernel high-water mark of its RSS, reset at
    entry) plus the processes below it (fork server, extraction workers, settler; their
    memory sampled every half second, their CPU every 100 ms, by one thread for all nested
    blocks). Those are counted by proportional
    set size, so pages the workers share with the fork server they were forked from are
    counted once. The samples also sum their CPU time (they are not this process's
    children to wait for, so ``RUSAGE_CHILDREN`` does not see them)."""

    def __init__(self) -> None:
        self.main_mb = 0.0
        self.children_mb = 0.0
        self.children_cpu = 0.0
        self.start_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}

    @staticmethod
    def _status(key: str) -> float:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _take(self, sample: dict[int, tuple[float, int | None]], initial: bool = False) -> None:
        for pid, (cpu, _) in sample.items():
            # A process first seen inside the block was born in it: all its CPU counts.
            self._cpu_first.setdefault(pid, cpu if initial else 0.0)
            self._cpu_last[pid] = cpu
        if not initial and any(pss is not None for _, pss in sample.values()):
            total = sum(pss or 0 for _, pss in sample.values())
            self.children_mb = max(self.children_mb, total / 2**20)
        self.children_cpu = sum(v - self._cpu_first[k] for k, v in self._cpu_last.items())

    def _sample(self) -> None:
        polls = 0
        while not self._stop.wait(SAMPLE_SECONDS):
            polls += 1
            sample = _descendants(memory=polls % MEMORY_EVERY == 0)
            with _ACTIVE_LOCK:
                for block in _ACTIVE:
                    block._take(sample)

    def __enter__(self) -> PeakMemory:
        # Nested blocks: resetting the high-water mark must not lose the enclosing block's peak.
        hwm = self._status("VmHWM:")
        with _ACTIVE_LOCK:
            for outer in _ACTIVE:
                outer.main_mb = max(outer.main_mb, hwm)
            outermost = not _ACTIVE
            _ACTIVE.append(self)
        with contextlib.suppress(OSError):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        self.start_mb = self._status("VmRSS:")
        self._take(_descendants(), initial=True)
        if outermost:
            self._thread = threading.Thread(target=self._sample, name="bench-mem", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._take(_descendants())
        self.main_mb = max(self.main_mb, self._status("VmHWM:"))
        with _ACTIVE_LOCK:
            _ACTIVE.remove(self)
            for outer in _ACTIVE:
                outer.main_mb = max(outer.main_mb, self.main_mb)
                outer.children_mb = max(outer.children_mb, self.children_mb)
        self._stop.set()
        if self._thread:
            self._thread.join()

    def as_dict(self) -> dict:
        return {
            "peak_rss_mb": round(self.main_mb + self.children_mb, 1),
            "main_peak_mb": round(self.main_mb, 1),
            "main_start_mb": round(self.start_mb, 1),
            "main_growth_mb": round(self.main_mb - self.start_mb, 1),
            "workers_peak_mb": round(self.children_mb, 1),
        }


@dataclass
class Clock:
    wall: float = 0.0
    cpu: float = 0.0  # this process, all threads
    child_cpu: float = 0.0  # children this process waited for inside the block (see PeakMemory for workers)

    def __enter__(self) -> Clock:
        self._w = time.perf_counter()
        self._c = time.process_time()
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._cc = r.ru_utime + r.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.child_cpu = r.ru_utime + r.ru_stime - self._cc


def rate(n: float, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else 0.0


@dataclass
class StageTimer:
    """Wraps stage functions (module attributes the ingest handler calls) to time each call."""

    calls: dict[str, list[dict]] = field(default_factory=dict)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def wrap(self, module: Any, name: str, label: str, memory: bool = True) -> None:
        orig = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            mem = PeakMemory() if memory else contextlib.nullcontext()
            with mem, Clock() as c:
                out = orig(*args, **kwargs)
            rec = {"wall": c.wall, "cpu": c.cpu, "result": out,
                   "child_cpu": mem.children_cpu if memory else c.child_cpu}
            if memory:
                rec.update(mem.as_dict())
            self.calls.setdefault(label, []).append(rec)
            return out

        setattr(module, name, timed)
        self._undo.append(lambda: setattr(module, name, orig))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def total(self, label: str) -> float:
        return sum(c["wall"] for c in self.calls.get(label, []))


# ----------------------------------------------------------------------------- context


@dataclass
class Ctx:
    profile: dict[str, Any]
    quick: bool
    out: Path
    cache: bool
    results: dict[str, Any]
    site: Any = None
    wl: Any = None
    tmp: Path | None = None

    def settings(self, **overrides: Any):
        from pipeline.config import Settings

        kw: dict[str, Any] = {
            "home": self.tmp / "home",
            "http": {"allow_private_addresses": True},
            "ingest": {"extract_workers": 0},
        }
        kw.update(overrides)
        return Settings(**kw)


def section_workload(ctx: Ctx) -> None:
    from bench.workload import LoopbackSite, WorkloadSpec, generate

    p = ctx.profile
    ctx.site = LoopbackSite().start()
    NOT_MEASURED.add(ctx.site.pid)
    spec = WorkloadSpec(feeds=p["feeds"], entries_per_feed=p["entries_per_feed"])
    ctx.wl = generate(spec, ctx.site.base_for)
    ctx.site.publish(ctx.wl)
    ctx.results["workload"] = {**ctx.wl.summary(), "loopback_hosts": ctx.site.hosts}
    log(f"workload: {json.dumps(ctx.results['workload'])}")


def section_baselines(ctx: Ctx) -> None:
    import feedparser

    wl = ctx.wl
    repeat = ctx.profile["repeat"]
    bodies = wl.feed_bodies()
    best = None
    for _ in range(repeat):
        with Clock() as c:
            entries = sum(len(feedparser.parse(b).entries) for b in bodies)
        best = c if best is None or c.wall < best.wall else best
    fp = {"feeds": len(bodies), "entries": entries, "seconds": round(best.wall, 3), "cpu_seconds": round(best.cpu, 3),
          "feeds_per_second": rate(len(bodies), best.wall), "entries_per_second": rate(entries, best.wall), "cores": 1}
    tx = _bare_extraction(wl)
    ctx.results["baselines"] = {"feedparser": fp, "trafilatura": tx}
    log(f"baselines: feedparser {fp['feeds_per_second']} feeds/s; trafilatura {tx['pages_per_second']} pages/s")


def _bare_extraction(wl) -> dict:
    """Bare ``trafilatura.extract`` over the workload's pages on one core: the baseline."""
    import trafilatura

    # The pipeline hands trafilatura a str when the server names the charset, as ours does.
    pages = [a.html.decode("utf-8") for a in wl.articles]
    trafilatura.extract(pages[0])  # imports and first-call setup outside the timing
    with PeakMemory() as mem, Clock() as c:
        words = sum(len((trafilatura.extract(h) or "").split()) for h in pages)
    return {"pages": len(pages), "seconds": round(c.wall, 2), "cpu_seconds": round(c.cpu, 2),
            "pages_per_second": rate(len(pages), c.wall), "cpu_ms_per_page": round(1000 * c.cpu / len(pages), 2),
            "mb_per_second": rate(sum(map(len, pages)) / 2**20, c.wall), "words": words, "cores": 1,
            "settings": "trafilatura.extract(html) defaults", **mem.as_dict()}


def _pool_rate(pages: list[tuple[str, str, str, str]], workers: int, settings) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.extract import ExtractionPool

    pool = ExtractionPool(workers, settings.ingest.extract_timeout, settings.ingest.extract_memory_mb)
    try:
        # Start every worker (process start) before the clock: the speed-up is about extraction.
        with ThreadPoolExecutor(workers) as tp:
            list(tp.map(lambda p: pool.extract(p[0], p[1]), pages[:workers]))
        with PeakMemory() as mem, Clock() as c, ThreadPoolExecutor(workers * 2) as tp:
            out = list(tp.map(lambda p: pool.extract(p[0], p[1], feed_title=p[2], feed_text=p[3]), pages))
    finally:
        pool.close()
    return {"workers": workers, "pages": len(pages), "seconds": round(c.wall, 2),
            "pages_per_second": rate(len(pages), c.wall), "main_cpu_seconds": round(c.cpu, 2),
            "ok": sum(1 for a in out if a.status.value == "ok"), **mem.as_dict()}


def section_parallel(ctx: Ctx) -> None:
    settings = ctx.settings()
    pages = [(a.html.decode("utf-8"), a.url, a.title, a.summary) for a in ctx.wl.articles]
    one = _pool_rate(pages, 1, settings)
    n = max(2, cpus())
    many = _pool_rate(pages, n, settings)
    res = {"one": one, "all": many, "cores": cpus(), "speedup": round(many["pages_per_second"] / one["pages_per_second"], 2)}
    bare = ctx.results.get("baselines", {}).get("trafilatura")
    if bare:
        res["pipeline_extract_vs_bare_one_core"] = round(one["pages_per_second"] / bare["pages_per_second"], 3)
    ctx.results["parallel"] = res
    log(f"parallel: {one['pages_per_second']} pages/s on 1 worker, {many['pages_per_second']} on {n} "
        f"(x{res['speedup']})")


# ----------------------------------------------------------------------------- end to end


def _fresh_store(backend: str, tmp: Path):
    """A migrated empty store and a function that removes it."""
    from bench import stores
    from pipeline.store import Store

    if backend == "sqlite":
        path = tmp / f"e2e-{time.monotonic_ns()}.db"
        store = Store(f"sqlite:///{path}")
        store.migrate()

        def drop() -> None:
            store.dispose()
            for f in tmp.glob(path.name + "*"):
                f.unlink()

        return store, drop
    import uuid

    name = f"newsmon_bench_tmp_{uuid.uuid4().hex[:8]}"
    stores._pg_create(name)
    store = Store(stores.pg_url_for(name))
    store.migrate()

    def drop_pg() -> None:
        store.dispose()
        stores._pg_drop(name)

    return store, drop_pg


def _ground_truth_check(store, wl) -> dict:
    from sqlalchemy import func, select

    from pipeline.store import Article, Classification

    with store.session() as s:
        arts = s.scalar(select(func.count()).select_from(Article)) or 0
        dups = s.scalar(select(func.count()).select_from(Article).where(Article.duplicate_of_id.is_not(None))) or 0
        stories = s.scalar(select(func.count(func.distinct(Article.story_id)))) or 0
        relevant = s.scalar(select(func.count()).select_from(Classification).where(Classification.relevant)) or 0
        by_url = dict(s.execute(select(Article.canonical_url, Article.story_id)).all())
    # Pairwise agreement with the workload's stories (a sanity check, not the quality evaluation).
    from pipeline.urls import canonical_url

    label = {}
    for a in wl.articles:
        sid = by_url.get(canonical_url(a.url))
        if sid is not None:
            label[a.id] = sid
    same_true = same_pred = both = 0
    arts_l = [a for a in wl.articles if a.id in label]
    for i, a in enumerate(arts_l):
        for b in arts_l[i + 1:]:
            t = a.story == b.story
            p_ = label[a.id] == label[b.id]
            same_true += t
            same_pred += p_
            both += t and p_
    return {
        "articles": arts, "articles_expected": len(wl.articles),
        "duplicates": dups, "copies_expected": sum(a.kind == "copy" for a in wl.articles),
        "stories": stories, "stories_expected": wl.stories,
        "relevant": relevant, "relevant_expected": sum(a.relevant for a in wl.articles),
        "story_pair_precision": round(both / same_pred, 3) if same_pred else None,
        "story_pair_recall": round(both / same_true, 3) if same_true else None,
    }


def _summed(calls: list[dict]) -> dict:
    """One record for all calls of a stage: times summed, memory the highest seen."""
    out = {k: sum(c[k] for c in calls) for k in ("wall", "cpu", "child_cpu")}
    out["calls"] = len(calls)
    for k in ("peak_rss_mb", "main_growth_mb", "workers_peak_mb"):
        vals = [c[k] for c in calls if c.get(k) is not None]
        if vals:
            out[k] = max(vals)
    return out


def _e2e_one(ctx: Ctx, backend: str) -> dict:
    from pipeline import digest, extract, feeds, ingest
    from pipeline.types import FeedSpec

    wl = ctx.wl
    store, drop = _fresh_store(backend, ctx.tmp)
    settings = ctx.settings(database_url=store.url)
    try:
        specs = [FeedSpec(name=f"{f.outlet.name} — {f.section}", url=f.url, country=f.outlet.country) for f in wl.feeds]
        feeds.sync_feeds(store, specs)
        timer = StageTimer()
        timer.wrap(feeds, "fetch_feeds", "fetch")
        timer.wrap(extract, "extract_pending", "extract")
        timer.wrap(extract, "_write", "store_write", memory=False)
        # Dedupe and classification run per committed batch in the ingest's settler process,
        # overlapping extraction: their times come from the report (summed over batches).
        try:
            load0 = os.getloadavg()[0]
            with PeakMemory() as mem, Clock() as c:
                report = ingest.run_once(store, settings, force=True, trigger="bench")
            first = dict(timer.calls)
            timer.calls = {}
            with Clock() as c304:
                report2 = ingest.run_once(store, settings, force=True, trigger="bench")
            second = dict(timer.calls)
        finally:
            timer.restore()
        # Digest of everything the pass stored.
        now = datetime.now(timezone.utc)
        with PeakMemory() as dmem, Clock() as dc:
            plan = digest.build_digest(store, settings, since=wl.anchor - timedelta(days=3), until=now, now=now)
        with Clock() as rc:
            digest.render(plan)
        articles = report.articles_extracted + report.articles_fallback
        stage = {k: _summed(v) for k, v in first.items() if v}
        writes = first.get("store_write", [])
        write_wall = sum(w["wall"] for w in writes)
        res = {
            "backend": backend,
            "load_average_at_start": round(load0, 2),
            "articles": articles,
            "entries": report.entries_seen,
            "feeds": report.feeds_total,
            "seconds": round(c.wall, 2),
            "articles_per_second": rate(articles, c.wall),
            "cpu_seconds_main": round(c.cpu, 2),
            "cpu_seconds_workers": round(mem.children_cpu, 2),
            "cpu_ms_per_article": round(1000 * (c.cpu + mem.children_cpu) / max(1, articles), 2),
            "processes": f"1 main + {settings.ingest.extract_workers or cpus()} extraction workers + 1 settler "
                         "(forked from one fork server)",
            "report": {k: v for k, v in vars(report).items() if k not in ("errors", "failed_feeds")},
            "errors": report.errors[:10],
            **mem.as_dict(),
            "stages": {},
        }
        for label in ("dedupe", "classify"):
            if label in report.stage_seconds:
                stage[label] = {"wall": report.stage_seconds[label], "cpu": None, "child_cpu": None, "calls": None,
                                "note": "in the settler process, overlapping extraction"}
        for label in ("fetch", "extract", "dedupe", "classify"):
            s = stage.get(label)
            if not s:
                continue
            res["stages"][label] = {
                "calls": s["calls"], "seconds": round(s["wall"], 3),
                "cpu_seconds": None if s["cpu"] is None else round(s["cpu"], 3),
                "worker_cpu_seconds": None if s["child_cpu"] is None else round(s["child_cpu"], 3),
                "note": s.get("note"),
                "peak_rss_mb": s.get("peak_rss_mb"), "main_growth_mb": s.get("main_growth_mb"),
                "workers_peak_mb": s.get("workers_peak_mb"),
            }
        st = res["stages"]
        if "fetch" in st:
            st["fetch"]["note"] = ("on a thread of its own, alongside page extraction: its CPU figure is the main "
                                   "process's, page fetching and writes included")
            st["fetch"]["feeds_per_second"] = rate(report.feeds_total, st["fetch"]["seconds"])
            st["fetch"]["entries_per_second"] = rate(report.entries_seen, st["fetch"]["seconds"])
        if "extract" in st:
            st["extract"]["pages_per_second"] = rate(articles, st["extract"]["seconds"])
        if "dedupe" in st:
            st["dedupe"]["ms_per_article"] = round(1000 * st["dedupe"]["seconds"] / max(1, articles), 3)
            st["dedupe"]["articles_per_second"] = rate(articles, st["dedupe"]["seconds"])
        if "classify" in st:
            st["classify"]["ms_per_article"] = round(1000 * st["classify"]["seconds"] / max(1, report.classified), 3)
            st["classify"]["articles_per_second"] = rate(report.classified, st["classify"]["seconds"])
        st["store_write"] = {
            "seconds": round(write_wall, 3), "batches": len(writes),
            "articles_per_second": rate(articles, write_wall),
            "ms_per_article": round(1000 * write_wall / max(1, articles), 3),
        }
        f304 = second.get("fetch", [{}])[0]
        res["second_pass"] = {
            "seconds": round(c304.wall, 3),
            "feeds_not_modified": report2.feeds_not_modified,
            "fetch_seconds": round(f304.get("wall", 0.0), 3),
            "feeds_per_second": rate(report2.feeds_total, f304.get("wall", 0.0)),
        }
        res["digest"] = {
            "build_seconds": round(dc.wall, 3), "render_seconds": round(rc.wall, 3),
            "stories": len(plan.items), **dmem.as_dict(),
        }
        res["check"] = _ground_truth_check(store, wl)
        return res
    finally:
        drop()


def section_e2e(ctx: Ctx) -> None:
    """``e2e_rounds`` rounds; in each, every backend's run comes right after a bare extraction
    pass of its own, and the round with the median ratio is reported (every round's figures
    are kept). On a shared machine the speed of a core drifts by several per cent within
    minutes and one pass can meet another tenant's burst: a ratio is only as good as the
    pairing of its two passes, and a median of several pairs is steadier than any one."""
    from bench import stores

    out: dict[str, Any] = {}
    rounds: dict[str, list[dict]] = {}
    for i in range(ctx.profile["e2e_rounds"]):
        for backend in ctx.profile["e2e_backends"]:
            if backend == "postgresql" and stores.pg_available():
                out[backend] = {"skipped": stores.pg_available()}
                continue
            bare = _bare_extraction(ctx.wl)
            log(f"e2e {backend}, round {i + 1}: run_once over {ctx.wl.summary()['entries']} entries")
            ctx.site.stats(reset=True)
            r = _e2e_one(ctx, backend)
            r["server"] = vars(ctx.site.stats(reset=True))
            r["bare_pages_per_second"] = bare["pages_per_second"]
            r["ratio_to_bare_extraction"] = round(r["articles_per_second"] / bare["pages_per_second"], 3)
            rounds.setdefault(backend, []).append(r)
            log(f"e2e {backend}: {r['articles_per_second']} articles/s end to end, bare extraction "
                f"{bare['pages_per_second']} pages/s (x{r['ratio_to_bare_extraction']}); stages "
                + ", ".join(f"{k} {v['seconds']}s" for k, v in r["stages"].items()))
    for backend, rs in rounds.items():
        ranked = sorted(rs, key=lambda r: r["ratio_to_bare_extraction"])
        out[backend] = best = dict(ranked[len(ranked) // 2])
        best["rounds"] = [
            {k: r[k] for k in ("ratio_to_bare_extraction", "articles_per_second", "bare_pages_per_second", "seconds")}
            for r in rs
        ]
    ctx.results["e2e"] = out


def section_classify(ctx: Ctx) -> None:
    from pipeline.classify import Classifier

    try:
        from bench import classify_speed
    except ImportError:
        classify_speed = None
    clf = Classifier()
    docs = [(a.title, a.text) for a in ctx.wl.articles]
    clf.classify(*docs[0])
    if classify_speed is not None and hasattr(classify_speed, "measure"):
        res = classify_speed.measure(clf, docs, ctx.profile["repeat"])
    else:
        with Clock() as c:
            for d in docs:
                clf.classify(*d)
        res = {"articles": len(docs), "articles_per_second_wall": rate(len(docs), c.wall)}
    res["source"] = "workload articles through bench.classify_speed.measure"
    ctx.results["classify"] = res
    log(f"classify: {res.get('articles_per_second_wall')} articles/s (wall, one core)")


# ----------------------------------------------------------------------------- scaling


def _probe_articles(wl, anchor: datetime, start: int, count: int):
    """``count`` workload articles (cycling when the workload is smaller) as (article, time, tag),
    placed just after the store's newest background article; ``tag`` keeps their URLs unique."""
    shift = anchor - wl.anchor + timedelta(minutes=30)
    n = len(wl.articles)
    out = []
    for i in range(start, start + count):
        a = wl.articles[i % n]
        out.append((a, a.published + shift, f"{i}"))
    return out


def _insert_probes(store, probes, tag: str) -> list[int]:
    from sqlalchemy import select

    from pipeline.store import Article
    from pipeline.text import content_hash

    rows = []
    for a, at, i in probes:
        url = f"{a.url.rsplit('/', 1)[0]}/{tag}{i}-{a.path.rsplit('/', 1)[1]}"
        rows.append({
            "canonical_url": url, "url": url, "guid": url, "title": a.title, "text": a.text, "summary": a.summary,
            "author": a.author, "site": a.outlet.slug, "outlet": a.outlet.name, "country": a.outlet.country,
            "language": "en", "published_at": at, "published_source": "feed", "fetched_at": at + timedelta(minutes=3),
            "extraction_status": "ok", "content_hash": content_hash(a.text), "word_count": len(a.text.split()),
        })
    with store.session() as s:
        s.execute(Article.__table__.insert(), rows)
        urls = [r["canonical_url"] for r in rows]
        return list(s.scalars(select(Article.id).where(Article.canonical_url.in_(urls)).order_by(Article.id)))


def _warm_os_cache(store) -> float:
    """Read a SQLite store's file once, so that the operating system caches it as it does on a
    machine that has been running the pipeline (a store just built or copied is cold on disk:
    the first random index inserts then wait on reads, which is not the steady state being
    measured). Returns the seconds taken. PostgreSQL keeps its own buffers; nothing is done there."""
    if store.dialect != "sqlite":
        return 0.0
    path = Path(store.url.removeprefix("sqlite:///"))
    t = time.perf_counter()
    for f in (path, Path(f"{path}-wal")):
        if f.is_file():
            with open(f, "rb", buffering=0) as fh:
                while fh.read(16 << 20):
                    pass
    return round(time.perf_counter() - t, 1)


def _clear_feature_cache() -> None:
    from pipeline import dedupe

    cache = getattr(dedupe, "_FEATURES", None)
    if cache is not None:
        cache.data.clear()


def _measure_dedupe(store, settings, wl, anchor, n_probes: int) -> dict:
    from pipeline import dedupe

    # Warm-up batch: the first call of a process loads the document-frequency sample.
    dedupe._DF_CACHE.clear() if hasattr(dedupe, "_DF_CACHE") else None
    warm = _insert_probes(store, _probe_articles(wl, anchor, 0, 10), "w")
    with Clock() as cold:
        dedupe.assign_pending(store, settings, article_ids=warm)
    ids = _insert_probes(store, _probe_articles(wl, anchor, 10, n_probes), "p")
    with PeakMemory() as mem, Clock() as c:
        rep = dedupe.assign_pending(store, settings, article_ids=ids)
    return {
        "articles": rep.assigned, "ms_per_article": round(1000 * c.wall / max(1, rep.assigned), 3),
        "cpu_ms_per_article": round(1000 * c.cpu / max(1, rep.assigned), 3),
        "duplicates": rep.duplicates, "stories_new": rep.stories_new,
        "first_batch_seconds": round(cold.wall, 3), **mem.as_dict(),
    }


def _guid_indexed(store) -> bool:
    from sqlalchemy import inspect

    return any(ix["column_names"][:1] == ["guid"] for ix in inspect(store.engine).get_indexes("articles"))


def _measure_dedupe_with_guid_index(store, settings, wl, m, n_probes: int) -> dict | None:
    """The same dedupe measurement with an index on ``articles.guid`` (absent from the schema when
    this runs): what the proposed index would change. The index is dropped again afterwards."""
    from bench import stores

    if _guid_indexed(store):
        return None
    name = "bench_what_if_ix_articles_guid"
    # Hash on PostgreSQL: GUIDs are unbounded text, and a B-tree entry is limited to ~2.7 kB.
    using = " USING hash" if store.dialect == "postgresql" else ""
    with store.engine.begin() as c:
        c.exec_driver_sql(f"CREATE INDEX {name} ON articles{using} (guid)")
    try:
        if store.dialect == "postgresql":
            with store.engine.begin() as c:
                c.exec_driver_sql("ANALYZE articles")
        out = _measure_dedupe(store, settings, wl, m.anchor_at, n_probes)
        out["index"] = f"CREATE INDEX ON articles{using} (guid)"
        return out
    finally:
        stores.reset(store, m)
        with store.engine.begin() as c:
            c.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")


def _measure_check(store, settings, wl, anchor, n: int, repeat: int) -> dict | None:
    """The write-free per-article check of bench.dedupe_scaling (features, lookups, scoring)."""
    try:
        from bench import dedupe_scaling
    except ImportError:
        return None
    check = getattr(dedupe_scaling, "_check", None)
    if check is None:
        return None
    per = []
    for a, at, _ in _probe_articles(wl, anchor, 10 + n, n):
        runs = []
        for _ in range(repeat):
            try:
                _, total, _, _ = check(store, settings, {"title": a.title, "text": a.text}, at)
            except Exception as exc:  # its internals follow the dedupe module; report, do not fail the run
                return {"error": f"{type(exc).__name__}: {exc}"}
            runs.append(total)
        per.append(statistics.median(runs))
    per.sort()
    return {"articles": len(per), "median_ms": round(1000 * statistics.median(per), 3),
            "p90_ms": round(1000 * per[int(0.9 * (len(per) - 1))], 3), "mean_ms": round(1000 * statistics.fmean(per), 3)}


def _measure_write(store, settings, wl, anchor, n: int) -> dict:
    """The extraction stage's write path (article, URL aliases, entry state) for n new pages."""
    from sqlalchemy import select

    from pipeline import extract
    from pipeline.store import Entry, Feed, utcnow
    from pipeline.types import ExtractedArticle, ExtractionStatus, ExtractReport

    probes = _probe_articles(wl, anchor, 0, n)
    now = utcnow()
    with store.session() as s:
        feed = Feed(name="bench writes", url=f"https://bench-writes.example/{time.monotonic_ns()}.xml",
                    site_url="", country="PK", tags=[], enabled=True, created_at=now, consecutive_failures=0, gone=False)
        s.add(feed)
        s.flush()
        rows = [{"feed_id": feed.id, "guid_key": f"w{i:08d}", "guid": f"{a.url}#w{i}", "link": f"{a.url}?w={i}",
                 "canonical_link": f"{a.url}?w={i}", "title": a.title, "summary": a.summary, "content": "",
                 "author": "", "published_at": at, "discovered_at": now, "status": "pending", "attempts": 0}
                for i, (a, at, _) in enumerate(probes)]
        s.execute(Entry.__table__.insert(), rows)
        entry_ids = list(s.scalars(select(Entry.id).where(Entry.feed_id == feed.id).order_by(Entry.id)))
        fid = feed.id
    outcomes = []
    for i, (eid, (a, at, _)) in enumerate(zip(entry_ids, probes)):
        link = f"{a.url}?w={i}"
        job = extract._Job(entry_ids=[eid], link=link, canonical=extract._canonical(link) or link, feed_id=fid,
                           outlet=a.outlet.name, country=a.outlet.country, guid=f"{a.url}#w{i}", title=a.title,
                           summary=a.summary, content="", author=a.author, published=at, attempts=0)
        art = ExtractedArticle(url=link, title=a.title, text=a.text, status=ExtractionStatus.OK, author=a.author,
                               site=a.outlet.slug, language="en", published=at, summary=a.summary)
        outcomes.append(extract._Outcome(job, art, now, link, [link]))
    batch = max(1, settings.ingest.batch_size)
    report = ExtractReport()
    with PeakMemory() as mem, Clock() as c:
        for i in range(0, len(outcomes), batch):
            extract._write(store, outcomes[i:i + batch], settings, report)
    return {"articles": report.extracted, "ms_per_article": round(1000 * c.wall / max(1, len(outcomes)), 3),
            "articles_per_second": rate(len(outcomes), c.wall), "batch": batch, **mem.as_dict()}


def _measure_classify_stage(store, settings) -> dict:
    from pipeline import classify

    with Clock() as c:
        rep = classify.classify_pending(store, settings)
    return {"articles": rep.classified, "seconds": round(c.wall, 3),
            "ms_per_article": round(1000 * c.wall / max(1, rep.classified), 3)}


def _measure_digest(store, settings, anchor) -> dict:
    from pipeline import digest

    now = anchor + timedelta(hours=2)
    with Clock() as c:
        plan = digest.build_digest(store, settings, since=now - timedelta(hours=24), until=now, now=now)
    return {"build_seconds": round(c.wall, 3), "stories": len(plan.items)}


def section_scaling(ctx: Ctx) -> None:
    from bench import stores
    from pipeline.classify import Classifier
    from pipeline.store import Store

    p = ctx.profile
    vocab = stores.key_vocab((a.title, a.text) for a in ctx.wl.articles)
    version = Classifier().version
    out: dict[str, Any] = {"keys_per_article": vocab.per_article, "runs": []}
    for backend in p["backends"]:
        if backend == "postgresql" and stores.pg_available():
            out.setdefault("skipped", {})[backend] = stores.pg_available()
            continue
        # Every size's store is opened first and the rounds then alternate between them: round i
        # of each size runs within the same minute, so outside load or a database checkpoint
        # lands on all sizes alike instead of on one size's whole measurement (the sizes are
        # compared with each other; measured minutes apart, they were also compared across
        # whatever the machine was doing meanwhile).
        opened: list[tuple[Any, Any, Any, dict[str, Any]]] = []  # (manifest, store, settings, run)
        try:
            for n in p["sizes"]:
                log(f"scaling {backend} {n:,}: store")
                with Clock() as bc:
                    m = stores.get_store(backend, n, vocab, bands=ctx.settings().dedupe.lsh_bands,
                                         classifier_version=version, cache=ctx.cache, log=log)
                store = Store(m.url)
                opened.append((m, store, ctx.settings(database_url=m.url), {
                    "backend": backend, "articles": n, "build_seconds": m.build_seconds,
                    "obtained_seconds": round(bc.wall, 1), "cached": bc.wall < m.build_seconds * 0.5,
                    "store_mb": round(m.bytes / 2**20), "rows": m.rows}))
                stores.reset(store, m, version)
            # Warmed after all are obtained: building one store would evict what was warmed before.
            for m, store, _, r in opened:
                r["os_cache_warm_seconds"] = _warm_os_cache(store)

            def rounds(measure) -> list[list[dict]]:
                # Best of `scaling_rounds` rounds per size, each from the same state (probes removed,
                # features cache emptied): the best is the one no checkpoint or burst of another
                # process disturbed. Every round's figure is kept.
                per: list[list[dict]] = [[] for _ in opened]
                for _ in range(p["scaling_rounds"]):
                    for j, (m, store, settings, _) in enumerate(opened):
                        stores.reset(store, m)
                        _clear_feature_cache()
                        per[j].append(measure(m, store, settings))
                return per

            log(f"scaling {backend}: dedupe, {p['scaling_rounds']} rounds alternating between the sizes")
            for (_, _, _, r), rs in zip(opened, rounds(
                    lambda m, store, settings: _measure_dedupe(store, settings, ctx.wl, m.anchor_at, p["probes"]))):
                r["dedupe"] = min(rs, key=lambda x: x["ms_per_article"])
                r["dedupe"]["rounds_ms_per_article"] = [x["ms_per_article"] for x in rs]
            for m, store, settings, r in opened:
                stores.reset(store, m)
                chk = _measure_check(store, settings, ctx.wl, m.anchor_at, min(p["probes"], 100), p["check_repeat"])
                if chk is not None:
                    r["dedupe_check"] = chk
                stores.reset(store, m)
                what_if = _measure_dedupe_with_guid_index(store, settings, ctx.wl, m, p["probes"])
                if what_if is not None:
                    r["dedupe_with_guid_index"] = what_if
            log(f"scaling {backend}: store writes and classification, {p['scaling_rounds']} rounds alternating")
            for (_, _, _, r), rs in zip(opened, rounds(
                    lambda m, store, settings: (_measure_write(store, settings, ctx.wl, m.anchor_at, p["writes"]),
                                                _measure_classify_stage(store, settings)))):
                writes, classified = [w for w, _ in rs], [c for _, c in rs]
                r["store_write"] = min(writes, key=lambda x: x["ms_per_article"])
                r["store_write"]["rounds_ms_per_article"] = [x["ms_per_article"] for x in writes]
                r["classify_stage"] = min(classified, key=lambda x: x["ms_per_article"])
                r["classify_stage"]["rounds_ms_per_article"] = [x["ms_per_article"] for x in classified]
            for m, store, settings, r in opened:
                r["digest"] = _measure_digest(store, settings, m.anchor_at)
                log(f"scaling {backend} {r['articles']:,}: dedupe {r['dedupe']['ms_per_article']} ms/article, "
                    f"write {r['store_write']['ms_per_article']} ms/article, "
                    f"classify stage {r['classify_stage']['ms_per_article']} ms/article")
                out["runs"].append(r)
        finally:
            for m, store, _, _ in opened:
                with contextlib.suppress(Exception):
                    stores.reset(store, m)
                store.dispose()
                if not ctx.cache:
                    stores.drop(m)
    # 10k → 1M (smallest → largest) cost ratios.
    ratios: dict[str, dict[str, float]] = {}
    for backend in p["backends"]:
        runs = sorted((r for r in out["runs"] if r["backend"] == backend), key=lambda r: r["articles"])
        if len(runs) >= 2:
            a, b = runs[0], runs[-1]
            rr = {
                "from": a["articles"], "to": b["articles"],
                "dedupe": round(b["dedupe"]["ms_per_article"] / a["dedupe"]["ms_per_article"], 2),
                # Round by round (round i of both sizes ran side by side): how much the ratio moves.
                "dedupe_rounds": [round(y / x, 2) for x, y in zip(a["dedupe"]["rounds_ms_per_article"],
                                                                   b["dedupe"]["rounds_ms_per_article"])],
                "store_write": round(b["store_write"]["ms_per_article"] / a["store_write"]["ms_per_article"], 2),
                "classify_stage": round(b["classify_stage"]["ms_per_article"] / max(1e-9, a["classify_stage"]["ms_per_article"]), 2),
                "digest": round(b["digest"]["build_seconds"] / max(1e-9, a["digest"]["build_seconds"]), 2),
            }
            if "dedupe_with_guid_index" in a and "dedupe_with_guid_index" in b:
                rr["dedupe_with_guid_index"] = round(b["dedupe_with_guid_index"]["ms_per_article"]
                                                     / a["dedupe_with_guid_index"]["ms_per_article"], 2)
            if "median_ms" in a.get("dedupe_check", {}) and "median_ms" in b.get("dedupe_check", {}):
                rr["dedupe_check"] = round(b["dedupe_check"]["median_ms"] / a["dedupe_check"]["median_ms"], 2)
            ratios[backend] = rr
    out["ratios"] = ratios
    ctx.results["scaling"] = out


def section_digest(ctx: Ctx) -> None:
    try:
        from bench import digest_build
    except ImportError:
        return
    from pipeline.store import Store

    p = ctx.profile
    runs = []
    store = Store(f"sqlite:///{ctx.tmp / 'digest.db'}")
    try:
        store.migrate()
        runs.append(digest_build.run(store, articles=p["digest_articles"], stories=p["digest_stories"],
                                     repeat=p["repeat"], home=ctx.tmp / "digest-home"))
    finally:
        store.dispose()
    ctx.results["digest"] = {"articles": p["digest_articles"], "stories": p["digest_stories"], "runs": runs,
                             "source": "bench.digest_build.run"}
    log(f"digest: build {runs[0]['build_seconds']}s, render {runs[0]['render_seconds']}s")


# ----------------------------------------------------------------------------- verdicts and output


def build_stores(profile: dict[str, Any]) -> int:
    """Build the cached scaling stores of a profile (what a full run would otherwise build first)."""
    from bench import stores
    from bench.workload import WorkloadSpec, generate
    from pipeline.classify import Classifier
    from pipeline.config import Settings

    wl = generate(WorkloadSpec(feeds=profile["feeds"], entries_per_feed=profile["entries_per_feed"]))
    vocab = stores.key_vocab((a.title, a.text) for a in wl.articles)
    version = Classifier().version
    bands = Settings().dedupe.lsh_bands
    for backend in profile["backends"]:
        if backend == "postgresql" and stores.pg_available():
            log(f"postgresql skipped: {stores.pg_available()}")
            continue
        for n in profile["sizes"]:
            with Clock() as c:
                m = stores.get_store(backend, n, vocab, bands=bands, classifier_version=version, log=log)
            log(f"{backend} {n:,}: ready in {c.wall:.0f}s (built in {m.build_seconds}s, {m.bytes / 2**20:,.0f} MB)")
    return 0


def verdicts(res: dict) -> dict:
    v: dict[str, Any] = {}
    for backend, e in res.get("e2e", {}).items():
        if "ratio_to_bare_extraction" in e:
            v[f"e2e_{backend}_ratio"] = {"value": e["ratio_to_bare_extraction"], "target": f">= {E2E_MIN_RATIO}",
                                         "ok": e["ratio_to_bare_extraction"] >= E2E_MIN_RATIO}
    for backend, r in res.get("scaling", {}).get("ratios", {}).items():
        for k in ("dedupe", "store_write"):
            v[f"scaling_{backend}_{k}"] = {"value": r[k], "target": f"<= {SCALING_MAX_RATIO}",
                                           "ok": r[k] <= SCALING_MAX_RATIO}
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small workload and stores: a smoke run of the harness")
    ap.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--sizes", help="store sizes for scaling, e.g. 10k,100k,1m")
    ap.add_argument("--backends", help="sqlite,postgresql")
    ap.add_argument("--feeds", type=int, help="workload feeds")
    ap.add_argument("--entries", type=int, help="entries per feed")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    ap.add_argument("--no-cache", action="store_true", help="build throwaway stores instead of the cached ones")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--clean", action="store_true", help="drop every cached store (files and databases) and exit")
    ap.add_argument("--build-only", action="store_true", help="build (or check) the cached scaling stores and exit")
    args = ap.parse_args(argv)

    if args.clean:
        from bench import stores

        stores.clean_all(log)
        return 0
    profile = dict(PROFILES["quick" if args.quick else "full"])
    if args.sizes:
        profile["sizes"] = [_size(s) for s in args.sizes.split(",")]
    if args.backends:
        profile["backends"] = profile["e2e_backends"] = [b.strip() for b in args.backends.split(",")]
    if args.feeds:
        profile["feeds"] = args.feeds
    if args.entries:
        profile["entries_per_feed"] = args.entries
    if args.build_only:
        return build_stores(profile)
    only = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")

    results: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cores": cpus(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "profile": profile,
        "errors": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="newsmon-bench-") as tmp:
        ctx = Ctx(profile, args.quick, args.out, not args.no_cache and not args.quick, results, tmp=Path(tmp))
        try:
            section_workload(ctx)  # every other section runs on it
            for name in SECTIONS[1:]:
                if name not in only:
                    continue
                t0 = time.perf_counter()
                try:
                    globals()[f"section_{name}"](ctx)
                except Exception as exc:
                    results["errors"][name] = f"{type(exc).__name__}: {exc}"
                    log(f"section {name} failed:\n{traceback.format_exc()}")
                results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        finally:
            if ctx.site is not None:
                ctx.site.stop()
    results["verdicts"] = verdicts(results)
    from bench import plot

    (args.out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "table.md").write_text(plot.table(results))
    if not args.no_plot:
        try:
            png = plot.scaling_png(results, args.out / "scaling.png")
            log(f"plot: {png}")
        except Exception as exc:
            results["errors"]["plot"] = f"{type(exc).__name__}: {exc}"
            log(f"plot failed: {exc}")
            (args.out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(plot.table(results))
    log(f"written: {args.out / 'bench.json'}, {args.out / 'table.md'}")
    return 1 if results["errors"] else 0


def _size(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1:], 1)
    return int(float(s.rstrip("km")) * mult)


if __name__ == "__main__":
    sys.exit(main())
