"""Messages and transports: MIME structure, header safety, SMTP over loopback (plain, STARTTLS, TLS, login)."""

from __future__ import annotations

import datetime as dt
import email
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest

from pipeline import mail
from pipeline.config import Settings, SmtpSettings

HTML = "<html><body><p>Caf\u00e9 &amp; <b>news</b></p></body></html>"


def message(**kw) -> email.message.EmailMessage:
    args = dict(subject="Digest: 3 stories", text="Caf\u00e9 and news\n", html=HTML, sender="News Monitor <nm@example.org>",
                recipients=["desk@example.org", "Editor <ed@example.org>"], message_id="<abc.1@example.org>")
    args.update(kw)
    return mail.build_message(**args)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


# ---------------------------------------------------------------- building


def test_the_message_is_multipart_alternative_with_the_headers_mail_clients_need() -> None:
    when = dt.datetime(2026, 11, 24, 7, 0, 5, tzinfo=dt.timezone.utc)
    msg = message(date=when, headers={"X-Newsmon-Digest": "7"})
    raw = msg.as_bytes()
    back = parse(raw)
    assert back.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in back.iter_parts()] == ["text/plain", "text/html"]
    assert back["Date"] == "Tue, 24 Nov 2026 07:00:05 +0000"
    assert back["Message-ID"] == "<abc.1@example.org>"
    assert back["To"] == "desk@example.org, Editor <ed@example.org>"
    assert back["Auto-Submitted"] == "auto-generated" and back["X-Newsmon-Digest"] == "7"
    assert back.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Caf\u00e9 and news\n"
    assert back.get_body(("html",)).get_content().replace("\r\n", "\n") == HTML + "\n"
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # SMTP line endings throughout
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    # Same content, same bytes (apart from Date): the boundary is derived from the content.
    assert message(date=when, headers={"X-Newsmon-Digest": "7"}).as_bytes() == raw


def test_header_values_cannot_carry_line_breaks_or_controls() -> None:
    hostile = "Talks\r\nBcc: victim@example.org\nX-Evil: 1\x00\u2028end\u202e"
    assert mail.sanitize_header(hostile) == "Talks Bcc: victim@example.org X-Evil: 1 end"
    msg = message(subject=hostile, headers={"X-Title": hostile})
    raw = msg.as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert "\nBcc:" not in head and "\nX-Evil:" not in head
    back = parse(raw)
    assert back["Bcc"] is None and back["X-Evil"] is None
    assert back["Subject"] == "Talks Bcc: victim@example.org X-Evil: 1 end"
    long = mail.sanitize_header("word " * 100)
    assert len(long) <= mail.MAX_HEADER_CHARS and long.endswith("…")
    assert mail.sanitize_header("Pakistan–India “talks” résumé") == "Pakistan–India “talks” résumé"


def test_bad_recipients_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="not an email address"):
        message(recipients=["desk@example.org", "not an address"])
    with pytest.raises(ValueError, match="no recipients"):
        message(recipients=[])


# ---------------------------------------------------------------- SMTP


def test_smtp_delivers_one_message_to_several_recipients(smtp_server) -> None:
    t = mail.SmtpTransport(SmtpSettings(host=smtp_server.host, port=smtp_server.port, timeout=5))
    msg = message()
    msg["Bcc"] = "hidden@example.org"
    d = mail.send(msg, t)
    assert d.transport == "smtp" and set(d.recipients) == {"desk@example.org", "ed@example.org", "hidden@example.org"}
    ((sender, rcpts, raw),) = smtp_server.messages
    assert sender == "nm@example.org"
    assert sorted(rcpts) == ["desk@example.org", "ed@example.org", "hidden@example.org"]
    assert b"hidden@example.org" not in raw  # Bcc goes in the envelope only
    assert parse(raw)["Message-ID"] == "<abc.1@example.org>"


def test_a_closed_port_is_a_clear_definite_failure(free_port) -> None:
    t = mail.SmtpTransport(SmtpSettings(host="127.0.0.1", port=free_port, timeout=2))
    with pytest.raises(mail.DeliveryError, match=rf"SMTP server 127.0.0.1:{free_port} is not reachable") as err:
        mail.send(message(), t)
    assert not err.value.maybe_delivered


