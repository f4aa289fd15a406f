"""The leak check: where an identity address still shows in a message.

Run on each rewritten copy before it leaves. Text is searched after its
transfer encoding (quoted-printable, base64), its charset, RFC 2047 in
headers, HTML character references and percent-escapes in ``mailto:``
links are undone, so an identity cannot hide behind an encoding. The
email package is used here only to read; nothing is written back.

Most messages need none of that: when nothing in the body could decode
into letters (no transfer encoding, no encoded word, no character
reference or percent-escape, only charsets that keep ASCII as it is) and
the local part of no identity shows in its bytes, no decoding could make
one appear, and the body is clean without being parsed. The searches
themselves first look for the "@" and the local part with plain string
search, and run the pattern only where both are.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Collection, Iterator
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message as EmailMessage
from urllib.parse import unquote

from segcard.address import normalize_email
from segcard.mail.headers import Message, decode_text, decode_words, split_message

# An address starts after any character that real local parts do not use
# (RFC 5322 atext allows "=" and "/", but "addr=john@..." and ".../john@..."
# name john), and its domain ends where a domain cannot go on; so
# "x.john@john.example", "jimbob@..." and "john@john.example.org" are other
# people's addresses, not the identity.
_BEFORE = r"(?<![\w.+-])"
_AFTER = r"(?![\w-]|\.[\w])"
_MAILTO_RE = re.compile(r"mailto:([^\s\"'<>()]+)", re.IGNORECASE)

# What could turn bytes of a body into letters of an address once decoded:
# transfer encodings (base64, quoted-printable, the uuencode family), RFC
# 2047 words in the fields of a part, HTML character references (numeric,
# and the two named ones that stand for letters or "%") and percent-escapes
# in mailto: links.
_DECODABLE = (b"base64", b"quoted-printable", b"uue")
_BODY_DECODABLE = re.compile(rb"=\?|&#|&percnt|&fjlig|%[0-9a-f]{2}")
# Characters that a case-insensitive pattern takes for an ASCII letter
# (U+0130, U+0131, U+017F, U+212A), as UTF-8.
_ASCII_LOOKALIKES = re.compile(b"\xc4[\xb0\xb1]|\xc5\xbf|\xe2\x84\xaa")
# The same four as text, to the ASCII letter the pattern takes them for
# (str.lower() turns U+0130 into two characters).
_LOOKALIKES = "\u0130\u0131\u017f\u212a"
_LOOKALIKE_FOLD = str.maketrans(_LOOKALIKES, "iisk")
_CHARSET_RE = re.compile(rb'charset(\s*=\s*"?([\w.:-]*))?')
# Charsets in which every ASCII byte is the ASCII character, no byte
# sequence decodes to an ASCII letter or vanishes, and none of the
# look-alikes above exists but through its UTF-8 bytes.
_PLAIN_CHARSETS = frozenset(
    {
        b"us-ascii",
        b"ascii",
        b"utf-8",
        b"utf8",
        b"iso-8859-1",
        b"iso8859-1",
        b"latin1",
        b"latin-1",
        b"iso-8859-15",
        b"windows-1252",
        b"cp1252",
    }
)


class Matcher:
    """Finds identity addresses in text; made once per set of identities."""

    def __init__(self, identities: Collection[str]) -> None:
        self.pattern = identity_pattern(identities)
        self.raw_pattern = identity_pattern(identities, raw=True)
        forms = {normalize_email(i) for i in identities if normalize_email(i)}
        self.at_sign = bool(forms) and all("@" in f for f in forms)
        # Plain lower-casing matches as the pattern does only for ASCII.
        plain = bool(forms) and all(f.isascii() for f in forms)
        self.forms: tuple[str, ...] | None = tuple(forms) if plain else None
        # "@" and a domain of an identity, searched from each "@" only.
        domains = sorted({f.rpartition("@")[2] for f in forms}, key=len, reverse=True)
        at_domain = "@(?:" + "|".join(re.escape(d) for d in domains) + ")"
        self._at_domain = re.compile(at_domain) if plain and self.at_sign else None
        self._longest_local = max((len(f.rpartition("@")[0]) for f in forms), default=0)
        runs = [_local_run(f).encode("ascii") for f in forms] if plain else []
        self.local_runs = tuple(set(runs)) if runs and all(runs) else None

    def search(self, text: str) -> bool:
        """Whether an identity shows in *text*."""
        if self.at_sign and "@" not in text:
            return False
        if self.forms is not None and text.isascii():
            return self._search_ascii(text.lower())
        return self._search_near(self.pattern, text)

    def search_raw(self, text: str) -> bool:
        """Like search, in the latin-1 view of header bytes."""
        if self.at_sign and "@" not in text:
            return False
        if self.forms is not None and text.isascii():
            return self._search_ascii(text.lower())
        return self._search_near(self.raw_pattern, text)

    def _search_near(self, pattern: re.Pattern[str], text: str) -> bool:
        """*pattern* searched only around each "@" and domain of an identity
        in *text*, found as the case-insensitive pattern compares."""
        if self._at_domain is None:
            return bool(pattern.search(text))
        if any(c in text for c in _LOOKALIKES):
            text = text.translate(_LOOKALIKE_FOLD)
        # Both keep every character in its place: str.lower() only lengthens
        # U+0130, which the fold has replaced.
        for found in self._at_domain.finditer(text.lower()):
            start = max(0, found.start() - self._longest_local - 1)
            if pattern.search(text, start, found.end() + 2):  # _AFTER's 2
                return True
        return False

    def _search_ascii(self, lowered: str) -> bool:
        """What the pattern finds in ASCII text, by plain string search: an
        identity with the same characters around it as _BEFORE and _AFTER."""
        assert self.forms is not None
        if self._at_domain is not None and not self._at_domain.search(lowered):
            return False
        for form in self.forms:
            start = lowered.find(form)
            while start >= 0:
                if _bounded(lowered, start, start + len(form)):
                    return True
                start = lowered.find(form, start + 1)
        return False

    def body_is_clean(self, message: Message) -> bool:
        """True when the body of *message* cannot hold an identity, decoded
        in any way the leak check decodes; False when it must be parsed."""
        if self.forms is None or not _same_header_block(message):
            return False
        fields = b"".join(
            f.raw
            for f in message.fields
            if f.key in ("content-type", "content-transfer-encoding")
        )
        mime = fields.lower()
        body = message.body.lower()
        if any(d in mime or d in body for d in _DECODABLE):
            return False
        if _BODY_DECODABLE.search(body) or _ASCII_LOOKALIKES.search(body):
            return False
        if not (_plain_charsets(mime) and _plain_charsets(body)):
            return False
        return not any(n in body for n in self._needles(body))

    def _needles(self, body: bytes) -> tuple[bytes, ...]:
        """What of an identity must show in *body* if it holds one: the
        whole address, or where named character references could stand for
        its "@" or dots, the longest run of letters of its local part."""
        assert self.forms is not None
        if b"&" not in body:
            return tuple(f.encode("ascii") for f in self.forms)
        return self.local_runs or (b"",)


@functools.lru_cache(maxsize=16)
def _matcher(identities: tuple[str, ...]) -> Matcher:
    return Matcher(identities)


def matcher(identities: Collection[str]) -> Matcher:
    """The Matcher for *identities*, made once and kept."""
    return _matcher(tuple(identities))


def _bounded(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] stands alone as an address (_BEFORE, _AFTER)."""
    before = text[start - 1] if start else " "
    if before.isalnum() or before in "_.+-":
        return False
    after = text[end : end + 2]
    if after[:1].isalnum() or after[:1] in ("_", "-"):
        return False
    return not (after[:1] == "." and len(after) == 2 and _word(after[1]))


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _local_run(form: str) -> str:
    """The longest run of letters and digits in the local part of *form*."""
    local = form.rpartition("@")[0] or form
    runs = re.findall(r"[a-z0-9]+", local)
    return max(runs, key=len) if runs else ""


