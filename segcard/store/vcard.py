"""Reading vCards, and patching segcard's own lines into them line by line.

segcard never re-serializes someone else's card: vobject is used to read,
and to write only cards segcard creates itself (see DESIGN.md, "The segment
in a vCard"). Patching removes segcard's owned lines and writes them anew
just before ``END:VCARD``; every other line keeps its exact bytes, folding,
line ending and place.

This module is the public face; the work is split by concern:
:mod:`~segcard.store.vcard_bytes` (files, charsets),
:mod:`~segcard.store.vcard_text` (lines, values),
:mod:`~segcard.store.vcard_read` (the two readers) and
:mod:`~segcard.store.vcard_segment` (segcard's own lines).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Sequence

from segcard.address import is_token
from segcard.errors import CardParseError
from segcard.segment import Segment
from segcard.store import vcard_segment
from segcard.store.vcard_bytes import split_cards, to_text
from segcard.store.vcard_read import (
    CardInfo,
    fn_name,
    n_name,
    org_name,
    read_card,
    text_value,
)
from segcard.store.vcard_text import (
    BOM,
    CRLF,
    ContentLine,
    LogicalLine,
    content_lines,
    decode_component,
    escape_text,
    fold,
    has_frame,
    is_begin,
    is_quoted_printable,
    logical_lines,
    normalize_eol,
    outer_end,
    parse_content_line,
)

__all__ = [
    "CardInfo",
    "apply_segment",
    "content_hash",
    "new_card",
    "normalize_import",
    "owned_line",
    "read_card",
    "set_uid",
    "split_cards",
    "strip_owned",
    "to_text",
]

logger = logging.getLogger(__name__)

PRODID = "-//segcard//segcard//EN"


# --- patching ---------------------------------------------------------------


def owned_line(logical_line: str, tokens: Iterable[str] = ()) -> bool:
    """Tell whether a content line is one of segcard's own.

    X-SEGMAIL-* lines and lines in a group named ``segcard*`` always are; a
    URL line is when its value is ``mailto:`` an address holding one of
    *tokens*. (The X-ABLabel beside such a URL is found by apply_segment,
    which sees the whole card.)
    """
    unfolded = logical_lines(logical_line)
    line = parse_content_line(unfolded[0].text) if unfolded else None
    if line is None:
        return False
    if _always_owned(line):
        return True
    return line.name == "URL" and vcard_segment.mailto_has_token(line.value, tokens)


def _always_owned(line: ContentLine) -> bool:
    """X-SEGMAIL-* lines, and any line in a group named segcard*."""
    if line.name.startswith(vcard_segment.PREFIX):
        return True
    return line.group.lower().startswith("segcard")


def apply_segment(text: str, segment: Segment | None, address: str | None) -> str:
    """Return the card with segcard's owned lines replaced by *segment*'s.

    *address* is shown as a labelled URL; *segment* None removes every owned
    line. Other lines stay byte-identical and in place. New lines go just
    before END:VCARD with the line ending of the line before it (CRLF if
    unknown), in a fixed order, so applying a segment twice changes nothing.
    Raises CardParseError for a card without BEGIN/END, which is left alone.
    """
    lines = logical_lines(text)
    if not has_frame(lines):
        raise CardParseError("vCard has no BEGIN:VCARD or END:VCARD; left alone")
    parsed = content_lines(lines)
    owned = _owned_indexes(parsed, segment)
    kept = [x for i, x in enumerate(lines) if i not in owned]
    end = outer_end(kept)
    if segment is None:
        return "".join(x.raw for x in kept)
    eol = (kept[end - 1].eol if end > 0 else "") or CRLF
    uid = text_value([c for _, c in parsed], "UID") or None
    rendered = vcard_segment.render(segment, address, uid)
    new = "".join(fold(x, eol) for x in rendered)
    return "".join(x.raw for x in kept[:end]) + new + "".join(x.raw for x in kept[end:])


def _owned_indexes(
    parsed: list[tuple[int, ContentLine]], segment: Segment | None
) -> set[int]:
    """Indexes of the owned lines: ours, and the readable URL with its label."""
    values = vcard_segment.owned_values(c for _, c in parsed)
    # A hand-edited TOKEN line ("x") must not make every mailto URL ours.
    from_card = (t for t in vcard_segment.card_tokens(values) if is_token(t))
    tokens = {*from_card, *(segment.tokens if segment else ())}
    owned, url_groups = set(), set()
    for index, line in parsed:
        if line.name == "URL" and vcard_segment.mailto_has_token(line.value, tokens):
            owned.add(index)
            url_groups.add(line.group.lower())
        elif _always_owned(line):
            owned.add(index)
    url_groups.discard("")
    for index, line in parsed:
        if line.name == "X-ABLABEL" and line.group.lower() in url_groups:
            owned.add(index)
    return owned


def strip_owned(text: str) -> str:
    """Return the card without any of segcard's owned lines."""
    return apply_segment(text, None, None)


