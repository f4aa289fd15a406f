"""The durable spool: every accepted message and its plan of copies.

Everything lives in ``spool.sqlite3`` in the spool dir: one row per message
holding the bytes exactly as the client sent them, and one row per copy. A
copy stores only its own header block and the offset where the shared body
starts in the message (the rewrite never touches the body), so ten copies
of a large message take the space of one.

Why SQLite and not a journal of JSON lines: each copy changes state on its
own (queued, then sent, failed or dropped; a retry moves its next try), and
those changes must be atomic and durable one by one while ``segcard queue``
edits the same rows from another process. SQLite gives that with WAL and
``synchronous=FULL``, with locking between processes, and without a
compaction step a journal would need.

Acceptance is one transaction holding the message and its copies, and its
commit is the one fsync (of the WAL) before the 250: a crash before it
leaves nothing, a crash after it loses nothing. A copy marked sent (and
a deferral, and a leak warning) is committed without an fsync of its own:
it survives a crash of segcard at once, and a crash of the machine with
the next fsync (the next accepted message, or a checkpoint). Losing a sent
mark to a power cut sends the copy again, which SMTP allows for anyway:
the upstream may have taken a copy whose 250 never reached us.

Reads (the relay's due copies and their bytes, ``segcard queue``) go
through a connection of their own, so they never wait behind an fsync.

Spools written before the bytes moved into the database keep them in
``msg/<id>.eml``; those files are still read, purged and recovered.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segcard.mail.headers import split_message
from segcard.mail.spool_records import (
    COPY_COLUMNS,
    FINAL,
    SCHEMA,
    Copy,
    NewCopy,
    State,
    Warning,
    add_raw_column,
    connect,
    copy_from_row,
    copy_row,
    insert_warning,
    new_id,
    queued_copy,
)

__all__ = ["SCHEMA", "Copy", "NewCopy", "Spool", "State", "Warning"]

log = logging.getLogger(__name__)

# Rows of finished messages are kept this long for ``segcard queue --all``.
KEEP_FINISHED = 7 * 86400
# A message file (of an older spool) without rows is removed once it is this
# old (see recover).
ORPHAN_AGE = 3600.0


class Spool:
    """The spool in one directory; safe to share between threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.messages_dir = root / "msg"
        self.messages_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        self._lock = threading.RLock()
        self._db = connect(root / "spool.sqlite3")
        self._db.executescript(SCHEMA)
        add_raw_column(self._db)
        self._read_lock = threading.Lock()
        self._read_db = connect(root / "spool.sqlite3")

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._read_db.close()
            self._db.close()

    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; fsynced at commit unless not *durable*."""
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")

    def _read(self, query: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of one query on the reading connection."""
        with self._read_lock:
            return self._read_db.execute(query, params).fetchall()

    # -- accepting ----------------------------------------------------------

    def accept(
        self,
        raw: bytes,
        copies: Sequence[NewCopy],
        smtputf8: bool = False,
        peer: str | None = None,
        body_start: int | None = None,
    ) -> str:
        """Store *raw* and its copies durably; return the spool id.

        When this returns, a crash cannot lose the message: it is the point
        after which the submission server may answer 250. *body_start* is
        where the body of *raw* starts, when the caller knows it already.
        """
        return self.accept_copies(raw, copies, smtputf8, peer, body_start)[0]

    def accept_copies(
        self,
        raw: bytes,
        copies: Sequence[NewCopy],
        smtputf8: bool = False,
        peer: str | None = None,
        body_start: int | None = None,
        warning: Warning | None = None,
    ) -> tuple[str, list[Copy]]:
        """Like accept; also the copies as queued, in the order of *copies*.

        A leak *warning* (its id and time are not used) is recorded in the
        same transaction.
        """
        message = new_id()
        if body_start is None:
            body_start = len(raw) - len(split_message(raw).body)
        now = time.time()
        rows = [copy_row(message, raw, body_start, c, smtputf8, now) for c in copies]
        with self._transaction() as db:
            db.execute(
                "INSERT INTO messages (id, received_at, peer, size, raw) "
                "VALUES (?,?,?,?,?)",
                (message, now, peer, len(raw), raw),
            )
            db.executemany(
                "INSERT INTO copies (message, sender, rcpts, uid, token, "
                "message_id, header, body_offset, smtputf8, state, next_try, "
                "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            ids = db.execute(
                "SELECT id FROM copies WHERE message=? ORDER BY id", (message,)
            ).fetchall()
            if warning is not None:
                insert_warning(db, now, warning.message_id, warning.places)
        log.debug("spooled %s with %d copies", message, len(rows))
        return message, [
            queued_copy(i, row) for (i,), row in zip(ids, rows, strict=True)
        ]

    def _path(self, message: str) -> Path:
        """Where an older spool kept the bytes of *message*."""
        return self.messages_dir / f"{message}.eml"

    # -- reading ------------------------------------------------------------

    def data(self, copy: Copy) -> bytes:
        """The bytes of *copy*: its header block and the shared body."""
        ((header, offset, raw),) = self._read(
            "SELECT c.header, c.body_offset, m.raw FROM copies c "
            "JOIN messages m ON m.id = c.message WHERE c.id=?",
            (copy.id,),
        )
        if raw is None:  # an older spool, or a message already purged
            raw = self._path(copy.message).read_bytes()
        return bytes(header) + raw[offset:]

    def get(self, copy_id: int) -> Copy | None:
        found = self._read(f"SELECT {COPY_COLUMNS} FROM copies WHERE id=?", (copy_id,))
        return copy_from_row(found[0]) if found else None

    def copies(self, states: Iterable[State] | None = None) -> list[Copy]:
        """Copies in *states* (all when None), oldest first."""
        wanted = [s.value for s in (states or State)]
        marks = ",".join("?" * len(wanted))
        rows = self._read(
            f"SELECT {COPY_COLUMNS} FROM copies WHERE state IN ({marks}) ORDER BY id",
            wanted,
        )
        return [copy_from_row(r) for r in rows]

    def due(
        self, now: float, limit: int = 100, exclude: Collection[int] = ()
    ) -> list[Copy]:
        """Queued copies whose next try has come, soonest first, but for the
        copies in *exclude*."""
        skip = ",".join("?" * len(exclude))
        rows = self._read(
            f"SELECT {COPY_COLUMNS} FROM copies WHERE state=? AND next_try<=? "
            f"AND id NOT IN ({skip}) ORDER BY next_try, id LIMIT ?",
            (State.QUEUED.value, now, *exclude, limit),
        )
        return [copy_from_row(r) for r in rows]

    def next_due(self) -> float | None:
        """When the next queued copy is due, or None when none waits."""
        ((found,),) = self._read(
            "SELECT min(next_try) FROM copies WHERE state=?", (State.QUEUED.value,)
        )
        return float(found) if found is not None else None

    def counts(self) -> dict[State, int]:
        """How many copies are in each state."""
        rows = self._read("SELECT state, count(*) FROM copies GROUP BY state")
        found = {State(s): n for s, n in rows}
        return {s: found.get(s, 0) for s in State}

    # -- changing -----------------------------------------------------------

    def mark_sent(self, copy_id: int) -> None:
        """Record that the upstream took the copy; it is never sent again.

        Not fsynced on its own (see the module docstring).
        """
        self._set(copy_id, State.SENT, None, durable=False)

    def mark_all_sent(self, copy_ids: Collection[int]) -> None:
        """mark_sent for several copies, in one transaction."""
        now = time.time()
        with self._transaction(durable=False) as db:
            db.executemany(
                "UPDATE copies SET state=?, last_error=NULL, updated_at=? WHERE id=?",
                [(State.SENT.value, now, i) for i in copy_ids],
            )

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
        """Count a failed try and set the next; *rcpts* narrows the copy.

        Only a narrowing is fsynced: a lost count or time (a power cut)
        just makes the next try come sooner, while a lost narrowing would
        send the copy again to the recipients who have it.
        """
        with self._transaction(durable=rcpts is not None) as db:
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
        self,
        copy_id: int,
        state: State,
        error: str | None,
        queued: bool = False,
        durable: bool = True,
    ) -> bool:
        query = "UPDATE copies SET state=?, last_error=?, updated_at=? WHERE id=?"
        params: tuple[object, ...] = (state.value, error, time.time(), copy_id)
        if queued:
            query += " AND state=?"
            params += (State.QUEUED.value,)
        with self._transaction(durable) as db:
            changed = db.execute(query, params).rowcount
        return bool(changed)

    # -- leak warnings ------------------------------------------------------

    def add_warning(self, message_id: str | None, places: Sequence[str]) -> None:
        """Record a leak warning; like a sent mark, not fsynced on its own."""
        with self._transaction(durable=False) as db:
            insert_warning(db, time.time(), message_id, places)

    def warnings(self, limit: int = 20) -> list[Warning]:
        """The latest leak warnings, newest first."""
        rows = self._read(
            "SELECT id, at, message_id, places FROM warnings ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [Warning(i, at, mid, json.loads(p)) for i, at, mid, p in rows]

    def warning_count(self) -> int:
        return int(self._read("SELECT count(*) FROM warnings")[0][0])

    # -- housekeeping -------------------------------------------------------

    def recover(self, min_age: float = ORPHAN_AGE) -> int:
        """Delete message files that were never acknowledged; return how many.

        Only an older spool wrote such files (a crash between the file and
        its rows). Only files older than *min_age* seconds: a younger one may
        belong to an accept of such a spool still on its way.
        """
        cutoff = time.time() - min_age
        candidates = [
            p for p in self.messages_dir.glob("*.eml") if p.stat().st_mtime < cutoff
        ]
        if not candidates:
            return 0
        known = {r[0] for r in self._read("SELECT id FROM messages")}
        removed = 0
        for path in candidates:
            if path.stem not in known:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d spool files that were never acknowledged", removed)
        return removed

    def purge(self, now: float | None = None) -> int:
        """Drop the bytes of finished messages, and old rows; return how many
        messages lost their bytes."""
        now = time.time() if now is None else now
        finals = [s.value for s in FINAL]
        done = [
            r[0]
            for r in self._read(
                "SELECT m.id FROM messages m WHERE NOT EXISTS (SELECT 1 FROM "
                "copies c WHERE c.message=m.id AND c.state NOT IN (?,?,?))",
                finals,
            )
        ]
        removed = self._drop_bytes(done)
        for message in done:
            path = self._path(message)
            if path.exists():
                path.unlink()
                removed += 1
        self._forget_old(done, now - KEEP_FINISHED)
        return removed

    def _drop_bytes(self, done: list[str]) -> int:
        """Forget the bytes of the finished messages *done*; return how many."""
        if not done:
            return 0
        with self._transaction() as db:
            return sum(
                db.execute(
                    "UPDATE messages SET raw=NULL WHERE id=? AND raw IS NOT NULL",
                    (message,),
                ).rowcount
                for message in done
            )

    def _forget_old(self, done: list[str], cutoff: float) -> None:
        with self._transaction() as db:
            for message in done:
                newest = db.execute(
                    "SELECT max(updated_at) FROM copies WHERE message=?", (message,)
                ).fetchone()[0]
                if newest is None or newest < cutoff:
                    db.execute("DELETE FROM copies WHERE message=?", (message,))
                    db.execute("DELETE FROM messages WHERE id=?", (message,))
