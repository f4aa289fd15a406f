"""The quarantine: a Maildir for the mail the POP3 proxy holds back.

Junk and rejected messages go here, with their ``X-Segcard-Verdict`` field
on top, instead of to the mail client. ``segcard quarantine`` lists them;
releasing one moves it into the Maildir++ folder ``.Released``, from which
the next POP3 login takes it into what the client sees. The folder is an
ordinary Maildir, so a mail program can read it too, and moving a message
into ``Released`` with one is a release as well.

TODO: nothing ever empties the quarantine (nor drops the POP3 ledger rows
of entries deleted from it); an expiry setting, applied at each POP3 login,
would remove entries older than it.

An entry's id is a short hash of its Maildir name (without the flags a
mail program may add), so it stays the same while the file moves between
``new/`` and ``cur/``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from segcard.errors import SegcardError
from segcard.mail import maildir
from segcard.mail.headers import Message, decode_text, decode_words, split_message
from segcard.mail.inbound.annotate import HEADER

RELEASED = "Released"
ID_LENGTH = 8
HEADER_BYTES = 65536  # enough of a file to read its header for the listing


@dataclass(frozen=True)
class Entry:
    """One message in the quarantine."""

    id: str
    path: Path
    received: float  # when it was put in (the file's time)
    sender: str
    subject: str
    verdict: str  # the X-Segcard-Verdict value

    @property
    def name(self) -> str:
        """The Maildir name without flags: stable while the file moves."""
        return base_name(self.path.name)

    def read(self) -> bytes:
        return self.path.read_bytes()


def base_name(file_name: str) -> str:
    return file_name.split(":", 1)[0]


def entry_id(file_name: str) -> str:
    digest = hashlib.sha256(base_name(file_name).encode("utf-8"))
    return digest.hexdigest()[:ID_LENGTH]


class Quarantine:
    """The quarantine Maildir and its ``Released`` folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def put(self, data: bytes) -> str:
        """Keep *data* (fsynced); return its Maildir name."""
        return maildir.deliver(self.path, data).name

    def entries(self) -> list[Entry]:
        """Every message held back, oldest first."""
        return _entries(self.path)

    def released(self) -> list[Entry]:
        """Every message released and not yet taken by a POP3 session."""
        return _entries(self.path / f".{RELEASED}")

    def find(self, wanted: str) -> Entry:
        """The entry whose id starts with *wanted*."""
        wanted = wanted.strip().lower()
        found = [e for e in self.entries() if wanted and e.id.startswith(wanted)]
        if not found:
            raise SegcardError(
                f"no message {wanted!r} in the quarantine",
                "list the ids with: segcard quarantine",
            )
        if len(found) > 1:
            raise SegcardError(
                f"{wanted!r} names {len(found)} messages", "give more of the id"
            )
        return found[0]

    def release(self, wanted: str) -> Entry:
        """Move the entry *wanted* into ``Released`` for the next session."""
        entry = self.find(wanted)
        target = maildir.ensure(self.path, RELEASED) / "new" / entry.name
        os.rename(entry.path, target)
        maildir.fsync_dir(target.parent)
        maildir.fsync_dir(entry.path.parent)
        return _entry(target) or entry

    def forget(self, entry: Entry) -> None:
        """Remove a released entry once a session has its own copy."""
        entry.path.unlink(missing_ok=True)
        maildir.fsync_dir(entry.path.parent)


def _entries(folder: Path) -> list[Entry]:
    found = []
    for sub in ("new", "cur"):
        directory = folder / sub
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            entry = _entry(path)
            if entry is not None:
                found.append(entry)
    return sorted(found, key=lambda e: (e.received, e.id))


def _entry(path: Path) -> Entry | None:
    """The entry for the file at *path*, or None when it went away."""
    try:
        with path.open("rb") as f:
            head = f.read(HEADER_BYTES)
        received = path.stat().st_mtime
    except FileNotFoundError:
        return None
    message = split_message(head)
    return Entry(
        id=entry_id(path.name),
        path=path,
        received=received,
        sender=_field(message, "from"),
        subject=_field(message, "subject"),
        verdict=_field(message, HEADER.lower()),
    )


def _field(message: Message, key: str) -> str:
    found = message.get_all(key)
    if not found:
        return ""
    return decode_words(decode_text(found[0].unfolded))
