"""Digest delivery through an Airflow SMTP connection (``smtp_default``).

``SmtpHook`` reads the connection (host, port, SSL/STARTTLS, login, timeout) and opens
the session; the multipart (text + HTML) message built by ``pipeline.digest`` is then
handed over by :func:`pipeline.mail.send_with_client`, once. The hook's own
``send_email_smtp`` is not used: it can only build a single HTML part, and it resends
on any error — also on one raised after the server accepted the message, which would
mean a second digest.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any


def connection_configured(conn_id: str) -> bool:
    """Whether Airflow knows the connection (env ``AIRFLOW_CONN_…``, a secrets backend or the metadata DB)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


class AirflowSmtpTransport:
    """A :class:`pipeline.mail.Transport` over the Airflow SMTP connection ``conn_id``.

    The connection's ``from_email`` extra, when set, replaces the From header (relays
    often accept only their own sender addresses).
    """

    def __init__(self, conn_id: str = "smtp_default") -> None:
        self.conn_id = conn_id
        self.name = "airflow-smtp"

    def send(self, message: EmailMessage) -> Any:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        from pipeline import mail

        hook = SmtpHook(smtp_conn_id=self.conn_id)
        try:
            hook.get_conn()  # connect, STARTTLS/SSL and login as the connection says
        except Exception as exc:  # nothing was sent: a definite failure, safe to retry
            raise mail.DeliveryError(f"SMTP connection {self.conn_id!r}: cannot connect: {exc}") from exc
        where = f"SMTP server {hook.host}:{hook.port} (connection {self.conn_id})"
        if hook.from_email:
            del message["From"]
            message["From"] = hook.from_email
        client = hook._smtp_client  # the hook exposes its session only through this attribute
        try:
            try:
                client.ehlo_or_helo_if_needed()  # the hook greets only when it starts TLS or logs in
            except Exception as exc:
                raise mail.DeliveryError(f"{where}: greeting failed: {exc}") from exc
            delivery = mail.send_with_client(client, message, where=where)
        finally:
            try:
                client.quit()
            except Exception:
                client.close()
        return mail.Delivery(self.name, delivery.recipients, delivery.refused)
