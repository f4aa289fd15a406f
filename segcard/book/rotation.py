"""Rotating entries: segments that take a new token on a schedule.

The schedule is checked against the time of the last rotation, so a machine
that was off when a rotation fell due rotates once when it is back, not once
per missed period.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from segcard.book.operations import Book
from segcard.segment import Contact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rotated:
    """One rotation the scheduler did."""

    contact: Contact
    address: str
    published: Path | None


def publish_path(book: Book, uid: str) -> Path | None:
    """The file that receives a rotating entry's current address, if any."""
    path = book.index.get_state(f"publish:{uid}")
    return Path(path) if path else None


def publish(path: Path, address: str) -> None:
    """Write *address* to *path* atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.segcard-tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(address + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def rotate_due(book: Book, now: int) -> list[Rotated]:
    """Rotate every rotating entry that is due at *now*."""
    done = []
    for contact in book.index.rotating():
        if contact.segment is None or not contact.segment.due(now):
            continue
        rotated = book.rotate(contact)
        address = book.address(rotated)
        path = publish_path(book, contact.uid)
        if path is not None:
            publish(path, address)
        log.info("rotating entry %s rotated on schedule", contact.uid)
        done.append(Rotated(rotated, address, path))
    return done


def next_due(book: Book) -> int | None:
    """When the next rotating entry falls due (epoch seconds), or None."""
    times = [
        c.segment.rotated_at + c.segment.rotate_every
        for c in book.index.rotating()
        if c.segment is not None and c.segment.rotate_every
    ]
    return min(times) if times else None


def publish_all(book: Book) -> None:
    """Write the current address of every rotating entry that publishes one."""
    for contact in book.index.rotating():
        path = publish_path(book, contact.uid)
        if path is not None and contact.segment is not None:
            publish(path, book.address(contact))
