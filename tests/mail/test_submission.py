"""The submission proxy end to end: smtplib client, proxy, spool, relay, sink."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from segcard.app import App, free_port, port_open
from segcard.carddav.client import CardDAVClient
from segcard.cli.status import status_data
from segcard.errors import ConfigError
from segcard.mail.leaks import header_leaks
from segcard.mail.rewrite import RewriteRefused, header_from
from segcard.mail.spool import Spool, State
from segcard.mail.submission import LoginLimiter, read_data
from segcard.segment import Kind
from tests.corpus import mail_files, require_corpus
from tests.mail.rewrite_checks import assert_only_intended_changes
from tests.mail.smtp_sink import (
    HOST,
    IDENTITY,
    WAIT_SECONDS,
    Proxy,
    Sink,
    make_app,
    wait_until,
    wire_form,
)
from tests.requires import self_signed

REPO = Path(__file__).resolve().parents[2]

PLAIN = (
    f"From: John Doe <{IDENTITY}>\r\nTo: Tom <tom@example.org>\r\n"
    "Subject: hello\r\nMessage-ID: <p1@john.example>\r\n\r\nHi Tom\r\n"
).encode()


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as found:
        yield found


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    found = make_app(tmp_path)
    yield found
    found.close()


@pytest.fixture
def proxy(app: App, sink: Sink) -> Iterator[Proxy]:
    with Proxy(app, sink) as running:
        yield running


# -- authentication -----------------------------------------------------------


def test_mail_from_without_auth_is_refused(proxy: Proxy) -> None:
    """Without AUTH every transaction is refused: never an open relay."""
    with proxy.client(login=False) as client:
        client.ehlo()
        code, _ = client.mail(IDENTITY)

    assert code == 530


def test_wrong_password_is_refused(proxy: Proxy) -> None:
    """A wrong password gets 535 and no transaction."""
    user, _ = proxy.credentials()

    with proxy.client(login=False) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(user, "not-the-password")
        code, _ = client.mail(IDENTITY)

    assert refused.value.smtp_code == 535
    assert code == 530


def test_wrong_passwords_from_one_peer_are_rate_limited(app: App, sink: Sink) -> None:
    """After too many wrong passwords even the right one is refused for a while."""
    with Proxy(app, sink, LoginLimiter(max_failures=3, window=3600)) as proxy:
        user, password = proxy.credentials()
        with proxy.client(login=False) as client:
            for _ in range(3):
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    client.login(user, "guess")
        with (
            proxy.client(login=False) as client,
            pytest.raises(smtplib.SMTPAuthenticationError) as refused,
        ):
            client.login(user, password)

    assert refused.value.smtp_code == 454


def test_login_methods_plain_and_login_both_work(proxy: Proxy) -> None:
    """AUTH PLAIN and AUTH LOGIN are offered and accepted."""
    user, password = proxy.credentials()
    for method in ("auth_plain", "auth_login"):
        with proxy.client(login=False) as client:
            client.ehlo()
            client.user, client.password = user, password
            code, _ = client.auth(method.split("_")[1].upper(), getattr(client, method))
            assert code == 235


def test_non_loopback_listen_without_tls_is_refused_at_start(tmp_path: Path) -> None:
    """Listening beyond loopback needs TLS; start says so and binds nothing."""
    app = make_app(tmp_path, **{"submission.listen": f"0.0.0.0:{free_port()}"})
    proxy = Proxy(app)
    try:
        with pytest.raises(ConfigError, match="not a loopback address"):
            proxy.start()
    finally:
        proxy.loop.close()
        app.close()


def test_with_tls_configured_starttls_comes_before_login(
    tmp_path: Path, sink: Sink
) -> None:
    """With a certificate the proxy requires STARTTLS, then AUTH, then mail."""
    cert, key = self_signed(tmp_path)
    app = make_app(
        tmp_path, **{"submission.tls_cert": str(cert), "submission.tls_key": str(key)}
    )
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    try:
        with Proxy(app, sink) as proxy:
            with proxy.client(login=False) as client:
                client.ehlo()
                plain_code, _ = client.mail(IDENTITY)
            with smtplib.SMTP(HOST, proxy.port, timeout=WAIT_SECONDS) as client:
                client.starttls(context=context)
                client.login(*proxy.credentials())
                client.sendmail(IDENTITY, ["tom@example.org"], PLAIN)
            (got,) = sink.wait_for(1)
    finally:
        app.close()

    assert plain_code == 530
    assert got.rcpts == ("tom@example.org",)


# -- what goes out --------------------------------------------------------------


def test_each_corpus_message_reaches_two_recipients_rewritten_only_where_intended(
    app: App, sink: Sink
) -> None:
    """Every corpus message, sent to two recipients: one copy each, only the
    intended header changes, no identity left in any header."""
    require_corpus()
    sent = 0
    with Proxy(app, sink) as proxy:
        for number, path in enumerate(mail_files()):
            raw = path.read_bytes()
            # The identity is this message's own From, so that it is rewritten.
            app.config.values["identities"] = [header_from(raw)[1]]
            rcpts = [f"a{number}@rcpt-a.example", f"b{number}@rcpt-b.example"]
            proxy.send(raw, rcpts, mail_from=header_from(raw)[1])
            sent += 1
            got = sink.wait_for(2 * sent)[-2:]
            _assert_copies(raw, got, rcpts, [header_from(raw)[1]])

    assert sent == len(mail_files()) > 0


def _assert_copies(raw: bytes, got: list, rcpts: list[str], identities: list[str]):
    """One copy per recipient, each from its own segment, changed as intended."""
    assert sorted(r for g in got for r in g.rcpts) == sorted(rcpts)
    assert len({g.mail_from for g in got}) == 2
    for copy in got:
        assert_only_intended_changes(
            wire_form(raw), copy.data, identities, copy.mail_from
        )
        assert header_leaks(copy.data, identities) == []


def test_to_cc_bcc_across_three_contacts_one_unknown_made_on_carddav(
    app: App, sink: Sink
) -> None:
    """Three segments, three copies; the unknown recipient's new contact is
    in the address book; Bcc goes out to nobody."""
    server = app.embedded_server()
    server.start()
    try:
        tom = app.book.add("Tom", ["tom@example.org"])
        ann = app.book.add("Ann", ["ann@example.net"])
        raw = (
            f"From: John <{IDENTITY}>\r\nTo: Tom <tom@example.org>\r\n"
            "Cc: Ann <ann@example.net>\r\nBcc: Nora New <nora@example.com>\r\n"
            "Subject: three\r\nMessage-ID: <three@john.example>\r\n\r\nbody\r\n"
        ).encode()
        rcpts = ["tom@example.org", "ann@example.net", "nora@example.com"]
        with Proxy(app, sink) as proxy:
            proxy.send(raw, rcpts)
            got = sink.wait_for(3)
        app.sync()
        client = app.client()
        cards = [i.data or "" for i in client.multiget(list(client.list_etags()))]
    finally:
        server.stop()

    (nora,) = app.index.by_email("nora@example.com")
    assert nora.name == "Nora New" and nora.segment and nora.segment.kind == Kind.AUTO
    by_rcpt = {g.rcpts: g.mail_from for g in got}
    assert by_rcpt == {
        ("tom@example.org",): app.book.address(tom),
        ("ann@example.net",): app.book.address(ann),
        ("nora@example.com",): app.book.address(nora),
    }
    assert all(b"Bcc" not in g.data for g in got)
    assert [c for c in cards if "nora@example.com" in c and nora.uid in c]
    assert isinstance(client, CardDAVClient)


def test_mail_from_another_address_is_relayed_unchanged(
    proxy: Proxy, sink: Sink
) -> None:
    """From is not an identity: relayed byte for byte, envelope as sent."""
    raw = PLAIN.replace(IDENTITY.encode(), b"boss@corp.example")

    proxy.send(raw, ["tom@example.org"], mail_from="boss@corp.example")
    (got,) = sink.wait_for(1)

    assert (got.mail_from, got.data) == ("boss@corp.example", raw)


@pytest.mark.parametrize(
    "sender", [f"{IDENTITY}, x@example.org", f"us: {IDENTITY}, x@example.org;"]
)
def test_from_with_several_mailboxes_or_group_is_refused_and_not_spooled(
    proxy: Proxy, sender: str
) -> None:
    """A 5xx reply, and nothing in the spool."""
    raw = PLAIN.replace(f"John Doe <{IDENTITY}>".encode(), sender.encode())

    with pytest.raises(smtplib.SMTPDataError) as refused:
        proxy.send(raw, ["tom@example.org"])

    assert refused.value.smtp_code == 550
    assert proxy.spool.copies() == []


def test_leak_is_refused_with_its_place_when_configured(
    tmp_path: Path, sink: Sink
) -> None:
    """With submission.refuse_leaks the reply names where the identity is."""
    app = make_app(tmp_path, **{"submission.refuse_leaks": True})
    raw = PLAIN.replace(b"Hi Tom", f"Hi, I am {IDENTITY}".encode())
    try:
        with Proxy(app, sink) as proxy:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                proxy.send(raw, ["tom@example.org"])
            spooled = proxy.spool.copies()
    finally:
        app.close()

    assert refused.value.smtp_code == 550
    assert b"body part 1 (text/plain)" in refused.value.smtp_error
    assert spooled == []


def test_leak_is_sent_with_a_warning_status_shows(
    app: App, proxy: Proxy, sink: Sink
) -> None:
    """By default the message goes out and status shows the warning."""
    raw = PLAIN.replace(b"Hi Tom", f"Hi, I am {IDENTITY}".encode())

    proxy.send(raw, ["tom@example.org"])
    sink.wait_for(1)

    data = status_data(app)
    assert data["outgoing"]["leak_warnings"] == 1
    assert "body part 1 (text/plain)" in data["outgoing"]["last_leak_warning"]


def test_each_copy_message_id_is_recorded_with_its_segment(
    app: App, proxy: Proxy, sink: Sink
) -> None:
    """Inbound rules can find the segment an outgoing Message-ID went out on."""
    proxy.send(PLAIN, ["tom@example.org"])
    (got,) = sink.wait_for(1)

    (tom,) = app.index.by_email("tom@example.org")
    row = app.index.message("p1@john.example")
    assert row is not None and tom.segment is not None
    assert row == (tom.uid, tom.segment.token, "tom@example.org", "out")
    assert got.mail_from == app.book.address(tom)


def test_no_token_reaches_a_log_line_at_info(
    app: App, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """From MAIL FROM to relayed, through a deferral whose reply names the
    sender, no log record at INFO or above shows a segment's token."""
    tom = app.book.add("Tom", ["tom@example.org"])
    bank = app.book.add("Bank", ["bank@example.com"])
    tokens = [c.segment.token for c in (tom, bank) if c.segment]
    sender = app.book.address(tom)
    sink.fail(f"451 4.7.1 <{sender.upper()}>: try again later", "MAIL", times=1)
    caplog.set_level(logging.INFO)

    with Proxy(app, sink) as proxy:
        proxy.send(PLAIN, ["tom@example.org", app.book.address(bank)])
        (got,) = sink.wait_for(1)
        wait_until(proxy.settled)

    assert got.mail_from == sender and len(tokens) == 2
    lines = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert any("relayed copy" in line for line in lines)
    assert any("deferred" in line for line in lines)
    assert [line for line in lines if any(t in line.lower() for t in tokens)] == []


