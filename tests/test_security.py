"""Security properties: secrets, SQL built only with parameters, escaping, the SSRF guard, the dependency audit.

The News Monitor view's login requirement is tested against the real Airflow API
server in tests/test_plugin.py (test_page_requires_an_airflow_login); here the
view is rendered with hostile data behind an overridden login.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import ROOT, LoopbackServer, Response, _free_port
from hostile import allow_only, record, resolve_as
from pipeline import digest
from pipeline.config import Settings
from pipeline.fetcher import BlockedURL, Fetcher
from pipeline.store import Article, Classification, Digest, Feed, IngestRun, Store, Story

CANARY_PW = "pw-CANARY-5c1e9d-Zq"


# ---------------------------------------------------------------- secrets


# Login without TLS is fine on loopback; aiosmtpd warns about it.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]


class AuthSink:
    """aiosmtpd on loopback that requires a login and accepts only ``good`` as the password."""

    def __init__(self, good: str | None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[bytes] = []
        sink = self

        def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
            ok = isinstance(auth_data, LoginPassword) and good is not None and auth_data.password == good.encode()
            return AuthResult(success=ok, handled=False)

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001
                sink.messages.append(envelope.original_content)
                return "250 OK"

        self.port = _free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, authenticator=authenticator,
                                     auth_required=True, auth_require_tls=False)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def _seed_story(store: Store, now: datetime) -> None:
    with store.session() as s:
        st = Story(title="Pakistan and India reopen trade route", first_seen_at=now - timedelta(hours=3),
                   updated_at=now - timedelta(hours=3), article_count=1, outlet_count=1, score=0.9, relevant=True,
                   dyads=["IN-PK"], topics=["trade"])
        s.add(st)
        s.flush()
        a = Article(canonical_url="https://dawn.example/1", url="https://dawn.example/1", title=st.title,
                    text="ISLAMABAD: Pakistan and India reopened the trade route on Monday, officials said.",
                    outlet="Dawn", country="PK", fetched_at=now - timedelta(hours=3),
                    clustered_at=now - timedelta(hours=3), story_id=st.id)
        s.add(a)
        s.flush()
        st.lead_article_id = a.id


def test_the_smtp_password_from_the_environment_is_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_store: Store, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("NEWSMON_SMTP__USERNAME", "newsmon")
    monkeypatch.setenv("NEWSMON_SMTP__PASSWORD", CANARY_PW)
    monkeypatch.setenv("NEWSMON_CONFIG", str(tmp_path / "absent.toml"))
    cfg = Settings(home=tmp_path / "home")
    assert cfg.smtp.password is not None and cfg.smtp.password.get_secret_value() == CANARY_PW
    shown = [repr(cfg), str(cfg), repr(cfg.smtp), str(cfg.smtp), cfg.model_dump_json(), f"{cfg!r}",
             json.dumps(cfg.model_dump(mode="json")), repr(cfg.model_dump())]
    assert not [s for s in shown if CANARY_PW in s]

    caplog.set_level(logging.DEBUG)
    now = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)
    _seed_story(sqlite_store, now)
    smtp_cfg = cfg.model_copy(update={
        "digest": cfg.digest.model_copy(update={"transport": "smtp", "recipients": ["desk@example.org"]})})
    refusing, accepting = AuthSink(good=None), AuthSink(good=CANARY_PW)
    try:
        bad = smtp_cfg.model_copy(update={"smtp": smtp_cfg.smtp.model_copy(update={"host": "127.0.0.1",
                                                                                  "port": refusing.port, "timeout": 5})})
        with pytest.raises(digest.DeliveryFailed) as failure:
            digest.deliver_digest(sqlite_store, bad, since=now - timedelta(days=1), until=now, now=now)
        assert "login" in str(failure.value) and "535" in str(failure.value)
        good = bad.model_copy(update={"smtp": bad.smtp.model_copy(update={"port": accepting.port})})
        result = digest.deliver_digest(sqlite_store, good, since=now - timedelta(days=1), until=now, now=now)
        assert result.status.value == "delivered" and len(accepting.messages) == 1
    finally:
        refusing.stop()
        accepting.stop()
    with sqlite_store.session() as s:
        stored = " ".join(f"{d.last_error} {d.body_text} {d.body_html} {d.recipients}" for d in s.query(Digest))
    out, err = capfd.readouterr()
    for where, text in (("log", caplog.text), ("stdout/stderr", out + err), ("error", str(failure.value)),
                        ("store", stored), ("message", accepting.messages[0].decode("utf-8", "replace"))):
        assert CANARY_PW not in text, f"the password appears in the {where}"
    record("secret-not-shown", places_checked=len(shown) + 5, leaks=0)


def test_the_cli_never_prints_secrets_from_the_environment(tmp_path: Path) -> None:
    """Verbose CLI runs that fail (login refused, store unreachable) print neither password."""
    sink = AuthSink(good=None)
    db_pw = "db-CANARY-81f0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSMON_")}
    env.update(PYTHONPATH=str(ROOT), NEWSMON_HOME=str(tmp_path / "home"), NEWSMON_CONFIG=str(tmp_path / "absent.toml"),
               NEWSMON_SMTP__USERNAME="newsmon", NEWSMON_SMTP__PASSWORD=CANARY_PW, NEWSMON_SMTP__HOST="127.0.0.1",
               NEWSMON_SMTP__PORT=str(sink.port), NEWSMON_DIGEST__TRANSPORT="smtp",
               NEWSMON_DIGEST__ON_EMPTY="send", NEWSMON_DIGEST__RECIPIENTS="desk@example.org")
    try:
        runs = [subprocess.run([sys.executable, "-m", "pipeline", "-vv", "digest", "--send"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)]
        env["NEWSMON_DATABASE_URL"] = f"postgresql+psycopg2://newsmon:{db_pw}@127.0.0.1:{_free_port()}/newsmon"
        runs.append(subprocess.run([sys.executable, "-m", "pipeline", "-vv", "ingest"], env=env, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=120))
    finally:
        sink.stop()
    assert runs[0].returncode == 1 and "login" in runs[0].stderr and "535" in runs[0].stderr, runs[0].stderr[-1500:]
    assert runs[1].returncode == 3 and "the store is not reachable" in runs[1].stderr, runs[1].stderr[-1500:]
    for r in runs:
        assert CANARY_PW not in r.stdout + r.stderr and db_pw not in r.stdout + r.stderr


def test_a_password_in_the_config_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "newsmon.toml"
    toml.write_text(f'[smtp]\nhost = "mail.example"\npassword = "{CANARY_PW}"\n')
    monkeypatch.setenv("NEWSMON_CONFIG", str(toml))
    with pytest.raises(ValueError, match="smtp.password must not be in a file") as err:
        Settings()
    assert CANARY_PW not in str(err.value)
    toml.write_text('[smtp]\nhost = "mail.example"\n')
    monkeypatch.setenv("NEWSMON_SMTP__PASSWORD", CANARY_PW)
    assert Settings().smtp.password.get_secret_value() == CANARY_PW


def test_the_airflow_connection_password_is_never_shown(tmp_path: Path) -> None:
    """The digest task's transport over an Airflow SMTP connection: a refused login names no secret."""
    sink = AuthSink(good=None)
    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": sink.port, "login": "newsmon", "password": CANARY_PW,
            "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 5, "retry_limit": 0}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSMON_", "AIRFLOW"))}
    env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'dags'}", AIRFLOW_HOME=str(tmp_path / "airflow"),
               AIRFLOW_CONN_SMTP_NEWSMON=json.dumps(conn), AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG")
    code = (
        "import logging; logging.basicConfig(level=logging.DEBUG)\n"
        "from newsmon_airflow.mail import AirflowSmtpTransport\n"
        "from pipeline import mail\n"
        "m = mail.build_message(subject='s', text='t', html='<p>t</p>', sender='newsmon@localhost',"
        " recipients=['desk@example.org'], message_id='<x@localhost>')\n"
        "try:\n"
        "    AirflowSmtpTransport('smtp_newsmon').send(m)\n"
        "except mail.DeliveryError as exc:\n"
        "    print('DELIVERY-ERROR', exc.message)\n"
    )
    try:
        r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=180)
    finally:
        sink.stop()
    assert "DELIVERY-ERROR" in r.stdout and "535" in r.stdout, (r.stdout[-1500:], r.stderr[-1500:])
    assert CANARY_PW not in r.stdout + r.stderr and sink.messages == []