def test_a_refused_message_is_a_definite_failure(smtp_server) -> None:
    smtp_server.refuse_with = "451 4.3.0 Try again later"
    t = mail.SmtpTransport(SmtpSettings(host=smtp_server.host, port=smtp_server.port, timeout=5))
    with pytest.raises(mail.DeliveryError, match="refused the message: 451 4.3.0 Try again later") as err:
        mail.send(message(), t)
    assert not err.value.maybe_delivered
    assert smtp_server.messages == []


class _Server:
    """aiosmtpd with a custom handler and SMTP options (TLS, login) on loopback."""

    def __init__(self, handler, **kwargs) -> None:
        from aiosmtpd.controller import Controller

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(handler, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


class _Recorder:
    def __init__(self, refuse_rcpt: set[str] = frozenset(), drop_after_data: bool = False) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse_rcpt = refuse_rcpt
        self.drop_after_data = drop_after_data

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refuse_rcpt:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        if self.drop_after_data:
            # Took the message, then the connection broke before the reply.
            server.transport.close()
        return "250 OK"


@pytest.fixture
def server_factory() -> Iterator:
    started: list[_Server] = []

    def start(handler, **kwargs) -> _Server:
        srv = _Server(handler, **kwargs)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def test_refused_recipients_are_reported_and_all_refused_is_a_failure(server_factory) -> None:
    rec = _Recorder(refuse_rcpt={"ed@example.org"})
    srv = server_factory(rec)
    t = mail.SmtpTransport(SmtpSettings(host="127.0.0.1", port=srv.port, timeout=5))
    d = mail.send(message(), t)
    assert d.recipients == ("desk@example.org",)
    assert d.refused == (("ed@example.org", "550 5.1.1 No such user"),)
    assert len(rec.messages) == 1
    with pytest.raises(mail.DeliveryError, match="refused every recipient") as err:
        mail.send(message(recipients=["ed@example.org"]), t)
    assert not err.value.maybe_delivered and len(rec.messages) == 1


def test_a_connection_lost_after_the_data_may_have_delivered(server_factory) -> None:
    rec = _Recorder(drop_after_data=True)
    srv = server_factory(rec)
    t = mail.SmtpTransport(SmtpSettings(host="127.0.0.1", port=srv.port, timeout=5))
    with pytest.raises(mail.DeliveryError, match="may have been delivered") as err:
        mail.send(message(), t)
    assert err.value.maybe_delivered
    assert len(rec.messages) == 1  # it did arrive: the caller must resend the same message


def test_a_server_that_never_answers_times_out() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # accept, never greet
            except TimeoutError:
                continue

    th = threading.Thread(target=hold, daemon=True)
    th.start()
    try:
        t = mail.SmtpTransport(SmtpSettings(host="127.0.0.1", port=listener.getsockname()[1], timeout=0.5))
        started = time.monotonic()
        with pytest.raises(mail.DeliveryError, match=r"not reachable: no answer within 0.5 s"):
            mail.send(message(), t)
        assert time.monotonic() - started < 3
    finally:
        stop.set()
        th.join(2)
        for c in accepted:
            c.close()
        listener.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (key, cert)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    kp, cp = d / "key.pem", d / "cert.pem"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return kp, cp


def _server_tls(tls_files) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tls_files[1]), str(tls_files[0]))
    return ctx


def _login(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"desk", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself


def test_starttls_with_login(server_factory, tls_files, monkeypatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[1]))  # trust our test certificate
    rec = _Recorder()
    srv = server_factory(rec, tls_context=_server_tls(tls_files), require_starttls=True, authenticator=_login,
                         auth_require_tls=True)
    cfg = SmtpSettings(host="127.0.0.1", port=srv.port, security="starttls", username="desk", password="s3cret",
                       timeout=5)
    mail.send(message(), mail.SmtpTransport(cfg))
    assert len(rec.messages) == 1
    bad = SmtpSettings(**(cfg.model_dump() | {"password": "wrong"}))
    with pytest.raises(mail.DeliveryError, match=r"login to SMTP server 127.0.0.1:\d+ failed: 535"):
        mail.send(message(), mail.SmtpTransport(bad))
    assert len(rec.messages) == 1


