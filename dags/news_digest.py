"""news_digest: the daily email digest — one per period, delivered exactly once."""

from __future__ import annotations

from datetime import datetime

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from newsmon_airflow import common

from pipeline.config import get_settings

_s = get_settings()

DOC = """
### News digest

Builds the digest of relevant stories for one period (ranked, grouped by country pair,
one entry per story, updates marked) and delivers it **exactly once**.

**Period.** Scheduled on `NEWSMON_DIGEST__SCHEDULE` (default `0 7 * * *`) in
`NEWSMON_DIGEST__TIMEZONE` with a *data-interval* timetable: the run at 07:00 covers the
24 hours up to it, so `airflow backfill create --dag-id news_digest --from-date … --to-date …`
makes one digest per missed day. A manual run covers the **period_start/period_end** Params
when given, else its logical date's interval when it has one, else the time since the last
delivered digest.

**Exactly once.** The article store's `digests` table has one row per (kind, period); the
row moves pending → sending → delivered, so a retry, a cleared task or a repeated backfill
finds the digest delivered and sends nothing. **force_resend** sends a delivered period
again; **preview_only** builds and stores it without sending.

**Delivery.** Through the Airflow connection `smtp_default` (SMTP provider's `SmtpHook`;
the multipart text+HTML message is built by `pipeline.digest`). Without that connection the
settings' transport is used (`NEWSMON_DIGEST__TRANSPORT`: `outbox` files by default, or `smtp`).
"""


@task(doc_md="Work out the digest period for this run (data interval, Params, or since last delivered).")
def period() -> dict:
    ctx = get_current_context()
    start, end, source = common.resolve_period(
        params=ctx["params"],
        logical_date=ctx.get("logical_date"),
        data_interval_start=ctx.get("data_interval_start"),
        data_interval_end=ctx.get("data_interval_end"),
        now=pendulum.now("UTC"),
    )
    out = {"start": start.isoformat() if start else None, "end": end.isoformat() if end else None, "source": source}
    print(f"digest period: {out}")
    return out


@task(
    doc_md="Build and deliver the digest for the period; idempotent (the digests table decides).",
)
def deliver(p: dict) -> dict:
    from newsmon_airflow import delivery

    params = get_current_context()["params"]
    return delivery.deliver(
        common.settings(),
        start=datetime.fromisoformat(p["start"]) if p["start"] else None,
        end=datetime.fromisoformat(p["end"]) if p["end"] else None,
        recipients=[r.strip() for r in (params.get("recipients") or []) if r and r.strip()] or None,
        preview=bool(params.get("preview_only")),
        force=bool(params.get("force_resend")),
    )


@dag(
    dag_id="news_digest",
    description="Daily email digest of US–Pakistan–India stories, exactly once per period",
    schedule=CronDataIntervalTimetable(_s.digest.schedule, timezone=_s.digest.timezone),
    start_date=pendulum.datetime(2026, 1, 1, tz=_s.digest.timezone),
    catchup=False,
    max_active_runs=1,
    default_args=common.default_args(_s),
    params={
        "period_start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Period start",
            description="Manual runs: start of the period (with time zone). Empty: since the last delivered digest.",
        ),
        "period_end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Period end",
            description="Manual runs: end of the period. Empty: now.",
        ),
        "recipients": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Recipients",
            description="One address per line; empty: the configured recipients (NEWSMON_DIGEST__RECIPIENTS).",
        ),
        "preview_only": Param(False, type="boolean", title="Preview only", description="Build and store, do not send."),
        "force_resend": Param(
            False, type="boolean", title="Force resend", description="Send again even if this period was delivered."
        ),
    },
    tags=["newsmon", "digest"],
    doc_md=DOC,
)
def news_digest():
    deliver(period())


news_digest()
