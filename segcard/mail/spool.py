"""The durable spool: every accepted message and its plan of copies.

Layout, in the spool dir:

- ``msg/<id>.eml``: the message exactly as the client sent it, written once,
  fsynced together with its directory;
- ``spool.sqlite3``: one row per message and one per copy. A copy stores only
  its own header block and the offset where the shared body starts in the
  message file (the rewrite never touches the body), so ten copies of a
  large message take the space of one.

Why SQLite and not a journal of JSON lines: each copy changes state on its
own (queued, then sent, failed or dropped; a retry moves its next try), and
those changes must be atomic and durable one by one while ``segcard queue``
edits the same rows from another process. SQLite gives that with WAL and
``synchronous=FULL`` (each commit is fsynced), with locking between
processes, and without a compaction step a journal would need.

The order of writes makes acceptance crash-safe: the message file first,
then the rows in one transaction. A file without rows was never
acknowledged (no 250 went out) and is deleted by :meth:`Spool.recover`.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segcard.mail.headers import split_message
from segcard.mail.maildir import fsync_dir

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    peer TEXT,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS copies (
    id INTEGER PRIMARY KEY,
    message TEXT NOT NULL REFERENCES messages(id),
    sender TEXT NOT NULL,
    rcpts TEXT NOT NULL,
    uid TEXT,
    token TEXT,
    message_id TEXT,
    header BLOB NOT NULL,
    body_offset INTEGER NOT NULL,
    smtputf8 INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS copies_due ON copies(state, next_try);
CREATE INDEX IF NOT EXISTS copies_message ON copies(message);
CREATE TABLE IF NOT EXISTS warnings (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    message_id TEXT,
    places TEXT NOT NULL
);
"""

COPY_COLUMNS = (
    "id, message, sender, rcpts, uid, token, message_id, smtputf8, state, "
    "attempts, next_try, last_error, created_at, updated_at"
)

# Rows of finished messages are kept this long for ``segcard queue --all``.
KEEP_FINISHED = 7 * 86400
# A message file without rows is removed once it is this old (see recover).
ORPHAN_AGE = 3600.0


class State(enum.StrEnum):
    """Where one copy stands."""

    QUEUED = "queued"  # waiting for its next try
    SENT = "sent"  # accepted by the upstream (or written to the outbox)
    FAILED = "failed"  # refused for good; a bounce notice was delivered
    DROPPED = "dropped"  # removed by the user with ``segcard queue --drop``


FINAL = frozenset({State.SENT, State.FAILED, State.DROPPED})


@dataclass(frozen=True)
class NewCopy:
    """One copy to spool: its envelope and its bytes."""

    sender: str
    rcpts: tuple[str, ...]
    data: bytes
    uid: str | None = None  # the contact whose segment sends it
    token: str | None = None
    message_id: str | None = None
    not_before: float = 0.0  # do not relay before this time (rate limits)


@dataclass(frozen=True)
class Copy:
    """One spooled copy as the relay and ``segcard queue`` see it."""

    id: int
    message: str
    sender: str
    rcpts: tuple[str, ...]
    uid: str | None
    token: str | None
    message_id: str | None
    smtputf8: bool
    state: State
    attempts: int
    next_try: float
    last_error: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Warning:
    """A leak warning recorded when a message was accepted."""

    id: int
    at: float
    message_id: str | None
    places: list[str]


