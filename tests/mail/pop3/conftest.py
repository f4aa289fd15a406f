"""Fixtures for the POP3 proxy: a real Dovecot upstream whose Maildir the
tests fill directly, and the proxy serving from a loop in a thread."""

from __future__ import annotations

import itertools
import os
import poplib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from segcard.book.verdict import Mail, Verdict
from segcard.mail.pop3.quarantine import Quarantine
from segcard.mail.pop3.server import Credentials, Pop3Server
from segcard.mail.pop3.session import Mailbox
from segcard.mail.pop3.upstream import UpstreamSettings
from tests.dovecot import (
    MAIL_GID,
    MAIL_UID,
    PASSWORD,
    USER,
    Dovecot,
    free_port,
    require_dovecot,
)
from tests.mail.inbound.conftest import Book, LoopThread, make_book
from tests.requires import self_signed

CLIENT_USER = "john"
CLIENT_PASSWORD = "pop-client-secret"
TIMEOUT = 30.0

_names = itertools.count()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    require_dovecot()
    server = Dovecot()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    made = make_book(tmp_path)
    yield made
    made.index.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    running = LoopThread()
    yield running
    running.stop()


def message(rcpt: str, sender: str, subject: str, body: str = "Hello.\r\n") -> bytes:
    """A message as the upstream's MTA delivered it to *rcpt*."""
    return (
        f"Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\n"
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.test>\r\n\r\n{body}"
    ).encode()


def put(server: Dovecot, *messages: bytes) -> None:
    """Deliver *messages* straight into the upstream Maildir, owned by the
    mail user as Dovecot wants."""
    maildir = server.maildir
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for path in (
        maildir.parent,
        maildir,
        *(maildir / s for s in ("tmp", "new", "cur")),
    ):
        os.chown(path, MAIL_UID, MAIL_GID)
    for data in messages:
        name = f"{1_700_000_000 + next(_names)}.M1P1Q{next(_names)}.segcard-test"
        path = maildir / "new" / name
        path.write_bytes(data)
        os.chown(path, MAIL_UID, MAIL_GID)


def upstream(server: Dovecot) -> dict[str, bytes]:
    """UIDL -> message of everything upstream, read from Dovecot directly."""
    client = RawClient(server.pop3_port)
    try:
        client.login(USER, PASSWORD)
        return client.messages()
    finally:
        client.command("QUIT")
        client.close()


def retr_lines(pop: poplib.POP3, number: int) -> bytes:
    """RETR through poplib, lines joined again with CRLF."""
    return b"".join(line + b"\r\n" for line in pop.retr(number)[1])


@dataclass
class Proxy:
    """The POP3 proxy running against a Dovecot upstream."""

    server: Pop3Server
    mailbox: Mailbox
    quarantine: Quarantine
    loop: LoopThread
    book: Book
    notices: list[tuple[Verdict, Mail]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def connect(self) -> poplib.POP3:
        return poplib.POP3("127.0.0.1", self.port, timeout=TIMEOUT)

    def client(self) -> poplib.POP3:
        """A poplib client, logged in."""
        pop = self.connect()
        pop.user(CLIENT_USER)
        pop.pass_(CLIENT_PASSWORD)
        return pop

    def raw(self) -> RawClient:
        return RawClient(self.port)


class RawClient:
    """A line-level client, for what poplib cannot send or keep exactly."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def command(self, text: str | bytes) -> bytes:
        """Send one command line; return the status line."""
        data = text if isinstance(text, bytes) else text.encode()
        self.send(data + b"\r\n")
        return self.line()

    def multiline(self) -> bytes:
        """The rest of a multi-line reply, byte for byte, dot-stuffing undone."""
        lines = []
        while (line := self.line()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b".") else line)
        return b"".join(lines)

    def login(self, user: str = CLIENT_USER, password: str = CLIENT_PASSWORD) -> bytes:
        self.command(f"USER {user}")
        return self.command(f"PASS {password}")

    def messages(self) -> dict[str, bytes]:
        """UIDL -> message, byte for byte, of everything listed."""
        self.command("UIDL")
        listed = [line.split() for line in self.multiline().splitlines()]
        found = {}
        for number, uidl in listed:
            self.command(b"RETR " + number)
            found[uidl.decode()] = self.multiline()
        return found

    def closed(self) -> bool:
        """Whether the server has ended the connection."""
        return self.file.read() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class TlsDovecot(Dovecot):
    """The test Dovecot with TLS: STLS on its POP3 port, and POP3S."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        super().__init__()

    def _write_config(self) -> None:
        self.pop3s_port = free_port()
        super()._write_config()
        text = self.config_path.read_text()
        text = text.replace(
            "ssl = no", f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{self.key}"
        )
        text = text.replace(
            "inet_listener pop3s {\n    port = 0",
            f"inet_listener pop3s {{\n    address = 127.0.0.1\n"
            f"    port = {self.pop3s_port}",
        )
        self.config_path.write_text(text)


@pytest.fixture
def tls_dovecot(tmp_path: Path) -> Iterator[TlsDovecot]:
    require_dovecot()
    server = TlsDovecot(*self_signed(tmp_path))
    server.start()
    yield server
    server.cleanup()


def settings(server: Dovecot) -> UpstreamSettings:
    return UpstreamSettings("127.0.0.1", server.pop3_port, "none", USER, PASSWORD)


def make_proxy(
    book: Book,
    loop: LoopThread,
    upstream_settings: UpstreamSettings,
    root: Path,
    **options: Any,
) -> Proxy:
    """A started proxy; *options* go to Mailbox and Pop3Server."""
    quarantine = Quarantine(root / "quarantine")
    notices: list[tuple[Verdict, Mail]] = []
    mailbox = Mailbox(
        upstream_settings,
        book.judge,
        book.index,
        root / "pop3",
        quarantine,
        delete_upstream=options.pop("delete_upstream", False),
        notify=lambda verdict, mail, _at: notices.append((verdict, mail)),
    )
    server = Pop3Server(mailbox, Credentials(CLIENT_USER, CLIENT_PASSWORD), **options)
    loop.run(server.start())
    return Proxy(server, mailbox, quarantine, loop, book, notices)


ProxyFactory = Callable[..., Proxy]


@pytest.fixture
def start_proxy(
    book: Book, dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path
) -> Iterator[ProxyFactory]:
    """Start proxies on the Dovecot upstream; all stopped afterwards."""
    started: list[Proxy] = []

    def start(**options: Any) -> Proxy:
        proxy = make_proxy(book, loop_thread, settings(dovecot), tmp_path, **options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        loop_thread.run(proxy.server.stop())
        proxy.mailbox.close()


@pytest.fixture
def proxy(start_proxy: ProxyFactory) -> Proxy:
    return start_proxy()
