"""What the POP3 client sees: the upstream mailbox, judged and filtered.

At login (:meth:`Mailbox.open`) segcard connects to the upstream server,
lists it by UIDL and fetches every message it has not seen before. Each is
judged once, like in the other inbound modes (recipient from
``Delivered-To`` and friends, see :func:`find_recipient`):

- deliver, warn, redirect: kept in a local cache with ``X-Segcard-Verdict``
  on top and, for a warning, the note at the end (annotate.py decides where
  that is safe); this copy is what the client reads;
- junk, reject: put into the quarantine and never shown; removed upstream
  only when ``pop3.delete_upstream`` is set;
- mail for no address of the user's: shown untouched.

The ledger (SQLite) remembers what became of each upstream UIDL, so a
message is judged once and its leak evidence counted once, and the client
sees the upstream UIDL, which stays the same across sessions.

DELE only marks a message; at QUIT the marks are saved in the ledger, the
client's copies go, and the messages are deleted upstream in a new upstream
session. Should that fail, the deletions are applied at the next login; a
connection that drops before QUIT deletes nothing at all. Released
quarantine messages join at the next login. One session at a time (RFC 1939
section 8: the maildrop is locked).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segcard.book.verdict import Action, Judge, Mail, Verdict, record
from segcard.errors import SegcardError
from segcard.mail import maildir
from segcard.mail.headers import Message, split_message
from segcard.mail.inbound import addresses, local_domains, read_mail, visible_note
from segcard.mail.inbound.annotate import annotate
from segcard.mail.inbound.imap_sorter import find_recipient
from segcard.mail.inbound.notice import is_automatic, wanted
from segcard.mail.pop3.quarantine import Quarantine
from segcard.mail.pop3.upstream import (
    Refused,
    Upstream,
    UpstreamError,
    UpstreamSettings,
)
from segcard.store.index import Index, now

log = logging.getLogger(__name__)

Notify = Callable[[Verdict, Mail, int], object]
HELD_BACK = frozenset({Action.JUNK, Action.REJECT})
_LINE_END_RE = re.compile(rb"\r?\n")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    uidl TEXT NOT NULL,
    state TEXT NOT NULL,
    file TEXT NOT NULL DEFAULT '',
    qfile TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    upstream INTEGER NOT NULL,
    at INTEGER NOT NULL,
    UNIQUE (account, uidl)
);
"""


class MailboxBusy(SegcardError):
    """Another POP3 session has the mailbox (RFC 2449 8.1.2, IN-USE)."""


class State(enum.StrEnum):
    SHOWN = "shown"  # in the cache, listed to the client
    QUARANTINED = "quarantined"  # in the quarantine Maildir
    DELETED = "deleted"  # deleted by the client; upstream DELE pending


@dataclass(frozen=True)
class Row:
    """What became of one upstream message."""

    uidl: str
    state: State
    file: str  # cache file name while shown
    qfile: str  # quarantine name, once quarantined
    size: int
    upstream: bool  # still on the upstream server, as far as we know


@dataclass(frozen=True)
class Item:
    """One message of the maildrop as the client sees it."""

    uidl: str
    path: Path
    size: int  # octets as sent, CRLF line ends, before dot-stuffing


class Ledger:
    """The ledger of one upstream account, in SQLite; safe across threads."""

    def __init__(self, path: Path, account: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.account = account
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def rows(self) -> dict[str, Row]:
        """Every row of the account, by UIDL, in arrival order."""
        with self._lock:
            found = self._db.execute(
                "SELECT uidl, state, file, qfile, size, upstream FROM messages "
                "WHERE account = ? ORDER BY seq",
                (self.account,),
            ).fetchall()
        return {
            r[0]: Row(r[0], State(r[1]), r[2], r[3], r[4], bool(r[5])) for r in found
        }

    def add(self, row: Row) -> None:
        self._write(
            "INSERT OR REPLACE INTO messages "
            "(account, uidl, state, file, qfile, size, upstream, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(self.account, row.uidl, row.state, row.file, row.qfile, row.size,
              int(row.upstream), now())],
        )  # fmt: skip

    def change(self, uidls: list[str], **values: object) -> None:
        """Set *values* (state, file, size, upstream) on the rows of *uidls*."""
        names = ", ".join(f"{key} = ?" for key in values)  # our own column names
        self._write(
            f"UPDATE messages SET {names} WHERE account = ? AND uidl = ?",
            [(*values.values(), self.account, uidl) for uidl in uidls],
        )

    def drop(self, uidls: list[str]) -> None:
        self._write(
            "DELETE FROM messages WHERE account = ? AND uidl = ?",
            [(self.account, uidl) for uidl in uidls],
        )

    def by_qfile(self, name: str) -> Row | None:
        """The row of the message quarantined as *name*."""
        return next((r for r in self.rows().values() if r.qfile == name), None)

    def _write(self, sql: str, params: list[tuple[object, ...]]) -> None:
        if not params:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


