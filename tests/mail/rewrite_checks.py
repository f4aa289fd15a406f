"""A reusable check that a segment copy differs from the original only where
the rewrite rules allow.

Written independently of segcard.mail.headers (its own splitting and field
grouping) so that a bug there cannot hide itself; only the leak check is
segcard's own, as the task asks.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from email.header import decode_header, make_header
from email.utils import getaddresses

from segcard.mail.leaks import header_leaks

# Fields the rules may edit in place; they must still be there afterwards.
EDITED = {
    b"from",
    b"sender",
    b"reply-to",
    b"disposition-notification-to",
    b"return-receipt-to",
    b"message-id",
}
# Fields that must be gone from every copy.
BLIND = {b"bcc", b"resent-bcc"}
# Fields removed when they carry an identity.
REMOVABLE = {b"return-path", b"openpgp", b"autocrypt", b"autocrypt-gossip"}


def split(raw: bytes) -> tuple[list[bytes], bytes]:
    """(header fields with their exact bytes, everything from the empty line)."""
    lines = re.findall(rb"[^\n]*\n|[^\n]+", raw)
    fields: list[bytes] = []
    for index, line in enumerate(lines):
        if line in (b"\n", b"\r\n"):
            return fields, b"".join(lines[index:])
        if fields and line[:1] in b" \t" and line[:1]:
            fields[-1] += line
        else:
            fields.append(line)
    return fields, b""


def name_of(field: bytes) -> bytes:
    """The lower-cased field name, or b"" for a line that is no field."""
    match = re.match(rb"([!-9;-~]+)[ \t]*:", field)
    return match.group(1).lower() if match else b""


def value_of(field: bytes) -> bytes:
    """The unfolded value after the colon."""
    value = field.split(b":", 1)[1] if name_of(field) else field
    return re.sub(rb"\r?\n", b"", value).strip()


def carries(field: bytes, identities: Collection[str]) -> bool:
    """Whether an identity shows in the field, raw or RFC 2047 decoded."""
    raw = value_of(field).decode("latin-1").lower()
    try:
        decoded = str(make_header(decode_header(raw))).lower()
    except (ValueError, LookupError, UnicodeDecodeError):
        decoded = raw
    return any(i.lower() in raw or i.lower() in decoded for i in identities)


def assert_only_intended_changes(
    original: bytes, copy: bytes, identities: Collection[str], segment_address: str
) -> None:
    """Fail unless *copy* is *original* with only the rewrite rules applied."""
    old_fields, old_rest = split(original)
    new_fields, new_rest = split(copy)

    assert new_rest == old_rest, "the body (from the empty line on) changed"
    _assert_field_sequence(old_fields, new_fields, identities)
    _assert_from(old_fields, new_fields, identities, segment_address)
    _assert_message_id(old_fields, new_fields, segment_address)
    _assert_line_endings(old_fields, new_fields)
    header = b"".join(new_fields) + b"\r\n"
    assert header_leaks(header, identities) == []


def _assert_field_sequence(
    old: list[bytes], new: list[bytes], identities: Collection[str]
) -> None:
    """Unchanged fields byte-identical and in order; only allowed ones differ."""
    position = 0
    for field in old:
        name = name_of(field)
        if name in BLIND:
            continue
        changeable = name in EDITED or carries(field, identities)
        if not changeable:
            assert position < len(new), f"field dropped: {field!r}"
            assert new[position] == field, f"field changed: {field!r}"
            position += 1
        elif position < len(new) and name and name_of(new[position]) == name:
            position += 1
        else:
            removable = name in REMOVABLE or name.startswith(b"x-") or not name
            assert removable, f"field removed that must stay: {field!r}"
    assert position == len(new), f"unexpected fields: {new[position:]!r}"
    assert not [f for f in new if name_of(f) in BLIND], "a Bcc went out"


def _assert_from(
    old: list[bytes],
    new: list[bytes],
    identities: Collection[str],
    segment_address: str,
) -> None:
    """From names the segment address, with the display name bytes kept."""
    (old_from,) = [f for f in old if name_of(f) == b"from"]
    (new_from,) = [f for f in new if name_of(f) == b"from"]
    pairs = getaddresses([value_of(new_from).decode("latin-1")])
    assert [a.lower() for _, a in pairs] == [segment_address.lower()]
    if b">" in old_from and not carries(_phrase(old_from), identities):
        assert _phrase(new_from) == _phrase(old_from), "display name bytes changed"


def _phrase(field: bytes) -> bytes:
    """The bytes of a From field before its angle-addr."""
    return field[: field.rfind(b"<")]


def _assert_message_id(
    old: list[bytes], new: list[bytes], segment_address: str
) -> None:
    """Message-ID keeps its local part and takes the segment's domain."""
    domain = segment_address.rpartition("@")[2].encode()
    olds = [value_of(f) for f in old if name_of(f) == b"message-id"]
    news = [value_of(f) for f in new if name_of(f) == b"message-id"]
    assert len(olds) == len(news)
    for before, after in zip(olds, news, strict=True):
        match = re.search(rb"<([^<>@]*)@[^<>]*>", before)
        if match:
            assert re.search(
                b"<" + re.escape(match.group(1)) + b"@" + domain + b">", after
            )


def _assert_line_endings(old: list[bytes], new: list[bytes]) -> None:
    """Lines written keep the message's style: no bare LF in CRLF and back."""
    old_lines = re.findall(rb"[^\n]*\n", b"".join(old))
    new_lines = re.findall(rb"[^\n]*\n", b"".join(new))
    if old_lines and all(line.endswith(b"\r\n") for line in old_lines):
        assert all(line.endswith(b"\r\n") for line in new_lines)
    if not any(line.endswith(b"\r\n") for line in old_lines):
        assert not any(line.endswith(b"\r\n") for line in new_lines)