def content_hash(text: str) -> str:
    """Hash the card's content as a re-serializing server would keep it.

    Owned lines are removed; lines are unfolded, blank lines dropped, names
    and parameters upper-cased and sorted, values decoded and unescaped, and
    the lines sorted, so that Radicale's reordering, refolding and decoding
    of quoted-printable give the same hash.
    """
    lines = logical_lines(text.removeprefix(BOM))
    if has_frame(lines):
        lines = logical_lines(strip_owned(text.removeprefix(BOM)))
    canonical = sorted(_canonical(x.text) for x in lines if x.text.strip())
    return hashlib.sha256("\n".join(canonical).encode("utf-8")).hexdigest()


def _canonical(text: str) -> str:
    """One line as the hash sees it (see :func:`content_hash`)."""
    line = parse_content_line(text)
    if line is None:
        return text.strip()
    name = f"{line.group}.{line.name}".upper() if line.group else line.name
    if name in ("BEGIN", "END"):
        return f"{name}:{line.value.strip().upper()}"
    params = sorted(
        f"{key}={item.strip().upper()}"
        for key, value in line.params
        if key != "CHARSET" and (key, value.upper()) != ("ENCODING", "QUOTED-PRINTABLE")
        for item in value.split(",")
    )
    # Re-serializers decode quoted-printable, escape or unescape ";" in URIs
    # and drop trailing empty components ("N:Doe;Ann" for "N:Doe;Ann;;;").
    value = decode_component(line, line.value).rstrip(";").rstrip()
    return ";".join([name, *params]) + ":" + value


def set_uid(text: str, uid: str) -> str:
    """Replace the card's UID line (or insert one); nothing else changes.

    Extra UID lines are dropped. Raises CardParseError without BEGIN:VCARD.
    """
    lines = logical_lines(text)
    if not any(is_begin(x.text) for x in lines):
        raise CardParseError("vCard has no BEGIN:VCARD line; left alone")
    uid_lines = [i for i, c in content_lines(lines) if c.name == "UID"]
    if not uid_lines:
        return _insert_header(lines, [f"UID:{escape_text(uid)}"])
    first = lines[uid_lines[0]]
    replaced = fold(f"UID:{escape_text(uid)}", first.eol or CRLF)
    out = [
        replaced if i == uid_lines[0] else x.raw
        for i, x in enumerate(lines)
        if i == uid_lines[0] or i not in uid_lines
    ]
    return "".join(out)


def _insert_header(lines: list[LogicalLine], new: list[str]) -> str:
    """Insert *new* lines after BEGIN:VCARD, or after a VERSION right after it."""
    at = next(i for i, x in enumerate(lines) if is_begin(x.text)) + 1
    following = parse_content_line(lines[at].text) if at < len(lines) else None
    if following is not None and following.name == "VERSION":
        at += 1
    eol = lines[at - 1].eol or CRLF
    head = "".join(x.raw for x in lines[:at])
    if not lines[at - 1].eol:
        head += eol
    added = "".join(fold(x, eol) for x in new)
    return head + added + "".join(x.raw for x in lines[at:])


