"""Large synthetic stores (10k … 1M articles) for the scaling measurements, built fast and cached.

A store of ``n`` background articles holds what ``n`` ingested articles leave behind:
articles (short texts), their stories, URL aliases, feed entries, classifications,
and the dedupe index rows in realistic numbers — ``dedupe.lsh_bands`` MinHash band
rows per article and ~40 story keys per article, drawn per kind (quotation, name,
figure, headline term) with the counts and Zipf-like frequencies of real feature
extraction, so common names ("India", "Washington") have long posting lists as they
do in production. Background articles arrive at a fixed rate (3,000 a day), so every
store has the same density inside the story window; only its length of history differs.

Build: the schema comes from the migrations (``Store.migrate``); secondary indexes
are dropped, rows are bulk-loaded (``executemany`` on SQLite, ``COPY`` on PostgreSQL
for the per-article tables; ``INSERT … SELECT`` inside the database for the index
tables), the indexes are rebuilt exactly as the migrations defined them, and
PostgreSQL is ANALYZEd (autovacuum would do it in production). Foreign-key checks
are off during the load only (SQLite ``foreign_keys=OFF``, PostgreSQL
``session_replication_role=replica``): the rows are consistent by construction.

Cache: SQLite files and a manifest under ``bench/.cache``; PostgreSQL databases named
``newsmon_bench_<size>_<fingerprint>`` stay on the server between runs (``python -m
bench.run --clean`` drops them). The fingerprint covers the schema revision and this
builder, so a schema change rebuilds. A measurement adds rows above the background
high-water marks; :func:`reset` removes them again before and after each use.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
PG_ADMIN_URL = os.environ.get("NEWSMON_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
BUILDER_VERSION = "3"
ARTICLES_PER_DAY = 3000
ZIPF_SLOTS = 1 << 20
# Tables whose rows a measurement may add; reset() trims them back to the manifest.
TRACKED = ("feeds", "stories", "articles", "article_urls", "entries", "ingest_runs", "digests", "alerts",
           "digest_stories")


@dataclass
class Manifest:
    backend: str
    size: int
    fingerprint: str
    url: str
    anchor: str  # ISO time of the newest background article
    high_water: dict[str, int]
    rows: dict[str, int]
    build_seconds: float
    bytes: int
    key_counts: dict[str, int]
    # Schema revision the rows were built at, and the one the store is at now (migrated in place).
    built_schema: str = "0001"
    schema: str = "0001"

    @property
    def anchor_at(self) -> datetime:
        return datetime.fromisoformat(self.anchor)


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def schema_head() -> str:
    from alembic.script import ScriptDirectory

    from pipeline.store import MIGRATIONS_DIR, alembic_config

    cfg = alembic_config("sqlite://")
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ",".join(sorted(ScriptDirectory.from_config(cfg).get_heads()))


def fingerprint(bands: int, key_counts: dict[str, int], schema: str | None = None) -> str:
    """The identity of a store's data: builder, band count, key counts and the schema it was built at."""
    blob = json.dumps([BUILDER_VERSION, schema or schema_head(), bands, sorted(key_counts.items())])
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------- vocabularies


@dataclass
class KeyVocab:
    """Hot keys (from real feature extraction of the workload) and per-kind counts per article."""

    hot: dict[int, list[int]]  # kind → keys, most frequent first
    per_article: dict[int, int]  # kind → keys stored per article


def key_vocab(texts: Iterable[tuple[str, str]]) -> KeyVocab:
    from pipeline import dedupe

    freq: dict[int, Counter] = {}
    per: Counter = Counter()
    n = 0
    for title, body in texts:
        n += 1
        for kind, key in dedupe.featurize(title, body).keys():
            freq.setdefault(kind, Counter())[key] += 1
            per[kind] += 1
    hot = {k: [key for key, _ in c.most_common()] for k, c in freq.items()}
    return KeyVocab(hot, {k: max(1, round(v / max(1, n))) for k, v in per.items()})


