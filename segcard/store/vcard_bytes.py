"""The raw bytes of a vCard file: splitting it into cards, guessing charsets.

Nothing here parses properties; :mod:`segcard.store.vcard_text` takes over
once a card is text.
"""

from __future__ import annotations

import codecs
import re

_EOL_BYTES_RE = re.compile(rb"\r\r\n|\r\n|\n|\r")
_CHARSET_RE = re.compile(rb"(?i)CHARSET=\"?([A-Za-z0-9_.:-]+)")

# cp1252 letters among 0x80-0x9F (Š Œ Ž š œ ž Ÿ), also Shift_JIS lead bytes.
_CP1252_LETTERS = frozenset(b"\x8a\x8c\x8e\x9a\x9c\x9e\x9f")


def split_cards(data: bytes) -> list[bytes]:
    """Split an exported .vcf into raw cards, each byte-for-byte as stored.

    A card runs from its ``BEGIN:VCARD`` line through its ``END:VCARD`` line
    and that line's ending; nested cards (vCard 2.1 AGENT) stay inside their
    parent. A card left open at the end of the data is returned as it is, so
    the reader can report it instead of it vanishing.
    """
    cards, depth, start, pos = [], 0, 0, 0
    if data.startswith(codecs.BOM_UTF8):
        pos = len(codecs.BOM_UTF8)
    for body, line_start, end in _byte_lines(data, pos):
        word = body.strip().upper()
        if word == b"BEGIN:VCARD":
            if depth == 0:
                start = line_start
            depth += 1
        elif word == b"END:VCARD" and depth > 0:
            depth -= 1
            if depth == 0:
                cards.append(data[start:end])
    if depth > 0:
        cards.append(data[start:])
    return cards


def _byte_lines(data: bytes, pos: int) -> list[tuple[bytes, int, int]]:
    """Each physical line's content, its start, and the offset after its ending."""
    lines = []
    for match in _EOL_BYTES_RE.finditer(data, pos):
        lines.append((data[pos : match.start()], pos, match.end()))
        pos = match.end()
    if pos < len(data):
        lines.append((data[pos:], pos, len(data)))
    return lines


def to_text(raw: bytes) -> str:
    """Decode a raw card to text, characters unchanged.

    Strips a UTF-8 BOM; then UTF-8; else a declared ``CHARSET=``; else
    Shift_JIS if the bytes look like it; else cp1252; else latin-1.
    """
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for charset in _declared_charsets(raw):
        try:
            return raw.decode(charset)
        except UnicodeDecodeError:
            continue
    if looks_shift_jis(raw):
        return raw.decode("cp932")
    return decode_bytes(raw, None)


def _declared_charsets(raw: bytes) -> list[str]:
    names = [m.group(1).decode("ascii").lower() for m in _CHARSET_RE.finditer(raw)]
    unique = dict.fromkeys(n for n in names if n not in ("utf-8", "utf8"))
    return [n for n in unique if _known_codec(n)]


def _known_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def looks_shift_jis(data: bytes) -> bool:
    """Guess whether non-UTF-8 bytes are Shift_JIS rather than a Latin charset.

    Japanese text comes in runs of byte pairs whose second byte is often
    >= 0x80 or whose first is in 0x81-0x9F; Latin-1 letters (0xC0-0xFF) are
    single bytes, mostly between ASCII letters. Each pair votes.
    """
    try:
        decoded = data.decode("cp932")
    except UnicodeDecodeError:
        return False
    if any("\ue000" <= char <= "\uf8ff" for char in decoded):
        return False  # cp932's user-defined area: Latin letters 0xF0-0xFF
    score, i, previous_pair = 0, 0, False
    while i < len(data) - 1:
        if not _is_sjis_lead(data[i]):
            i, previous_pair = i + 1, False
            continue
        in_run = previous_pair or (i + 2 < len(data) and _is_sjis_lead(data[i + 2]))
        score += _pair_vote(data[i], data[i + 1], in_run)
        i, previous_pair = i + 2, True
    return score > 0


def _is_sjis_lead(byte: int) -> bool:
    return 0x81 <= byte <= 0x9F or 0xE0 <= byte <= 0xFC


def _pair_vote(lead: int, trail: int, in_run: bool) -> int:
    if trail >= 0x80 or in_run:
        return 2
    if lead <= 0x9F and lead not in _CP1252_LETTERS:
        return 1
    return -1


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode *data* with *charset*, else UTF-8, else cp1252, else latin-1."""
    for name in (charset, "utf-8", "cp1252"):
        if name and _known_codec(name):
            try:
                return data.decode(name)
            except UnicodeDecodeError:
                continue
    return data.decode("latin-1")