def wire_form(data: bytes) -> bytes:
    """*data* with CRLF line ends and a final CRLF (RFC 1939 3)."""
    wire = _LINE_END_RE.sub(b"\r\n", data)
    return wire if wire.endswith(b"\r\n") or not wire else wire + b"\r\n"


def write_file(path: Path, data: bytes) -> None:
    """Write *data* to *path* through a temp file, fsynced, then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    maildir.fsync_dir(path.parent)


class Mailbox:
    """The upstream mailbox of one account, as segcard shows it."""

    def __init__(
        self,
        settings: UpstreamSettings,
        judge: Judge,
        index: Index,
        root: Path,
        quarantine: Quarantine,
        delete_upstream: bool = False,
        notify: Notify | None = None,
        clock: Callable[[], int] = now,
    ) -> None:
        self.settings = settings
        self.judge = judge
        self.index = index
        self.cache = root / "messages"
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ledger = Ledger(root / "state.sqlite3", settings.account)
        self.quarantine = quarantine
        self.delete_upstream = delete_upstream
        self.notify = notify
        self.clock = clock
        self.domains = local_domains(judge.config)
        self._busy = False

    def close(self) -> None:
        self.ledger.close()

    async def open(self) -> Session:
        """Fetch and judge what is new upstream; the client's session."""
        if self._busy:
            raise MailboxBusy("another POP3 session is open")
        self._busy = True
        try:
            await self.sync(fetch=True)
            await asyncio.to_thread(self._take_released)
            items = await asyncio.to_thread(self._maildrop)
        except BaseException:
            self._busy = False
            raise
        return Session(self, items)

    def release_lock(self) -> None:
        self._busy = False

    # -- the upstream side -------------------------------------------------------

    async def sync(self, fetch: bool) -> None:
        """One upstream session: apply pending deletions, then (if *fetch*)
        take every new message."""
        async with await Upstream.connect(self.settings) as upstream:
            listing = await upstream.uidl()
            rows = await asyncio.to_thread(self.ledger.rows)
            doomed = [n for n, uidl in listing.items() if self._doomed(rows.get(uidl))]
            for number in doomed:
                await upstream.dele(number)
            if fetch:
                doomed += await self._fetch_new(upstream, listing, rows)
            await upstream.quit()
        await asyncio.to_thread(self._after_quit, listing, [listing[n] for n in doomed])

    def _doomed(self, row: Row | None) -> bool:
        """Whether the message of *row* is to be deleted upstream now."""
        if row is None or not row.upstream:
            return False
        quarantined = row.state is State.QUARANTINED and self.delete_upstream
        return row.state is State.DELETED or quarantined

    async def _fetch_new(
        self, upstream: Upstream, listing: dict[int, str], rows: dict[str, Row]
    ) -> list[int]:
        """Fetch and judge the messages not in the ledger; return the numbers
        of those quarantined that are to go upstream as well."""
        doomed = []
        for number, uidl in listing.items():
            if uidl in rows:
                continue
            try:
                raw = await upstream.retr(number)
            except Refused as exc:
                log.warning("upstream message %s not fetched: %s", uidl, exc)
                continue
            state = await asyncio.to_thread(self._take, uidl, raw)
            if state is State.QUARANTINED and self.delete_upstream:
                await upstream.dele(number)
                doomed.append(number)
        return doomed

    def _after_quit(self, listing: dict[int, str], deleted: list[str]) -> None:
        """Bring the ledger up to date once the upstream session ended."""
        present = set(listing.values()) - set(deleted)
        gone_shown, gone, left_upstream = [], [], []
        for uidl, row in self.ledger.rows().items():
            if not row.upstream or uidl in present:
                continue
            if row.state is State.QUARANTINED:
                left_upstream.append(uidl)
            else:
                # Deleted by us, or by another client of the upstream mailbox.
                gone.append(uidl)
                if row.state is State.SHOWN:
                    gone_shown.append(row)
        self.ledger.change(left_upstream, upstream=0)
        self.ledger.drop(gone)
        for row in gone_shown:
            (self.cache / row.file).unlink(missing_ok=True)

    # -- judging -------------------------------------------------------------------

    def _take(self, uidl: str, raw: bytes) -> State:
        """Judge one new message and put it where it belongs (worker thread)."""
        at = self.clock()
        message = split_message(raw)
        recipient = find_recipient(message, self.judge.template, self.domains)
        if recipient is None:
            self._show(uidl, raw)
            log.info("upstream message %s: for no segment address, shown", uidl)
            return State.SHOWN
        return_path = addresses(message, "return-path")
        mail = read_mail(message, recipient, return_path[0] if return_path else "")
        verdict = self.judge.judge(mail, at)
        if verdict.action in HELD_BACK:
            name = self.quarantine.put(wire_form(annotate(raw, verdict.header())))
            self.ledger.add(Row(uidl, State.QUARANTINED, "", name, 0, True))
            state = State.QUARANTINED
        else:
            self._show(uidl, annotate(raw, verdict.header(), visible_note(verdict)))
            state = State.SHOWN
        self._learn(verdict, mail, message, at)
        return state

    def _learn(self, verdict: Verdict, mail: Mail, message: Message, at: int) -> None:
        record(self.index, verdict, mail, at)
        uid = verdict.contact.uid if verdict.contact else "-"
        log.info("upstream message for contact %s: %s (%s)", uid, verdict.action,
                 verdict.reason)  # fmt: skip
        if self.notify and wanted(verdict, mail, is_automatic(message)):
            self.notify(verdict, mail, at)

    def _show(
        self, uidl: str, data: bytes, upstream: bool = True, qfile: str = ""
    ) -> None:
        wire = wire_form(data)
        name = cache_name(self.settings.account, uidl)
        write_file(self.cache / name, wire)
        self.ledger.add(Row(uidl, State.SHOWN, name, qfile, len(wire), upstream))

    def _take_released(self) -> None:
        """Move released quarantine messages into the cache (worker thread)."""
        for entry in self.quarantine.released():
            row = self.ledger.by_qfile(entry.name)
            if row is None:
                # Put there by hand, or the ledger is new: a local message.
                uidl = "segcard-" + hashlib.sha256(entry.name.encode()).hexdigest()[:24]
                self._show(uidl, entry.read(), upstream=False, qfile=entry.name)
            elif row.state is State.QUARANTINED:
                self._show(row.uidl, entry.read(), row.upstream, entry.name)
            self.quarantine.forget(entry)
            log.info("released message %s joins the session", entry.id)

    def _maildrop(self) -> list[Item]:
        """The messages the client sees, in arrival order (worker thread)."""
        items, lost = [], []
        for row in self.ledger.rows().values():
            if row.state is not State.SHOWN:
                continue
            path = self.cache / row.file
            if path.exists():
                items.append(Item(row.uidl, path, row.size))
            else:
                lost.append(row.uidl)
        if lost:
            # Fetched again (and judged again) at the next login.
            log.warning(
                "%d cached messages are missing; fetching them again", len(lost)
            )
            self.ledger.drop(lost)
        return items

    # -- QUIT ------------------------------------------------------------------------

    async def commit(self, deleted: list[Item]) -> bool:
        """Apply the client's deletions; False when upstream must wait for
        the next login (they are saved either way)."""
        if not deleted:
            return True
        await asyncio.to_thread(self._mark_deleted, deleted)
        try:
            await self.sync(fetch=False)
        except (UpstreamError, sqlite3.Error, OSError) as exc:
            log.warning("deletions wait for the next login: %s", exc)
            return False
        return True

    def _mark_deleted(self, deleted: list[Item]) -> None:
        rows = self.ledger.rows()
        remote = [i.uidl for i in deleted if i.uidl in rows and rows[i.uidl].upstream]
        local = [i.uidl for i in deleted if i.uidl not in remote]
        self.ledger.change(remote, state=State.DELETED.value, file="")
        self.ledger.drop(local)
        for item in deleted:
            item.path.unlink(missing_ok=True)
        log.info("client deleted %d messages", len(deleted))