def _zipf_table(hot: list[int], vocab_size: int, rng: random.Random, slots: int) -> list[tuple[int, int]]:
    """``slots`` (slot, key) rows: the key of rank r fills slots in proportion to 1/r."""
    import numpy as np

    keys = list(dict.fromkeys(hot))[:vocab_size]
    seen = set(keys)
    while len(keys) < vocab_size:
        k = rng.getrandbits(64) - (1 << 63)
        if k not in seen:
            seen.add(k)
            keys.append(k)
    cdf = np.cumsum(1.0 / np.arange(1, vocab_size + 1))
    targets = (np.arange(slots) + 0.5) / slots * cdf[-1]
    ranks = np.minimum(np.searchsorted(cdf, targets), vocab_size - 1)
    return list(zip(range(slots), (keys[r] for r in ranks.tolist())))


VOCAB_SIZE = {2: 40_000, 3: 8_000, 4: 30_000}  # names, figures, headline terms
_WORDS = (
    "government minister officials talks meeting report city council market prices budget police court "
    "school hospital farmers trade energy water power election party leader visit project company shares "
    "bank rates inflation growth exports imports weather rain heat flood road railway airport port plan "
    "policy reform tax survey study health vaccine team match series win loss coach players festival film "
    "music book award museum students university research technology app start-up investors funding deal"
).split()


# ----------------------------------------------------------------------------- row generation

COLUMNS = {
    "feeds": ("id", "name", "url", "site_url", "country", "tags", "enabled", "created_at", "etag", "last_modified",
              "last_status", "last_outcome", "last_fetch_at", "last_success_at", "last_new_entry_at",
              "consecutive_failures", "next_fetch_at", "last_error", "last_bozo", "gone"),
    "stories": ("id", "lead_article_id", "title", "first_seen_at", "first_published_at", "updated_at",
                "article_count", "outlet_count", "score", "relevant", "dyads", "topics"),
    "articles": ("id", "canonical_url", "url", "feed_id", "guid", "title", "text", "summary", "author", "site",
                 "outlet", "country", "language", "published_at", "published_source", "fetched_at",
                 "extraction_status", "extraction_error", "content_hash", "word_count", "story_id",
                 "duplicate_of_id", "dedupe_reason", "similarity", "clustered_at", "classified_version"),
    "article_urls": ("id", "url", "article_id"),
    "entries": ("id", "feed_id", "guid_key", "guid", "link", "canonical_link", "title", "summary", "content",
                "author", "published_at", "discovered_at", "status", "attempts", "error", "article_id", "run_id"),
    "classifications": ("article_id", "version", "score", "relevant", "dyads", "topics", "evidence",
                        "classified_at"),
}


