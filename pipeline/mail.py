"""Email messages and the transports that deliver them.

:func:`build_message` makes one ``multipart/alternative`` message (text/plain, then
text/html) with the SMTP policy, a Date and a Message-ID, and header values that
cannot carry a line break. :func:`send` hands it to a :class:`Transport`:

* :class:`OutboxTransport` writes ``<name>.eml`` and ``<name>.html`` into a directory
  (the embedded default: a new user sees every digest as files);
* :class:`SmtpTransport` talks to an SMTP server with :mod:`smtplib` (plain,
  STARTTLS or implicit TLS; optional login; several recipients; timeouts);
* :class:`CallableTransport` wraps any ``send(message)`` function, e.g. one that uses
  an Airflow connection; :func:`send_with_client` does the SMTP conversation on a
  client that is already connected and logged in.

A failure is a :class:`DeliveryError`. Its ``maybe_delivered`` flag tells whether
the server might have accepted the message anyway (the connection broke after the
message data was sent): the caller must then resend the *same* message rather than
build a new one, so that receivers can drop the copy by its Message-ID.
"""

from __future__ import annotations

import hashlib
import os
import re
import smtplib
import socket
import ssl
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pipeline.config import Settings, SmtpSettings

__all__ = [
    "CallableTransport",
    "Delivery",
    "DeliveryError",
    "OutboxTransport",
    "SmtpTransport",
    "Transport",
    "build_message",
    "new_message_id",
    "outbox_name",
    "sanitize_header",
    "send",
    "send_with_client",
    "transport_from_settings",
]

MAX_HEADER_CHARS = 200


class DeliveryError(Exception):
    """The message was not delivered (or it is unknown whether it was).

    ``maybe_delivered`` is true when the failure came after the message data was
    handed to the server: it may have been accepted, so a retry must resend the
    same message with the same Message-ID.
    """

    def __init__(self, message: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.maybe_delivered = maybe_delivered


@dataclass(frozen=True)
class Delivery:
    """What a transport did with one message."""

    transport: str
    recipients: tuple[str, ...] = ()  # accepted by the server (or written, for the outbox)
    refused: tuple[tuple[str, str], ...] = ()  # (address, server reply) refused while others were accepted
    paths: tuple[str, ...] = ()  # files written (outbox)
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Transport(Protocol):
    """Delivers a complete message; raises :class:`DeliveryError` when it cannot."""

    name: str

    def send(self, message: EmailMessage) -> Delivery: ...


# ---------------------------------------------------------------- headers and message


_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x85]+")


def sanitize_header(value: str, max_chars: int = MAX_HEADER_CHARS) -> str:
    """One line of printable text: line breaks and control characters become spaces.

    A header value built from article text (a title) can never start a new header
    this way; long values are cut at a word boundary with an ellipsis.
    """
    value = _LINE_BREAKS.sub(" ", str(value))
    value = "".join(_header_char(c) for c in value)
    return shorten(" ".join(value.split()), max_chars)


