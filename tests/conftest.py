"""Shared fixtures: real stores, a loopback HTTP server, a loopback SMTP server.

PostgreSQL tests create a database of their own on 127.0.0.1:5432 and drop it
afterwards. Where no server answers they skip with a message, unless
``NEWSMON_REQUIRE_PG=1`` (set by ``.ci/run``), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.store import Store

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NEWSMON_SHARED", ROOT.parent / "shared"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PG_ADMIN_URL = os.environ.get("NEWSMON_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips the test with a clear message where it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not found at {p} (clone the project next to ../shared to run this test)")
    return p


# ---------------------------------------------------------------- settings and stores


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for tests: a fresh home, loopback fetches allowed, quick timeouts."""
    return Settings(
        home=tmp_path / "home",
        http={
            "allow_private_addresses": True,
            "connect_timeout": 2,
            "read_timeout": 2,
            "total_timeout": 5,
            "retries": 1,
            "backoff_base": 0.05,
            "backoff_max": 0.2,
            "max_retry_after": 2,
        },
        ingest={"extract_workers": 1},
    )


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    yield store
    store.dispose()


def _pg_available() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return None
    except OSError as exc:
        return f"PostgreSQL not reachable on 127.0.0.1:5432 ({exc})"


def make_pg_database() -> tuple[str, Callable[[], None]]:
    """Create an empty database; returns its URL and a function that drops it."""
    from sqlalchemy import create_engine, text

    why = _pg_available()
    if why:
        if os.environ.get("NEWSMON_REQUIRE_PG") == "1":
            pytest.fail(f"{why}; NEWSMON_REQUIRE_PG=1 makes PostgreSQL tests required")
        pytest.skip(why)
    name = f"newsmon_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture
def pg_url() -> Iterator[str]:
    url, drop = make_pg_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = Store(pg_url)
    store.migrate()
    yield store
    store.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The store on both backends: each test using it runs twice."""
    yield request.getfixturevalue("sqlite_store" if request.param == "sqlite" else "pg_store")


# ---------------------------------------------------------------- loopback HTTP server


@dataclass
class Response:
    status: int = 200
    body: bytes | Callable[[BaseHTTPRequestHandler], None] = b""
    headers: dict[str, str] = field(default_factory=dict)


Route = Response | Callable[[BaseHTTPRequestHandler], Response]


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        # Clients that hang up mid-response (size caps, timeouts) are expected here.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 with a mutable route table.

    A route is a :class:`Response`, or a callable taking the request handler and
    returning one (to look at request headers, e.g. If-None-Match). A body may be
    a callable that writes the response itself (stalls, drips, endless streams).
    Every request is logged in ``requests`` as (method, path, headers).
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(("GET", self.path, dict(self.headers)))
                route = server.routes.get(self.path) or server.routes.get(self.path.split("?")[0])
                if route is None:
                    resp = Response(404, b"not found", {"Content-Type": "text/plain"})
                else:
                    resp = route(self) if callable(route) else route
                try:
                    self.send_response(resp.status)
                    body = resp.body
                    for k, v in resp.headers.items():
                        self.send_header(k, v)
                    if callable(body):
                        body(self)
                        return
                    if "Content-Length" not in resp.headers:
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_HEAD = do_GET

        self.httpd = _QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for _, p, _ in self.requests if p == path)

    def start(self) -> LoopbackServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    yield server
    server.stop()


# ---------------------------------------------------------------- loopback SMTP server


class SMTPSink:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[str, list[str], bytes]] = []
        # Set to an SMTP reply such as "451 try later" to refuse DATA.
        self.refuse_with: str | None = None
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                if sink.refuse_with:
                    return sink.refuse_with
                sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
                return "250 OK"

        port = _free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.host, self.port = "127.0.0.1", port

    def start(self) -> SMTPSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server() -> Iterator[SMTPSink]:
    sink = SMTPSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def free_port() -> int:
    return _free_port()


# ---------------------------------------------------------------- the real Airflow (shared by its test modules)

# Registered here, once, so that the session-scoped Airflow home, API server and ingest
# run are shared by test_airflow_e2e.py and test_plugin.py instead of built per module.
from airflow_harness import airflow_home, api_server, ingested, newsmon  # noqa: E402, F401