class _Fmt:
    """Values as each backend's bulk path takes them (SQLite parameters, PostgreSQL COPY text)."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"
        self.true, self.false = ("t", "f") if self.pg else (1, 0)
        self.null = "\\N" if self.pg else None

    def dt(self, d: datetime) -> str:
        # Naive UTC in SQLAlchemy's SQLite format; explicit +00 for timestamptz.
        s = d.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        return s + "+00" if self.pg else s

    def b(self, v: bool):
        return self.true if v else self.false

    def n(self, v):
        return self.null if v is None else v


def _rows(n: int, anchor: datetime, classifier_version: str, rng: random.Random, fmt: _Fmt):
    """Yield (table, rows as tuples in COLUMNS order): feeds, then blocks of stories and their articles."""
    dt, b, N = fmt.dt, fmt.b, fmt.n
    feeds = []
    for i in range(1, 201):
        feeds.append((
            i, f"Background outlet {i}", f"https://outlet{i}.example/feed.xml", f"https://outlet{i}.example/",
            rng.choice(["PK", "IN", "US", "GB", "QA"]), "[]", b(True), dt(anchor - timedelta(days=400)), N(None),
            N(None), 200, "ok", dt(anchor), dt(anchor), dt(anchor), 0, dt(anchor + timedelta(minutes=30)),
            N(None), N(None), b(False),
        ))
    yield "feeds", feeds
    span = timedelta(days=n / ARTICLES_PER_DAY)
    start = anchor - span
    step = span / n
    sentences = [" ".join(rng.choice(_WORDS) for _ in range(12)).capitalize() + "." for _ in range(4000)]
    minute = timedelta(minutes=1)
    article_id = story_id = entry_id = url_id = 0
    block = 25_000
    rand, choice, randint = rng.random, rng.choice, rng.randint
    null, empty = N(None), "[]"
    rel_json, topic_json = json.dumps(["US-PK"]), json.dumps(["diplomacy"])
    while article_id < n:
        stories, articles, urls, entries, classes = [], [], [], [], []
        end = min(n, article_id + block)
        while article_id < end:
            # Stories of 1–3 articles (mean ~1.5); outlets differ inside a story.
            size = min(end - article_id, choice((1, 1, 1, 2, 2, 3)))
            story_id += 1
            first = article_id + 1
            at0 = start + step * article_id
            relevant = rand() < 0.12
            best, any_rel, sites, last_at = 0.0, False, set(), at0
            title0 = ""
            for j in range(size):
                article_id += 1
                aid = article_id
                at = at0 + minute * (randint(0, 240) if j else 0)
                at_s, fetched_s, clustered_s = dt(at), dt(at + 7 * minute), dt(at + 9 * minute)
                feed = randint(1, 200)
                site = f"outlet{feed}.example"
                url = f"https://{site}/news/{at:%Y/%m/%d}/story-{aid}"
                text = " ".join([choice(sentences), choice(sentences), choice(sentences), choice(sentences),
                                 choice(sentences)])
                title = choice(sentences)[:80]
                title0 = title0 or title
                dup = first if (j and rand() < 0.3) else None
                articles.append((
                    aid, url, url, feed, url if rand() < 0.8 else f"tag:{site},2024:{aid}", title, text, text[:200],
                    "Staff reporter", site, f"Background outlet {feed}", "PK", "en", at_s, "feed", fetched_s, "ok",
                    null, hashlib.blake2b(str(aid).encode(), digest_size=32).hexdigest(), 60, story_id,
                    N(dup), "near-duplicate" if dup else ("story" if j else "new"),
                    0.9 if dup else (0.4 if j else 0.0), clustered_s, classifier_version,
                ))
                url_id += 1
                urls.append((url_id, url, aid))
                if rand() < 0.3:
                    url_id += 1
                    urls.append((url_id, url + "?utm_source=rss", aid))
                for k in range(2 if rand() < 0.1 else 1):
                    entry_id += 1
                    entries.append((
                        entry_id, feed if k == 0 else (feed % 200) + 1,
                        hashlib.blake2b(str(entry_id).encode(), digest_size=16).hexdigest(), url, url, url, title,
                        text[:200], "", "", at_s, fetched_s, "done", 1, null, aid, null,
                    ))
                score = round(rand() * (1.0 if relevant else 0.4), 4)
                is_rel = relevant and score > 0.5
                classes.append((aid, classifier_version, score, b(is_rel), rel_json if relevant else empty,
                                topic_json if relevant else empty, empty, clustered_s))
                best, any_rel, last_at = max(best, score), any_rel or is_rel, at
                sites.add(site)
            stories.append((
                story_id, first, title0, dt(at0 + 7 * minute), dt(at0), dt(last_at + 9 * minute), size, len(sites),
                best, b(any_rel), rel_json if relevant else empty, topic_json if relevant else empty,
            ))
        yield "stories", stories
        yield "articles", articles
        yield "article_urls", urls
        yield "entries", entries
        yield "classifications", classes


def _adapt(table: str, db_cols: list[str], model_table, fmt: _Fmt):
    """A function mapping generated tuples onto the table's actual columns (later migrations may add some)."""
    known = COLUMNS[table]
    if list(known) == db_cols:
        return lambda row: row
    pos = {c: i for i, c in enumerate(known)}
    plan = []
    for c in db_cols:
        if c in pos:
            plan.append((pos[c], None))
        else:
            col = model_table.c.get(c)
            default = getattr(getattr(col, "default", None), "arg", None) if col is not None else None
            if callable(default):
                default = None
            if isinstance(default, bool):
                default = fmt.b(default)
            elif isinstance(default, (list, dict)):
                default = json.dumps(default)
            plan.append((None, fmt.n(default)))
    return lambda row: tuple(row[i] if i is not None else d for i, d in plan)


