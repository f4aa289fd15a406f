"""The IMAP sorter: judge each new message in a hosted INBOX and sort it.

For a mailbox at a provider with a catch-all domain. For every new message
the recipient is read from ``Delivered-To``, ``X-Original-To`` or
``Envelope-To``, else from To/Cc (the first address on the user's domains
that carries a token, else the first on those domains; with none the message
is left alone). Then, by verdict:

- deliver: nothing changes;
- warn: the keyword ``$SegcardWarn`` (the add-on shows it), leak evidence;
- junk, reject: the keyword ``$SegcardJunk``, then MOVE to the junk folder
  (or COPY, ``\\Deleted`` and ``UID EXPUNGE`` of that UID only);
- redirect: the keyword ``$SegcardRedirect``, the message stays, and the
  known sender is told the new address through the outgoing spool.

A message carrying one of these keywords is never acted on again: not after
a crash, not when the user moves it back to the INBOX. Nothing is ever
deleted. The place in the mailbox (UIDVALIDITY, the last UID done, and the
time the sorter first started) is kept in the index; on first start the
mail already there is left alone; after a UIDVALIDITY change the INBOX is
scanned again from that first start on, and the keywords keep it from acting
twice. The blocking imapclient runs in a worker thread; the service waits
with IDLE where the server has it, polls where not, and reconnects with
back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import socket
import sqlite3
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from segcard.book.verdict import Action, Judge, Mail, Verdict, record
from segcard.config import Config
from segcard.errors import SegcardError
from segcard.mail.headers import split_message
from segcard.mail.inbound import (
    RECIPIENT_FIELDS,
    addresses,
    find_recipient,
    local_domains,
    read_mail,
)
from segcard.mail.inbound.imap_settings import ImapSettings, Place
from segcard.mail.inbound.notice import is_automatic, wanted
from segcard.store.index import Index, now

log = logging.getLogger(__name__)

KEYWORD_WARN = "$SegcardWarn"
KEYWORD_JUNK = "$SegcardJunk"
KEYWORD_REDIRECT = "$SegcardRedirect"
KEYWORDS = frozenset({KEYWORD_WARN, KEYWORD_JUNK, KEYWORD_REDIRECT})

HEADER_FIELDS = (
    *RECIPIENT_FIELDS,
    *("to", "cc", "from", "return-path", "list-id", "message-id"),
    *("references", "in-reply-to", "auto-submitted", "precedence"),
)
FETCH = ["FLAGS", f"BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS).upper()})]"]
BATCH = 500  # UIDs per FETCH
IDLE_TIMEOUT = 600.0  # RFC 2177: re-issue IDLE well before 29 minutes
CLOCK_SKEW = 3600  # seconds a server's INTERNALDATE may lag our clock
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 300.0

Notify = Callable[[Verdict, Mail, int], object]
ERRORS = (imaplib.IMAP4.error, IMAPClientError, OSError, sqlite3.Error, SegcardError)


@dataclass
class Outcome:
    """What one pass did, for logs and tests."""

    seen: int = 0
    moved: int = 0
    warned: int = 0
    redirected: int = 0
    skipped: int = 0


class Sorter:
    """The blocking half: one IMAP connection, used from one thread at a time."""

    def __init__(
        self,
        settings: ImapSettings,
        judge: Judge,
        index: Index,
        domains: frozenset[str],
        notify: Notify | None = None,
        clock: Callable[[], int] = now,
    ) -> None:
        self.settings = settings
        self.judge = judge
        self.index = index
        self.template = judge.config.template
        self.domains = domains
        self.notify = notify
        self.clock = clock
        self.client: IMAPClient | None = None
        self.place: Place | None = None
        self.keywords_ok = True
        self.capabilities: frozenset[bytes] = frozenset()

    @property
    def state_key(self) -> str:
        s = self.settings
        return f"imap:{s.username}@{s.host}:{s.port}/{s.mailbox}"

    # -- the connection -------------------------------------------------------

    def connect(self) -> None:
        """Log in, make sure the junk folder exists, select the mailbox."""
        s = self.settings
        context = ssl.create_default_context()
        client = IMAPClient(
            s.host, s.port, ssl=s.tls == "ssl", ssl_context=context, timeout=60
        )
        client.normalise_times = False
        self.client = client
        if s.tls == "starttls":
            client.starttls(context)
        client.login(s.username, s.password)
        self.capabilities = frozenset(client.capabilities())
        if not client.folder_exists(s.junk_folder):
            client.create_folder(s.junk_folder)
        self._select()
        log.info("IMAP sorter watching %s on %s", s.mailbox, s.host)

    def _select(self) -> None:
        assert self.client is not None
        info = self.client.select_folder(self.settings.mailbox)
        self.keywords_ok = b"\\*" in info.get(b"PERMANENTFLAGS", (b"\\*",))
        if not self.keywords_ok:
            log.warning("IMAP server takes no keywords: warnings are not marked")
        uidvalidity = int(info[b"UIDVALIDITY"])
        place = Place.load(self.index.get_state(self.state_key))
        if place is None:
            last = max(self.client.search(["ALL"]) or [0])
            place = Place(uidvalidity, last, float(self.clock()))
            log.info("first start: mail up to UID %d is left alone", last)
        elif place.uidvalidity != uidvalidity:
            log.warning("UIDVALIDITY changed: scanning the mailbox again")
            place = Place(uidvalidity, 0, place.since, rescan=True)
        self.place = place
        self.index.set_state(self.state_key, place.dump())

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        with contextlib.suppress(*ERRORS):
            client.logout()
        with contextlib.suppress(OSError):
            client.shutdown()

    def interrupt(self) -> None:
        """Break a blocking wait from another thread (used when stopping)."""
        client = self.client
        if client is not None:
            with contextlib.suppress(OSError):
                client.socket().shutdown(socket.SHUT_RDWR)

    # -- waiting ----------------------------------------------------------------

    @property
    def can_idle(self) -> bool:
        return b"IDLE" in self.capabilities

    def idle(self, timeout: float) -> None:
        """Wait in IDLE until the mailbox changes or *timeout* passes."""
        assert self.client is not None
        self.client.idle()
        try:
            responses = self.client.idle_check(timeout)
        finally:
            done = self.client.idle_done()
        for response in [*responses, *done[1]]:
            if response and response[0] == b"BYE":
                raise imaplib.IMAP4.abort("server said BYE during IDLE")

    def noop(self) -> None:
        assert self.client is not None
        self.client.noop()

    # -- sorting ----------------------------------------------------------------

    def sort_new(self) -> Outcome:
        """Judge and sort every message after the last UID done."""
        assert self.client is not None and self.place is not None
        found = self.client.search(["UID", f"{self.place.last_uid + 1}:*"])
        uids = sorted(u for u in found if u > self.place.last_uid)
        outcome = Outcome()
        for start in range(0, len(uids), BATCH):
            self._sort_batch(uids[start : start + BATCH], outcome)
        if outcome.seen:
            log.info(
                "IMAP sorter: %d new, %d moved, %d warned, %d redirected",
                outcome.seen,
                outcome.moved,
                outcome.warned,
                outcome.redirected,
            )
        return outcome

    def _sort_batch(self, uids: list[int], outcome: Outcome) -> None:
        assert self.client is not None and self.place is not None
        # INTERNALDATE only matters in a rescan, and costs time to parse.
        items = [*FETCH, "INTERNALDATE"] if self.place.rescan else FETCH
        fetched = self.client.fetch(uids, items)
        at = self.clock()
        plan: list[tuple[int, Verdict, Mail, bool]] = []
        for uid in uids:
            judged = self._judge(fetched.get(uid), at)
            if judged is None:
                outcome.skipped += 1
            else:
                plan.append((uid, *judged))
        outcome.seen += len(uids)
        self._act(plan, outcome)
        for _uid, verdict, mail, automatic in plan:
            record(self.index, verdict, mail, at)
            if self.notify and wanted(verdict, mail, automatic):
                self.notify(verdict, mail, at)
        self.place.last_uid = max(uids)
        self.index.set_state(self.state_key, self.place.dump())

    def _judge(
        self, item: dict[bytes, Any] | None, at: int
    ) -> tuple[Verdict, Mail, bool] | None:
        """(verdict, mail, automatic) for one fetched message, or None to
        leave it alone."""
        if item is None:
            return None  # expunged meanwhile
        flags = {f.decode("utf-8", "replace") for f in item.get(b"FLAGS", ())}
        if flags & KEYWORDS or self._before_start(item.get(b"INTERNALDATE")):
            return None
        header = next((v for k, v in item.items() if k.startswith(b"BODY[")), b"")
        message = split_message(header or b"")
        recipient = find_recipient(message, self.template, self.domains)
        if recipient is None:
            return None
        return_path = addresses(message, "return-path")
        mail = read_mail(message, recipient, return_path[0] if return_path else "")
        if self._seen_before(mail):
            return None
        return self.judge.judge(mail, at), mail, is_automatic(message)

    def _seen_before(self, mail: Mail) -> bool:
        """During a rescan, whether the index already knows this message (in
        case the server lost our keywords along with its UIDs)."""
        assert self.place is not None
        if not self.place.rescan or not mail.message_id:
            return False
        return self.index.message(mail.message_id) is not None

    def _before_start(self, internal: datetime | None) -> bool:
        """During a rescan, whether the message predates the first start."""
        assert self.place is not None
        if not self.place.rescan or internal is None:
            return False
        return internal.timestamp() < self.place.since - CLOCK_SKEW

    def _act(
        self, plan: list[tuple[int, Verdict, Mail, bool]], outcome: Outcome
    ) -> None:
        """Mark first, then move: a crash in between leaves a marked message
        in the INBOX, never one acted on twice."""
        by_action: dict[Action, list[int]] = {}
        for uid, verdict, _mail, _auto in plan:
            by_action.setdefault(verdict.action, []).append(uid)
        junk = by_action.get(Action.JUNK, []) + by_action.get(Action.REJECT, [])
        warn = by_action.get(Action.WARN, [])
        redirect = by_action.get(Action.REDIRECT, [])
        self._mark(warn, KEYWORD_WARN)
        self._mark(redirect, KEYWORD_REDIRECT)
        self._mark(junk, KEYWORD_JUNK)
        self._move(junk)
        outcome.moved += len(junk)
        outcome.warned += len(warn)
        outcome.redirected += len(redirect)

    def _mark(self, uids: list[int], keyword: str) -> None:
        if uids and self.keywords_ok:
            assert self.client is not None
            self.client.add_flags(uids, [keyword], silent=True)

    def _move(self, uids: list[int]) -> None:
        """Move *uids* to the junk folder: MOVE, else COPY + \\Deleted +
        UID EXPUNGE of exactly these UIDs (RFC 4315), never a plain EXPUNGE."""
        if not uids:
            return
        assert self.client is not None
        folder = self.settings.junk_folder
        if b"MOVE" in self.capabilities:
            self.client.move(uids, folder)
            return
        self.client.copy(uids, folder)
        self.client.add_flags(uids, [b"\\Deleted"], silent=True)
        if b"UIDPLUS" in self.capabilities:
            self.client.uid_expunge(uids)
        else:
            log.warning("no UIDPLUS: %d copied to junk stay marked deleted", len(uids))


class ImapSorter:
    """The sorter as a service of the daemon: IDLE or poll, reconnect."""

    def __init__(
        self,
        sorter: Sorter,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.sorter = sorter
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.idle_timeout = idle_timeout
        self.passes = 0  # completed sorting passes, for tests and status

    async def run(self, stopping: asyncio.Event) -> None:
        """Sort until *stopping* is set, reconnecting after any failure."""
        delay = self.backoff_initial
        while not stopping.is_set():
            try:
                await asyncio.to_thread(self.sorter.connect)
                delay = self.backoff_initial
                await self._watch(stopping)
            except ERRORS as exc:
                log.warning(
                    "IMAP %s: %s; again in %.0fs", self.sorter.settings.host, exc, delay
                )
            finally:
                await asyncio.to_thread(self.sorter.close)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(delay * 2, self.backoff_max)

    async def _watch(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await asyncio.to_thread(self.sorter.sort_new)
            self.passes += 1
            if self.sorter.can_idle:
                await self._idle(stopping)
            else:
                with contextlib.suppress(TimeoutError):
                    poll = self.sorter.settings.poll_interval
                    await asyncio.wait_for(stopping.wait(), poll)

    async def _idle(self, stopping: asyncio.Event) -> None:
        waiting = asyncio.create_task(
            asyncio.to_thread(self.sorter.idle, self.idle_timeout)
        )
        stop = asyncio.create_task(stopping.wait())
        done, _pending = await asyncio.wait(
            {waiting, stop}, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting in done:
            stop.cancel()
            waiting.result()
            return
        self.sorter.interrupt()
        with contextlib.suppress(*ERRORS):
            await waiting


def make_sorter(
    config: Config, judge: Judge, index: Index, notify: Notify | None = None
) -> ImapSorter:
    """The IMAP sorter the config asks for."""
    settings = ImapSettings.from_config(config)
    return ImapSorter(Sorter(settings, judge, index, local_domains(config), notify))


__all__ = [
    "KEYWORDS",
    "ImapSettings",
    "ImapSorter",
    "Place",
    "Sorter",
    "find_recipient",
    "make_sorter",
]
