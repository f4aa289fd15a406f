"""The local index: SQLite in the data dir, so every lookup stays local.

It holds what the address book holds (contacts, their segments, the etag and
content hash of each card), the sync state, the outbox of writes waiting for
the server, and what mail taught us (Message-ID to segment, leak evidence).
The ``tokens`` table is append-only: a token once seen is never forgotten,
so a server that loses segcard's lines cannot make a valid address bounce.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segcard.errors import SegcardError
from segcard.segment import Contact, Segment
from segcard.store.codec import segment_from_json, segment_to_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    uid TEXT PRIMARY KEY,
    href TEXT,
    etag TEXT,
    hash TEXT,
    card TEXT NOT NULL,
    name TEXT NOT NULL,
    emails TEXT NOT NULL,
    segment TEXT
);
CREATE INDEX IF NOT EXISTS contacts_href ON contacts(href);
CREATE TABLE IF NOT EXISTS emails (
    email TEXT NOT NULL,
    uid TEXT NOT NULL,
    PRIMARY KEY (email, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS emails_uid ON emails(uid);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    uid TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    uid TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    href TEXT,
    etag TEXT,
    queued_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS unreadable (
    href TEXT PRIMARY KEY,
    etag TEXT,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT NOT NULL,
    id_left TEXT NOT NULL,
    uid TEXT NOT NULL,
    token TEXT NOT NULL,
    peer TEXT NOT NULL,
    direction TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (message_id, peer)
);
CREATE INDEX IF NOT EXISTS messages_left ON messages(id_left);
CREATE TABLE IF NOT EXISTS leaks (
    uid TEXT NOT NULL,
    token TEXT NOT NULL,
    sender_domain TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (uid, token, sender_domain)
);
"""


# Attempts value of an outbox entry the server refused for good; a new local
# change of the contact replaces the entry and so sends it again.
GIVEN_UP = 1000


@dataclass(frozen=True)
class Row:
    """A contact as stored, with what the sync engine needs about its card."""

    contact: Contact
    etag: str | None
    hash: str | None
    card: str


@dataclass(frozen=True)
class Leak:
    """Evidence that a segment address reached someone outside the contact."""

    uid: str
    token: str
    sender_domain: str
    first_seen: int
    last_seen: int
    count: int


