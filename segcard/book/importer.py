"""Importing an exported address book (.vcf with one or many cards)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from segcard.book.operations import Book
from segcard.errors import CardParseError
from segcard.segment import Contact, Kind
from segcard.store import vcard

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class ImportReport:
    """What an import did, card by card."""

    added: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def _name_hint(raw: bytes, number: int) -> str:
    """Something to call an unreadable card by in the report."""
    found = re.search(rb"^FN(?:;[^:\r\n]*)?:([^\r\n]+)\r?$", raw, re.M | re.I)
    if found:
        return found.group(1).decode("utf-8", "replace").strip()
    return f"card #{number}"


def import_cards(
    book: Book, data: bytes, progress: Progress | None = None, segments: bool = True
) -> ImportReport:
    """Add every card in *data* to the book, each with a segment."""
    report = ImportReport()
    raw_cards = vcard.split_cards(data)
    rows = []
    for number, raw in enumerate(raw_cards, 1):
        row = _prepare(book, raw, number, report, segments)
        if row:
            rows.append(row)
        if progress:
            progress(number, len(raw_cards))
    book.index.put_many([(c, card, None, None) for c, card in rows])
    for contact, _card in rows:
        book.index.enqueue(contact.uid)
    return report


def _prepare(
    book: Book, raw: bytes, number: int, report: ImportReport, segments: bool
) -> tuple[Contact, str] | None:
    try:
        text = vcard.normalize_import(raw)
        info = vcard.read_card(text)
    except CardParseError as exc:
        hint = _name_hint(raw, number)
        log.info("import: %s cannot be read, skipped: %s", hint, exc)
        report.unreadable.append(f"{hint}: {exc}")
        return None
    assert info.uid, "normalize_import adds a UID"

    if book.index.get(info.uid):
        report.existing.append(info.name)
        return None
    segment = info.segment
    if segment is None and segments:
        segment = book.new_segment(info.name, Kind.CONTACT)
    if segment is not None:
        text = vcard.apply_segment(text, segment, book.address_of(segment))
    report.added.append(info.name)
    return Contact(info.uid, info.name, info.emails, segment), text