def test_implicit_tls_and_an_untrusted_certificate(server_factory, tls_files, monkeypatch) -> None:
    rec = _Recorder()
    srv = server_factory(rec, ssl_context=_server_tls(tls_files))
    cfg = SmtpSettings(host="127.0.0.1", port=srv.port, security="ssl", timeout=5)
    with pytest.raises(mail.DeliveryError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        mail.send(message(), mail.SmtpTransport(cfg))  # certificates are verified
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[1]))
    mail.send(message(), mail.SmtpTransport(cfg))
    assert len(rec.messages) == 1


def test_starttls_asked_of_a_server_without_it_is_a_clear_error(smtp_server) -> None:
    cfg = SmtpSettings(host=smtp_server.host, port=smtp_server.port, security="starttls", timeout=5)
    with pytest.raises(mail.DeliveryError, match="does not support"):
        mail.send(message(), mail.SmtpTransport(cfg))
    assert smtp_server.messages == []


def test_send_with_client_works_on_a_connection_made_elsewhere(smtp_server) -> None:
    client = smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5)  # e.g. Airflow's SmtpHook connection
    try:
        d = mail.send_with_client(client, message())
    finally:
        client.quit()
    assert set(d.recipients) == {"desk@example.org", "ed@example.org"} and len(smtp_server.messages) == 1


# ---------------------------------------------------------------- outbox, callables, choice


def test_the_outbox_writes_eml_and_html_and_a_resend_replaces_them(tmp_path) -> None:
    box = mail.OutboxTransport(tmp_path / "outbox")
    headers = {"X-Newsmon-Digest": "12", "X-Newsmon-Period": "2026-11-23T07:00:00Z/2026-11-24T07:00:00Z"}
    d = mail.send(message(headers=headers), box)
    eml, html = (Path(p) for p in d.paths)
    assert eml.name == "20261123T070000Z_20261124T070000Z-12.eml" and html.name.endswith("-12.html")
    assert parse(eml.read_bytes())["Message-ID"] == "<abc.1@example.org>"
    assert html.read_text() == HTML + "\n"
    mail.send(message(headers=headers, html="<p>second</p>"), box)
    assert html.read_text() == "<p>second</p>\n"
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == sorted([eml.name, html.name])  # no temp files
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(mail.DeliveryError, match="cannot write to the outbox"):
        mail.send(message(), mail.OutboxTransport(blocked / "outbox"))


def test_a_plain_function_is_a_transport_and_its_errors_are_classified() -> None:
    seen = []
    d = mail.send(message(), lambda m: seen.append(m) or {"ed@example.org": (550, b"no")})
    assert len(seen) == 1 and d.recipients == ("desk@example.org",) and d.refused[0][0] == "ed@example.org"

    def refuse(m):
        raise smtplib.SMTPDataError(554, b"spam")

    def lost(m):
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")

    def down(m):
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(mail.DeliveryError, match="554 spam") as e1:
        mail.send(message(), refuse)
    with pytest.raises(mail.DeliveryError, match="may have been delivered") as e2:
        mail.send(message(), lost)
    with pytest.raises(mail.DeliveryError, match="not reachable") as e3:
        mail.send(message(), down)
    assert (e1.value.maybe_delivered, e2.value.maybe_delivered, e3.value.maybe_delivered) == (False, True, False)


def test_the_transport_comes_from_the_settings(tmp_path) -> None:
    s = Settings(home=tmp_path)
    assert isinstance(mail.transport_from_settings(s), mail.OutboxTransport)
    assert mail.transport_from_settings(s).directory == tmp_path / "outbox"
    s2 = Settings(home=tmp_path, digest={"transport": "smtp"}, smtp={"host": "mail.example.org", "port": 587})
    t = mail.transport_from_settings(s2)
    assert isinstance(t, mail.SmtpTransport) and t.where == "SMTP server mail.example.org:587"