# -- protocol edges -------------------------------------------------------------


def test_long_lines_bare_lf_and_leading_dots_survive(app: App) -> None:
    """Lines over 998 octets, bare LF and dot-stuffed lines lose nothing."""
    long_line = b"x" * 5000
    raw = PLAIN.replace(b"Hi Tom\r\n", long_line + b"\nbare\n.dot\r\n..two\r\n")

    with Sink(long_lines=True) as sink, Proxy(app, sink) as proxy:
        proxy.send(raw, ["tom@example.org"])
        (got,) = sink.wait_for(1)

    body = got.data.split(b"\r\n\r\n", 1)[1]
    assert body == long_line + b"\r\nbare\r\n.dot\r\n..two\r\n"


STUFFED = b"..a\r\nb.\r\n\n.\r\nc\n..d\r\n.\r\nQUIT\r\n"


@pytest.mark.parametrize("stream_limit", [4, 1001])
@pytest.mark.parametrize(
    ("size_limit", "expected"),
    [(None, b".a\r\nb.\r\n\n\r\nc\n.d\r\n"), (5, None)],
    ids=["whole", "too-big"],
)
def test_data_ends_at_crlf_dot_crlf_unstuffed_and_leaves_the_next_command(
    stream_limit: int, size_limit: int | None, expected: bytes | None
) -> None:
    """Only CRLF "." CRLF ends the data (not "." after a bare LF or after
    text), a leading dot goes after any line break, a message over the limit
    is read to its end all the same, and the next command stays unread."""

    async def read() -> tuple[bytes | None, bytes]:
        reader = asyncio.StreamReader(limit=stream_limit)
        reader.feed_data(STUFFED)
        reader.feed_eof()
        return await read_data(reader, size_limit), await reader.read()

    data, rest = asyncio.run(read())

    assert data == expected
    assert rest == b"QUIT\r\n"