class Spool:
    """The spool in one directory; safe to share between threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.messages_dir = root / "msg"
        self.messages_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(root / "spool.sqlite3"), check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- accepting ----------------------------------------------------------

    def accept(
        self,
        raw: bytes,
        copies: Sequence[NewCopy],
        smtputf8: bool = False,
        peer: str | None = None,
    ) -> str:
        """Store *raw* and its copies durably; return the spool id.

        When this returns, a crash cannot lose the message: it is the point
        after which the submission server may answer 250.
        """
        message = _new_id()
        self._write_message(message, raw)
        body_start = len(raw) - len(split_message(raw).body)
        now = time.time()
        rows = []
        for copy in copies:
            header, offset = _split_copy(raw, body_start, copy.data)
            utf8 = smtputf8 or not _ascii(copy.sender, *copy.rcpts)
            rows.append(
                (message, copy.sender, json.dumps(list(copy.rcpts)), copy.uid)
                + (copy.token, copy.message_id, header, offset, int(utf8))
                + (State.QUEUED.value, max(now, copy.not_before), now, now)
            )
        with self._transaction() as db:
            db.execute(
                "INSERT INTO messages VALUES (?,?,?,?)", (message, now, peer, len(raw))
            )
            db.executemany(
                "INSERT INTO copies (message, sender, rcpts, uid, token, "
                "message_id, header, body_offset, smtputf8, state, next_try, "
                "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
        log.debug("spooled %s with %d copies", message, len(rows))
        return message

    def _write_message(self, message: str, raw: bytes) -> None:
        path = self._path(message)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.messages_dir)

    def _path(self, message: str) -> Path:
        return self.messages_dir / f"{message}.eml"

    # -- reading ------------------------------------------------------------

    def data(self, copy: Copy) -> bytes:
        """The bytes of *copy*: its header block and the shared body."""
        with self._lock:
            header, offset = self._db.execute(
                "SELECT header, body_offset FROM copies WHERE id=?", (copy.id,)
            ).fetchone()
        raw = self._path(copy.message).read_bytes()
        return bytes(header) + raw[offset:]

    def get(self, copy_id: int) -> Copy | None:
        with self._lock:
            found = self._db.execute(
                f"SELECT {COPY_COLUMNS} FROM copies WHERE id=?", (copy_id,)
            ).fetchone()
        return _copy(found) if found else None

    def copies(self, states: Iterable[State] | None = None) -> list[Copy]:
        """Copies in *states* (all when None), oldest first."""
        wanted = [s.value for s in (states or State)]
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {COPY_COLUMNS} FROM copies WHERE state IN ({marks}) "
                "ORDER BY id",
                wanted,
            ).fetchall()
        return [_copy(r) for r in rows]

    def due(self, now: float, limit: int = 100) -> list[Copy]:
        """Queued copies whose next try has come, soonest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {COPY_COLUMNS} FROM copies WHERE state=? AND next_try<=? "
                "ORDER BY next_try, id LIMIT ?",
                (State.QUEUED.value, now, limit),
            ).fetchall()
        return [_copy(r) for r in rows]

    def next_due(self) -> float | None:
        """When the next queued copy is due, or None when none waits."""
        with self._lock:
            found = self._db.execute(
                "SELECT min(next_try) FROM copies WHERE state=?",
                (State.QUEUED.value,),
            ).fetchone()
        return found[0]

    def counts(self) -> dict[State, int]:
        """How many copies are in each state."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state, count(*) FROM copies GROUP BY state"
            ).fetchall()
        found = {State(s): n for s, n in rows}
        return {s: found.get(s, 0) for s in State}

    # -- changing -----------------------------------------------------------

    def mark_sent(self, copy_id: int) -> None:
        """Record that the upstream took the copy; it is never sent again."""
        self._set(copy_id, State.SENT, None)

    def fail(self, copy_id: int, error: str) -> None:
        """Record a final refusal."""
        self._set(copy_id, State.FAILED, error)

    def drop(self, copy_id: int) -> bool:
        """Remove a queued copy at the user's request; False if not queued."""
        return self._set(copy_id, State.DROPPED, "dropped by the user", queued=True)

    def defer(
        self,
        copy_id: int,
        error: str,
        next_try: float,
        rcpts: Sequence[str] | None = None,
    ) -> None:
        """Count a failed try and set the next; *rcpts* narrows the copy."""
        with self._transaction() as db:
            db.execute(
                "UPDATE copies SET attempts=attempts+1, last_error=?, next_try=?, "
                "updated_at=? WHERE id=? AND state=?",
                (error, next_try, time.time(), copy_id, State.QUEUED.value),
            )
            if rcpts is not None:
                db.execute(
                    "UPDATE copies SET rcpts=? WHERE id=?",
                    (json.dumps(list(rcpts)), copy_id),
                )

    def retry(self, copy_id: int | None = None) -> int:
        """Make queued copies (one, or all) due now; return how many."""
        now = time.time()
        query = "UPDATE copies SET next_try=?, updated_at=? WHERE state=?"
        params: tuple[object, ...] = (now, now, State.QUEUED.value)
        if copy_id is not None:
            query += " AND id=?"
            params += (copy_id,)
        with self._transaction() as db:
            return db.execute(query, params).rowcount

    def _set(
        self, copy_id: int, state: State, error: str | None, queued: bool = False
    ) -> bool:
        query = "UPDATE copies SET state=?, last_error=?, updated_at=? WHERE id=?"
        params: tuple[object, ...] = (state.value, error, time.time(), copy_id)
        if queued:
            query += " AND state=?"
            params += (State.QUEUED.value,)
        with self._transaction() as db:
            changed = db.execute(query, params).rowcount
        return bool(changed)

    # -- leak warnings ------------------------------------------------------

    def add_warning(self, message_id: str | None, places: Sequence[str]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO warnings (at, message_id, places) VALUES (?,?,?)",
                (time.time(), message_id, json.dumps(list(places))),
            )

    def warnings(self, limit: int = 20) -> list[Warning]:
        """The latest leak warnings, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, message_id, places FROM warnings "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [Warning(i, at, mid, json.loads(p)) for i, at, mid, p in rows]

    def warning_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM warnings").fetchone()[0])

    # -- housekeeping -------------------------------------------------------

    def recover(self, min_age: float = ORPHAN_AGE) -> int:
        """Delete message files that were never acknowledged; return how many.

        Only files older than *min_age* seconds: a younger one may belong to
        an :meth:`accept` (of this or another process) still on its way.
        """
        cutoff = time.time() - min_age
        candidates = [
            p for p in self.messages_dir.glob("*.eml") if p.stat().st_mtime < cutoff
        ]
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT id FROM messages")}
        removed = 0
        for path in candidates:
            if path.stem not in known:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d spool files that were never acknowledged", removed)
        return removed

    def purge(self, now: float | None = None) -> int:
        """Drop the files of finished messages, and old rows; return files gone."""
        now = time.time() if now is None else now
        finals = [s.value for s in FINAL]
        with self._lock:
            done = [
                r[0]
                for r in self._db.execute(
                    "SELECT m.id FROM messages m WHERE NOT EXISTS (SELECT 1 FROM "
                    "copies c WHERE c.message=m.id AND c.state NOT IN (?,?,?))",
                    finals,
                )
            ]
        removed = 0
        for message in done:
            path = self._path(message)
            if path.exists():
                path.unlink()
                removed += 1
        self._forget_old(done, now - KEEP_FINISHED)
        return removed

    def _forget_old(self, done: list[str], cutoff: float) -> None:
        with self._transaction() as db:
            for message in done:
                newest = db.execute(
                    "SELECT max(updated_at) FROM copies WHERE message=?", (message,)
                ).fetchone()[0]
                if newest is None or newest < cutoff:
                    db.execute("DELETE FROM copies WHERE message=?", (message,))
                    db.execute("DELETE FROM messages WHERE id=?", (message,))


def _new_id() -> str:
    """A spool id that sorts by time: milliseconds in hex and 32 random bits."""
    return f"{int(time.time() * 1000):012x}-{secrets.token_hex(4)}"


def _split_copy(raw: bytes, body_start: int, data: bytes) -> tuple[bytes, int]:
    """(header bytes, body offset in *raw*) that rebuild *data*."""
    body_length = len(raw) - body_start
    tail = memoryview(data)[len(data) - body_length :]
    if (
        body_length
        and len(data) >= body_length
        and tail == memoryview(raw)[body_start:]
    ):
        return data[: len(data) - body_length], body_start
    return data, len(raw)


def _ascii(*texts: str) -> bool:
    return all(t.isascii() for t in texts)


def _copy(row: tuple) -> Copy:  # type: ignore[type-arg]
    (copy_id, message, sender, rcpts, uid, token, message_id, utf8, state) = row[:9]
    attempts, next_try, last_error, created_at, updated_at = row[9:]
    return Copy(
        id=copy_id,
        message=message,
        sender=sender,
        rcpts=tuple(json.loads(rcpts)),
        uid=uid,
        token=token,
        message_id=message_id,
        smtputf8=bool(utf8),
        state=State(state),
        attempts=attempts,
        next_try=next_try,
        last_error=last_error,
        created_at=created_at,
        updated_at=updated_at,
    )