def _index_ddl_sqlite(con: sqlite3.Connection) -> list[tuple[str, str]]:
    return list(con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL AND tbl_name NOT LIKE 'alembic%'"
    ))


def _build_sqlite(path: Path, n: int, vocab: KeyVocab, bands: int, anchor: datetime, version: str,
                  log) -> dict[str, int]:
    from pipeline.store import Base, Store

    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.dispose()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA foreign_keys=OFF")
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1000000")
    con.execute("PRAGMA temp_store=MEMORY")
    con.execute("PRAGMA threads=2")
    ddl = _index_ddl_sqlite(con)
    for name, _ in ddl:
        con.execute(f'DROP INDEX "{name}"')
    rng = random.Random(n)
    tables = Base.metadata.tables
    fmt = _Fmt("sqlite")
    adapters: dict[str, Any] = {}
    counts: Counter = Counter()
    con.execute("BEGIN")
    for table, rows in _rows(n, anchor, version, rng, fmt):
        cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
        adapt = adapters.setdefault(table, _adapt(table, cols, tables[table], fmt))
        sql = f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})'
        con.executemany(sql, map(adapt, rows))
        counts[table] += len(rows)
    con.execute("COMMIT")
    log(f"  sqlite {n:,}: article rows loaded")
    _index_rows(con, "sqlite", n, vocab, bands, rng)
    log(f"  sqlite {n:,}: index rows loaded")
    for name, sql in ddl:
        con.execute(sql)
    log(f"  sqlite {n:,}: indexes rebuilt")
    con.execute("PRAGMA journal_mode=WAL")
    for t in ("minhash_bands", "story_keys"):
        counts[t] = con.execute(f"SELECT max(id) FROM {t}").fetchone()[0] or 0
    con.close()
    return dict(counts)


def _zipf_slots(n: int) -> int:
    # Finer tables for large stores (rarer keys reachable); small ones need no million-row table.
    return ZIPF_SLOTS if n >= 100_000 else 1 << 16


def _zipf_rows(vocab: KeyVocab, rng: random.Random, slots: int) -> dict[int, list[tuple[int, int]]]:
    return {kind: _zipf_table(vocab.hot.get(kind, []), size, rng, slots) for kind, size in VOCAB_SIZE.items()}


