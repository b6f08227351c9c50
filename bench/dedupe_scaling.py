"""Cost of deduplicating one new article against a store of 10k, 100k and 1M articles.

For each size a throwaway store is built (:func:`build_store`): the real schema
(migrations), then, bulk-loaded inside the database, ``n`` background articles
arriving at 3,000 a day (short texts, stories of two), ``lsh_bands`` MinHash band
rows per article and story keys per article in the numbers and Zipf-like
frequencies that real feature extraction gives on other articles of the domain
(``eval/data/classification/dev.jsonl``), so common names ("Pakistan") have long
posting lists and the probes' rare names do not. Indexes are rebuilt as the
migrations define them. Only what a dedupe check reads is generated (no feed
entries or classifications).

Into the store go real articles: the labelled clustering set
(``eval/data/clustering``), minus one "probe" article per story, assigned
through the real :func:`pipeline.dedupe.assign_pending`. Then each probe is
checked the way ``assign_pending`` checks a new article — features, MinHash
bands, exact-hash lookup, band and story-key candidate queries, candidate
scoring — without writing, and timed:

* ``warm``: features of stored candidates already in the worker's cache (a
  running worker computed them when it stored those articles);
* ``cold``: that cache emptied before every probe, so every candidate's text is
  read and featurised again (the first article of a fresh process).

Each probe is timed ``--repeat`` times (median); the report gives wall and CPU
medians and the 90th percentile over probes, the candidate-query share, whether
each probe landed in its labelled story, peak Python memory during the checks
(tracemalloc, separate pass) and the process's peak RSS. Target: ≤ 2 ms per
article at 1M and ≤ 1.5× the 10k cost.

Run: ``python -m bench.dedupe_scaling [--sizes 10000 100000 1000000] [--backends sqlite postgresql]``.
Writes ``bench/results/dedupe_scaling.json``; stores live under ``bench/.cache``
(SQLite) or as ``newsmon_dedupe_bench_*`` databases and are dropped afterwards.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench import stores

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "dedupe_scaling.json"
CACHE = ROOT / "bench" / ".cache"
PG_ADMIN_URL = os.environ.get("NEWSMON_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
LABELLED = ROOT / "eval" / "data" / "clustering" / "articles.jsonl"
# Key frequencies of the background come from other articles of the same domain, so
# common names ("Pakistan") are hot in it and the probes' own rare names are not.
VOCAB_SOURCE = ROOT / "eval" / "data" / "classification" / "dev.jsonl"


# ----------------------------------------------------------------------------- store building

ARTICLES_PER_DAY = 3000
ZIPF_SLOTS = 1 << 18
TAIL_VOCAB = {2: 60_000, 3: 10_000, 4: 30_000}  # names, figures, headline terms beyond the hot ones
_WORDS = (
    "government minister officials talks meeting report city council market prices budget police court school "
    "hospital farmers trade energy water power election party leader visit project company shares bank rates "
    "inflation growth exports imports weather rain flood road railway airport port plan policy reform tax survey"
).split()


def key_vocabulary(texts) -> tuple[dict[int, list[int]], dict[int, int]]:
    """Hot keys per kind (most frequent first) and keys stored per article, from real feature extraction."""
    from collections import Counter

    from pipeline import dedupe

    freq: dict[int, Counter] = defaultdict(Counter)
    per: Counter = Counter()
    n = 0
    for title, body in texts:
        n += 1
        for kind, key in dedupe.featurize(title, body).keys():
            freq[kind][key] += 1
            per[kind] += 1
    hot = {k: [key for key, _ in c.most_common()] for k, c in freq.items()}
    return hot, {k: max(1, round(v / max(1, n))) for k, v in per.items()}


def _zipf_slots(hot: list[int], vocab: int, rng) -> list[int]:
    """ZIPF_SLOTS keys; the key of rank r fills slots in proportion to 1/r (hot keys first)."""
    import numpy as np

    keys = list(hot[:vocab])
    keys += [int(x) for x in rng.integers(-(2**63), 2**63 - 1, size=vocab - len(keys), dtype=np.int64)]
    w = 1.0 / np.arange(1, vocab + 1)
    cdf = np.cumsum(w) / w.sum()
    ranks = np.searchsorted(cdf, (np.arange(ZIPF_SLOTS) + 0.5) / ZIPF_SLOTS)
    return [keys[min(int(r), vocab - 1)] for r in ranks]


def _exec(con, sql: str, params=()) -> None:
    """Run one statement; ``§`` marks a parameter (qmark for sqlite3, format style for psycopg2)."""
    cur = con.cursor()
    if type(con).__module__.startswith("sqlite3"):
        sql = sql.replace("§", "?")
    else:
        sql = sql.replace("%", "%%").replace("§", "%s")
    cur.execute(sql, params) if params else cur.execute(sql.replace("%%", "%"))
    cur.close()


def build_store(backend: str, n: int, hot, per_article, bands: int, log) -> tuple[str, datetime, float]:
    """A store of ``n`` background articles; returns its URL, the newest article's time and build seconds."""
    import uuid

    import numpy as np

    from pipeline.store import Store

    t0 = time.perf_counter()
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    start = anchor - timedelta(days=n / ARTICLES_PER_DAY)
    step = 86400.0 / ARTICLES_PER_DAY
    tag = f"{n}_{uuid.uuid4().hex[:6]}"
    if backend == "sqlite":
        CACHE.mkdir(parents=True, exist_ok=True)
        path = CACHE / f"dedupe-bench-{tag}.db"
        url = f"sqlite:///{path}"
    else:
        url = _pg_create(f"newsmon_dedupe_bench_{tag}")
    store = Store(url)
    store.migrate()
    store.dispose()
    rng = np.random.default_rng(n)
    zipf = {kind: _zipf_slots(hot.get(kind, []), size, rng) for kind, size in TAIL_VOCAB.items()}
    sentences = [" ".join(rng.choice(_WORDS, 12)).capitalize() + "." for _ in range(400)]
    con = _raw_connect(backend, url)
    sqlite = backend == "sqlite"
    if sqlite:
        for pragma in (
            "foreign_keys=OFF",
            "journal_mode=OFF",
            "synchronous=OFF",
            "cache_size=-400000",
            "temp_store=MEMORY",
        ):
            _exec(con, f"PRAGMA {pragma}")
        idx = [
            (r[0], r[1])
            for r in con.execute(
                "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL "
                "AND tbl_name IN ('articles', 'stories', 'minhash_bands', 'story_keys')"
            )
        ]
    else:
        _exec(con, "SET session_replication_role = replica")
        _exec(con, "SET maintenance_work_mem = '512MB'")
        cur = con.cursor()
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
            "('articles', 'stories', 'minhash_bands', 'story_keys') AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint)"
        )
        idx = cur.fetchall()
        cur.close()
    for name, _ in idx:
        _exec(con, f'DROP INDEX "{name}"')
    # Helper tables: a number sequence, sentences, Zipf slots per kind.
    cur = con.cursor()
    if sqlite:
        _exec(con, "CREATE TEMP TABLE seq(i INTEGER PRIMARY KEY)")
        cur.executemany("INSERT INTO seq VALUES (?)", [(i,) for i in range(1, n + 1)])
        fill = lambda table, rows: cur.executemany(f"INSERT INTO {table} VALUES (?, ?)", rows)  # noqa: E731
    else:
        from psycopg2.extras import execute_values

        _exec(con, f"CREATE TEMP TABLE seq AS SELECT generate_series(1, {n})::bigint AS i")
        _exec(con, "ALTER TABLE seq ADD PRIMARY KEY (i)")
        fill = lambda table, rows: execute_values(cur, f"INSERT INTO {table} VALUES %s", rows, page_size=10_000)  # noqa: E731
    _exec(con, "CREATE TEMP TABLE sent(i INTEGER PRIMARY KEY, s TEXT)")
    fill("sent", list(enumerate(sentences)))
    for kind, slots in zipf.items():
        _exec(con, f"CREATE TEMP TABLE zipf{kind}(slot INTEGER PRIMARY KEY, key BIGINT)")
        fill(f"zipf{kind}", list(enumerate(slots)))
    cur.close()
    if sqlite:
        at = f"strftime('%Y-%m-%d %H:%M:%f000', §, '+' || CAST(s.i * {step} AS INTEGER) || ' seconds')"
        rnd = "random()"
        slot = f"(abs(random()) % {ZIPF_SLOTS})"
        start_param = start.replace(tzinfo=None).isoformat(" ")
        true = "1"
    else:
        at = f"(§::timestamptz + make_interval(secs => s.i * {step}))"
        rnd = "(floor((random() - 0.5) * 1.8e19))::bigint"
        slot = f"floor(random() * {ZIPF_SLOTS})::int"
        start_param = start
        true = "true"
    _exec(con, "BEGIN") if sqlite else None
    # Stories of two articles; the first is the lead.
    _exec(
        con,
        (
            "INSERT INTO stories(id, lead_article_id, title, first_seen_at, first_published_at, updated_at, "
            "article_count, outlet_count, score, relevant, dyads, topics) "
            f"SELECT (s.i + 1) / 2, s.i, 'Background story ' || s.i, {at}, {at}, {at}, 2, 2, 0.1, {true}, '[]', '[]' "
            "FROM seq s WHERE s.i % 2 = 1"
        ),
        (start_param,) * 3,
    )
    _exec(
        con,
        (
            "INSERT INTO articles(id, canonical_url, url, guid, title, text, summary, author, site, outlet, country, "
            "language, published_at, published_source, fetched_at, extraction_status, content_hash, word_count, "
            "story_id, duplicate_of_id, dedupe_reason, similarity, clustered_at) "
            "SELECT s.i, 'https://bg.example/a/' || s.i, 'https://bg.example/a/' || s.i, '', a.s, "
            "a.s || ' ' || b.s || ' ' || c.s || ' ' || d.s, '', '', 'bg.example', 'Background', 'PK', 'en', "
            f"{at}, 'feed', {at}, 'ok', 'bg' || s.i, 48, (s.i + 1) / 2, NULL, 'new', 0, {at} "
            "FROM seq s JOIN sent a ON a.i = s.i % 400 JOIN sent b ON b.i = (s.i * 7) % 400 "
            "JOIN sent c ON c.i = (s.i * 13) % 400 JOIN sent d ON d.i = (s.i * 31) % 400"
        ),
        (start_param,) * 3,
    )
    _exec(con, "COMMIT") if sqlite else con.commit()
    log(f"  {backend} {n:,}: articles loaded ({time.perf_counter() - t0:.0f}s)")
    _exec(con, "BEGIN") if sqlite else None
    _exec(
        con,
        (
            f"INSERT INTO minhash_bands(band, hash, article_id) SELECT b.i - 1, {rnd}, s.i "
            f"FROM seq s CROSS JOIN seq b WHERE b.i <= {bands} ORDER BY s.i, b.i"
        ),
    )
    # Quotation keys are unique to their article; names, figures and headline terms are Zipf-drawn.
    for kind, count in sorted(per_article.items()):
        src = "" if kind == 1 else f" JOIN zipf{kind} z ON z.slot = x.slot"
        key = rnd if kind == 1 else "z.key"
        _exec(
            con,
            (
                f"INSERT INTO story_keys(key, kind, at, article_id, story_id) SELECT {key}, {kind}, x.at, x.i, x.story "
                f"FROM (SELECT s.i, {at} AS at, (s.i + 1) / 2 AS story, {slot} AS slot "
                f"FROM seq s CROSS JOIN seq k WHERE k.i <= {count}) x{src}"
            ),
            (start_param,),
        )
    _exec(con, "COMMIT") if sqlite else con.commit()
    log(f"  {backend} {n:,}: band and key rows loaded ({time.perf_counter() - t0:.0f}s)")
    for _, ddl in idx:
        _exec(con, ddl)
    if not sqlite:
        for table in ("stories", "articles", "minhash_bands", "story_keys"):
            _exec(con, f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        con.commit()
        con.autocommit = True
        _exec(con, "ANALYZE")
    else:
        _exec(con, "PRAGMA journal_mode=WAL")
        _exec(con, "ANALYZE")
    con.close()
    seconds = time.perf_counter() - t0
    log(f"  {backend} {n:,}: indexes built ({seconds:.0f}s)")
    return url, anchor, seconds


def _raw_connect(backend: str, url: str):
    if backend == "sqlite":
        import sqlite3

        return sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(url)
    con = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname=u.database)
    con.autocommit = False
    return con


