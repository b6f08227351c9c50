"""Helpers for the reliability and security tests (hostile inputs, faults, concurrency).

* builders for feeds and article pages written for these tests (our own words);
* :func:`check_store`: the invariants a store must keep whatever happened to it;
* :class:`PrivatePostgres`: a throw-away PostgreSQL cluster that a test may stop and
  start (the shared server on 5432 is never touched);
* :func:`record`: measured figures, appended as JSON lines to the file named by
  ``NEWSMON_RELIABILITY_FIGURES`` when it is set (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from html import escape
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = Path(__file__).resolve().parent / "fixtures" / "hostile"


# ---------------------------------------------------------------- figures


def record(case: str, **figures: object) -> None:
    """Keep the figures a test measured (only when NEWSMON_RELIABILITY_FIGURES names a file)."""
    path = os.environ.get("NEWSMON_RELIABILITY_FIGURES")
    if not path:
        return
    line = json.dumps({"case": case, **figures}, default=str, sort_keys=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


# ---------------------------------------------------------------- feeds and pages

_CAPITALS = [("Washington", "US"), ("Islamabad", "PK"), ("New Delhi", "IN")]
_SUBJECTS = [
    "a framework for counter-terrorism cooperation", "tariff relief on textile exports", "visa processing for students",
    "a civil nuclear liability dispute", "joint naval exercises in the Arabian Sea", "water sharing on the Indus",
    "a trade corridor through the Wagah crossing", "drone sales and maintenance contracts",
    "climate finance for flood reconstruction", "sanctions on a militant financing network",
    "semiconductor supply chain investment", "a prisoner exchange across the Line of Control",
    "satellite launch cooperation", "wheat and lentil import quotas", "a cyber security working group",
    "cross-border electricity trade", "a bilateral investment treaty", "cricket diplomacy ahead of a series",
    "pilgrim visas for the Kartarpur corridor", "an airline route between Lahore and Amritsar",
]


_SYLLABLES = "ka ri mo ta ne lu sa vi do pe ra zu gha lo mi te bu sha no ya fe qi da hu ze ko".split()
_GLUE = "the of and in to said that with for on was as by from at which their after before".split()


def article_text(n: int) -> tuple[str, list[str]]:
    """A distinct news-like article (headline, paragraphs) about the region, numbered ``n``.

    Each article has a vocabulary of its own (invented words, seeded by ``n``) in
    sentences with ordinary English glue, so two articles share almost nothing: only
    copies made on purpose are duplicates or the same story.
    """
    rng = random.Random(n)
    (c1, _), (c2, _) = rng.sample(_CAPITALS, 2)
    subject = _SUBJECTS[n % len(_SUBJECTS)]
    vocab = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(40)]

    def sentence(k: int) -> str:
        words = [rng.choice(vocab) if i % 3 else rng.choice(_GLUE) for i in range(k)]
        words[0] = rng.choice(vocab)
        return words[0].capitalize() + " " + " ".join(words[1:]) + "."

    title = f"{' '.join(rng.sample(vocab, 4)).capitalize()} in {c1}, says {c2} (no. {n})"
    paras = [f"{c1.upper()}: " + " ".join(sentence(rng.randint(9, 15)) for _ in range(2))
             + f" The {subject} file was raised."]
    paras += [" ".join(sentence(rng.randint(9, 16)) for _ in range(3)) for _ in range(4)]
    return title, paras


def article_page(title: str, paragraphs: Iterable[str], *, outlet: str = "Frontier Ledger") -> bytes:
    """A news page with the usual furniture around the article."""
    body = "\n".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} | {escape(outlet)}</title>
<meta name="description" content="{escape(title)}"></head>
<body><header><nav><a href="/">Home</a> <a href="/world">World</a> <a href="/business">Business</a>
<a href="/subscribe">Subscribe</a></nav></header>
<main><article><h1>{escape(title)}</h1><p class="byline">By Staff Reporter</p>
{body}
</article>
<aside><h2>Most read</h2><ul><li><a href="/x">Markets close higher</a></li><li><a href="/y">Rain expected</a></li></ul></aside>
</main><footer><p>Copyright {escape(outlet)}. All rights reserved.</p></footer></body></html>""".encode()