def _index_rows(con, dialect: str, n: int, vocab: KeyVocab, bands: int, rng: random.Random) -> None:
    """MinHash band rows and story keys, generated inside the database."""
    q = con.cursor()
    slots = _zipf_slots(n)
    zipf = _zipf_rows(vocab, rng, slots)
    if dialect == "sqlite":
        q.execute("BEGIN")
        q.execute("CREATE TEMP TABLE seq(n INTEGER PRIMARY KEY)")
        q.executemany("INSERT INTO seq VALUES (?)", [(i,) for i in range(128)])
        for kind, rows in zipf.items():
            q.execute(f"CREATE TEMP TABLE zipf{kind}(slot INTEGER PRIMARY KEY, key INTEGER)")
            q.executemany(f"INSERT INTO zipf{kind} VALUES (?, ?)", rows)
        q.execute("COMMIT")
        q.execute("BEGIN")
        q.execute(
            "INSERT INTO minhash_bands(band, hash, article_id) SELECT s.n, random(), a.id "
            "FROM articles a CROSS JOIN seq s WHERE s.n < ?", (bands,)
        )
        q.execute("COMMIT")
        q.execute("BEGIN")
        quotes = vocab.per_article.get(1, 0)
        if quotes:
            q.execute(
                "INSERT INTO story_keys(key, kind, at, article_id, story_id) SELECT random(), 1, a.published_at, a.id,"
                " a.story_id FROM articles a CROSS JOIN seq s WHERE s.n < ?", (quotes,)
            )
        for kind in zipf:
            k = vocab.per_article.get(kind, 0)
            if k:
                q.execute(
                    f"INSERT INTO story_keys(key, kind, at, article_id, story_id) SELECT z.key, {kind}, a.published_at,"
                    f" a.id, a.story_id FROM articles a CROSS JOIN seq s CROSS JOIN zipf{kind} z"
                    f" WHERE s.n < ? AND z.slot = (abs(random()) % {slots})", (k,)
                )
        q.execute("COMMIT")
    else:
        for kind, rows in zipf.items():
            q.execute(f"CREATE TEMP TABLE zipf{kind}(slot integer PRIMARY KEY, key bigint)")
            buf = io.StringIO("".join(f"{s}\t{k}\n" for s, k in rows))
            q.copy_expert(f"COPY zipf{kind} FROM STDIN", buf)
        q.execute("SELECT setseed(0.42)")
        q.execute(
            "INSERT INTO minhash_bands(band, hash, article_id) SELECT s.n, "
            "(floor((random() - 0.5) * 1.8e19))::bigint, a.id "
            # LATERAL keeps articles the outer loop: rows arrive in (article_id, band) order,
            # which the unique index on those columns absorbs cheaply.
            "FROM articles a CROSS JOIN LATERAL generate_series(0, %s + 0 * a.id) s(n)", (bands - 1,)
        )
        quotes = vocab.per_article.get(1, 0)
        if quotes:
            q.execute(
                "INSERT INTO story_keys(key, kind, at, article_id, story_id) SELECT "
                "(floor((random() - 0.5) * 1.8e19))::bigint, 1, a.published_at, a.id, a.story_id "
                "FROM articles a CROSS JOIN generate_series(1, %s)", (quotes,)
            )
        for kind in zipf:
            k = vocab.per_article.get(kind, 0)
            if k:
                q.execute(
                    f"INSERT INTO story_keys(key, kind, at, article_id, story_id) SELECT z.key, {kind}, x.at, x.id, "
                    f"x.story_id FROM (SELECT a.id, a.published_at AS at, a.story_id, "
                    f"floor(random() * {slots})::int AS slot FROM articles a CROSS JOIN generate_series(1, %s)) x "
                    f"JOIN zipf{kind} z ON z.slot = x.slot", (k,)
                )


