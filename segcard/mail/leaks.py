"""The leak check: where an identity address still shows in a message.

Run on each rewritten copy before it leaves. Text is searched after its
transfer encoding (quoted-printable, base64), its charset, RFC 2047 in
headers, HTML character references and percent-escapes in ``mailto:``
links are undone, so an identity cannot hide behind an encoding. The
email package is used here only to read; nothing is written back.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection, Iterator
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message as EmailMessage
from urllib.parse import unquote

from segcard.address import normalize_email
from segcard.mail.headers import decode_text, decode_words, split_message

# An address starts after any character that real local parts do not use
# (RFC 5322 atext allows "=" and "/", but "addr=john@..." and ".../john@..."
# name john), and its domain ends where a domain cannot go on; so
# "x.john@john.example", "jimbob@..." and "john@john.example.org" are other
# people's addresses, not the identity.
_BEFORE = r"(?<![\w.+-])"
_AFTER = r"(?![\w-]|\.[\w])"
_MAILTO_RE = re.compile(r"mailto:([^\s\"'<>()]+)", re.IGNORECASE)


def identity_pattern(identities: Collection[str], raw: bool = False) -> re.Pattern[str]:
    """A case-insensitive pattern for any of *identities* as whole addresses.

    With *raw*, the pattern matches the latin-1 view of UTF-8 bytes, the form
    in which header bytes are searched and edited.
    """
    forms = {normalize_email(i) for i in identities if normalize_email(i)}
    if raw:
        forms = {f.encode("utf-8").decode("latin-1") for f in forms}
    if not forms:
        return re.compile(r"(?!)")  # matches nothing
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(_BEFORE + "(?:" + alternatives + ")" + _AFTER, re.IGNORECASE)


def find_leaks(raw: bytes, identities: Collection[str]) -> list[str]:
    """Where an identity address still appears in *raw*: header fields by
    name, body parts by number and content type; empty when clean."""
    places = header_leaks(raw, identities)
    pattern = identity_pattern(identities)
    message = message_from_bytes(raw, policy=email_policy.compat32)
    places.extend(_part_leaks(message, pattern))
    return places


def header_leaks(raw: bytes, identities: Collection[str]) -> list[str]:
    """Like find_leaks, for the top-level header fields of *raw* only."""
    pattern = identity_pattern(identities)
    places = []
    for field in split_message(raw).fields:
        text = decode_text(field.unfolded)
        if pattern.search(text) or pattern.search(decode_words(text)):
            places.append("header " + (field.name or "line without a name"))
    return places


def _part_leaks(message: EmailMessage, pattern: re.Pattern[str]) -> list[str]:
    """Leaks in the body parts of *message*, numbered depth first from 1."""
    places: list[str] = []
    checked = {id(message)}  # parts whose header fields were searched
    for number, (part, attached) in enumerate(_leaf_parts(message), start=1):
        if attached:
            where = f"attached message (body part {number})"
            places.extend(_mime_header_leaks(part, pattern, where))
            checked.add(id(part))
            continue
        where = f"body part {number} ({part.get_content_type()})"
        if id(part) not in checked:
            places.extend(_mime_header_leaks(part, pattern, where))
        places.extend(_payload_leaks(part, pattern, where))
    return places


def _leaf_parts(message: EmailMessage) -> Iterator[tuple[EmailMessage, bool]]:
    """Every part that holds content, in order, as (part, False); an attached
    message first as (message, True) for its headers, then its own parts."""
    if message.get_content_maintype() == "message" and message.is_multipart():
        for inner in _subparts(message):
            yield inner, True
            yield from _leaf_parts(inner)
    elif message.is_multipart():
        for sub in _subparts(message):
            yield from _leaf_parts(sub)
    else:
        yield message, False


def _subparts(message: EmailMessage) -> list[EmailMessage]:
    """The parts inside a multipart or message/* part."""
    payload = message.get_payload()
    if not isinstance(payload, list):
        return []
    return [p for p in payload if isinstance(p, EmailMessage)]


def _mime_header_leaks(
    part: EmailMessage, pattern: re.Pattern[str], where: str
) -> list[str]:
    """Leaks in the MIME header fields of one part (a file name, say)."""
    return [
        f"header {name} of {where}"
        for name, value in part.items()
        if pattern.search(decode_words(str(value)))
    ]


def _payload_leaks(
    part: EmailMessage, pattern: re.Pattern[str], where: str
) -> list[str]:
    """Leaks in the decoded content of one leaf part."""
    text = _decoded_text(part)
    if part.get_content_subtype() == "html":
        text = html.unescape(text)
    places = []
    if any(pattern.search(unquote(m)) for m in _MAILTO_RE.findall(text)):
        places.append("mailto: link in " + where)
    if pattern.search(_MAILTO_RE.sub(" ", text)):
        places.append(where)
    return places


def _decoded_text(part: EmailMessage) -> str:
    """The content of a part after its transfer encoding and charset."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    if part.get_content_maintype() != "text":
        charset = "latin-1"  # binary: look for the address in ASCII only
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return decode_text(payload)