# --- importing and creating -------------------------------------------------


def normalize_import(raw: bytes) -> str:
    """Make a raw card ready to store, with only three kinds of change.

    Line endings become CRLF; other charsets become UTF-8 (a CHARSET
    parameter may stay as it was); a missing VERSION, UID, FN or N is added
    after BEGIN (or after a VERSION right after it). Ends with CRLF.
    """
    text = normalize_eol(to_text(raw))
    lines = logical_lines(text)
    if has_frame(lines):
        end = outer_end(lines)
        text = "".join(x.raw for x in lines[: end + 1])
    if not text.endswith(CRLF):
        text += CRLF
    return _add_missing(text)


def _uid_for(text: str) -> str:
    """A UID for a card that has none, the same each time the card is read,
    so importing one export twice does not make every contact twice."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "segcard:" + content_hash(text)))


def _add_missing(text: str) -> str:
    lines = logical_lines(text)
    if not any(is_begin(x.text) for x in lines):
        return text
    parsed = [c for _, c in content_lines(lines)]
    present = {c.name for c in parsed}
    if "UID" in present and not text_value(parsed, "UID"):
        return _add_missing(set_uid(text, _uid_for(text)))
    new = []
    version = text_value(parsed, "VERSION")
    if "VERSION" not in present:
        qp = any(is_quoted_printable(x.text) for x in lines)
        version = "2.1" if qp else "3.0"
        new.append(f"VERSION:{version}")
    if "UID" not in present:
        new.append(f"UID:{_uid_for(text)}")
    v21 = version == "2.1"
    fn = fn_name(parsed)
    if "FN" not in present:
        fn = _fallback_name(parsed)
        new.append(_text_line("FN", escape_text(fn), v21))
    if "N" not in present:
        new.append(_text_line("N", _n_value(fn), v21))
    return _insert_header(lines, new) if new else text


def _fallback_name(parsed: list[ContentLine]) -> str:
    emails = [decode_component(c, c.value) for c in parsed if c.name == "EMAIL"]
    return n_name(parsed) or org_name(parsed) or next(filter(None, emails), "Unnamed")


def _text_line(name: str, value: str, v21: bool) -> str:
    """A line for a text value; vCard 2.1 needs a CHARSET for non-ASCII."""
    if value.isascii() or not v21:
        return f"{name}:{value}"
    return f"{name};CHARSET=UTF-8:{value}"


def _n_value(name: str) -> str:
    """An N value derived from a display name: last word is the family name."""
    words = name.split()
    family = words[-1] if len(words) > 1 else ""
    given = " ".join(words[:-1]) if len(words) > 1 else name.strip()
    return f"{escape_text(family)};{escape_text(given)};;;"


def new_card(
    uid: str,
    name: str,
    emails: Sequence[str],
    segment: Segment | None,
    address: str | None,
) -> str:
    """A new vCard 3.0 written by segcard: CRLF, folded at 75 octets.

    An empty *name* becomes the first email, or "Unnamed".
    """
    clean = [e.strip() for e in emails if e.strip()]
    fn = name.strip() or (clean[0] if clean else "Unnamed")
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"PRODID:{PRODID}",
        f"UID:{escape_text(uid)}",
        f"FN:{escape_text(fn)}",
        f"N:{_n_value(fn)}",
        *(f"EMAIL;TYPE=INTERNET:{escape_text(e)}" for e in dict.fromkeys(clean)),
    ]
    if segment is not None:
        lines += vcard_segment.render(segment, address, uid)
    lines.append("END:VCARD")
    return "".join(fold(x) for x in lines)