def _pg_admin():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def _pg_create(name: str) -> str:
    from sqlalchemy import text

    eng = _pg_admin()
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_store(url: str) -> None:
    if url.startswith("sqlite"):
        p = Path(url.removeprefix("sqlite:///"))
        for f in p.parent.glob(p.name + "*"):
            f.unlink()
        return
    from sqlalchemy import text

    eng = _pg_admin()
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    eng.dispose()


def store_bytes(url: str) -> int:
    if url.startswith("sqlite"):
        p = Path(url.removeprefix("sqlite:///"))
        return sum(f.stat().st_size for f in p.parent.glob(p.name + "*"))
    from sqlalchemy import create_engine, text

    eng = create_engine(url)
    with eng.connect() as c:
        size = int(c.execute(text("SELECT pg_database_size(current_database())")).scalar() or 0)
    eng.dispose()
    return size


def _load_labelled():
    from pipeline import text as T

    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        r["published"] = datetime.fromisoformat(r["published"].replace("Z", "+00:00"))
        r["text"] = T.clean_text(r["text"])
    by_story = defaultdict(list)
    for r in rows:
        by_story[r["story"]].append(r)
    planted, probes = [], []
    for members in by_story.values():
        members.sort(key=lambda r: r["published"])
        if len(members) > 1:
            probes.append(members[-1])
            planted.extend(members[:-1])
        else:
            planted.extend(members)
    return rows, planted, probes


