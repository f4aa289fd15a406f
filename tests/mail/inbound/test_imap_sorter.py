"""The IMAP sorter against a real Dovecot: folders, keywords, restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from segcard.mail.headers import split_message
from segcard.mail.inbound import local_domains
from segcard.mail.inbound.imap_sorter import (
    KEYWORD_JUNK,
    KEYWORD_REDIRECT,
    KEYWORD_WARN,
    ImapSettings,
    ImapSorter,
    Sorter,
    find_recipient,
)
from segcard.mail.inbound.notice import Notifier
from segcard.mail.spool import Spool
from tests.dovecot import PASSWORD, USER, Dovecot, require_dovecot
from tests.mail.inbound.conftest import ANN, STRANGER, TOM, Book, LoopThread

WAIT = 30.0  # seconds to wait for the service to do something; not asserted


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    require_dovecot()
    server = Dovecot()
    server.start()
    yield server
    server.cleanup()


def settings(server: Dovecot, poll: float = 60.0) -> ImapSettings:
    return ImapSettings(
        "127.0.0.1", server.port, "none", USER, PASSWORD, poll_interval=poll
    )


def make_sorter(book: Book, server: Dovecot, **extra: object) -> Sorter:
    domains = local_domains(book.config)
    return Sorter(settings(server), book.judge, book.index, domains, **extra)  # type: ignore[arg-type]


def client(server: Dovecot) -> IMAPClient:
    imap = IMAPClient("127.0.0.1", server.port, ssl=False, timeout=30)
    imap.login(USER, PASSWORD)
    return imap


def message(rcpt: str, sender: str, subject: str, *, to: str = "") -> bytes:
    return (
        f"Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\n"
        f"From: <{sender}>\r\nTo: <{to or rcpt}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.test>\r\n\r\nHello.\r\n"
    ).encode()


def append(server: Dovecot, *messages: bytes) -> None:
    with client(server) as imap:
        for data in messages:
            imap.append("INBOX", data)


def folder(server: Dovecot, name: str) -> dict[str, set[str]]:
    """Subject -> keywords of every message in folder *name*."""
    with client(server) as imap:
        if not imap.folder_exists(name):
            return {}
        imap.select_folder(name, readonly=True)
        uids = imap.search(["NOT", "DELETED"])
        fetched = imap.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    out = {}
    for item in fetched.values():
        header = item[b"BODY[HEADER.FIELDS (SUBJECT)]"]
        subject = header.decode().split(":", 1)[1].strip()
        out[subject] = {f.decode() for f in item[b"FLAGS"] if f.startswith(b"$")}
    return out


def sort_once(sorter: Sorter) -> None:
    sorter.connect()
    try:
        sorter.sort_new()
    finally:
        sorter.close()


def test_first_start_leaves_mail_already_there_alone(
    book: Book, dovecot: Dovecot
) -> None:
    """Mail in the INBOX before the sorter first ran is never judged."""
    append(dovecot, message(book.unknown, STRANGER, "old-junk"))

    sort_once(make_sorter(book, dovecot))

    assert folder(dovecot, "INBOX") == {"old-junk": set()}


def test_new_mail_is_sorted_by_verdict(book: Book, dovecot: Dovecot) -> None:
    """Deliver stays, warn is marked, junk and reject move to Junk, redirect
    is marked and stays, mail for no address of ours is left alone."""
    sorter = make_sorter(book, dovecot)
    sort_once(sorter)
    append(
        dovecot,
        message(book.tom, TOM, "known"),
        message(book.tom, STRANGER, "stranger"),
        message(book.unknown, STRANGER, "unknown"),
        message(book.blocked, TOM, "blocked"),
        message(book.moved, ANN, "moved"),
        message(book.quiet, STRANGER, "quiet"),
        message("someone@else.test", STRANGER, "elsewhere"),
    )

    sort_once(sorter)

    assert folder(dovecot, "INBOX") == {
        "known": set(),
        "stranger": {KEYWORD_WARN},
        "moved": {KEYWORD_REDIRECT},
        "elsewhere": set(),
    }
    assert folder(dovecot, "Junk") == {
        "unknown": {KEYWORD_JUNK},
        "blocked": {KEYWORD_JUNK},
        "quiet": {KEYWORD_JUNK},
    }
    [leak] = book.index.leaks()
    assert (leak.uid, leak.sender_domain) == ("tom", "evil.test")


def test_recipient_prefers_an_envelope_field_with_a_token(book: Book) -> None:
    """Delivered-To of the real mailbox does not hide the segment in To."""
    header = (
        f"Delivered-To: john@john.example\r\nX-Original-To: {book.grace}\r\n"
        f"To: {book.tom}\r\nCc: Else <x@else.test>\r\n\r\n"
    ).encode()
    domains = local_domains(book.config)

    found = find_recipient(split_message(header), book.config.template, domains)

    assert found == book.grace


def test_recipient_falls_back_to_to_and_cc_on_our_domain(book: Book) -> None:
    """Without envelope fields, the first To/Cc address of ours counts."""
    header = f'To: a@else.test\r\nCc: "T" <{book.tom}>\r\n\r\n'.encode()
    template, domains = book.config.template, local_domains(book.config)

    assert find_recipient(split_message(header), template, domains) == book.tom
    assert (
        find_recipient(split_message(b"To: a@b.test\r\n\r\n"), template, domains)
        is None
    )


def test_restart_does_not_act_twice(book: Book, dovecot: Dovecot) -> None:
    """A new sorter on the same index starts where the last one stopped."""
    sort_once(make_sorter(book, dovecot))
    append(dovecot, message(book.tom, STRANGER, "stranger"))
    sort_once(make_sorter(book, dovecot))

    again = make_sorter(book, dovecot)
    again.connect()
    try:
        outcome = again.sort_new()
    finally:
        again.close()

    assert outcome.seen == 0
    assert book.index.leaks()[0].count == 1


def test_junk_moved_back_by_the_user_stays(book: Book, dovecot: Dovecot) -> None:
    """A message the user takes back out of Junk is not moved again."""
    sorter = make_sorter(book, dovecot)
    sort_once(sorter)
    append(dovecot, message(book.unknown, STRANGER, "not-junk"))
    sort_once(sorter)
    with client(dovecot) as imap:
        imap.select_folder("Junk")
        imap.move(imap.search(["ALL"]), "INBOX")

    sort_once(sorter)

    assert folder(dovecot, "INBOX") == {"not-junk": {KEYWORD_JUNK}}
    assert folder(dovecot, "Junk") == {}


def renumber(maildir: Path, keywords_lost: bool) -> None:
    """Make Dovecot renumber the Maildir under a new UIDVALIDITY, as after a
    server migration: a UID list with only a new header, no indexes."""
    uidlist = maildir / "dovecot-uidlist"
    version, *fields = uidlist.read_text().splitlines()[0].split()
    values = {f[0]: f[1:] for f in fields}
    values["V"] = str(int(values["V"]) + 1000)
    values["N"] = "1"
    uidlist.write_text(" ".join([version, *(k + v for k, v in values.items())]) + "\n")
    for path in maildir.glob("dovecot.index*"):
        path.unlink()
    if keywords_lost:
        (maildir / "dovecot-keywords").unlink()


@pytest.mark.parametrize("keywords_lost", [False, True], ids=["kept", "lost"])
def test_uidvalidity_change_rescans_without_acting_twice(
    book: Book, dovecot: Dovecot, keywords_lost: bool
) -> None:
    """When the server renumbers the mailbox, mail is looked at again but
    nothing is acted on twice (by its keyword, or by its Message-ID when the
    keywords were lost too), and new mail is still sorted."""
    sorter = make_sorter(book, dovecot)
    sort_once(sorter)
    append(dovecot, message(book.tom, STRANGER, "stranger"))
    sort_once(sorter)
    dovecot.stop()
    renumber(dovecot.maildir, keywords_lost)
    dovecot.start()
    append(dovecot, message(book.unknown, STRANGER, "after"))
    renumbered = make_sorter(book, dovecot)

    sort_once(renumbered)

    assert renumbered.place is not None and renumbered.place.rescan
    kept = set() if keywords_lost else {KEYWORD_WARN}
    assert folder(dovecot, "INBOX") == {"stranger": kept}
    assert folder(dovecot, "Junk") == {"after": {KEYWORD_JUNK}}
    assert book.index.leaks()[0].count == 1


def test_without_move_only_the_junk_uid_is_expunged(book: Book) -> None:
    """Without MOVE: COPY, \\Deleted and UID EXPUNGE of that UID alone; a
    message the user marked deleted stays."""
    require_dovecot()
    server = Dovecot(hide=("MOVE",))
    server.start()
    try:
        sorter = make_sorter(book, server)
        sort_once(sorter)
        append(server, message(book.tom, TOM, "users-deleted"))
        with client(server) as imap:
            imap.select_folder("INBOX")
            imap.add_flags(imap.search(["ALL"]), [b"\\Deleted"])
        append(server, message(book.unknown, STRANGER, "junk"))

        sort_once(sorter)

        assert b"MOVE" not in sorter.capabilities
        assert folder(server, "Junk") == {"junk": {KEYWORD_JUNK}}
        with client(server) as imap:
            imap.select_folder("INBOX", readonly=True)
            assert len(imap.search(["DELETED"])) == 1
    finally:
        server.cleanup()


def test_redirect_notice_goes_to_the_known_sender_once(
    book: Book, dovecot: Dovecot, tmp_path: Path
) -> None:
    """A known sender on a retired address is told the new one through the
    spool, once however often they write; a list post gets no notice."""
    spool = Spool(tmp_path / "spool")
    notifier = Notifier(spool, book.index)
    sorter = make_sorter(book, dovecot, notify=notifier.notify)
    sort_once(sorter)
    listed = message(book.moved, ANN, "list").replace(
        b"Subject:", b"List-Id: <l.example>\r\nSubject:"
    )
    append(dovecot, listed, message(book.moved, ANN, "one"))
    append(dovecot, message(book.moved, ANN, "two"))

    sort_once(sorter)

    [copy] = spool.copies()
    data = spool.data(copy)
    assert copy.rcpts == (ANN,) and copy.sender == book.moved_to
    assert book.moved_to.encode() in data and b"Auto-Submitted: auto-replied" in data
    spool.close()


# -- the service: IDLE, polling, reconnects ------------------------------------


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for: {what}")
        time.sleep(0.1)


class Service:
    """ImapSorter.run in a loop thread, stopped on request."""

    def __init__(self, loop: LoopThread, sorter: ImapSorter) -> None:
        self.loop = loop
        self.sorter = sorter
        self.stopping = asyncio.Event()
        self.future = asyncio.run_coroutine_threadsafe(self._run(), loop.loop)

    async def _run(self) -> None:
        await self.sorter.run(self.stopping)

    def stop(self) -> None:
        self.loop.loop.call_soon_threadsafe(self.stopping.set)
        self.future.result(30)


def test_idle_sorts_new_mail_and_survives_a_dovecot_restart(
    book: Book, dovecot: Dovecot, loop_thread: LoopThread
) -> None:
    """Mail arriving during IDLE is sorted; after Dovecot restarts the sorter
    reconnects and sorts again; no message is lost on the way."""
    sorter = make_sorter(book, dovecot)
    service = Service(loop_thread, ImapSorter(sorter, backoff_initial=0.2))
    try:
        wait_until(lambda: service.sorter.passes >= 1, "first pass")
        append(dovecot, message(book.unknown, STRANGER, "first"))
        wait_until(lambda: "first" in folder(dovecot, "Junk"), "first sorted")
        dovecot.restart()
        append(dovecot, message(book.unknown, STRANGER, "second"))
        append(dovecot, message(book.tom, TOM, "kept"))
        wait_until(lambda: "second" in folder(dovecot, "Junk"), "second sorted")
    finally:
        service.stop()

    assert set(folder(dovecot, "Junk")) == {"first", "second"}
    assert folder(dovecot, "INBOX") == {"kept": set()}


def test_without_idle_the_sorter_polls(book: Book, loop_thread: LoopThread) -> None:
    """A server without IDLE is polled at the configured interval."""
    require_dovecot()
    server = Dovecot(hide=("IDLE",))
    server.start()
    domains = local_domains(book.config)
    sorter = Sorter(settings(server, poll=0.2), book.judge, book.index, domains)
    service = Service(loop_thread, ImapSorter(sorter))
    try:
        wait_until(lambda: service.sorter.passes >= 1, "first pass")
        append(server, message(book.unknown, STRANGER, "polled"))
        wait_until(lambda: "polled" in folder(server, "Junk"), "polled sorted")
        assert not sorter.can_idle
    finally:
        service.stop()
        server.cleanup()


def test_wrong_password_is_retried(
    book: Book, dovecot: Dovecot, loop_thread: LoopThread
) -> None:
    """A failed login does not end the service: it tries again after a pause."""
    bad = ImapSettings("127.0.0.1", dovecot.port, "none", USER, "wrong")
    sorter = Sorter(bad, book.judge, book.index, local_domains(book.config))
    log = dovecot.root / "dovecot.log"
    service = Service(loop_thread, ImapSorter(sorter, backoff_initial=0.05))
    try:
        wait_until(
            lambda: log.read_text(errors="replace").count("auth failed") >= 3,
            "three failed logins",
        )
    finally:
        service.stop()

    assert service.sorter.passes == 0