def cache_name(account: str, uidl: str) -> str:
    """The cache file of a message: fixed by account and UIDL, so writing it
    twice (after a crash) leaves one file."""
    return hashlib.sha256(f"{account}\0{uidl}".encode()).hexdigest()[:32]


class NoSuchMessage(SegcardError):
    """The client named a message number that is not there, or deleted."""


class Session:
    """One client's maildrop from login to QUIT (RFC 1939 5 and 6)."""

    def __init__(self, mailbox: Mailbox, items: list[Item]) -> None:
        self.mailbox = mailbox
        self.items = items
        self.deleted: set[int] = set()
        self.closed = False

    def item(self, number: int) -> Item:
        """Message *number* (from 1), unless it is missing or deleted."""
        if not 1 <= number <= len(self.items):
            raise NoSuchMessage(f"no message {number}")
        if number in self.deleted:
            raise NoSuchMessage(f"message {number} is deleted")
        return self.items[number - 1]

    def live(self) -> list[tuple[int, Item]]:
        """(number, item) of every message not marked deleted."""
        return [(n, i) for n, i in enumerate(self.items, 1) if n not in self.deleted]

    def stat(self) -> tuple[int, int]:
        live = self.live()
        return len(live), sum(i.size for _n, i in live)

    async def read(self, number: int) -> bytes:
        return await asyncio.to_thread(self.item(number).path.read_bytes)

    def delete(self, number: int) -> None:
        self.item(number)
        self.deleted.add(number)

    def reset(self) -> None:
        self.deleted.clear()

    async def quit(self) -> bool:
        """Enter the UPDATE state: apply the deletions, end the session."""
        try:
            return await self.mailbox.commit(
                [self.items[n - 1] for n in sorted(self.deleted)]
            )
        finally:
            self.close()

    def close(self) -> None:
        """End the session without deleting anything (a dropped connection)."""
        if not self.closed:
            self.closed = True
            self.mailbox.release_lock()