# ---------------------------------------------------------------- SQL only with parameters

SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|WHERE|VALUES|SET LOCAL|PREPARE|EXECUTE)\b")
# Interpolations that build placeholders, integers from settings or fixed fragments,
# reviewed one by one; anything else interpolated into SQL fails the test.
REVIEWED = {
    "pipeline/store/__init__.py": {"SQLITE_BUSY_TIMEOUT_MS"},  # an int constant
    "pipeline/dedupe.py": {
        "where",  # " OR ".join of a fixed "(band = ? AND hash = ?)"
        "window",  # a fixed " AND at BETWEEN ? AND ?" or ""
        "cap + 1",  # int from settings (dedupe.max_key_postings)
        "BAND_MATCHES",  # an int constant
        "marks",  # ",".join("?" * n)
        "part",  # the fixed sub-select above
        "i",  # loop index (a subquery alias)
        "_LOAD_SQL",  # a module constant
        "sql",  # "SET LOCAL ...; " + the EXECUTE string below
        "name",  # a key of the module constant _PG_STATEMENTS
        "types",  # its parameter types (constant)
        "body",  # its statement (constant, $n placeholders)
        "', '.join(['%s'] * len(params))",  # placeholders
    },
}


def _sql_sites(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, kind, interpolated expressions) for every string built by formatting that looks like SQL."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if SQL_WORDS.search(literal):
                exprs = [ast.unparse(v.value) for v in node.values if isinstance(v, ast.FormattedValue)]
                if exprs:
                    sites.append((node.lineno, "f-string", exprs))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
            for side, other in ((node.left, node.right), (node.right, node.left)):
                if isinstance(side, ast.Constant) and isinstance(side.value, str) and SQL_WORDS.search(side.value):
                    if not (isinstance(other, ast.Constant) or isinstance(other, (ast.JoinedStr, ast.BinOp))):
                        sites.append((node.lineno, "% or +", [ast.unparse(other)]))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            target = node.func.value
            if isinstance(target, ast.Constant) and isinstance(target.value, str) and SQL_WORDS.search(target.value):
                sites.append((node.lineno, ".format", [ast.unparse(a) for a in node.args]))
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("text", "exec_driver_sql", "executescript") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Call) and getattr(arg.func, "attr", "") == "format":
                    sites.append((node.lineno, f"{name}(.format)", [ast.unparse(arg)]))
    return sites


