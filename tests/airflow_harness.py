"""Running the real Airflow (CLI, scheduler, API server) against the project's DAGs in tests.

One AIRFLOW_HOME with a migrated SQLite metadata database is shared by the session
(``airflow_home``); every command runs as a subprocess with an environment built
from scratch (no AIRFLOW_*/NEWSMON_* leaking in from the caller), and every process
started is killed, with its process group, at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
ADMIN_PASSWORD = "newsmon-test-" + secrets.token_hex(4)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AirflowHome:
    home: Path
    sql_conn: str
    base_env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(self.base_env)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300, check: bool = True,
            log: str | None = None) -> subprocess.CompletedProcess:
        """``airflow ARGS`` to completion; output kept in ``home/logs-test/LOG``."""
        cmd = [str(VENV_BIN / "airflow"), *args]
        proc = subprocess.Popen(cmd, env=env or self.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, _ = proc.communicate()
            raise AssertionError(f"airflow {' '.join(args)} timed out after {timeout}s:\n{out[-4000:]}") from None
        if log:
            d = self.home / "logs-test"
            d.mkdir(exist_ok=True)
            (d / log).write_text(out)
        result = subprocess.CompletedProcess(cmd, proc.returncode, out, "")
        if check and proc.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} exited {proc.returncode}:\n{out[-6000:]}")
        return result

    def start(self, *args: str, env: dict[str, str] | None = None, log: str = "proc.log") -> subprocess.Popen:
        """A long-running ``airflow ARGS`` (scheduler, api-server) in its own process group."""
        d = self.home / "logs-test"
        d.mkdir(exist_ok=True)
        fh = open(d / log, "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([str(VENV_BIN / "airflow"), *args], env=env or self.env(), cwd=ROOT, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        proc._log = fh  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        _kill_group(proc)
        fh = getattr(proc, "_log", None)
        if fh:
            fh.close()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for p in list(self.procs):
            self.stop(p)

    def log_text(self, name: str) -> str:
        p = self.home / "logs-test" / name
        return p.read_text(errors="replace") if p.exists() else ""


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def base_env(home: Path, sql_conn: str) -> dict[str, str]:
    """A clean environment for Airflow subprocesses (nothing inherited from the caller's Airflow or newsmon)."""
    from cryptography.fernet import Fernet

    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NEWSMON_", "PYTHONPATH"))}
    keep.update(
        {
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(ROOT),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_conn,
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(16),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
            # No retry waits inside tests unless a test asks for them.
            "NEWSMON_AIRFLOW__TASK_RETRIES": "0",
            "NEWSMON_DIGEST__RECIPIENTS": "desk@example.org,analyst@example.org",
            "NEWSMON_DIGEST__SENDER": "News Monitor <newsmon@example.org>",
        }
    )
    return keep


def make_home(home: Path, sql_conn: str | None = None) -> AirflowHome:
    home.mkdir(parents=True, exist_ok=True)
    (home / "passwords.json").write_text(json.dumps({"admin": ADMIN_PASSWORD}))
    conn = sql_conn or f"sqlite:///{home / 'airflow.db'}"
    af = AirflowHome(home=home, sql_conn=conn, base_env=base_env(home, conn))
    af.run("db", "migrate", timeout=300, log="db-migrate.log")
    af.run("pools", "set", "newsmon_http", "4", "newsmon feed fetches", log="pools.log")
    return af


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowHome]:
    """One migrated Airflow (SQLite metadata, LocalExecutor) for the whole session."""
    af = make_home(tmp_path_factory.mktemp("airflow"))
    try:
        yield af
    finally:
        af.stop_all()


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: str = "") -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {url} answered:\n{log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception as exc:  # noqa: BLE001 - keep polling
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout}s ({last})")


@dataclass
class ApiServer:
    af: AirflowHome
    proc: subprocess.Popen
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        req = urllib.request.Request(
            self.base + "/auth/token",
            data=json.dumps({"username": username, "password": password}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())["access_token"]


def start_api_server(af: AirflowHome, extra_env: dict[str, str] | None = None) -> ApiServer:
    port = _free_port()
    env = af.env(
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        **(extra_env or {}),
    )
    proc = af.start("api-server", "--port", str(port), "--host", "127.0.0.1", env=env, log="api-server.log")
    wait_http(f"http://127.0.0.1:{port}/api/v2/monitor/health", 120, proc, af.log_text("api-server.log"))
    return ApiServer(af, proc, port)


# ---------------------------------------------------------------- the newsmon side, shared by the session


@dataclass
class Newsmon:
    """The article store, demo site port and SMTP sink the Airflow processes of the session use."""

    home: Path
    env: dict[str, str]
    sink: object  # conftest.SMTPSink

    @property
    def store_url(self) -> str:
        return self.env.get("NEWSMON_DATABASE_URL") or f"sqlite:///{self.home / 'demo.db'}"


def smtp_conn_uri(host: str, port: int) -> str:
    return f"smtp://{host}:{port}?disable_ssl=true&disable_tls=true&from_email=newsmon%40example.org&timeout=10&retry_limit=0"


@pytest.fixture(scope="session")
def newsmon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Newsmon]:
    from conftest import SMTPSink

    home = tmp_path_factory.mktemp("newsmon")
    sink = SMTPSink().start()
    env = {
        "NEWSMON_HOME": str(home),
        "NEWSMON_DEMO": "1",
        "NEWSMON_DEMO_PORT": str(_free_port()),
        "AIRFLOW_CONN_SMTP_DEFAULT": smtp_conn_uri(sink.host, sink.port),
    }
    try:
        yield Newsmon(home, env, sink)
    finally:
        sink.stop()


@dataclass
class Ingested:
    seconds: float
    output: str


@pytest.fixture(scope="session")
def ingested(airflow_home: AirflowHome, newsmon: Newsmon) -> Ingested:
    """One ``airflow dags test news_ingest`` over the demo feeds (the session's article store)."""
    t0 = time.monotonic()
    r = airflow_home.run("dags", "test", "news_ingest", env=airflow_home.env(**newsmon.env), timeout=300,
                         log="dags-test-ingest.log")
    return Ingested(time.monotonic() - t0, r.stdout)


@pytest.fixture(scope="session")
def api_server(airflow_home: AirflowHome, newsmon: Newsmon) -> Iterator[ApiServer]:
    server = start_api_server(airflow_home, newsmon.env)
    try:
        yield server
    finally:
        airflow_home.stop(server.proc)