class Index:
    """The SQLite index; safe to share between threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise SegcardError(
                f"the index {path} cannot be opened: {exc}",
                "move it aside and run 'segcard sync --full' to rebuild it "
                "from the address book",
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- contacts ---------------------------------------------------------

    def put(
        self,
        contact: Contact,
        card: str,
        etag: str | None = None,
        content_hash: str | None = None,
    ) -> None:
        """Store *contact* with its card text; remember its tokens for ever."""
        with self.transaction() as db:
            self._put(db, contact, card, etag, content_hash)

    def _put(
        self,
        db: sqlite3.Connection,
        contact: Contact,
        card: str,
        etag: str | None,
        content_hash: str | None,
    ) -> None:
        db.execute(
            "INSERT OR REPLACE INTO contacts VALUES (?,?,?,?,?,?,?,?)",
            (
                contact.uid,
                contact.href,
                etag,
                content_hash,
                card,
                contact.name,
                json.dumps(list(contact.emails)),
                segment_to_json(contact.segment),
            ),
        )
        db.execute("DELETE FROM emails WHERE uid=?", (contact.uid,))
        db.executemany(
            "INSERT OR IGNORE INTO emails VALUES (?,?)",
            [(e.lower(), contact.uid) for e in contact.emails],
        )
        if contact.segment:
            db.executemany(
                "INSERT OR IGNORE INTO tokens VALUES (?,?)",
                [(t, contact.uid) for t in contact.segment.tokens],
            )

    def put_many(self, rows: list[tuple[Contact, str, str | None, str | None]]) -> None:
        """Store many contacts in one transaction (initial sync, import)."""
        with self.transaction() as db:
            for contact, card, etag, content_hash in rows:
                self._put(db, contact, card, etag, content_hash)

    def remove(self, uid: str) -> None:
        """Forget a contact; its tokens stay known (see module docstring)."""
        with self.transaction() as db:
            db.execute("DELETE FROM contacts WHERE uid=?", (uid,))
            db.execute("DELETE FROM emails WHERE uid=?", (uid,))

    def forget_tokens(self, uid: str) -> None:
        """Drop the tokens of *uid*: only on the user's explicit removal."""
        with self.transaction() as db:
            db.execute("DELETE FROM tokens WHERE uid=?", (uid,))

    def row(self, uid: str) -> Row | None:
        """The stored contact with its card, or None."""
        with self._lock:
            found = self._db.execute(
                "SELECT * FROM contacts WHERE uid=?", (uid,)
            ).fetchone()
        return _row(found) if found else None

    def get(self, uid: str) -> Contact | None:
        found = self.row(uid)
        return found.contact if found else None

    def by_href(self, href: str) -> Row | None:
        with self._lock:
            found = self._db.execute(
                "SELECT * FROM contacts WHERE href=?", (href,)
            ).fetchone()
        return _row(found) if found else None

    def by_token(self, token: str) -> Contact | None:
        """The contact that has or had *token*, or None."""
        uid = self.token_owner(token)
        return self.get(uid) if uid else None

    def token_owner(self, token: str) -> str | None:
        """The UID that has or had *token* (even if the contact is gone)."""
        with self._lock:
            found = self._db.execute(
                "SELECT uid FROM tokens WHERE token=?", (token.lower(),)
            ).fetchone()
        return found[0] if found else None

    def by_email(self, email: str) -> list[Contact]:
        """Contacts that list *email*, those with a segment first."""
        with self._lock:
            uids = [
                r[0]
                for r in self._db.execute(
                    "SELECT uid FROM emails WHERE email=?", (email.lower(),)
                )
            ]
        found = [c for c in (self.get(u) for u in uids) if c]
        return sorted(found, key=lambda c: (c.segment is None, c.name))

    def contacts(self) -> list[Contact]:
        """Every contact, by name."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM contacts ORDER BY name").fetchall()
        return [_row(r).contact for r in rows]

    def rotating(self) -> list[Contact]:
        """Contacts whose segment rotates on a schedule."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM contacts "
                "WHERE json_extract(segment, '$.rotate_every') IS NOT NULL"
            ).fetchall()
        return [_row(r).contact for r in rows]

    def hrefs(self) -> dict[str, tuple[str, str | None]]:
        """href -> (uid, etag) of every contact the server has."""
        with self._lock:
            rows = self._db.execute(
                "SELECT href, uid, etag FROM contacts WHERE href IS NOT NULL"
            ).fetchall()
        return {h: (u, e) for h, u, e in rows}

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM contacts").fetchone()[0])

    # -- sync state, outbox, unreadable cards -----------------------------

    def get_state(self, key: str) -> str | None:
        with self._lock:
            found = self._db.execute(
                "SELECT value FROM state WHERE key=?", (key,)
            ).fetchone()
        return found[0] if found else None

    def set_state(self, key: str, value: str | None) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO state VALUES (?,?)", (key, value))

    def enqueue(
        self,
        uid: str,
        op: str = "put",
        href: str | None = None,
        etag: str | None = None,
    ) -> None:
        """Queue a write of *uid* to the server: 'put', or 'delete' of *href*."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO outbox (uid, op, href, etag, queued_at) "
                "VALUES (?,?,?,?,?)",
                (uid, op, href, etag, int(time.time())),
            )

    def outbox(self) -> list[tuple[str, str, str | None, str | None, int]]:
        """(uid, op, href, etag, attempts) of every queued write, oldest first."""
        with self._lock:
            return self._db.execute(
                "SELECT uid, op, href, etag, attempts FROM outbox "
                "ORDER BY queued_at, uid"
            ).fetchall()

    def pending(self, uid: str) -> str | None:
        """The queued operation for *uid*, or None."""
        with self._lock:
            found = self._db.execute(
                "SELECT op FROM outbox WHERE uid=?", (uid,)
            ).fetchone()
        return found[0] if found else None

    def dequeue(self, uid: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM outbox WHERE uid=?", (uid,))

    def note_failure(self, uid: str, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts=attempts+1, last_error=? WHERE uid=?",
                (error, uid),
            )

    def give_up(self, uid: str, error: str) -> None:
        """Keep a write the server refused, but stop sending it until it changes."""
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts=?, last_error=? WHERE uid=?",
                (GIVEN_UP, error, uid),
            )

    def refused(self) -> list[tuple[str, str]]:
        """(uid, reason) of every write the server refused."""
        with self._lock:
            return self._db.execute(
                "SELECT uid, last_error FROM outbox WHERE attempts>=?", (GIVEN_UP,)
            ).fetchall()

    def mark_unreadable(self, href: str, etag: str | None, reason: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO unreadable VALUES (?,?,?)", (href, etag, reason)
            )

    def clear_unreadable(self, href: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM unreadable WHERE href=?", (href,))

    def unreadable(self) -> list[tuple[str, str | None, str]]:
        with self._lock:
            return self._db.execute("SELECT * FROM unreadable").fetchall()

    def reset(self) -> None:
        """Drop what the server told us, keeping tokens, outbox and mail data."""
        with self.transaction() as db:
            db.execute("UPDATE contacts SET etag=NULL, hash=NULL")
            db.execute("DELETE FROM unreadable")
            db.execute("DELETE FROM state WHERE key='sync_token'")

    # -- what mail teaches us ---------------------------------------------

    def record_message(
        self, message_id: str, uid: str, token: str, peer: str | None, direction: str
    ) -> None:
        """Remember which segment a message went out or came in on.

        *direction* is "out" (peer: a recipient) or "in" (peer: the sender).
        """
        mid = message_id.strip().strip("<>").lower()
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?)",
                (
                    mid,
                    _id_left(mid),
                    uid,
                    token,
                    (peer or "").lower(),
                    direction,
                    int(time.time()),
                ),
            )

    def message(self, message_id: str) -> tuple[str, str, str | None, str] | None:
        """(uid, token, peer, direction) recorded for *message_id*, or None."""
        mid = message_id.strip().strip("<>").lower()
        with self._lock:
            return self._db.execute(
                "SELECT uid, token, peer, direction FROM messages WHERE message_id=?",
                (mid,),
            ).fetchone()

    def thread_peers(self, message_ids: list[str]) -> set[str]:
        """Everyone who took part in messages *message_ids* as we saw them.

        The submission proxy gives each copy its own Message-ID host part, so
        references are matched on the part left of the @ as well.
        """
        lefts = [_id_left(m.strip().strip("<>").lower()) for m in message_ids]
        if not lefts:
            return set()
        marks = ",".join("?" * len(lefts))
        with self._lock:
            rows = self._db.execute(
                f"SELECT peer FROM messages WHERE id_left IN ({marks})", lefts
            ).fetchall()
        return {r[0] for r in rows if r[0]}

    def record_leak(self, uid: str, token: str, sender_domain: str, now: int) -> None:
        """Count one message from an outsider on a segment."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO leaks VALUES (?,?,?,?,?,1) ON CONFLICT DO UPDATE SET "
                "last_seen=excluded.last_seen, count=count+1",
                (uid, token, sender_domain, now, now),
            )

    def leaks(self) -> list[Leak]:
        """Leak evidence, worst first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM leaks ORDER BY count DESC, last_seen DESC"
            ).fetchall()
        return [Leak(*r) for r in rows]


def _row(found: tuple) -> Row:  # type: ignore[type-arg]
    uid, href, etag, content_hash, card, name, emails, segment = found
    contact = Contact(
        uid=uid,
        name=name,
        emails=tuple(json.loads(emails)),
        segment=segment_from_json(segment),
        href=href,
    )
    return Row(contact, etag, content_hash, card)


def _id_left(message_id: str) -> str:
    return message_id.rpartition("@")[0] or message_id


def now() -> int:
    """The current time in whole seconds, the unit of every stored time."""
    return int(time.time())


__all__ = ["Index", "Leak", "Row", "Segment", "now"]