def test_long_line_refused_upstream_comes_back_as_a_bounce(
    app: App, proxy: Proxy, sink: Sink
) -> None:
    """An upstream that refuses long lines: the user gets a bounce notice."""
    raw = PLAIN.replace(b"Hi Tom", b"y" * 2000)

    proxy.send(raw, ["tom@example.org"])
    wait_until(lambda: proxy.spool.copies([State.FAILED]) != [])

    (notice,) = (app.paths.notices_maildir / "new").iterdir()
    assert b"Line too long" in notice.read_bytes()
    assert sink.received == []


def test_message_over_the_size_limit_is_refused(tmp_path: Path, sink: Sink) -> None:
    """A message over submission.max_size gets 552 and is not spooled."""
    app = make_app(tmp_path, **{"submission.max_size": 2000})
    try:
        with Proxy(app, sink) as proxy:
            with proxy.client() as client:
                client.ehlo()
                client.mail(IDENTITY)
                client.rcpt("tom@example.org")
                code, _ = client.data(PLAIN + b"y" * 3000 + b"\r\n")
                after, _ = client.noop()
            spooled = proxy.spool.copies()
    finally:
        app.close()

    assert (code, after, spooled) == (552, 250, [])


def test_bdat_is_refused_and_its_chunk_not_read_as_commands(proxy: Proxy) -> None:
    """BDAT gets one clean refusal; the chunk is skipped; the session goes on."""
    chunk = b"QUIT\r\nRSET\r\nNOOP\r\n"
    with _Raw(proxy) as session:
        session.login()
        session.command(f"MAIL FROM:<{IDENTITY}>")
        session.command("RCPT TO:<tom@example.org>")
        session.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        refusal = session.reply()
        after = session.command("NOOP")

    assert refusal.startswith(b"502 5.5.1")
    assert after.startswith(b"250")


