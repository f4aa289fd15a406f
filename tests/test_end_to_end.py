"""segcard serve end to end on real input (issue 7).

One ``segcard serve`` subprocess on a temp config: the embedded address book,
an aiosmtpd sink as the upstream, and the SMTP filter delivering to a Maildir.
The same story runs against Dovecot with the IMAP sorter in
``test_imap_sorter_end_to_end``.
"""

from __future__ import annotations

import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segcard import config as configuration
from segcard.mail.rewrite import header_from
from tests.cli_runner import Segcard
from tests.mail.smtp_sink import Sink, free_port

SENDERS = [  # corpus messages with one plain From, used as the user's mail
    "evolution-8bit-utf8-alternative-two-recipients.eml",
    "gmail-reply-multi-received-dkim.eml",
    "apple-mail-alternative-related-attachments.eml",
]
TOM = "tom@example.org"
STRANGER = "spammer@evil.example"


class World:
    """A running segcard serve with its sink, filter and Maildir."""

    def __init__(self, segcard: Segcard, tmp: Path, identities: list[str]) -> None:
        self.cli = segcard
        self.sink = Sink(long_lines=True).start()
        self.submission = free_port()
        self.inbound = free_port()
        self.maildir = tmp / "Maildir"
        ids = [arg for i in identities for arg in ("--identity", i)]
        result = segcard(
            "init", "--user", "john", "--domain", "john.example", *ids,
            "--submission", f"127.0.0.1:{self.submission}",
            "--upstream", self.sink.url,
            "--inbound-smtp", f"127.0.0.1:{self.inbound}",
            "--maildir", str(self.maildir),
            "--data-dir", str(tmp / "data"),
        )  # fmt: skip
        assert result.code == 0, result.err
        self.data = tmp / "data"
        self.proc: subprocess.Popen[str] | None = None
        self.log = ""

    def start(self) -> None:
        # The log goes to a file: a pipe nobody reads fills up and blocks the
        # daemon's event loop in the middle of a log call.
        self.log_file = open(self.data.parent / "serve.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "segcard.cli.main", "-v", "serve"],
            env=self.cli.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log_file,
            text=True,
        )
        assert wait_for(lambda: port_open(self.inbound) and port_open(self.submission))

    def stop(self, kill: bool = False) -> None:
        assert self.proc is not None
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log_file.close()
        self.log = (self.data.parent / "serve.log").read_text()
        self.proc = None

    def reload(self, **changes: object) -> None:
        """Change config values and send SIGHUP."""
        cfg = configuration.load(self.cli.config)
        flat = {k: v for k, v in cfg.values.items() if k in _explicit(self.cli.config)}
        flat.update(changes)
        configuration.save(self.cli.config, flat)
        assert self.proc is not None
        self.proc.send_signal(1)  # SIGHUP
        time.sleep(1)
        assert wait_for(lambda: port_open(self.inbound))

    def send(self, raw: bytes, rcpts: list[str]) -> None:
        user, password = (self.data / "submission-credentials").read_text().split()[:2]
        with smtplib.SMTP("127.0.0.1", self.submission, timeout=60) as client:
            client.login(user, password)
            client.sendmail(header_from(raw)[1], rcpts, raw)

    def deliver(self, rcpt: str, sender: str, subject: str) -> tuple[int, bytes]:
        """One message into the SMTP filter; the RCPT reply code and text."""
        message = (
            f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@test>\r\n\r\nHello\r\n"
        ).encode()
        with smtplib.SMTP("127.0.0.1", self.inbound, timeout=60) as client:
            client.ehlo()
            client.mail(sender)
            code, text = client.rcpt(rcpt)
            if code == 250:
                client.data(message)
            return code, text

    def inbox(self) -> list[bytes]:
        new = self.maildir / "new"
        return [p.read_bytes() for p in new.iterdir()] if new.exists() else []

    def address(self, who: str) -> str:
        result = self.cli("address", who)
        assert result.code == 0, result.err
        return result.out.strip()

    def close(self) -> None:
        if self.proc is not None:
            self.stop()
        self.sink.stop()