def _build_pg(url: str, n: int, vocab: KeyVocab, bands: int, anchor: datetime, version: str, log) -> dict[str, int]:
    import psycopg2
    from sqlalchemy.engine import make_url

    from pipeline.store import Base, Store

    store = Store(url)
    store.migrate()
    store.dispose()
    u = make_url(url)
    con = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database,
                           password=u.password)
    con.autocommit = False
    q = con.cursor()
    q.execute("SET session_replication_role = replica")  # no FK triggers during the load
    q.execute("SET maintenance_work_mem = '512MB'")
    q.execute("SET synchronous_commit = off")
    q.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' "
        "AND i.tablename <> 'alembic_version' AND i.indexname NOT IN (SELECT conname FROM pg_constraint)"
    )
    ddl = q.fetchall()
    for name, _ in ddl:
        q.execute(f'DROP INDEX "{name}"')
    rng = random.Random(n)
    tables = Base.metadata.tables
    fmt = _Fmt("postgresql")
    counts: Counter = Counter()
    cols_cache: dict[str, tuple[list[str], Any]] = {}
    for table, rows in _rows(n, anchor, version, rng, fmt):
        if table not in cols_cache:
            q.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema='public' AND table_name=%s "
                "ORDER BY ordinal_position", (table,)
            )
            db_cols = [r[0] for r in q.fetchall()]
            cols_cache[table] = (db_cols, _adapt(table, db_cols, tables[table], fmt))
        cols, adapt = cols_cache[table]
        # Generated values never contain tabs, newlines or backslashes: no COPY escaping needed.
        buf = io.StringIO()
        buf.writelines("\t".join(map(str, adapt(r))) + "\n" for r in rows)
        buf.seek(0)
        q.copy_expert(f'COPY "{table}" ({", ".join(cols)}) FROM STDIN', buf)
        counts[table] += len(rows)
    con.commit()
    log(f"  postgresql {n:,}: article rows loaded")
    _index_rows(con, "postgresql", n, vocab, bands, rng)
    con.commit()
    log(f"  postgresql {n:,}: index rows loaded")
    for name, sql in ddl:
        q.execute(sql)
    con.commit()
    log(f"  postgresql {n:,}: indexes rebuilt")
    # Sequences follow the explicit ids, as if the rows had been inserted one by one.
    q.execute(
        "SELECT c.table_name, c.column_name, pg_get_serial_sequence(quote_ident(c.table_name), c.column_name) "
        "FROM information_schema.columns c WHERE c.table_schema='public' AND c.column_default LIKE 'nextval%%'"
    )
    for table, col, seq in q.fetchall():
        if seq:
            q.execute(f'SELECT setval(%s, GREATEST(1, (SELECT COALESCE(max("{col}"), 0) FROM "{table}")))', (seq,))
    for t in ("minhash_bands", "story_keys"):
        q.execute(f"SELECT count(*) FROM {t}")
        counts[t] = q.fetchone()[0]
    con.commit()
    con.autocommit = True
    q.execute("ANALYZE")
    con.close()
    return dict(counts)


# ----------------------------------------------------------------------------- public API