def test_envelope_address_is_read_or_refused_with_553(proxy: Proxy) -> None:
    """MAIL FROM and RCPT TO take a good address, parameters after it, and
    refuse one that does not parse."""
    with _Raw(proxy) as session:
        session.login()
        broken = session.command("MAIL FROM:(comment")
        taken = session.command(f"MAIL FROM:<{IDENTITY}> SIZE=100")
        bad_rcpt = session.command("RCPT TO:(comment")
        good_rcpt = session.command("RCPT TO:<tom@example.org>")

    assert [broken[:3], taken[:3]] == [b"553", b"250"]
    assert [bad_rcpt[:3], good_rcpt[:3]] == [b"553", b"250"]


def test_null_bad_and_literal_recipients_are_refused_and_make_no_contact(
    app: App, proxy: Proxy, sink: Sink
) -> None:
    """RCPT TO a null path, a non-address or an address literal gets a 5.1.3
    refusal at RCPT time; only the good recipient gets a contact and a copy."""
    with _Raw(proxy) as session:
        session.login()
        session.command(f"MAIL FROM:<{IDENTITY}>")
        null = session.command("RCPT TO:<>")
        bad = session.command("RCPT TO:<not an address>")
        literal = session.command("RCPT TO:<x@[127.0.0.1]>")
        good = session.command("RCPT TO:<tom@example.org>")
        session.command("DATA")
        queued = session.command(PLAIN.decode() + ".")
    (got,) = sink.wait_for(1)
    wait_until(proxy.settled)

    assert [null[:9], bad[:9], literal[:9]] == [
        b"553 5.1.3",
        b"501 5.1.3",
        b"553 5.1.3",
    ]
    assert [good[:3], queued[:3]] == [b"250", b"250"]
    assert got.rcpts == ("tom@example.org",)
    assert [c.emails for c in app.index.contacts()] == [("tom@example.org",)]


def test_sender_that_is_no_address_is_refused_with_5_1_7(proxy: Proxy) -> None:
    """MAIL FROM with a non-address gets 501 5.1.7; a good one is taken next."""
    with _Raw(proxy) as session:
        session.login()
        bad = session.command("MAIL FROM:<not an address>")
        local_only = session.command("MAIL FROM:<john>")
        good = session.command(f"MAIL FROM:<{IDENTITY}>")

    assert [bad[:9], local_only[:9]] == [b"501 5.1.7", b"501 5.1.7"]
    assert good[:3] == b"250"


def test_null_sender_is_relayed_as_the_null_path(proxy: Proxy, sink: Sink) -> None:
    """MAIL FROM:<> of a message not from an identity reaches the upstream as <>."""
    raw = PLAIN.replace(IDENTITY.encode(), b"boss@corp.example")

    proxy.send(raw, ["tom@example.org"], mail_from="<>")
    (got,) = sink.wait_for(1)
    wait_until(proxy.settled)

    assert got.mail_from == "<>"
    assert [c.state for c in proxy.spool.copies()] == [State.SENT]