def test_every_sql_statement_takes_its_values_as_parameters() -> None:
    files = sorted(p for d in ("pipeline", "plugins", "dags") for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 20
    problems, reviewed = [], 0
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for line, kind, exprs in _sql_sites(path):
            unknown = [e for e in exprs if e not in REVIEWED.get(rel, set())]
            if unknown:
                problems.append(f"{rel}:{line}: {kind} puts {unknown} into SQL")
            else:
                reviewed += 1
    assert not problems, "SQL must take values as bound parameters:\n" + "\n".join(problems)
    record("sql-parameters", files=len(files), reviewed_interpolations=reviewed, unparameterised=0)


def test_the_sql_scan_catches_string_built_sql(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(s, name, n):\n"
        "    s.execute(text(f\"SELECT * FROM feeds WHERE name = '{name}'\"))\n"
        "    s.execute(text(\"DELETE FROM feeds WHERE id = %s\" % n))\n"
        "    s.execute(text(\"UPDATE feeds SET name = '{}'\".format(name)))\n"
        "    s.execute(text(\"SELECT * FROM feeds WHERE name = '\" + name + \"'\"))\n"
    )
    lines = {line for line, _, _ in _sql_sites(bad)}
    assert lines == {2, 3, 4, 5}, _sql_sites(bad)  # each of the four statements is caught


# ---------------------------------------------------------------- escaping in the view


class _User:
    def get_name(self) -> str:
        return '<img src=x onerror="alert(1)">admin'


def _seed_hostile_view(store: Store) -> int:
    now = datetime.now(timezone.utc)
    with store.session() as s:
        f = Feed(name='<script>alert("feed")</script>', url="javascript:alert(1)", country="<b>", created_at=now,
                 last_fetch_at=now, consecutive_failures=3, last_error='<img src=x onerror=alert("err")>')
        s.add(f)
        s.flush()
        st = Story(title='<script>alert("story")</script>', first_seen_at=now - timedelta(hours=1), updated_at=now,
                   article_count=1, outlet_count=1, score=0.9, relevant=True, dyads=["US-PK"],
                   topics=['"><svg onload=alert(1)>'])
        s.add(st)
        s.flush()
        a = Article(canonical_url="https://x.example/1", url="javascript:alert('article')", feed_id=f.id,
                    title="<iframe src=javascript:alert(2)>", outlet="<marquee>Outlet</marquee>", country="PK",
                    fetched_at=now, story_id=st.id)
        s.add(a)
        s.flush()
        s.add(Classification(article_id=a.id, version="t", score=0.9, relevant=True, dyads=["US-PK"], topics=[],
                             classified_at=now, evidence=[{"sentence": "<script>alert('evidence')</script>",
                                                           "terms": ["<b>term</b>"], "weight": 1.0}]))
        s.add(IngestRun(started_at=now, finished_at=now, status="partial", trigger="<script>x</script>",
                        errors=["<script>alert('run')</script>"]))
        d = Digest(period_start=now - timedelta(days=1), period_end=now, status="failed", created_at=now,
                   recipients=['"<script>"@example.org'], subject="<script>alert('subject')</script>",
                   last_error="<script>alert('digest')</script>", transport="smtp",
                   body_text="<script>alert('text')</script>", body_html='<p>ok</p><script>alert("html")</script>"')
        s.add(d)
        s.flush()
        return d.id


def _parsed(html: str) -> tuple[set[str], list[tuple[str, str, str]]]:
    from html.parser import HTMLParser

    tags: set[str] = set()
    attrs: list[tuple[str, str, str]] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, a):  # noqa: ANN001
            tags.add(tag)
            attrs.extend((tag, k.lower(), (v or "").strip()) for k, v in a)

    P(convert_charrefs=True).feed(html)
    return tags, attrs


