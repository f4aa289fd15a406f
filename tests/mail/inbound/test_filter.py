"""The SMTP filter, talked to by smtplib: replies at RCPT, delivery after DATA."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from segcard.book.verdict import Judge
from segcard.mail.headers import split_message
from segcard.mail.inbound import local_domains
from segcard.mail.inbound.annotate import note_allowed
from segcard.mail.inbound.delivery import (
    Copy,
    Delivery,
    LmtpDelivery,
    MaildirDelivery,
    SmtpDelivery,
)
from segcard.mail.inbound.filter import FilterHandler, SmtpFilter
from segcard.mail.inbound.lookup import CachedIndex
from segcard.mail.inbound.tarpit import Tarpit
from segcard.segment import State
from segcard.store.index import now
from tests.corpus import mail_files, require_corpus
from tests.mail.inbound.conftest import ANN, STRANGER, TOM, Book, LoopThread

MESSAGE = (
    b"From: Tom <tom@example.org>\r\nTo: someone@john.example\r\n"
    b"Subject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHi there.\r\n"
)


class Filter:
    """A running filter and what it delivers into."""

    def __init__(
        self, loop: LoopThread, book: Book, delivery: Delivery, tarpit: Tarpit
    ) -> None:
        handler = FilterHandler(
            book.judge, book.index, delivery, local_domains(book.config), tarpit
        )
        self.handler = handler
        self.server = SmtpFilter(handler, "127.0.0.1", 0)
        self.loop = loop
        loop.run(self.server.start(hostname="filter.test"))
        self.port = self.server.port

    def client(self, source: str = "127.0.0.1") -> smtplib.SMTP:
        smtp = smtplib.SMTP("127.0.0.1", self.port, source_address=(source, 0))
        smtp.ehlo("client.test")
        return smtp

    def stop(self) -> None:
        self.loop.run(self.server.stop())


def no_tarpit() -> Tarpit:
    return Tarpit(after=1000, delay=0.0, drop_after=1000)


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return tmp_path / "Maildir"


@pytest.fixture
def running(loop_thread: LoopThread, book: Book, maildir: Path) -> Iterator[Filter]:
    started = Filter(loop_thread, book, MaildirDelivery(maildir), no_tarpit())
    yield started
    started.stop()


def delivered(maildir: Path, folder: str = "") -> list[bytes]:
    new = maildir / (f".{folder}" if folder else "") / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


def rcpt(running: Filter, address: str, sender: str) -> tuple[int, str]:
    with running.client() as smtp:
        smtp.mail(sender)
        code, text = smtp.rcpt(address)
    return code, text.decode()


RCPT_CASES = [
    # (which address of the book, sender, code, text the reply starts with)
    ("tom", TOM, 250, "2.1.5"),
    ("tom", STRANGER, 250, "2.1.5"),
    ("unknown", STRANGER, 550, "5.1.1"),
    ("blocked", TOM, 550, "5.7.1"),
    ("quiet", STRANGER, 250, "2.1.5"),
    ("moved", ANN, 551, "5.1.6"),
    ("moved", STRANGER, 550, "5.1.1"),
    ("grace", STRANGER, 250, "2.1.5"),
]


@pytest.mark.parametrize(("which", "sender", "code", "text"), RCPT_CASES)
def test_rcpt_reply_follows_the_verdict(
    running: Filter, book: Book, which: str, sender: str, code: int, text: str
) -> None:
    """Each verdict row gives its RCPT reply code and enhanced status."""
    reply = rcpt(running, getattr(book, which), sender)

    assert reply[0] == code and reply[1].startswith(text)


@pytest.mark.parametrize(
    ("address", "reply"),
    [
        ("postmaster@john.example", (250, "2.1.5 Recipient ok")),
        ("john-bank@john.example", (550, "5.1.1 No such recipient here")),
        ("postmaster@other.test", (550, "5.7.1 Relaying denied")),
        ("john-tom-tmtk23456@other.test", (550, "5.7.1 Relaying denied")),
    ],
)
def test_rcpt_reply_for_addresses_without_a_segment(
    running: Filter, address: str, reply: tuple[int, str]
) -> None:
    """Role addresses are taken, no token is unknown, other domains refused."""
    assert rcpt(running, address, STRANGER) == reply


def test_cached_verdicts_follow_changes_to_the_index(
    loop_thread: LoopThread, book: Book, maildir: Path
) -> None:
    """With the cached index, a contact blocked from elsewhere (the CLI, the
    sync) is refused at the next RCPT, and accepted again once unblocked."""
    cached = CachedIndex(book.index.path)
    domains = local_domains(book.config)
    delivery = MaildirDelivery(maildir)
    handler = FilterHandler(
        Judge(book.config, cached), book.index, delivery, domains, no_tarpit()
    )
    server = SmtpFilter(handler, "127.0.0.1", 0)
    loop_thread.run(server.start(hostname="filter.test"))
    tom = book.index.get("tom")
    assert tom is not None and tom.segment is not None
    blocked = replace(tom, segment=tom.segment.with_state(State.BLOCKED, now()))
    try:
        with smtplib.SMTP("127.0.0.1", server.port) as smtp:
            smtp.ehlo("client.test")
            smtp.mail(TOM)
            codes = [smtp.rcpt(book.tom)[0], smtp.rcpt(book.tom)[0]]
            book.index.put(blocked, "card")
            codes.append(smtp.rcpt(book.tom)[0])
            book.index.put(tom, "card")
            codes.append(smtp.rcpt(book.tom)[0])
    finally:
        loop_thread.run(server.stop())
        cached.close()

    assert codes == [250, 250, 550, 250]


def test_redirect_names_only_the_new_address(running: Filter, book: Book) -> None:
    """A known sender on a retired address is told the new one with 551."""
    code, text = rcpt(running, book.moved, ANN)

    assert code == 551 and f"<{book.moved_to}>" in text


def test_stranger_on_a_retired_address_learns_nothing(
    running: Filter, book: Book
) -> None:
    """A stranger on a retired address gets exactly the unknown-token reply."""
    assert rcpt(running, book.moved, STRANGER) == rcpt(running, book.unknown, STRANGER)


def test_several_recipients_are_judged_one_by_one(
    running: Filter, book: Book, maildir: Path
) -> None:
    """In one transaction each RCPT gets its own reply; only the accepted
    ones receive the message, each copy with its own verdict."""
    with running.client() as smtp:
        smtp.mail(TOM)
        replies = [smtp.rcpt(a)[0] for a in (book.tom, book.unknown, book.grace)]
        data_reply = smtp.data(MESSAGE)

    assert replies == [250, 550, 250]
    assert data_reply[0] == 250
    copies = delivered(maildir)
    headers = sorted(split_message(c).fields[0].raw for c in copies)
    assert len(copies) == 2
    assert headers[0].startswith(b"X-Segcard-Verdict: deliver;")
    assert b'reason="known sender"' in headers[0] + headers[1]
    assert b'reason="old address"' in headers[0] + headers[1]


def test_more_than_100_recipients_are_deferred(running: Filter, book: Book) -> None:
    """RFC 5321 4.5.3.1.8: 100 recipients are taken, the 101st gets 452."""
    with running.client() as smtp:
        smtp.mail(TOM)
        codes = [smtp.rcpt(book.tom)[0] for _ in range(101)]

    assert codes[:100] == [250] * 100 and codes[100] == 452


def test_warned_message_gets_header_and_note_and_counts_as_leak(
    running: Filter, book: Book, maildir: Path
) -> None:
    """Mail from a stranger is delivered with the header and the note, and
    is recorded as leak evidence with its Message-ID."""
    message = MESSAGE.replace(b"Tom <tom@example.org>", b"<spam@evil.test>")

    with running.client() as smtp:
        smtp.sendmail(STRANGER, [book.tom], message)

    [copy] = delivered(maildir)
    first = split_message(copy).fields[0].raw
    assert first.startswith(b"X-Segcard-Verdict: warn;")
    assert copy[len(first) :].startswith(message)
    assert b"[segcard] Tom Example's address was used by spam@evil.test" in copy
    [leak] = book.index.leaks()
    assert (leak.uid, leak.sender_domain) == ("tom", "evil.test")
    found = book.index.message("<m1@example.org>")
    assert found is not None and found[:2] == ("tom", "tmtk23456")


def test_header_from_of_the_contact_is_known(
    running: Filter, book: Book, maildir: Path
) -> None:
    """Judged again after DATA, a known header From turns warn into deliver."""
    with running.client() as smtp:
        smtp.sendmail("bounce-123@mailer.test", [book.tom], MESSAGE)

    [copy] = delivered(maildir)
    assert copy.startswith(b"X-Segcard-Verdict: deliver;")
    assert book.index.leaks() == []


def test_quiet_junk_goes_to_the_junk_folder(
    running: Filter, book: Book, maildir: Path
) -> None:
    """A blocked segment that junks quietly takes the mail into .Junk."""
    with running.client() as smtp:
        smtp.sendmail(STRANGER, [book.quiet], MESSAGE)

    assert delivered(maildir) == []
    [copy] = delivered(maildir, "Junk")
    assert copy.startswith(b"X-Segcard-Verdict: junk;")


def test_maildir_failure_defers_and_loses_nothing(
    loop_thread: LoopThread, book: Book, tmp_path: Path
) -> None:
    """When the Maildir cannot be written the client is told to retry (451)."""
    blocked_path = tmp_path / "not-a-dir"
    blocked_path.write_text("a file where the Maildir should be")
    running = Filter(loop_thread, book, MaildirDelivery(blocked_path), no_tarpit())

    try:
        with running.client() as smtp, pytest.raises(smtplib.SMTPDataError) as exc:
            smtp.sendmail(TOM, [book.tom], MESSAGE)
    finally:
        running.stop()

    assert exc.value.smtp_code == 451
    assert book.index.message("<m1@example.org>") is None


def test_unreadable_index_defers_the_recipient(
    loop_thread: LoopThread, book: Book, maildir: Path
) -> None:
    """When the index cannot be read the client is told to retry (451)."""
    running = Filter(loop_thread, book, MaildirDelivery(maildir), no_tarpit())
    book.index.close()  # the fault: every read now fails

    try:
        code, text = rcpt(running, book.tom, TOM)
    finally:
        running.stop()

    assert (code, text) == (
        451,
        "4.3.0 Cannot check the recipient now; try again later",
    )


class BrokenDelivery:
    """A delivery that fails in a way nobody planned for."""

    async def deliver(self, mail_from: str, copies: list[Copy]) -> None:
        raise RuntimeError("secret detail that must not reach the client")


def test_unexpected_error_tells_the_client_only_to_retry(
    loop_thread: LoopThread, book: Book
) -> None:
    """An unplanned failure gives 451 and no detail of it to the peer."""
    running = Filter(loop_thread, book, BrokenDelivery(), no_tarpit())

    try:
        with running.client() as smtp, pytest.raises(smtplib.SMTPDataError) as exc:
            smtp.sendmail(TOM, [book.tom], MESSAGE)
    finally:
        running.stop()

    assert exc.value.smtp_code == 451
    assert exc.value.smtp_error == b"4.3.0 Internal error; try again later"


# -- next hops ---------------------------------------------------------------


class NextHop:
    """An aiosmtpd SMTP or LMTP server that records or refuses what it gets."""

    def __init__(self, reply: str = "250 2.0.0 Ok") -> None:
        self.reply = reply
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.reply.startswith("250"):
            self.received.append(
                (envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
            )
        # LMTP answers once per recipient (RFC 2033 4.2).
        count = len(envelope.rcpt_tos) if isinstance(server, LMTP) else 1
        return "\r\n".join([self.reply] * count)


def start_next_hop(loop: LoopThread, hop: NextHop, lmtp: bool) -> tuple[Any, int]:
    async def start() -> Any:
        import asyncio

        running = asyncio.get_running_loop()
        kind = LMTP if lmtp else SMTP
        return await running.create_server(
            lambda: kind(hop, loop=running, hostname="hop.test"), "127.0.0.1", 0
        )

    server = loop.run(start())
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("lmtp", [True, False], ids=["lmtp", "smtp"])
def test_next_hop_gets_the_annotated_message_before_250(
    loop_thread: LoopThread, book: Book, lmtp: bool
) -> None:
    """The next hop has the message, with its header, when the client gets 250."""
    hop = NextHop()
    server, port = start_next_hop(loop_thread, hop, lmtp)
    delivery = (
        LmtpDelivery("127.0.0.1", port) if lmtp else SmtpDelivery("127.0.0.1", port)
    )
    running = Filter(loop_thread, book, delivery, no_tarpit())

    try:
        with running.client() as smtp:
            refused = smtp.sendmail(TOM, [book.tom, book.grace], MESSAGE)
    finally:
        running.stop()
        server.close()

    assert refused == {}
    rcpts = sorted(r for _sender, got, _data in hop.received for r in got)
    assert rcpts == sorted([book.tom, book.grace])
    assert all(
        data.startswith(b"X-Segcard-Verdict: deliver;") for *_, data in hop.received
    )


@pytest.mark.parametrize("lmtp", [True, False], ids=["lmtp", "smtp"])
@pytest.mark.parametrize(
    ("hop_reply", "code"),
    [("451 4.3.0 Busy", 451), ("550 5.1.1 No such user", 554)],
)
def test_next_hop_refusal_is_passed_on_as_retry_or_failure(
    loop_thread: LoopThread, book: Book, lmtp: bool, hop_reply: str, code: int
) -> None:
    """A 4xx from the next hop makes the client retry; a 5xx fails the message."""
    server, port = start_next_hop(loop_thread, NextHop(hop_reply), lmtp)
    delivery = (
        LmtpDelivery("127.0.0.1", port) if lmtp else SmtpDelivery("127.0.0.1", port)
    )
    running = Filter(loop_thread, book, delivery, no_tarpit())

    try:
        with running.client() as smtp, pytest.raises(smtplib.SMTPDataError) as exc:
            smtp.sendmail(TOM, [book.tom], MESSAGE)
    finally:
        running.stop()
        server.close()

    assert exc.value.smtp_code == code


def test_unreachable_next_hop_defers(
    loop_thread: LoopThread, book: Book, tmp_path: Path
) -> None:
    """A next hop that does not answer gives 451, so the sender retries."""
    server, port = start_next_hop(loop_thread, NextHop(), lmtp=True)
    server.close()
    running = Filter(loop_thread, book, LmtpDelivery("127.0.0.1", port), no_tarpit())

    try:
        with running.client() as smtp, pytest.raises(smtplib.SMTPDataError) as exc:
            smtp.sendmail(TOM, [book.tom], MESSAGE)
    finally:
        running.stop()

    assert exc.value.smtp_code == 451


# -- the tarpit ----------------------------------------------------------------


def test_guessing_client_is_dropped_and_stays_dropped(
    loop_thread: LoopThread, book: Book, maildir: Path
) -> None:
    """Past drop_after bad recipients the client gets 421 and is cut off,
    on this connection and the next, while other clients are served."""
    tarpit = Tarpit(after=1, delay=0.01, drop_after=3)
    running = Filter(loop_thread, book, MaildirDelivery(maildir), tarpit)
    running.handler.tarpit_loopback = True  # the test client is on loopback
    try:
        with running.client() as smtp:
            smtp.mail(STRANGER)
            codes = [smtp.rcpt(book.unknown)[0] for _ in range(4)]
            with pytest.raises(smtplib.SMTPServerDisconnected):
                smtp.noop()
        with running.client() as again:
            again.mail(STRANGER)
            again_code = again.rcpt(book.unknown)[0]
        with running.client("127.0.0.2") as other:
            other.mail(STRANGER)
            other_code = other.rcpt(book.unknown)[0]
    finally:
        running.stop()

    assert codes == [550, 550, 550, 421]
    assert again_code == 421
    assert other_code == 550


def test_good_recipients_do_not_count_as_guesses(
    loop_thread: LoopThread, book: Book, maildir: Path
) -> None:
    """Only unknown addresses count: a client with many good ones is served."""
    tarpit = Tarpit(after=0, delay=0.0, drop_after=1)
    running = Filter(loop_thread, book, MaildirDelivery(maildir), tarpit)
    try:
        with running.client() as smtp:
            smtp.mail(TOM)
            codes = [smtp.rcpt(a)[0] for a in [book.tom] * 5 + [book.blocked] * 3]
    finally:
        running.stop()

    assert codes == [250] * 5 + [550] * 3
    assert tarpit.count("127.0.0.1") == 0


def test_tarpit_delay_grows_after_the_free_guesses() -> None:
    """The first *after* bad recipients are free; each later one waits longer."""
    tarpit = Tarpit(after=3, delay=2.0, drop_after=10)

    delays = [tarpit.delay_for(n) for n in range(1, 8)]

    assert delays == [0, 0, 0, 2.0, 4.0, 6.0, 8.0]
    assert not tarpit.drops(10) and tarpit.drops(11)


def test_tarpit_forgives_after_a_quiet_window() -> None:
    """A client quiet for longer than the window starts from zero again."""
    clock = [1000.0]
    tarpit = Tarpit(after=1, delay=1.0, drop_after=5, window=60, clock=lambda: clock[0])
    for _ in range(4):
        tarpit.strike("192.0.2.1")

    clock[0] += 61

    assert tarpit.count("192.0.2.1") == 0
    assert tarpit.strike("192.0.2.1") == 1


def test_tarpit_memory_is_bounded() -> None:
    """However many clients guess, at most max_clients are remembered,
    the least recently seen forgotten first."""
    tarpit = Tarpit(after=1, delay=1.0, drop_after=5, max_clients=100)

    for n in range(1000):
        tarpit.strike(f"10.0.{n // 256}.{n % 256}")

    assert len(tarpit) == 100
    assert tarpit.count("10.0.0.0") == 0 and tarpit.count("10.0.3.231") == 1


def test_tarpit_counts_an_ipv6_network_as_one_client() -> None:
    """Addresses of one IPv6 /64 share their count; IPv4-mapped ones are IPv4."""
    tarpit = Tarpit(after=1, delay=1.0, drop_after=5)

    tarpit.strike("2001:db8:1:2::1")
    tarpit.strike("2001:db8:1:2:ffff::9")
    tarpit.strike("::ffff:192.0.2.7")

    assert tarpit.count("2001:db8:1:2::77") == 2
    assert tarpit.count("2001:db8:1:3::1") == 0
    assert tarpit.count("192.0.2.7") == 1


# -- the corpus ----------------------------------------------------------------


def smtp_safe(raw: bytes) -> bool:
    """Whether *raw* can travel over SMTP at all (RFC 5321 4.5.3.1.6)."""
    return all(len(line.rstrip(b"\r")) <= 998 for line in raw.split(b"\n"))


def on_the_wire(raw: bytes) -> bytes:
    """*raw* as an MTA sends it: CRLF line ends (RFC 5321 2.3.8), final CRLF."""
    wire = re.sub(rb"\r?\n", b"\r\n", raw)
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"


def test_corpus_messages_arrive_with_only_header_and_allowed_note(
    running: Filter, book: Book, maildir: Path
) -> None:
    """Every corpus message reaches the Maildir byte for byte, with only the
    X-Segcard-Verdict field on top and, where allowed, the note at the end."""
    require_corpus()
    files = [p for p in mail_files() if smtp_safe(p.read_bytes())]
    noted = 0

    for path in files:
        raw = path.read_bytes()
        sent = on_the_wire(raw)
        with running.client() as smtp:
            smtp.sendmail(STRANGER, [book.tom], sent)
        [copy] = delivered(maildir)
        first = split_message(copy).fields[0].raw
        rest = copy[len(first) :]
        assert first.startswith(b"X-Segcard-Verdict: warn;"), path.name
        assert rest.startswith(sent), path.name
        if rest != sent:
            assert note_allowed(split_message(raw)), path.name
            noted += 1
        for old in (maildir / "new").iterdir():
            old.unlink()

    assert len(files) >= 25 and noted >= 5


def test_loopback_clients_are_not_tarpitted_by_default(
    loop_thread: LoopThread, book: Book, maildir: Path
) -> None:
    """Behind an MTA on loopback every sender shares one peer: no tarpit."""
    tarpit = Tarpit(after=1, delay=0.01, drop_after=2)
    running = Filter(loop_thread, book, MaildirDelivery(maildir), tarpit)
    try:
        with running.client() as client:
            client.mail("guesser@evil.test")
            codes = [
                client.rcpt(f"john-x-{t}@john.example")[0]
                for t in ("zzzzzzzzz", "yyyyyyyyy", "xxxxxxxxx", "wwwwwwwww")
            ]
    finally:
        running.stop()

    assert codes == [550, 550, 550, 550]


def test_banner_names_no_library_version(
    loop_thread: LoopThread, book: Book, maildir: Path
) -> None:
    """The greeting does not tell a scanner which SMTP library answers."""
    running = Filter(loop_thread, book, MaildirDelivery(maildir), no_tarpit())
    try:
        client = smtplib.SMTP()
        code, banner = client.connect("127.0.0.1", running.port)
        client.quit()
    finally:
        running.stop()

    assert code == 220 and b"Python" not in banner and b"segcard" in banner