def test_smtputf8_recipient_is_relayed(proxy: Proxy, sink: Sink) -> None:
    """SMTPUTF8 is offered and a UTF-8 recipient reaches the upstream."""
    with proxy.client() as client:
        client.ehlo()
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        client.sendmail(IDENTITY, ["jörg@example.org"], PLAIN, ["SMTPUTF8"])
    (got,) = sink.wait_for(1)

    assert got.rcpts == ("jörg@example.org",)
    assert "SMTPUTF8" in got.mail_options


def test_smtputf8_is_refused_before_accepting_when_upstream_lacks_it(
    app: App,
) -> None:
    """Known upstream without SMTPUTF8: MAIL FROM ... SMTPUTF8 gets a 5xx."""
    with Sink(smtputf8=False) as sink, Proxy(app, sink) as proxy:
        proxy.loop.run(proxy.relay.probe())
        with proxy.client() as client:
            client.ehlo()
            code, message = client.mail(IDENTITY, ["SMTPUTF8"])

    assert code == 555
    assert b"SMTPUTF8" in message


def test_refusals_are_constant_replies_without_exception_text(
    app: App, sink: Sink
) -> None:
    """An internal failure answers a fixed 451, never the exception's text."""
    with Proxy(app, sink) as proxy:
        proxy.spool.close()  # every write into the spool now fails
        with pytest.raises(smtplib.SMTPDataError) as refused:
            proxy.send(PLAIN, ["tom@example.org"])
        proxy.service.spool = Spool(app.paths.spool)

    assert refused.value.smtp_code == 451
    assert (
        refused.value.smtp_error == b"4.3.0 Local error; the message was not accepted"
    )


class _Raw:
    """A raw SMTP session, for what smtplib will not send."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.sock = socket.create_connection((HOST, proxy.port), timeout=WAIT_SECONDS)
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> _Raw:
        self.reply()
        self.command("EHLO test")
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        while True:
            line = self.file.readline()
            if line[3:4] != b"-":
                return line

    def command(self, text: str) -> bytes:
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def login(self) -> None:
        import base64

        user, password = self.proxy.credentials()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        assert self.command(f"AUTH PLAIN {token}").startswith(b"235")


# -- a real segcard serve, killed after 250 ---------------------------------------


def test_serve_killed_after_250_delivers_each_copy_exactly_once(
    tmp_path: Path,
) -> None:
    """SIGKILL after 250 and before relay, restart: each copy arrives once."""
    sink = Sink()  # down at first: nothing can be relayed before the kill
    port = free_port()
    app = make_app(
        tmp_path,
        **{"submission.listen": f"{HOST}:{port}", "upstream.url": sink.url},
    )
    app.close()
    serve = _serve(tmp_path, port)
    try:
        raw = PLAIN.replace(
            b"To: Tom <tom@example.org>", b"To: tom@example.org, ann@x.example"
        )
        _send_to(tmp_path, port, raw, ["tom@example.org", "ann@x.example"])
        serve.send_signal(signal.SIGKILL)
        serve.wait(WAIT_SECONDS)
        with sink:
            serve = _serve(tmp_path, port)
            got = sink.wait_for(2)
            wait_until(lambda: _all_sent(tmp_path))
            serve.terminate()
            serve.wait(WAIT_SECONDS)
            total = len(sink.received)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()

    assert total == 2
    assert sorted(r for g in got for r in g.rcpts) == [
        "ann@x.example",
        "tom@example.org",
    ]


def _serve(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    log = (tmp / "serve.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segcard.cli.main",
            "--config",
            str(tmp / "config.toml"),
            "serve",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    wait_until(lambda: port_open(HOST, port) or process.poll() is not None)
    assert process.poll() is None, (tmp / "serve.log").read_text()
    return process


def _send_to(tmp: Path, port: int, raw: bytes, rcpts: list[str]) -> None:
    from segcard.app import read_credentials

    user, password = read_credentials(tmp / "data" / "submission-credentials")
    with smtplib.SMTP(HOST, port, timeout=WAIT_SECONDS) as client:
        client.login(user, password)
        client.sendmail(IDENTITY, rcpts, raw)


def _all_sent(tmp: Path) -> bool:
    spool = Spool(tmp / "data" / "spool")
    try:
        copies = spool.copies()
        return bool(copies) and all(c.state == State.SENT for c in copies)
    finally:
        spool.close()


def test_rewrite_refusal_reaches_the_client_as_its_reply(proxy: Proxy) -> None:
    """The rewrite's own 5xx text is what the client reads."""
    raw = PLAIN.replace(b"From: John Doe <", b"X-Nothing: <")

    with pytest.raises(smtplib.SMTPDataError) as refused:
        proxy.send(raw, ["tom@example.org"])

    assert refused.value.smtp_code == 550
    assert RewriteRefused.__name__ not in refused.value.smtp_error.decode()
