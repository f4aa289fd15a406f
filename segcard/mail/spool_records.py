"""The spool's SQLite schema, its row types, and the rows they are made of."""

from __future__ import annotations

import enum
import json
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    peer TEXT,
    size INTEGER NOT NULL,
    raw BLOB
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


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the spool database: WAL, each commit fsynced."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=10000")
    return db


def add_raw_column(db: sqlite3.Connection) -> None:
    """Give a spool made before the bytes moved into the database their column."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    if "raw" not in columns:
        db.execute("ALTER TABLE messages ADD COLUMN raw BLOB")


def copy_row(
    message: str,
    raw: bytes,
    body_start: int,
    copy: NewCopy,
    smtputf8: bool,
    now: float,
) -> tuple[object, ...]:
    """The copies row of *copy*, queued."""
    header, offset = _split_copy(raw, body_start, copy.data)
    utf8 = smtputf8 or not _ascii(copy.sender, *copy.rcpts)
    return (
        (message, copy.sender, json.dumps(list(copy.rcpts)), copy.uid)
        + (copy.token, copy.message_id, header, offset, int(utf8))
        + (State.QUEUED.value, max(now, copy.not_before), now, now)
    )


def new_id() -> str:
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


def insert_warning(
    db: sqlite3.Connection, at: float, message_id: str | None, places: Sequence[str]
) -> None:
    db.execute(
        "INSERT INTO warnings (at, message_id, places) VALUES (?,?,?)",
        (at, message_id, json.dumps(list(places))),
    )


def queued_copy(copy_id: int, row: tuple[object, ...]) -> Copy:
    """The Copy that _copy_row wrote as *row* under *copy_id*."""
    message, sender, rcpts, uid, token, message_id = row[:6]
    utf8, _state, next_try, created_at, updated_at = row[8:]
    return copy_from_row(
        (copy_id, message, sender, rcpts, uid, token, message_id, utf8)
        + (State.QUEUED.value, 0, next_try, None, created_at, updated_at)
    )


def _ascii(*texts: str) -> bool:
    return all(t.isascii() for t in texts)


def copy_from_row(row: tuple) -> Copy:  # type: ignore[type-arg]
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