def _shifted(rows, anchor: datetime) -> dict[str, datetime]:
    """Every labelled story moved to end just before the store's newest article, keeping its inner timing."""
    first = defaultdict(lambda: datetime.max.replace(tzinfo=timezone.utc))
    for r in rows:
        first[r["story"]] = min(first[r["story"]], r["published"])
    stories = sorted(first)
    out = {}
    for r in rows:
        # Stories 30 minutes apart, all inside the last day.
        base = anchor - timedelta(hours=20) + timedelta(minutes=30 * stories.index(r["story"]))
        out[r["id"]] = base + (r["published"] - first[r["story"]])
    return out


def _plant(store, settings, planted, times) -> dict[str, int]:
    from pipeline import dedupe
    from pipeline.store import Article

    ids = {}
    with store.session() as s:
        for r in planted:
            url = f"https://planted.example/{r['id']}"
            a = Article(
                canonical_url=url,
                url=url,
                title=r["title"],
                text=r["text"],
                outlet=r["outlet"],
                site=r["outlet"].lower(),
                published_at=times[r["id"]],
                fetched_at=times[r["id"]] + timedelta(minutes=5),
                word_count=len(r["text"].split()),
            )
            s.add(a)
            s.flush()
            ids[r["id"]] = a.id
    dedupe.assign_pending(store, settings, article_ids=list(ids.values()))
    return ids


