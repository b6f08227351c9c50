"""The digest task's body: choose the transport, call ``pipeline.digest``, report ids and counts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from newsmon_airflow import common, mail


def transport_for(s: Any) -> tuple[Any | None, str]:
    """The Airflow SMTP connection when it exists, else None (the settings' transport)."""
    conn_id = s.airflow.smtp_conn_id
    if mail.connection_configured(conn_id):
        return mail.AirflowSmtpTransport(conn_id), f"airflow connection {conn_id}"
    return None, f"settings transport {s.digest.transport} (no Airflow connection {conn_id})"


def deliver(
    s: Any,
    *,
    start: datetime | None,
    end: datetime | None,
    recipients: list[str] | None,
    preview: bool,
    force: bool,
) -> dict:
    """Deliver the digest of ``[start, end)`` (None: since the last delivered, up to now).

    Returns a small summary for XCom. Raises when nothing could be delivered yet, so
    Airflow retries: on a transport failure, and while another run holds the period.
    """
    from airflow.sdk.exceptions import AirflowException

    from pipeline import digest
    from pipeline.types import DigestStatus

    transport, how = (None, "outbox preview") if preview else transport_for(s)
    try:
        result = digest.deliver_digest(
            common.store(),
            s,
            since=start,
            until=end,
            preview=preview,
            force=force,
            transport=transport,
            recipients=recipients,
        )
    except digest.DeliveryFailed as exc:
        raise AirflowException(f"{exc} (via {how}); the next try sends it") from exc
    summary = {
        "status": result.status.value,
        "digest_id": result.digest_id,
        "period_start": result.period_start.isoformat(),
        "period_end": result.period_end.isoformat(),
        "stories": result.story_count,
        "updates": result.update_count,
        "subject": result.subject,
        "message_id": result.message_id,
        "transport": result.transport or how,
        "recipients": list(result.recipients),
        "resent": result.resent,
        "error": result.error,
        "outbox_files": list(result.paths),
    }
    print(f"digest via {how}: {summary}")
    if result.status is DigestStatus.IN_PROGRESS:
        # Another run is sending this period (or died mid-send and its lease has not run out).
        raise AirflowException(f"digest #{result.digest_id} is being sent by another run; retrying later")
    return summary
