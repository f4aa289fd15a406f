"""Reading a vCard: vobject first, a tolerant line reader when it fails.

Both readers extract the same few fields (UID, a name, the emails, the
version); segcard's own lines are always read line by line, so that the
segment comes out the same whichever reader ran.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import vobject

from segcard.errors import CardParseError
from segcard.segment import Segment
from segcard.store import vcard_segment
from segcard.store.vcard_text import (
    BOM,
    ContentLine,
    LogicalLine,
    content_lines,
    decode_component,
    has_frame,
    is_begin,
    is_end,
    logical_lines,
    split_escaped,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardInfo:
    """What segcard reads from one card."""

    uid: str | None
    name: str  # FN, else N joined, else ORG, else first email, else ""
    emails: tuple[str, ...]  # EMAIL values, lower-cased, in card order, once each
    segment: Segment | None
    version: str  # "2.1", "3.0", "4.0" or "" if none
    tolerant: bool  # read by the fallback reader, not vobject


@dataclass(frozen=True)
class _Fields:
    """What either reader extracts, before the segment is added."""

    uid: str | None
    name: str
    emails: tuple[str, ...]
    version: str

    def found_anything(self) -> bool:
        return bool(self.uid or self.name or self.emails)


def read_card(text: str) -> CardInfo:
    """Read UID, name, emails, version and segment from one card.

    vobject reads first (``allowQP=True``); when it fails, or finds neither
    UID, name nor email, the tolerant line reader tries. Raises
    CardParseError when neither finds BEGIN/END and a UID, name or email.
    """
    text = text.removeprefix(BOM)
    lines = logical_lines(text)
    parsed = [c for _, c in content_lines(lines)]
    fields, tolerant = _read_vobject(_without_blobs(lines), parsed), False
    if fields is None or not fields.found_anything():
        fields, tolerant = _read_tolerant(lines, parsed), True
    if not fields.found_anything():
        raise CardParseError(_hopeless_reason(lines), "the card is left as it is")
    values = vcard_segment.owned_values(parsed)
    segment = vcard_segment.parse(values, fields.name, fields.uid)
    return CardInfo(
        fields.uid, fields.name, fields.emails, segment, fields.version, tolerant
    )


# vobject unfolds with a cost that grows with the square of a value's length;
# a 4 MB PHOTO took minutes. It reads none of what we need from such values.
BLOB_LIMIT = 8192


def _without_blobs(lines: list[LogicalLine]) -> str:
    """The card's text for vobject, without values too long to matter."""
    return "".join(x.raw for x in lines if len(x.text) <= BLOB_LIMIT)


def _hopeless_reason(lines: list[LogicalLine]) -> str:
    if not any(is_begin(x.text) for x in lines):
        return "not a vCard: no BEGIN:VCARD line"
    if not any(is_end(x.text) for x in lines):
        return "vCard is cut short: no END:VCARD line"
    return "vCard has neither UID, name (FN, N, ORG) nor email"


def _read_vobject(text: str, parsed: list[ContentLine]) -> _Fields | None:
    """The fields as vobject reads them; None if vobject cannot parse the card."""
    try:
        card = vobject.readOne(text, allowQP=True)
    except Exception as exc:  # vobject raises anything, binascii.Error included
        # The exception text may quote the card's lines: name the class only.
        logger.debug(
            "vobject rejects a card (%s); reading it tolerantly", type(exc).__name__
        )
        return None
    if str(getattr(card, "name", "")).upper() != "VCARD":
        return None
    contents: dict[str, list[Any]] = card.contents
    emails = unique_emails(str(e.value) for e in contents.get("email", []))
    # vobject cuts FN at an unescaped comma ("FN:Doe, John" gives "Doe"), so
    # FN comes from our own reader, and vobject's only when ours has none.
    name = (
        fn_name(parsed)
        or _first_value(contents, "fn")
        or _vobject_n(contents)
        or _vobject_org(contents)
        or (emails[0] if emails else "")
    )
    uid = _first_value(contents, "uid") or None
    return _Fields(uid, name, emails, _first_value(contents, "version"))


def _first_value(contents: dict[str, list[Any]], key: str) -> str:
    for line in contents.get(key, []):
        if isinstance(line.value, str) and line.value.strip():
            return line.value.strip()
    return ""


def _flat(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(_flat(v) for v in value if v)
    return str(value or "").strip()


def _vobject_n(contents: dict[str, list[Any]]) -> str:
    for line in contents.get("n", []):
        parts = [getattr(line.value, k, "") for k in ("given", "additional", "family")]
        joined = " ".join(p for p in (_flat(v) for v in parts) if p)
        if joined:
            return joined
    return ""


def _vobject_org(contents: dict[str, list[Any]]) -> str:
    for line in contents.get("org", []):
        units = line.value if isinstance(line.value, list) else [line.value]
        for unit in units:
            if _flat(unit):
                return _flat(unit)
    return ""


def unique_emails(values: Iterable[str]) -> tuple[str, ...]:
    """Email values stripped, lower-cased, empty ones dropped, each once."""
    return tuple(dict.fromkeys(v.strip().lower() for v in values if v.strip()))


def _read_tolerant(lines: list[LogicalLine], parsed: list[ContentLine]) -> _Fields:
    """The fields read line by line, for cards vobject rejects."""
    if not has_frame(lines):
        return _Fields(None, "", (), "")
    emails = email_values(parsed)
    name = (
        fn_name(parsed)
        or n_name(parsed)
        or org_name(parsed)
        or (emails[0] if emails else "")
    )
    uid = text_value(parsed, "UID") or None
    return _Fields(uid, name, emails, text_value(parsed, "VERSION"))


def email_values(parsed: list[ContentLine]) -> tuple[str, ...]:
    """The card's EMAIL values, decoded, lower-cased, each once."""
    return unique_emails(
        decode_component(c, c.value) for c in parsed if c.name == "EMAIL"
    )


def text_value(parsed: list[ContentLine], name: str) -> str:
    """The first non-empty value of property *name*, decoded and unescaped."""
    for line in parsed:
        if line.name == name:
            value = decode_component(line, line.value)
            if value:
                return value
    return ""


def fn_name(parsed: list[ContentLine]) -> str:
    """The card's FN, decoded; "" if it has none."""
    return text_value(parsed, "FN")


def n_name(parsed: list[ContentLine]) -> str:
    """The card's N as a name in reading order: given, additional, family."""
    for line in parsed:
        if line.name != "N":
            continue
        parts = [*split_escaped(line.value), "", "", ""]
        words = [_list_words(line, part) for part in (parts[1], parts[2], parts[0])]
        joined = " ".join(w for w in words if w)
        if joined:
            return joined
    return ""


def _list_words(line: ContentLine, component: str) -> str:
    items = (decode_component(line, x) for x in split_escaped(component, ","))
    return " ".join(i for i in items if i)


def org_name(parsed: list[ContentLine]) -> str:
    """The first non-empty unit of the card's ORG."""
    for line in parsed:
        if line.name != "ORG":
            continue
        for unit in split_escaped(line.value):
            decoded = decode_component(line, unit)
            if decoded:
                return decoded
    return ""
