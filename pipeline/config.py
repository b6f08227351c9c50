"""One typed settings object for the whole product.

Sources, highest priority first: keyword arguments, environment variables
(``NEWSMON_`` prefix, ``__`` for nesting, e.g. ``NEWSMON_HTTP__TOTAL_TIMEOUT=20``),
a TOML config file (``$NEWSMON_CONFIG`` or ``./newsmon.toml``), then the defaults
below. Secrets (SMTP password) come only from the environment or an Airflow
connection, never from a file in the repository.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"


def _address_list(v: object) -> object:
    """``a@x.org, b@y.org`` or a JSON list, as an environment variable gives it."""
    if isinstance(v, str):
        if v.lstrip().startswith("["):
            import json

            return json.loads(v)
        return [p.strip() for p in v.split(",") if p.strip()]
    return v


# NoDecode: the environment source would otherwise insist on JSON for a list.
AddressList = Annotated[list[str], NoDecode, BeforeValidator(_address_list)]


def _default_home() -> Path:
    return Path(os.environ.get("NEWSMON_HOME", Path.cwd() / "var"))


class HttpSettings(BaseModel):
    """Limits for every outbound request (feeds and article pages)."""

    user_agent: str = (
        "newsmon/0.1 (news monitoring bot for US-Pakistan-India relations; operators: add a contact URL here)"
    )
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    # Wall-clock cap for one response, including a server that drips bytes.
    total_timeout: float = 45.0
    max_feed_bytes: int = 10 * 1024 * 1024
    max_page_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 5
    max_concurrency: int = 16
    per_host_concurrency: int = 2
    retries: int = 2
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    # Retry-After above this is not waited for inside a run; the feed is retried later.
    max_retry_after: float = 120.0
    # Outbound fetches refuse loopback, private and link-local addresses unless this is on.
    allow_private_addresses: bool = False


class IngestSettings(BaseModel):
    schedule: str = "*/30 * * * *"
    # Minimum minutes between two fetches of one healthy feed.
    feed_interval_minutes: int = 30
    # Failing feeds back off exponentially up to this cap.
    max_backoff_hours: float = 24.0
    # A feed quiet for longer is flagged in the monitor.
    quiet_after_hours: float = 72.0
    # Cap on entries taken from one feed in one pass (newest first).
    max_entries_per_feed: int = 200
    # Entries older than this are recorded but not extracted.
    max_entry_age_days: int = 30
    extract_workers: int = 0  # 0 = one per CPU
    batch_size: int = 50
    # Wall-clock limit for extracting one page; a page over it fails alone (its worker is replaced).
    extract_timeout: float = 30.0
    # Address-space cap per extraction worker in MiB (0 = none): a pathological page
    # fails with MemoryError instead of exhausting the host.
    extract_memory_mb: int = 2048
    # Page text shorter than this (words) counts as "yields little": the feed's
    # own text is used instead when it is longer.
    min_article_words: int = 50
    # An entry whose page and feed text failed this many passes is failed for good.
    max_extract_attempts: int = 3


class DedupeSettings(BaseModel):
    """Thresholds; docs/dedupe.md records the measurement behind each value."""

    shingle_size: int = 5
    num_perm: int = 128
    lsh_bands: int = 32
    near_duplicate_threshold: float = 0.5
    # A shorter text this much contained in a longer one is a copy of it (trimmed syndication).
    containment_threshold: float = 0.8
    # ...but only when the shorter text has this many shingles (a shared paragraph is not a copy).
    min_containment_shingles: int = 40
    # Copies, exact or near, are recognised this far apart in time.
    duplicate_window_days: float = 30.0
    story_threshold: float = 0.35
    story_window_hours: float = 96.0
    # Added to a candidate's score when it was published close in time, fading to 0 at time_bonus_hours.
    time_bonus: float = 0.1
    time_bonus_hours: float = 24.0
    # Postings read per key inside the window (most recent first); a key that fills them weighs least.
    max_key_postings: int = 16
    # Candidate articles scored in full per new article.
    max_candidates: int = 12
    # Stored articles (most recent) whose terms give the document frequencies.
    df_sample_size: int = 2000


class ClassifySettings(BaseModel):
    threshold: float = 0.5
    # Watch profile: extra include/exclude terms and threshold override, a TOML file.
    profile_file: Path | None = None


class SmtpSettings(BaseModel):
    host: str = "localhost"
    port: int = 25
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = 30.0


class DigestSettings(BaseModel):
    schedule: str = "0 7 * * *"
    timezone: str = "UTC"
    recipients: AddressList = Field(default_factory=lambda: ["desk@example.org"])
    sender: str = "News Monitor <newsmon@localhost>"
    # outbox: write .eml/.html files; smtp: deliver through settings.smtp.
    transport: Literal["outbox", "smtp"] = "outbox"
    outbox_dir: Path | None = None
    on_empty: Literal["skip", "send"] = "skip"
    max_stories: int = 60
    subject_prefix: str = "US–Pakistan–India"
    alerts_enabled: bool = False
    alert_min_score: float = 0.85
    alert_min_outlets: int = 3
    alert_max_per_day: int = 3
    # Only stories first seen this recently can trigger an alert.
    alert_window_hours: float = 24.0
    # The first digest ever covers this many hours; later ones start where the last delivered ended.
    initial_lookback_hours: float = 24.0
    # Stories and members stored this long before a period's start still count as new in it when
    # no delivered digest showed them: an ingest transaction that committed after the previous
    # digest was built must not be lost.
    late_arrival_grace_minutes: float = 60.0
    # A digest left "sending" longer than this belongs to a run that died mid-send; the next run
    # resends the same message (same Message-ID). Must exceed the longest SMTP conversation.
    send_lease_seconds: float = 300.0

class AirflowSettings(BaseModel):
    """How the Airflow DAGs run the stages (ignored outside Airflow)."""

    # Feeds per mapped fetch task; raised automatically to stay under [core] max_map_length.
    fetch_batch_size: int = 25
    # Airflow pool that caps concurrent outbound HTTP fetch tasks.
    http_pool: str = "newsmon_http"
    # Airflow connection used to deliver digests; absent → the digest.transport setting.
    smtp_conn_id: str = "smtp_default"
    # Who is emailed when a task fails (through smtp_conn_id); empty = no failure emails.
    failure_recipients: AddressList = Field(default_factory=list)
    # Task retries; the delay doubles after each try, up to max_retry_delay_seconds.
    task_retries: int = 2
    retry_delay_seconds: float = 30.0
    max_retry_delay_seconds: float = 600.0

class _TomlWithoutSecrets(TomlConfigSettingsSource):
    """The TOML config file, which must not hold secrets (files get committed and backed up)."""

    def _read_file(self, file_path):  # noqa: ANN001, ANN202
        data = super()._read_file(file_path)
        smtp = data.get("smtp")
        if isinstance(smtp, dict) and smtp.get("password") is not None:
            raise ValueError(
                f"{file_path}: smtp.password must not be in a file; set NEWSMON_SMTP__PASSWORD "
                "(or use the Airflow SMTP connection)"
            )
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NEWSMON_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = None
    feeds_file: Path = DATA_DIR / "feeds.toml"
    # Demo mode: the bundled sample feeds served from loopback (no internet needed).
    demo: bool = False
    demo_port: int = 8765
    http: HttpSettings = Field(default_factory=HttpSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    dedupe: DedupeSettings = Field(default_factory=DedupeSettings)
    classify: ClassifySettings = Field(default_factory=ClassifySettings)
    digest: DigestSettings = Field(default_factory=DigestSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = os.environ.get("NEWSMON_CONFIG", "newsmon.toml")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if Path(config).is_file():
            sources.append(_TomlWithoutSecrets(settings_cls, toml_file=config))
        return tuple(sources)

    @property
    def db_url(self) -> str:
        # The demo keeps its own store so it never mixes sample articles into real ones.
        name = "demo.db" if self.demo else "newsmon.db"
        return self.database_url or f"sqlite:///{self.home / name}"

    @property
    def outbox(self) -> Path:
        return self.digest.outbox_dir or self.home / "outbox"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