def _explicit(path: Path) -> set[str]:
    """The keys written in the file (not commented defaults)."""
    import tomllib

    def walk(doc: dict, prefix: str = "") -> set[str]:
        keys = set()
        for key, value in doc.items():
            if isinstance(value, dict):
                keys |= walk(value, f"{prefix}{key}.")
            else:
                keys.add(prefix + key)
        return keys

    return walk(tomllib.loads(path.read_text()))


def port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def verdict_of(raw: bytes) -> str:
    for line in raw.split(b"\r\n\r\n")[0].splitlines():
        if line.lower().startswith(b"x-segcard-verdict:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


@pytest.fixture
def world(segcard: Segcard, tmp_path: Path, corpus: Path):  # type: ignore[no-untyped-def]
    raws = [(corpus / "mail" / name).read_bytes() for name in SENDERS]
    identities = ["john@john.example", *{header_from(r)[1] for r in raws}]
    w = World(segcard, tmp_path, identities)
    w.raws = raws  # type: ignore[attr-defined]
    w.start()
    yield w
    w.close()
    print(w.log[-6000:])  # shown by pytest when the test failed


def test_serve_end_to_end_with_the_smtp_filter(world: World, corpus: Path) -> None:
    """Import, send, replay replies, restart: the whole job on real input."""
    cli = world.cli

    # 1. every corpus vCard, imported while the daemon runs
    for path in sorted((corpus / "vcards").glob("*.vcf")):
        assert cli("import", str(path)).code == 0
    cli("add", "Tom Smith", "--email", TOM)
    contacts = len(cli("list").out.splitlines()) - 2
    assert contacts >= 30

    # 2. corpus messages to known contacts and to new addresses
    known = ["asmithk@example.com", TOM]  # on an imported corpus card
    new = ["new.person@example.net", "other.new@example.net"]
    for raw in world.raws:  # type: ignore[attr-defined]
        world.send(raw, [*known, *new])
    copies = world.sink.wait_for(len(world.raws) * 4)  # type: ignore[attr-defined]
    for copy in copies:
        [rcpt] = copy.rcpts
        assert header_from(copy.data)[1] == world.address(rcpt) == copy.mail_from
    for address in new:
        assert "auto" in cli("show", address).out
    assert wait_for(lambda: cli("status", "--json").out.count('"outbox": 0') == 1)

    # 3. replies into the SMTP filter
    tom = world.address(TOM)
    assert world.deliver(tom, TOM, "from Tom")[0] == 250
    assert world.deliver(tom, STRANGER, "leaked")[0] == 250
    unknown = tom.replace(tom.split("-")[-1].split("@")[0], "zzzzzzzzz")
    assert world.deliver(unknown, STRANGER, "guess")[0] == 550
    bank = cli("add", "Bank").out.strip()
    cli("block", "Bank")
    code, text = world.deliver(bank, "bank@bank.example", "blocked")
    assert (code, text[:5]) == (550, b"5.7.1")
    verdicts = sorted(verdict_of(m).split(";")[0] for m in world.inbox())
    assert verdicts == ["deliver", "warn"]

    cli("rotate", TOM)
    code, _ = world.deliver(tom, TOM, "old address inside grace")
    assert code == 250
    assert any(b"old address" in m for m in world.inbox())
    world.reload(grace_days=0)
    code, text = world.deliver(tom, TOM, "old address after grace")
    assert code == 551 and world.address(TOM).encode() in text
    code, text = world.deliver(tom, STRANGER, "stranger after grace")
    assert code == 550 and world.address(TOM).encode() not in text

    # 4. restart in the middle, upstream down: nothing lost, nothing twice
    before = len(world.sink.received)
    world.sink.stop()
    world.send(world.raws[0], [TOM, "third.new@example.net"])  # type: ignore[attr-defined]
    world.stop(kill=True)
    world.sink.start()
    world.start()
    world.sink.wait_for(before + 2)
    time.sleep(3)
    assert len(world.sink.received) == before + 2

    # 5. status and leaks tell what happened
    status = cli("status").out
    leaks = cli("leaks").out
    assert "running" in status and "smtp filter" in status
    assert "Tom Smith" in leaks and "evil.example" in leaks


# -- the same story with the IMAP sorter on a real Dovecot --------------------


def imap_message(rcpt: str, sender: str, subject: str) -> bytes:
    return (
        f"Delivered-To: {rcpt}\r\nFrom: <{sender}>\r\nTo: <{rcpt}>\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@t>\r\n"
        "\r\nHello\r\n"
    ).encode()


def mailbox(server, name: str) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    """Subject -> flags of the messages in folder *name*."""
    from imapclient import IMAPClient

    from tests.dovecot import PASSWORD, USER

    with IMAPClient("127.0.0.1", server.port, ssl=False, timeout=30) as imap:
        imap.login(USER, PASSWORD)
        if not imap.folder_exists(name):
            return {}
        imap.select_folder(name, readonly=True)
        uids = imap.search(["NOT", "DELETED"])
        found = imap.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    return {
        data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip(): {
            f.decode() for f in data[b"FLAGS"]
        }
        for data in found.values()
    }


def append(server, *messages: bytes) -> None:  # type: ignore[no-untyped-def]
    from imapclient import IMAPClient

    from tests.dovecot import PASSWORD, USER

    with IMAPClient("127.0.0.1", server.port, ssl=False, timeout=30) as imap:
        imap.login(USER, PASSWORD)
        for data in messages:
            imap.append("INBOX", data)


@pytest.fixture
def dovecot():  # type: ignore[no-untyped-def]
    from tests.dovecot import Dovecot, require_dovecot

    require_dovecot()
    server = Dovecot()
    server.start()
    yield server
    server.stop()
    server.cleanup()


def test_imap_sorter_end_to_end(segcard: Segcard, tmp_path: Path, dovecot) -> None:  # type: ignore[no-untyped-def]
    """With the IMAP sorter: mail is sorted by verdict, across a restart."""
    from tests.dovecot import PASSWORD, USER

    sink = Sink().start()
    submission = free_port()
    result = segcard(
        "init", "--user", "john", "--domain", "john.example",
        "--identity", "john@john.example",
        "--submission", f"127.0.0.1:{submission}", "--upstream", sink.url,
        "--imap", f"imap://127.0.0.1:{dovecot.port}", "--imap-user", USER,
        "--imap-password-command", f"printf {PASSWORD}",
        "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    assert result.code == 0, result.err
    log = open(tmp_path / "serve.log", "a")  # noqa: SIM115

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segcard.cli.main", "-v", "serve"],
            env=segcard.env, stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
        assert wait_for(lambda: port_open(submission))
        return proc

    proc = start()
    try:
        tom = segcard("add", "Tom Smith", "--email", TOM).out.strip()
        bank = segcard("add", "Bank").out.strip()
        segcard("block", "Bank")
        unknown = tom.replace(tom.split("-")[-1].split("@")[0], "zzzzzzzzz")
        append(
            dovecot,
            imap_message(tom, TOM, "from Tom"),
            imap_message(tom, STRANGER, "leaked"),
            imap_message(unknown, STRANGER, "guess"),
        )
        assert wait_for(lambda: "guess" in mailbox(dovecot, "Junk"))

        proc.terminate()
        proc.wait(60)
        append(dovecot, imap_message(bank, "bank@bank.example", "blocked"))
        proc = start()
        assert wait_for(lambda: "blocked" in mailbox(dovecot, "Junk"))
        time.sleep(2)

        inbox, junk = mailbox(dovecot, "INBOX"), mailbox(dovecot, "Junk")
        assert set(inbox) == {"from Tom", "leaked"}
        assert set(junk) == {"guess", "blocked"}
        assert "$SegcardWarn" in inbox["leaked"]
        assert "$SegcardWarn" not in inbox["from Tom"]
        assert "evil.example" in segcard("leaks").out
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
        sink.stop()
        print((tmp_path / "serve.log").read_text()[-5000:])