def test_the_monitor_view_escapes_everything_it_shows(
    sqlite_store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(ROOT / "plugins"))
    from fastapi.testclient import TestClient

    from newsmon_monitor import app as view

    digest_id = _seed_hostile_view(sqlite_store)
    monkeypatch.setattr(view, "_store", lambda: sqlite_store)
    monkeypatch.setattr(view, "_settings", lambda: settings)
    view.app.dependency_overrides[view.require_user] = lambda: _User()
    try:
        with TestClient(view.app) as client:
            pages = {
                "index": client.get("/", params={"all": "1"}),
                "reflected": client.get("/", params={"topic": '"><script>alert("q")</script>', "all": "1"}),
                "bad-filter": client.get("/", params={"since": "<script>alert(1)</script>", "dyad": "<b>x</b>"}),
                "digest": client.get(f"/digests/{digest_id}"),
            }
            api = client.get("/api/stories", params={"all": "1"})
    finally:
        view.app.dependency_overrides.clear()
    for name, resp in pages.items():
        assert resp.status_code == 200, (name, resp.text[:500])
        assert "default-src 'none'" in resp.headers["content-security-policy"]
        assert resp.headers["x-content-type-options"] == "nosniff"
        tags, attrs = _parsed(resp.text)
        # (The trend chart is the page's own inline SVG; a topic tried to add another.)
        assert not tags & {"script", "img", "marquee", "object", "embed"}, (name, tags)
        assert len([a for a in attrs if a[0] == "svg" and a[1] == "role"]) <= 1
        assert not [a for a in attrs if a[1].startswith("on")], (name, attrs)
        links = [v for t, k, v in attrs if k in ("href", "src", "action") and t != "iframe"]
        assert not [v for v in links if v.lower().startswith(("javascript:", "data:", "vbscript:"))], (name, links)
        frames = [(k, v) for t, k, v in attrs if t == "iframe"]
        if frames:  # the stored digest is shown in a sandbox that runs no script
            assert ("sandbox", "") in frames and not [v for k, v in frames if k == "src"]
    assert "&lt;script&gt;alert(&#34;story&#34;)&lt;/script&gt;" in pages["index"].text
    assert api.status_code == 200 and api.json()[0]["title"] == '<script>alert("story")</script>'  # JSON is data
    record("view-escaping", pages=len(pages), hostile_fields=14, live_markup=0)


# ---------------------------------------------------------------- the SSRF guard after DNS and redirects