def _same_header_block(message: Message) -> bool:
    """Whether the email package would end the header block where *message*
    does: every line a field whose name is followed by its colon, and no
    bare CR (the package breaks lines there too)."""
    for field in message.fields:
        name = field.name
        if not name or field.raw[len(name) : len(name) + 1] != b":":
            return False
        if field.raw.count(b"\r") != field.raw.count(b"\r\n"):
            return False
    return True


def _plain_charsets(data: bytes) -> bool:
    """Whether every charset named in *data* (lower-cased) is a plain one."""
    for match in _CHARSET_RE.finditer(data):
        if match.group(2) not in _PLAIN_CHARSETS:
            return False
    return True


def identity_pattern(identities: Collection[str], raw: bool = False) -> re.Pattern[str]:
    """A case-insensitive pattern for any of *identities* as whole addresses.

    With *raw*, the pattern matches the latin-1 view of UTF-8 bytes, the form
    in which header bytes are searched and edited.
    """
    forms = {normalize_email(i) for i in identities if normalize_email(i)}
    if raw:
        forms = {f.encode("utf-8").decode("latin-1") for f in forms}
    return _compile(frozenset(forms))


@functools.lru_cache(maxsize=32)
def _compile(forms: frozenset[str]) -> re.Pattern[str]:
    if not forms:
        return re.compile(r"(?!)")  # matches nothing
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(_BEFORE + "(?:" + alternatives + ")" + _AFTER, re.IGNORECASE)