def shorten(value: str, max_chars: int) -> str:
    """``value`` cut to ``max_chars`` at a word boundary where one is near, with an ellipsis."""
    if len(value) <= max_chars:
        return value
    cut = value[: max_chars - 1]
    if " " in cut[max_chars // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,;:-–—") + "…"


def _header_char(c: str) -> str:
    cat = unicodedata.category(c)
    if cat == "Cc":
        return " "
    # Format characters (bidi overrides, soft hyphens) go; the joiners some scripts need stay.
    if cat == "Cf" and c not in "\u200c\u200d":
        return ""
    return c


def _addresses(values: Iterable[str]) -> list[str]:
    out = []
    for raw in values:
        clean = sanitize_header(raw, 320)
        for name, addr in getaddresses([clean]):
            if not addr or "@" not in addr or any(c.isspace() for c in addr):
                raise ValueError(f"not an email address: {raw!r}")
            out.append(f"{name} <{addr}>" if name else addr)
    return out


def sender_domain(sender: str) -> str:
    """The domain of the sender's address (for Message-IDs); ``localhost`` when it has none."""
    addr = parseaddr(sender)[1]
    domain = addr.rpartition("@")[2].strip(" >") if "@" in addr else ""
    return domain or "localhost"


def new_message_id(sender: str, kind: str = "digest") -> str:
    """A fresh, globally unique Message-ID in the sender's domain."""
    return make_msgid(idstring=re.sub(r"[^A-Za-z0-9.-]", "", kind) or None, domain=sender_domain(sender))


def build_message(
    *,
    subject: str,
    text: str,
    html: str,
    sender: str,
    recipients: Iterable[str],
    message_id: str,
    date: datetime | None = None,
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """The complete message: ``multipart/alternative`` with the text part first.

    The MIME boundary is derived from the content, so the same content gives the
    same bytes apart from the Date header.
    """
    to = _addresses(recipients)
    if not to:
        raise ValueError("no recipients: set digest.recipients (NEWSMON_DIGEST__RECIPIENTS)")
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = sanitize_header(subject)
    msg["From"] = _addresses([sender])[0]
    msg["To"] = ", ".join(to)
    msg["Date"] = format_datetime((date or datetime.now(timezone.utc)).astimezone(timezone.utc))
    msg["Message-ID"] = sanitize_header(message_id, 250)
    # RFC 3834: vacation responders and the like do not answer automatic mail.
    msg["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        msg[sanitize_header(name, 60)] = sanitize_header(value)
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    # "=_" never occurs in quoted-printable or base64 bodies, so this cannot clash.
    msg.set_boundary("=_nm_" + hashlib.sha256((text + "\0" + html).encode()).hexdigest()[:32])
    return msg


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    return part.get_content() if part is not None else ""


def envelope(message: EmailMessage) -> tuple[str, list[str]]:
    """(envelope sender, envelope recipients) from From / To, Cc, Bcc."""
    sender = parseaddr(str(message.get("From", "")))[1]
    fields = [str(v) for h in ("To", "Cc", "Bcc") for v in message.get_all(h, [])]
    rcpts = list(dict.fromkeys(a for _, a in getaddresses(fields) if a))
    return sender, rcpts


def _wire_bytes(message: EmailMessage) -> bytes:
    if "Bcc" in message:
        message = _copy_without_bcc(message)
    return message.as_bytes(policy=SMTP)


def _copy_without_bcc(message: EmailMessage) -> EmailMessage:
    import copy

    m = copy.copy(message)
    del m["Bcc"]
    return m


# ---------------------------------------------------------------- outbox


def outbox_name(message: EmailMessage) -> str:
    """A file name stem for the message: ``<period>-<digest id>``, ``alert-<story>-<id>``, or a hash."""
    period, digest = message.get("X-Newsmon-Period"), message.get("X-Newsmon-Digest")
    if period and digest:
        start, _, end = str(period).partition("/")
        stem = f"{_compact(start)}_{_compact(end)}-{digest}"
    elif message.get("X-Newsmon-Alert"):
        stem = f"alert-{message['X-Newsmon-Alert']}"
    else:
        stem = "message-" + hashlib.sha256(str(message.get("Message-ID", "")).encode()).hexdigest()[:16]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "message"


def _compact(iso: str) -> str:
    return re.sub(r"[^0-9TZ]", "", iso.replace("+00:00", "Z"))


class OutboxTransport:
    """Writes each message as ``<name>.eml`` plus its HTML part as ``<name>.html``.

    Files are written atomically (temporary file, then rename), so a reader never
    sees half a message and a resend of the same digest replaces its files.
    """

    name = "outbox"

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def send(self, message: EmailMessage) -> Delivery:
        stem = outbox_name(message)
        eml, html = self.directory / f"{stem}.eml", self.directory / f"{stem}.html"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomic(html, html_part(message).replace("\r\n", "\n").encode("utf-8"))
            _write_atomic(eml, message.as_bytes(policy=SMTP))
        except OSError as exc:
            raise DeliveryError(f"cannot write to the outbox {self.directory}: {exc}") from exc
        return Delivery(self.name, tuple(envelope(message)[1]), paths=(str(eml), str(html)))


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- SMTP


def send_with_client(client: smtplib.SMTP, message: EmailMessage, *, where: str = "the SMTP server") -> Delivery:
    """MAIL, RCPT and DATA for ``message`` on a connected (and logged-in) client.

    Errors before DATA are definite failures; a broken connection or timeout during
    DATA leaves the outcome unknown (``maybe_delivered``); a reply code refusing the
    data is definite. Recipients refused while others are accepted are reported in
    the :class:`Delivery`; all refused is a failure.
    """
    sender, rcpts = envelope(message)
    if not rcpts:
        raise DeliveryError("the message has no recipients")
    data = _wire_bytes(message)
    try:
        client.ehlo_or_helo_if_needed()
        code, reply = client.mail(sender)
        if code != 250:
            client.rset()
            raise DeliveryError(f"{where} refused the sender {sender}: {code} {_text(reply)}")
        accepted, refused = [], []
        for r in rcpts:
            code, reply = client.rcpt(r)
            if code in (250, 251):
                accepted.append(r)
            else:
                refused.append((r, f"{code} {_text(reply)}"))
        if not accepted:
            client.rset()
            detail = "; ".join(f"{a}: {why}" for a, why in refused)
            raise DeliveryError(f"{where} refused every recipient ({detail})")
    except DeliveryError:
        raise
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"{where} refused the message: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"{where} dropped the connection before the message was sent: {_why(exc)}") from exc
    try:
        code, reply = client.data(data)
        if code != 250:
            # A reply to the data is a definite answer: the server did not take the message.
            raise smtplib.SMTPDataError(code, reply)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"{where} refused the message: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(
            f"the connection to {where} broke while the message was being sent; it may have been delivered: "
            f"{_why(exc)}",
            maybe_delivered=True,
        ) from exc
    return Delivery("smtp", tuple(accepted), tuple(refused))


class SmtpTransport:
    """Delivery through an SMTP server, one connection per message."""

    name = "smtp"

    def __init__(self, smtp: SmtpSettings, *, local_hostname: str | None = None) -> None:
        self.smtp = smtp
        self.local_hostname = local_hostname

    @property
    def where(self) -> str:
        return f"SMTP server {self.smtp.host}:{self.smtp.port}"

    def _connect(self) -> smtplib.SMTP:
        cfg = self.smtp
        context = ssl.create_default_context()
        if cfg.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                cfg.host, cfg.port, local_hostname=self.local_hostname, timeout=cfg.timeout, context=context
            )
        else:
            client = smtplib.SMTP(cfg.host, cfg.port, local_hostname=self.local_hostname, timeout=cfg.timeout)
        try:
            client.ehlo()
            if cfg.security == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if cfg.username:
                pw = cfg.password
                client.login(cfg.username, pw.get_secret_value() if hasattr(pw, "get_secret_value") else (pw or ""))
        except BaseException:
            client.close()
            raise
        return client

    def send(self, message: EmailMessage) -> Delivery:
        try:
            client = self._connect()
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"login to {self.where} failed: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"{self.where} does not support what the settings ask for: {exc}") from exc
        except smtplib.SMTPResponseException as exc:
            why = f"{exc.smtp_code} {_text(exc.smtp_error)}"
            raise DeliveryError(f"{self.where} refused the connection: {why}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            why = _why(exc)
            if why == "timed out":
                why = f"no answer within {self.smtp.timeout:g} s"
            raise DeliveryError(f"{self.where} is not reachable: {why}") from exc
        try:
            d = send_with_client(client, message, where=self.where)
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()
        return Delivery(self.name, d.recipients, d.refused)


class CallableTransport:
    """Adapts a function ``send(message)`` (returning refused recipients or anything) to a transport.

    Exceptions are classified conservatively: a server reply or a refused
    connection is a definite failure; a timeout or dropped connection may have
    come after the server accepted the message.
    """

    def __init__(self, fn: Callable[[EmailMessage], Any], name: str = "custom") -> None:
        self.fn = fn
        self.name = name

    def send(self, message: EmailMessage) -> Delivery:
        try:
            out = self.fn(message)
        except DeliveryError:
            raise
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"the server refused the message: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
            raise DeliveryError(f"the server refused the message: {exc}") from exc
        except (ConnectionRefusedError, socket.gaierror) as exc:
            raise DeliveryError(f"the server is not reachable: {_why(exc)}") from exc
        except OSError as exc:
            why = _why(exc)
            raise DeliveryError(f"delivery broke off; the message may have been delivered: {why}",
                                maybe_delivered=True) from exc
        except Exception as exc:
            raise DeliveryError(f"delivery failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(out, Delivery):
            return out
        refused = tuple((str(k), str(v)) for k, v in out.items()) if isinstance(out, Mapping) else ()
        bad = {a for a, _ in refused}
        return Delivery(self.name, tuple(a for a in envelope(message)[1] if a not in bad), refused)


def _text(reply: bytes | str) -> str:
    return sanitize_header(reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply), 300)


def _why(exc: BaseException) -> str:
    # smtplib reports a read timeout as "Connection unexpectedly closed: timed out".
    if isinstance(exc, (socket.timeout, TimeoutError)) or "timed out" in str(exc):
        return "timed out"
    return sanitize_header(str(exc) or type(exc).__name__, 300)


# ---------------------------------------------------------------- choosing and sending


def transport_from_settings(settings: Settings) -> Transport:
    """The transport that ``settings.digest.transport`` names."""
    if settings.digest.transport == "smtp":
        return SmtpTransport(settings.smtp)
    return OutboxTransport(settings.outbox)


def as_transport(obj: Transport | Callable[[EmailMessage], Any]) -> Transport:
    if isinstance(obj, Transport):
        return obj
    if callable(obj):
        return CallableTransport(obj, getattr(obj, "__name__", "custom"))
    raise TypeError(f"not a transport: {obj!r}")


def send(message: EmailMessage, transport: Transport | Callable[[EmailMessage], Any]) -> Delivery:
    """Deliver ``message``; every failure comes out as a :class:`DeliveryError`."""
    tr = as_transport(transport)
    try:
        return tr.send(message)
    except DeliveryError:
        raise
    except Exception as exc:
        maybe = isinstance(exc, OSError) and not isinstance(exc, (ConnectionRefusedError, socket.gaierror))
        raise DeliveryError(f"{tr.name} transport failed: {type(exc).__name__}: {exc}", maybe_delivered=maybe) from exc