def rss_item(
    link: str,
    *,
    title: str = "",
    guid: str | None = None,
    published: datetime | None = None,
    description: str = "",
    raw: str = "",
) -> str:
    parts = [f"<title>{xml_escape(title)}</title>" if title else "", f"<link>{xml_escape(link)}</link>" if link else ""]
    if guid is not None:
        parts.append(f'<guid isPermaLink="false">{xml_escape(guid)}</guid>')
    if published is not None:
        parts.append(f"<pubDate>{format_datetime(published, usegmt=True)}</pubDate>")
    if description:
        parts.append(f"<description>{xml_escape(description)}</description>")
    return "<item>" + "".join(parts) + raw + "</item>"


def rss(items: Iterable[str], *, title: str = "Test feed", prolog: str = '<?xml version="1.0" encoding="utf-8"?>') -> str:
    return (f'{prolog}\n<rss version="2.0"><channel><title>{xml_escape(title)}</title>'
            f"<link>http://127.0.0.1/</link><description>d</description>{''.join(items)}</channel></rss>")


def good_feed(base: str, prefix: str, count: int, *, start: int = 0, now: datetime | None = None) -> str:
    """An RSS feed of ``count`` articles served at ``base + /{prefix}/{n}``, newest first."""
    now = now or datetime.now(timezone.utc)
    items = []
    for n in range(start, start + count):
        title, paras = article_text(n)
        items.append(rss_item(f"{base}/{prefix}/{n}", title=title, guid=f"{prefix}-{n}",
                              published=now - timedelta(minutes=5 * n), description=paras[0]))
    return rss(items, title=f"Feed {prefix}")


# ---------------------------------------------------------------- store invariants


def check_store(store, *, clustered: bool = True, classified: bool = False) -> dict[str, int]:
    """Assert what must hold in any store after any failure; returns the counts checked.

    Nothing stored twice (articles by canonical URL, URL aliases, entries by feed and
    GUID, digests by period, digest lines by story); every entry marked done points to
    an article; every article has its alias rows. With ``clustered``: every article is
    in exactly one (existing) story and each story's article count matches its members.
    """
    from pipeline.store import Article, ArticleUrl, Classification, Digest, DigestStory, Entry, Story

    with store.session() as s:
        def dupes(*cols) -> int:
            q = select(*cols, func.count()).group_by(*cols).having(func.count() > 1)
            return len(s.execute(q).all())

        figures = {
            "articles": s.scalar(select(func.count()).select_from(Article)) or 0,
            "entries": s.scalar(select(func.count()).select_from(Entry)) or 0,
            "stories": s.scalar(select(func.count()).select_from(Story)) or 0,
            "digests": s.scalar(select(func.count()).select_from(Digest)) or 0,
            "duplicate_articles": dupes(Article.canonical_url),
            "duplicate_aliases": dupes(ArticleUrl.url),
            "duplicate_entries": dupes(Entry.feed_id, Entry.guid_key),
            "duplicate_digests": dupes(Digest.kind, Digest.period_start, Digest.period_end),
            "duplicate_digest_lines": dupes(DigestStory.digest_id, DigestStory.story_id),
            "done_without_article": s.scalar(
                select(func.count()).select_from(Entry).where(Entry.status == "done", Entry.article_id.is_(None))
            ) or 0,
            "articles_without_alias": s.scalar(
                select(func.count()).select_from(Article).where(~Article.id.in_(select(ArticleUrl.article_id)))
            ) or 0,
        }
        bad = {k: v for k, v in figures.items() if k.startswith(("duplicate", "done_without", "articles_without")) and v}
        assert not bad, f"store invariants broken: {bad}"
        if clustered:
            unclustered = s.scalar(select(func.count()).select_from(Article).where(Article.story_id.is_(None))) or 0
            dangling = s.scalar(
                select(func.count()).select_from(Article)
                .where(Article.story_id.is_not(None), ~Article.story_id.in_(select(Story.id)))
            ) or 0
            members = dict(s.execute(select(Article.story_id, func.count()).group_by(Article.story_id)).all())
            wrong_counts = [
                (sid, n, members.get(sid, 0)) for sid, n in s.execute(select(Story.id, Story.article_count)).all()
                if members.get(sid, 0) and n != members.get(sid, 0)
            ]
            assert (unclustered, dangling, wrong_counts) == (0, 0, []), (
                f"{unclustered} articles in no story, {dangling} in a missing story, story counts off: {wrong_counts[:5]}"
            )
            figures["stories_with_members"] = len([k for k in members if k is not None])
        if classified:
            missing = s.scalar(
                select(func.count()).select_from(Article).where(~Article.id.in_(select(Classification.article_id)))
            ) or 0
            assert missing == 0, f"{missing} articles never classified"
    return figures


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pipeline_env(home: Path, database_url: str, **settings: object) -> dict[str, str]:
    """Environment for ``python -m pipeline`` in a subprocess: its own home, store and settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSMON_", "AIRFLOW"))}
    env.update(
        PYTHONPATH=str(ROOT),
        NEWSMON_HOME=str(home),
        NEWSMON_DATABASE_URL=database_url,
        NEWSMON_CONFIG=str(home / "absent.toml"),
        PYTHONUNBUFFERED="1",
    )
    for key, value in settings.items():
        env["NEWSMON_" + key.upper()] = value if isinstance(value, str) else json.dumps(value)
    return env


def start_pipeline(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """``python -m pipeline ARGS`` in a session of its own (its workers die with the group)."""
    out = open(log, "ab")  # noqa: SIM115  (closed with the process by stop_group)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc._newsmon_log = out  # type: ignore[attr-defined]
    return proc


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Wait up to ``grace`` seconds for the process group to go, then SIGKILL what is left."""
    deadline = time.monotonic() + grace
    try:
        proc.wait(timeout=max(0.1, grace))
    except subprocess.TimeoutExpired:
        pass
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    log = getattr(proc, "_newsmon_log", None)
    if log is not None:
        log.close()