def find_leaks(raw: bytes | Message, identities: Collection[str]) -> list[str]:
    """Where an identity address still appears in *raw*: header fields by
    name, body parts by number and content type; empty when clean."""
    message = raw if isinstance(raw, Message) else split_message(raw)
    found = matcher(identities)
    places = _field_leaks(message, found)
    if found.body_is_clean(message):
        return places
    data = raw if isinstance(raw, bytes) else message.join()
    parsed = message_from_bytes(data, policy=email_policy.compat32)
    places.extend(_part_leaks(parsed, found))
    return places


def header_leaks(raw: bytes | Message, identities: Collection[str]) -> list[str]:
    """Like find_leaks, for the top-level header fields of *raw* only."""
    message = raw if isinstance(raw, Message) else split_message(raw)
    return _field_leaks(message, matcher(identities))


def _field_leaks(message: Message, found: Matcher) -> list[str]:
    places = []
    for field in message.fields:
        if found.at_sign and b"@" not in field.raw and b"=?" not in field.raw:
            continue  # neither the bytes nor an encoded word hold an address
        text = decode_text(field.unfolded)
        if found.search(text) or ("=?" in text and found.search(decode_words(text))):
            places.append("header " + (field.name or "line without a name"))
    return places


def _part_leaks(message: EmailMessage, found: Matcher) -> list[str]:
    """Leaks in the body parts of *message*, numbered depth first from 1."""
    places: list[str] = []
    checked = {id(message)}  # parts whose header fields were searched
    for number, (part, attached) in enumerate(_leaf_parts(message), start=1):
        if attached:
            where = f"attached message (body part {number})"
            places.extend(_mime_header_leaks(part, found, where))
            checked.add(id(part))
            continue
        where = f"body part {number} ({part.get_content_type()})"
        if id(part) not in checked:
            places.extend(_mime_header_leaks(part, found, where))
        places.extend(_payload_leaks(part, found, where))
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


def _mime_header_leaks(part: EmailMessage, found: Matcher, where: str) -> list[str]:
    """Leaks in the MIME header fields of one part (a file name, say)."""
    return [
        f"header {name} of {where}"
        for name, value in part.items()
        if found.search(decode_words(str(value)))
    ]


def _payload_leaks(part: EmailMessage, found: Matcher, where: str) -> list[str]:
    """Leaks in the decoded content of one leaf part."""
    text = _decoded_text(part)
    if part.get_content_subtype() == "html":
        text = html.unescape(text)
    places = []
    if any(found.search(unquote(m)) for m in _MAILTO_RE.findall(text)):
        places.append("mailto: link in " + where)
    if found.search(_MAILTO_RE.sub(" ", text)):
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