def _pg_admin():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def pg_url_for(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def pg_available() -> str | None:
    import socket

    from sqlalchemy.engine import make_url

    u = make_url(PG_ADMIN_URL)
    try:
        with socket.create_connection((u.host or "127.0.0.1", u.port or 5432), timeout=1):
            return None
    except OSError as exc:
        return f"PostgreSQL not reachable at {u.host}:{u.port or 5432} ({exc})"


def _pg_databases(prefix: str) -> list[str]:
    from sqlalchemy import text

    eng = _pg_admin()
    try:
        with eng.connect() as c:
            return [r[0] for r in c.execute(text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                             {"p": prefix + "%"})]
    finally:
        eng.dispose()


def _pg_admin_execute(statement: str) -> None:
    """Run one statement on the admin connection (database DDL cannot be parameterised)."""
    from sqlalchemy import text

    eng = _pg_admin()
    try:
        with eng.connect() as c:
            c.execute(text(statement))
    finally:
        eng.dispose()


def _pg_drop(name: str) -> None:
    _pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_create(name: str) -> None:
    _pg_admin_execute(f'CREATE DATABASE "{name}"')


def _manifest_path(backend: str, n: int) -> Path:
    return CACHE / f"{backend}-{_label(n)}.json"


def _db_bytes(backend: str, url: str) -> int:
    if backend == "sqlite":
        p = Path(url.removeprefix("sqlite:///"))
        return sum(f.stat().st_size for f in p.parent.glob(p.name + "*"))
    from sqlalchemy import create_engine, text

    eng = create_engine(url)
    try:
        with eng.connect() as c:
            return int(c.execute(text("SELECT pg_database_size(current_database())")).scalar() or 0)
    finally:
        eng.dispose()


def get_store(backend: str, n: int, vocab: KeyVocab, *, bands: int, classifier_version: str,
              cache: bool = True, log=print) -> Manifest:
    """A store of ``n`` background articles on ``backend``: the cached one when its fingerprint
    matches, else a new build. With ``cache=False`` a throwaway store (the caller drops it)."""
    fp = fingerprint(bands, vocab.per_article)
    mpath = _manifest_path(backend, n)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    head = schema_head()
    if cache and mpath.is_file():
        m = Manifest(**json.loads(mpath.read_text()))
        if m.fingerprint == fingerprint(bands, vocab.per_article, m.built_schema) and _exists(m):
            if m.schema != head:
                # A newer schema: upgrade the cached store through the migrations, as a
                # production store would be, instead of building it again.
                log(f"  {backend} {n:,}: migrating the cached store {m.schema} → {head}")
                from pipeline.store import Store

                st = Store(m.url)
                try:
                    st.migrate()
                    if st.dialect == "postgresql":
                        with st.engine.begin() as c:
                            c.exec_driver_sql("ANALYZE")
                finally:
                    st.dispose()
                m.schema = head
                m.bytes = _db_bytes(backend, m.url)
                mpath.write_text(json.dumps(asdict(m), indent=2))
            return m
        drop(m)
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    if backend == "sqlite":
        name = f"sqlite-{_label(n)}-{fp}.db" if cache else f"sqlite-tmp-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{CACHE / name}"
    else:
        name = f"newsmon_bench_{_label(n)}_{fp}" if cache else f"newsmon_bench_tmp_{uuid.uuid4().hex[:8]}"
        url = pg_url_for(name)
    # The build runs in a process of its own: its row buffers must not inflate the memory
    # figures of the process that measures afterwards.
    import multiprocessing

    mp = multiprocessing.get_context("spawn")
    parent, child = mp.Pipe()
    proc = mp.Process(target=_build_main, args=(child, backend, url, n, vocab, bands, anchor, classifier_version),
                      name="bench-store-build")
    t0 = time.perf_counter()
    proc.start()
    child.close()
    try:
        while True:
            try:
                kind, value = parent.recv()
            except EOFError:
                raise RuntimeError(f"the store build died (exit code {proc.exitcode})") from None
            if kind == "log":
                log(value)
            elif kind == "error":
                raise RuntimeError(f"store build failed: {value}")
            else:
                counts = value
                break
    except BaseException:
        drop(Manifest(backend, n, fp, url, anchor.isoformat(), {}, {}, 0.0, 0, {}))
        raise
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    hw = _high_water(url)
    m = Manifest(backend, n, fp, url, anchor.isoformat(), hw, counts, round(time.perf_counter() - t0, 1),
                 _db_bytes(backend, url), {str(k): v for k, v in vocab.per_article.items()}, head, head)
    if cache:
        mpath.write_text(json.dumps(asdict(m), indent=2))
    return m


def _build_main(conn, backend: str, url: str, n: int, vocab: KeyVocab, bands: int, anchor: datetime,
                version: str) -> None:
    import traceback

    def log(msg: str) -> None:
        conn.send(("log", msg))

    try:
        if backend == "sqlite":
            path = Path(url.removeprefix("sqlite:///"))
            for p in path.parent.glob(path.name + "*"):
                p.unlink()
            counts = _build_sqlite(path, n, vocab, bands, anchor, version, log)
        else:
            name = url.rsplit("/", 1)[1]
            _pg_drop(name)
            _pg_create(name)
            counts = _build_pg(url, n, vocab, bands, anchor, version, log)
        conn.send(("done", counts))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def _exists(m: Manifest) -> bool:
    if m.backend == "sqlite":
        return Path(m.url.removeprefix("sqlite:///")).is_file()
    if pg_available():
        return False
    return m.url.rsplit("/", 1)[1] in _pg_databases(m.url.rsplit("/", 1)[1])


def drop(m: Manifest) -> None:
    if m.backend == "sqlite":
        p = Path(m.url.removeprefix("sqlite:///"))
        for f in p.parent.glob(p.name + "*"):
            f.unlink()
    elif not pg_available():
        _pg_drop(m.url.rsplit("/", 1)[1])


def _high_water(url: str) -> dict[str, int]:
    from sqlalchemy import text

    from pipeline.store import Store

    store = Store(url)
    try:
        with store.session() as s:
            return {t: int(s.execute(text(f"SELECT COALESCE(max(id), 0) FROM {t}")).scalar()) for t in TRACKED}
    finally:
        store.dispose()


def reset(store, m: Manifest, classifier_version: str | None = None) -> None:
    """Remove every row a measurement added (ids above the background high-water marks).

    Child rows are deleted explicitly and foreign-key checks are off meanwhile: with
    them on, every deleted article would scan ``articles.duplicate_of_id`` (unindexed).
    """
    h = m.high_water
    stmts = [
        ("DELETE FROM digest_stories WHERE id > %d", h.get("digest_stories", 0)),
        ("DELETE FROM alerts WHERE id > %d", h.get("alerts", 0)),
        ("DELETE FROM digests WHERE id > %d", h.get("digests", 0)),
        ("DELETE FROM entries WHERE id > %d", h["entries"]),
        ("UPDATE entries SET article_id = NULL WHERE article_id > %d", h["articles"]),
        ("DELETE FROM minhash_bands WHERE article_id > %d", h["articles"]),
        ("DELETE FROM story_keys WHERE article_id > %d", h["articles"]),
        ("DELETE FROM article_urls WHERE article_id > %d OR id > %d", (h["articles"], h["article_urls"])),
        ("DELETE FROM classifications WHERE article_id > %d", h["articles"]),
        ("DELETE FROM articles WHERE id > %d", h["articles"]),
        ("DELETE FROM stories WHERE id > %d", h["stories"]),
        ("DELETE FROM feeds WHERE id > %d", h["feeds"]),
        ("DELETE FROM ingest_runs WHERE id > %d", h["ingest_runs"]),
    ]
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        if store.dialect == "sqlite":
            cur.execute("PRAGMA foreign_keys=OFF")
            cur.execute("BEGIN IMMEDIATE")
        else:
            cur.execute("SET LOCAL session_replication_role = replica")
        for sql, args in stmts:
            cur.execute(sql % args)
        if classifier_version:
            # Background decisions count as current: a new classifier version must not make every
            # background article "pending" (that is a reclassification backfill, not an ingest).
            ph = "?" if store.dialect == "sqlite" else "%s"
            cur.execute(f"UPDATE classifications SET version = {ph} WHERE version <> {ph}",
                        (classifier_version, classifier_version))
            # The articles' mirror of those versions (the pending queue), as index ranges:
            # nothing to read when the background is already current.
            cur.execute(
                f"UPDATE articles SET classified_version = {ph} WHERE classified_version < {ph} "
                f"OR classified_version > {ph} OR (classified_version IS NULL AND EXISTS "
                f"(SELECT 1 FROM classifications c WHERE c.article_id = articles.id))",
                (classifier_version, classifier_version, classifier_version),
            )
        if store.dialect == "sqlite":
            cur.execute("COMMIT")
            cur.execute("PRAGMA foreign_keys=ON")
        else:
            raw.commit()
        cur.close()
    finally:
        raw.close()


def clean_all(log=print) -> None:
    """Drop every cached store (SQLite files, PostgreSQL databases)."""
    if CACHE.is_dir():
        for p in CACHE.glob("*.json"):
            try:
                drop(Manifest(**json.loads(p.read_text())))
            except Exception as exc:  # a broken manifest: the files below still go
                log(f"could not drop {p.name}: {exc}")
            p.unlink()
        for p in CACHE.glob("sqlite-*"):
            p.unlink()
    if not pg_available():
        for name in _pg_databases("newsmon_bench_"):
            _pg_drop(name)
            log(f"dropped database {name}")


__all__ = ["KeyVocab", "Manifest", "clean_all", "drop", "get_store", "key_vocab", "pg_available", "reset"]