# ---------------------------------------------------------------- a private PostgreSQL cluster


def _pg_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb into a temporary directory, a free port).

    Run as the ``postgres`` system user when the tests run as root (PostgreSQL refuses
    root). :meth:`stop` and :meth:`start` make the store unavailable and bring it back;
    :meth:`destroy` stops it and removes every file, also after a failure.
    """

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)")
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="newsmon-pg-"))
        self.data = self.dir / "data"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.running = False

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([*self.prefix, *args], check=True, timeout=timeout, capture_output=True)

    def init(self) -> PrivatePostgres:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        return self

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c max_connections=60 -c shared_buffers=32MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-o", opts, "-w", "-t", "60", "start", timeout=90)
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect every client; ``immediate``: as a crash would)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90)
        self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def destroy(self) -> None:
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        except (subprocess.SubprocessError, OSError):
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():  # pg_ctl failed: end the postmaster we started, by its pid
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                except (ValueError, ProcessLookupError, PermissionError):
                    pass
        finally:
            self.running = False
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- a small news site on loopback


class NewsSite:
    """Feeds and article pages on a :class:`conftest.LoopbackServer`.

    Feed ``f`` lists articles ``f*100 .. f*100 + visible - 1`` (newest first); raise
    ``visible`` to publish more. Every fourth entry of the last feed is a syndicated
    copy of an article of feed 0 (same text, another URL). Pages answer after
    ``delay`` seconds, so a pass takes long enough to be interrupted anywhere.
    """

    def __init__(self, server, *, feeds: int = 3, visible: int = 4, delay: float = 0.02) -> None:
        from conftest import Response

        self.server = server
        self.feeds = feeds
        self.visible = visible
        self.delay = delay
        self.now = datetime.now(timezone.utc)
        self.base = server.url("")
        for f in range(feeds):
            server.routes[f"/feed{f}.xml"] = self._feed_route(f)
        self._response = Response

    def _feed_route(self, f: int):
        def route(_h):
            items = []
            for i in range(self.visible):
                n = f * 100 + i
                link = self.link(f, i)
                title, paras = self.text(f, i)
                items.append(rss_item(link, title=title, guid=f"site-{n}", published=self.now - timedelta(minutes=n % 100),
                                      description=paras[0]))
            return self._response(200, rss(items, title=f"Feed {f}").encode(), {"Content-Type": "application/rss+xml"})

        return route

    def is_copy(self, f: int, i: int) -> bool:
        return self.feeds > 1 and f == self.feeds - 1 and i % 4 == 0

    def text(self, f: int, i: int) -> tuple[str, list[str]]:
        return article_text(i if self.is_copy(f, i) else f * 100 + i)

    def link(self, f: int, i: int) -> str:
        return f"{self.base}/{'copy' if self.is_copy(f, i) else 'a'}/{f * 100 + i}"

    def links(self) -> set[str]:
        return {self.link(f, i) for f in range(self.feeds) for i in range(self.visible)}

    def page_route(self):
        def route(h):
            kind, n = h.path.strip("/").split("/")
            n = int(n)
            f, i = divmod(n, 100)
            if self.delay:
                time.sleep(self.delay)
            title, paras = self.text(f, i)
            return self._response(200, article_page(title, paras, outlet=f"Outlet {f}"),
                                  {"Content-Type": "text/html; charset=utf-8"})

        return route

    def publish(self, visible: int) -> None:
        self.visible = visible
        route = self.page_route()
        for f in range(self.feeds):
            for i in range(visible):
                n = f * 100 + i
                self.server.routes[f"/a/{n}"] = route
                self.server.routes[f"/copy/{n}"] = route

    def feed_list(self, path: Path) -> Path:
        path.write_text("".join(f'[[feed]]\nname = "Outlet {f}"\nurl = "{self.server.url(f"/feed{f}.xml")}"\n'
                                f'country = "{("US", "PK", "IN")[f % 3]}"\n\n' for f in range(self.feeds)))
        return path


def ingest_env(home: Path, database_url: str, feeds_file: Path, **extra: object) -> dict[str, str]:
    """Settings for ``python -m pipeline ingest`` against a loopback site: quick timeouts, small batches."""
    settings: dict[str, object] = {
        "feeds_file": str(feeds_file),
        "http__allow_private_addresses": "true",
        "http__retries": "0",
        "http__connect_timeout": "2",
        "http__read_timeout": "3",
        "http__total_timeout": "5",
        "ingest__extract_workers": "1",
        "ingest__batch_size": "3",
        "ingest__extract_timeout": "20",
    }
    settings.update({k: str(v) for k, v in extra.items()})
    return pipeline_env(home, database_url, **settings)


# ---------------------------------------------------------------- the SSRF guard with one exception


def allow_only(monkeypatch, host: str, port: int) -> None:
    """Let fetchers reach ``host:port`` (the test server) while the guard refuses every other
    private, loopback or link-local address, as ``allow_private_addresses = False`` does.

    The fetcher has no per-host allowance, so the guarded backend's connect is wrapped:
    exactly this address is connected directly, everything else goes through the guard.
    """
    from pipeline import fetcher as fetcher_mod

    original = fetcher_mod._GuardedBackend.connect_tcp

    allowed = (host, port)

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # noqa: ANN001, ANN202
        if (host, port) == allowed:
            stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
            return fetcher_mod._DeadlineStream(stream, self._clock)
        return original(self, host, port, timeout, local_address, socket_options)

    monkeypatch.setattr(fetcher_mod._GuardedBackend, "connect_tcp", connect_tcp)


def resolve_as(monkeypatch, names: dict[str, list[str]]) -> None:
    """Answer DNS questions for ``names`` (punycode host → addresses); others resolve as usual."""
    import socket as socket_mod

    original = socket_mod.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # noqa: ANN001, ANN202
        key = host.decode() if isinstance(host, bytes) else host
        if key in names:
            return [(socket_mod.AF_INET6 if ":" in a else socket_mod.AF_INET, socket_mod.SOCK_STREAM, 6, "",
                     (a, port) if ":" not in a else (a, port, 0, 0)) for a in names[key]]
        return original(host, port, *args, **kwargs)

    monkeypatch.setattr(socket_mod, "getaddrinfo", getaddrinfo)