def _check(store, settings, probe, at):
    """Everything assign_pending does to decide where one article goes, without writing."""
    from pipeline import dedupe

    cfg = settings.dedupe
    clock = time.perf_counter
    with store.session() as s:
        index = dedupe._StoreIndex(s, cfg)
        df = dedupe._df_table(s, store.url, cfg)
        c0, t0 = time.process_time(), clock()
        f = dedupe.featurize(probe["title"], probe["text"], cfg.shingle_size)
        bands = dedupe.band_hashes(f.shingles, cfg.num_perm, cfg.lsh_bands)
        d = dedupe.decide(f, at, index, df, cfg, bands)
        t1, c1 = clock(), time.process_time()
        # The candidate queries on their own (SQL share).
        lo, hi = dedupe._window(at, cfg.story_window_hours)
        index.lookup(f.content_hash, bands, f.lookup_keys(df), lo, hi, cfg.max_key_postings)
        t2 = clock()
    return d, t1 - t0, t2 - t1, c1 - c0


def _measure(store, settings, probes, times, planted_ids, label_of, repeat: int):
    from pipeline import dedupe

    story_of_label = {}
    with store.session() as s:
        from sqlalchemy import select

        from pipeline.store import Article

        for rid, aid in planted_ids.items():
            story_of_label.setdefault(label_of[rid], s.scalar(select(Article.story_id).where(Article.id == aid)))
    out = {}
    for mode in ("cold", "warm"):
        per_probe, sql, cpu, correct = [], [], [], 0
        for p in probes:
            runs = []
            for _ in range(repeat):
                if mode == "cold":
                    dedupe._FEATURES.data.clear()
                d, total, q, c = _check(store, settings, p, times[p["id"]])
                runs.append((total, q, c))
            per_probe.append(statistics.median(r[0] for r in runs))
            sql.append(statistics.median(r[1] for r in runs))
            cpu.append(statistics.median(r[2] for r in runs))
            correct += d.story is not None and d.story == story_of_label.get(p["story"])
        per_probe.sort()
        out[mode] = {
            "median_ms": round(statistics.median(per_probe) * 1e3, 3),
            "p90_ms": round(per_probe[int(0.9 * (len(per_probe) - 1))] * 1e3, 3),
            "mean_ms": round(statistics.fmean(per_probe) * 1e3, 3),
            # CPU time of this process (SQLite runs in it; PostgreSQL's server time is not included).
            "cpu_median_ms": round(statistics.median(cpu) * 1e3, 3),
            "candidate_queries_median_ms": round(statistics.median(sql) * 1e3, 3),
            "probes_in_their_story": f"{correct}/{len(probes)}",
        }
    # Peak Python memory of the checks (tracemalloc slows code down: a separate, untimed pass).
    dedupe._FEATURES.data.clear()
    gc.collect()
    tracemalloc.start()
    for p in probes:
        _check(store, settings, p, times[p["id"]])
    out["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 2)
    tracemalloc.stop()
    return out


def run(sizes: list[int], backends: list[str], repeat: int, log=print) -> dict:
    from pipeline import dedupe
    from pipeline.config import Settings
    from pipeline.store import Store

    rows, planted, probes = _load_labelled()
    label_of = {r["id"]: r["story"] for r in rows}
    vocab_rows = rows
    if VOCAB_SOURCE.is_file():
        vocab_rows = [json.loads(x) for x in VOCAB_SOURCE.read_text(encoding="utf-8").splitlines() if x.strip()]
    hot, per_article = key_vocabulary((r.get("title") or "", r.get("text") or "") for r in vocab_rows)
    settings = Settings()
    results: dict = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": _cpus(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "settings": settings.dedupe.model_dump(),
        "probes": len(probes),
        "planted_articles": len(planted),
        "keys_per_article": per_article,
        "articles_per_day": ARTICLES_PER_DAY,
        "vocabulary_source": str((VOCAB_SOURCE if VOCAB_SOURCE.is_file() else LABELLED).relative_to(ROOT)),
        "repeat": repeat,
        "runs": [],
    }
    for backend in backends:
        if backend == "postgresql" and stores.pg_available():
            log(f"postgresql skipped: {stores.pg_available()}")
            continue
        for n in sizes:
            log(f"{backend} {n:,}: building")
            url, anchor, build_seconds = build_store(backend, n, hot, per_article, settings.dedupe.lsh_bands, log)
            store = Store(url)
            try:
                dedupe._DF_CACHE.clear()
                dedupe._FEATURES.data.clear()
                times = _shifted(rows, anchor)
                planted_ids = _plant(store, settings, planted, times)
                log(f"{backend} {n:,}: measuring")
                r = _measure(store, settings, probes, times, planted_ids, label_of, repeat)
                with store.session() as s:
                    counts = {
                        t: s.connection().exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()
                        for t in ("articles", "minhash_bands", "story_keys")
                    }
                r.update(
                    backend=backend,
                    articles=n,
                    build_seconds=round(build_seconds, 1),
                    store_bytes=store_bytes(url),
                    rows=counts,
                    load_average=list(os.getloadavg()),
                )
                results["runs"].append(r)
                log(f"  {json.dumps(r)}")
            finally:
                store.dispose()
                drop_store(url)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for backend in backends:
        runs = {r["articles"]: r for r in results["runs"] if r["backend"] == backend}
        if min(sizes) in runs and max(sizes) in runs and min(sizes) != max(sizes):
            small, big = runs[min(sizes)], runs[max(sizes)]
            results.setdefault("ratio_largest_to_smallest", {})[backend] = {
                f"{mode}_{m}": round(big[mode][m] / small[mode][m], 3)
                for mode in ("warm", "cold")
                for m in ("median_ms", "cpu_median_ms")
            }
    return results


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    res = run(sorted(args.sizes), args.backends, args.repeat, log=lambda m: print(m, file=sys.stderr, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(
        json.dumps(
            {
                "runs": [
                    {k: r[k] for k in ("backend", "articles", "build_seconds", "warm", "cold")} for r in res["runs"]
                ],
                "ratio_largest_to_smallest": res.get("ratio_largest_to_smallest"),
                "peak_rss_mb": res["peak_rss_mb"],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