@pytest.mark.parametrize(
    "answers",
    [["127.0.0.1"], ["10.0.0.8"], ["169.254.169.254"], ["::1"], ["fd00::1"], ["::ffff:192.168.0.1"],
     ["100.64.0.1"], ["93.184.216.34", "10.1.2.3"], ["0.0.0.0"]],
    ids=["loopback", "rfc1918", "metadata", "ipv6-loopback", "ula", "mapped", "cgnat", "rebinding-mix", "zero"],
)
def test_a_public_looking_name_that_resolves_inside_is_refused(
    answers: list[str], settings: Settings, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.routes["/feed"] = Response(200, b"internal")
    resolve_as(monkeypatch, {"feeds.news.example": answers})
    strict = settings.http.model_copy(update={"allow_private_addresses": False, "retries": 0})
    with Fetcher(strict) as f, pytest.raises(BlockedURL, match="refused feeds.news.example") as info:
        f.get(f"http://feeds.news.example:{http_server.port}/feed")
    assert "resolves to" in info.value.message
    assert http_server.requests == []


def test_the_setting_lets_private_addresses_through_and_redirects_are_checked_again(
    settings: Settings, http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.routes["/feed"] = Response(200, b"internal")
    http_server.routes["/hop"] = Response(302, b"", {"Location": f"http://feeds.news.example:{http_server.port}/feed"})
    resolve_as(monkeypatch, {"feeds.news.example": ["127.0.0.1"]})
    allowing = settings.http.model_copy(update={"allow_private_addresses": True})
    with Fetcher(allowing) as f:
        assert f.get(f"http://feeds.news.example:{http_server.port}/feed").content == b"internal"
    # Strict, with the test server alone let through: its redirect to a name that
    # resolves to loopback is refused at the second hop.
    allow_only(monkeypatch, "127.0.0.1", http_server.port)
    strict = settings.http.model_copy(update={"allow_private_addresses": False, "retries": 0})
    before = http_server.hits("/feed")
    with Fetcher(strict) as f:
        with pytest.raises(BlockedURL, match="resolves to 127.0.0.1"):
            f.get(http_server.url("/hop"))
    assert http_server.hits("/hop") == 1 and http_server.hits("/feed") == before


# ---------------------------------------------------------------- the dependency audit


def _audit(tmp_path: Path, report: dict, exceptions: str = "") -> subprocess.CompletedProcess:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    exc = tmp_path / "exceptions.txt"
    exc.write_text(exceptions)
    env = {**os.environ, "NEWSMON_AUDIT_JSON": str(path), "NEWSMON_AUDIT_EXCEPTIONS": str(exc)}
    return subprocess.run(["bash", str(ROOT / "scripts" / "audit.sh")], env=env, capture_output=True, text=True,
                          timeout=60)


VULN = {"id": "GHSA-xxxx-yyyy-zzzz", "fix_versions": ["9.9.9"], "aliases": ["CVE-2099-0001"], "description": "d"}


def test_the_audit_fails_on_a_vulnerability_not_in_the_exception_list(tmp_path: Path) -> None:
    deps = [{"name": "jinja2", "version": "3.1.0", "vulns": [VULN]}, {"name": "lxml", "version": "6.1.3", "vulns": []}]
    r = _audit(tmp_path, {"dependencies": deps, "fixes": []})
    assert r.returncode == 1 and "VULNERABLE jinja2==3.1.0: GHSA-xxxx-yyyy-zzzz (fixed in 9.9.9)" in r.stdout, r
    # Listed (by its ID or an alias) and not expired: accepted, and said so.
    later = (datetime.now(timezone.utc) + timedelta(days=30)).date().isoformat()
    r = _audit(tmp_path, {"dependencies": deps, "fixes": []}, f"CVE-2099-0001 jinja2 {later} template sandbox unused\n")
    assert r.returncode == 0 and "excepted jinja2==3.1.0" in r.stdout and "audit ok: 2 packages" in r.stdout, r
    # Expired: no longer applied.
    r = _audit(tmp_path, {"dependencies": deps, "fixes": []}, "GHSA-xxxx-yyyy-zzzz jinja2 2020-01-01 old\n")
    assert r.returncode == 1 and "expired on 2020-01-01" in r.stdout, r
    # A malformed exception line is an error, not a silent pass.
    r = _audit(tmp_path, {"dependencies": deps, "fixes": []}, "GHSA-xxxx-yyyy-zzzz jinja2\n")
    assert r.returncode == 1 and "no valid date" in r.stderr, r


def test_the_audit_reports_an_unreachable_database_as_skipped(tmp_path: Path) -> None:
    deps = [{"name": n, "version": "1.0", "skip_reason": "Dependency not found on PyPI"} for n in ("a", "b")]
    r = _audit(tmp_path, {"dependencies": deps, "fixes": []})
    assert r.returncode == 0 and r.stdout.startswith("audit skipped: vulnerability database unreachable"), r
    assert (ROOT / "scripts" / "audit-exceptions.txt").is_file()
