"""The raw header block of a message: split, fields, and address lists.

Everything here works on the bytes the client sent and never re-serializes
a message: ``email.policy`` re-folds headers and, in doing so, splits an
encoded display name that decodes to "Surname, Given" into two mailboxes.
A field keeps its exact bytes (first line plus its continuation lines, with
their line endings) so that a caller can write back every field it does not
change byte for byte.

Positions in address lists are byte offsets: the value is decoded as
latin-1, which maps each byte to one character, so an 8-bit display name
(RFC 6532 UTF-8, or a raw ISO-8859-1 byte from an old client) never moves
an offset.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from dataclasses import dataclass, field

# RFC 5322 section 2.2: a field name is printable US-ASCII except ":"; the
# obsolete syntax (section 4.5) allows white space before the colon.
_NAME_RE = re.compile(rb"([!-9;-~]+)[ \t]*:")
_LINE_RE = re.compile(rb"[^\n]*\n|[^\n]+")
_FOLD_RE = re.compile(rb"\r?\n(?=[ \t])")
_MSG_ID_RE = re.compile(rb"<([^<>\s]*)>")


@dataclass(frozen=True)
class Field:
    """One header field with its exact bytes; *name* is None for a line
    that is no field at all (an mbox ``From `` line, garbage)."""

    raw: bytes
    name: str | None

    @property
    def key(self) -> str:
        """The lower-cased field name, or "" for a line that is no field."""
        return self.name.lower() if self.name else ""

    @property
    def value(self) -> bytes:
        """The bytes after the colon, folding and final line ending kept."""
        if self.name is None:
            return self.raw
        return self.raw[self.raw.index(b":") + 1 :]

    @property
    def unfolded(self) -> bytes:
        """The value on one line, without its line ending (RFC 5322 2.2.3)."""
        return _FOLD_RE.sub(b"", self.value).rstrip(b"\r\n").strip(b" \t")


@dataclass(frozen=True)
class Message:
    """A message cut into its header fields, the separator and the body."""

    fields: list[Field]
    separator: bytes  # the empty line, b"" when the message has no body
    body: bytes
    eol: bytes = field(default=b"\r\n")

    def join(self, fields: list[Field] | None = None) -> bytes:
        """The message again, with *fields* in place of its own."""
        chosen = self.fields if fields is None else fields
        return b"".join(f.raw for f in chosen) + self.separator + self.body

    def get_all(self, key: str) -> list[Field]:
        """Every field named *key* (case-insensitive), in order."""
        return [f for f in self.fields if f.key == key.lower()]


def line_ending(raw: bytes) -> bytes:
    """The line ending of the message's first line: CRLF unless it is bare LF."""
    end = raw.find(b"\n")
    if end > 0 and raw[end - 1 : end] == b"\r":
        return b"\r\n"
    return b"\n" if end >= 0 else b"\r\n"


def split_message(raw: bytes) -> Message:
    """Cut *raw* at its first empty line into header fields and body."""
    offset = 0
    lines: list[bytes] = []
    separator = b""
    for match in _LINE_RE.finditer(raw):
        line = match.group()
        if line in (b"\r\n", b"\n"):
            separator = line
            offset = match.end()
            break
        lines.append(line)
        offset = match.end()
    return Message(_group_fields(lines), separator, raw[offset:], line_ending(raw))


def _group_fields(lines: list[bytes]) -> list[Field]:
    """Join each first line with the continuation lines that follow it."""
    groups: list[list[bytes]] = []
    for line in lines:
        if groups and line[:1] in (b" ", b"\t"):
            groups[-1].append(line)
        else:
            groups.append([line])
    return [make_field(b"".join(group)) for group in groups]


def make_field(raw: bytes) -> Field:
    """A Field for these exact bytes, its name read from the first line."""
    match = _NAME_RE.match(raw)
    name = match.group(1).decode("ascii") if match else None
    return Field(raw, name)


def msg_ids(value: bytes) -> list[str]:
    """The msg-ids in a Message-ID, In-Reply-To or References value, without
    their angle brackets, in order."""
    unfolded = _FOLD_RE.sub(b"", value)
    return [m.decode("utf-8", "replace") for m in _MSG_ID_RE.findall(unfolded) if m]


def decode_text(data: bytes) -> str:
    """Bytes as written: UTF-8 (ASCII included), else latin-1 so nothing fails."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# RFC 2047 section 2: =?charset?encoding?encoded-text?=, with an optional
# RFC 2231 language suffix on the charset ("utf-8*en").
_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_RUN_RE = re.compile(
    r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=(?:\s+=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)*"
)
_WORD_CHUNK = 45  # 45 bytes of base64 plus "=?utf-8?b??=" is 72 columns


def decode_word(charset: str, encoding: str, text: str) -> str | None:
    """One RFC 2047 encoded word as text, or None when it cannot be decoded."""
    data = text.encode("ascii", "replace")
    try:
        if encoding in "bB":
            payload = base64.b64decode(data + b"=" * (-len(data) % 4))
        else:
            payload = quopri.decodestring(data, header=True)
        return payload.decode(charset.split("*")[0], "replace")
    except (LookupError, ValueError, binascii.Error):
        return None


def decode_words(text: str) -> str:
    """*text* with its RFC 2047 encoded words decoded; white space between two
    adjacent encoded words dropped (section 6.2), undecodable words kept."""
    return _RUN_RE.sub(lambda run: _decode_run(run.group()), text)


def _decode_run(run: str) -> str:
    """One run of adjacent encoded words as text."""
    parts = []
    for word in _WORD_RE.finditer(run):
        decoded = decode_word(*word.groups())
        parts.append(word.group() if decoded is None else decoded)
    return "".join(parts)


def encode_words(text: str, eol: str) -> str:
    """*text* as UTF-8 "B" encoded words, folded one word a line."""
    words, chunk = [], b""
    for char in text:
        data = char.encode("utf-8")
        if len(chunk) + len(data) > _WORD_CHUNK:
            words.append(chunk)
            chunk = b""
        chunk += data
    words.append(chunk)
    encoded = ["=?utf-8?b?" + base64.b64encode(w).decode("ascii") + "?=" for w in words]
    return (eol + " ").join(encoded)


def split_encoded(text: str) -> list[tuple[bool, str]]:
    """*text* cut into (is an encoded-word run, piece) pairs, in order."""
    pieces, last = [], 0
    for run in _RUN_RE.finditer(text):
        pieces.append((False, text[last : run.start()]))
        pieces.append((True, run.group()))
        last = run.end()
    pieces.append((False, text[last:]))
    return [(is_run, piece) for is_run, piece in pieces if piece]


# RFC 5322 section 3.2.3 specials that end an atom; "." stays inside atoms
# so that a dot-atom is one token.
_ATOM_STOP = frozenset(' \t\r\n"(),:;<>@[]\\')


@dataclass(frozen=True)
class Token:
    """One lexical token of an address list; *kind* is "atom", "quoted",
    "comment", "literal" or the special character itself."""

    kind: str
    start: int
    end: int
    text: str


def tokenize(value: str) -> list[Token]:
    """The tokens of an address list value (a latin-1 view of its bytes)."""
    tokens, pos = [], 0
    while pos < len(value):
        char = value[pos]
        if char in " \t\r\n":
            pos += 1
            continue
        end = _token_end(value, pos)
        kind = _KINDS.get(char, "atom" if char not in _ATOM_STOP else char)
        tokens.append(Token(kind, pos, end, value[pos:end]))
        pos = end
    return tokens


_KINDS = {'"': "quoted", "(": "comment", "[": "literal"}


def _token_end(value: str, pos: int) -> int:
    """Where the token that starts at *pos* ends."""
    char = value[pos]
    if char == '"':
        return _quoted_end(value, pos, '"')
    if char == "(":
        return _comment_end(value, pos)
    if char == "[":
        return _quoted_end(value, pos, "]")
    if char in _ATOM_STOP:
        return pos + 1
    end = pos
    while end < len(value) and value[end] not in _ATOM_STOP:
        end += 1
    return end


def _quoted_end(value: str, pos: int, close: str) -> int:
    """End of a quoted string or domain literal; the end of *value* if open."""
    end = pos + 1
    while end < len(value):
        if value[end] == "\\":
            end += 2
            continue
        if value[end] == close:
            return end + 1
        end += 1
    return len(value)


def _comment_end(value: str, pos: int) -> int:
    """End of a comment, which may nest (RFC 5322 section 3.2.2)."""
    depth, end = 0, pos
    while end < len(value):
        char = value[end]
        if char == "\\":
            end += 2
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        end += 1
        if depth == 0:
            return end
    return len(value)


@dataclass(frozen=True)
class Mailbox:
    """One mailbox of an address list; offsets index the value it came from."""

    address: str  # the addr-spec as written, comments and white space removed
    addr_start: int
    addr_end: int
    phrase: str  # the display name as written (quotes kept), or ""
    comment: str  # the first comment outside the angle brackets, or ""
    group: str | None = None  # the display name of the group it is in


@dataclass(frozen=True)
class AddressList:
    """The mailboxes of a To/Cc/From value and whether groups appeared."""

    mailboxes: list[Mailbox]
    groups: int


def parse_address_list(value: str) -> AddressList:
    """Mailboxes and groups of an RFC 5322 address list (section 3.4),
    obsolete forms included; never raises, whatever the input."""
    tokens = tokenize(value)
    mailboxes: list[Mailbox] = []
    groups, depth, group = 0, 0, None
    item: list[Token] = []
    for token in tokens:
        depth = max(0, depth + {"<": 1, ">": -1}.get(token.kind, 0))
        if depth == 0 and token.kind == ":" and group is None:
            groups += 1
            group = " ".join(t.text for t in item if t.kind != "comment")
            item = []
        elif depth == 0 and token.kind in ",;":
            mailboxes.extend(_mailbox(value, item, group))
            item = []
            group = None if token.kind == ";" else group
        else:
            item.append(token)
    mailboxes.extend(_mailbox(value, item, group))
    return AddressList(mailboxes, groups)


def _mailbox(value: str, tokens: list[Token], group: str | None) -> list[Mailbox]:
    """The mailbox these tokens spell, or none when they are empty."""
    if not [t for t in tokens if t.kind != "comment"]:
        return []
    kinds = [t.kind for t in tokens]
    if "<" in kinds:
        opened = kinds.index("<")
        closed = kinds.index(">", opened) if ">" in kinds[opened:] else len(tokens)
        phrase_tokens = tokens[:opened]
        addr_tokens = _strip_route(tokens[opened + 1 : closed])
        outside = tokens[:opened] + tokens[closed + 1 :]
    else:
        phrase_tokens, addr_tokens, outside = [], tokens, tokens
    return [_make_mailbox(value, phrase_tokens, addr_tokens, outside, group)]


def _strip_route(tokens: list[Token]) -> list[Token]:
    """The addr-spec of an angle-addr without its obsolete route (4.4)."""
    colons = [i for i, t in enumerate(tokens) if t.kind == ":"]
    return tokens[colons[-1] + 1 :] if colons else tokens


def _make_mailbox(
    value: str,
    phrase_tokens: list[Token],
    addr_tokens: list[Token],
    outside: list[Token],
    group: str | None,
) -> Mailbox:
    """A Mailbox from its phrase, addr-spec and outer tokens."""
    spec = [t for t in addr_tokens if t.kind != "comment"]
    comments = [t for t in outside if t.kind == "comment"]
    start = spec[0].start if spec else 0
    end = spec[-1].end if spec else 0
    phrase = ""
    if phrase_tokens:
        phrase = value[phrase_tokens[0].start : phrase_tokens[-1].end]
    return Mailbox(
        address="".join(t.text for t in spec),
        addr_start=start,
        addr_end=end,
        phrase=phrase,
        comment=comments[0].text[1:-1] if comments else "",
        group=group,
    )


def unquote_phrase(phrase: str) -> str:
    """A display name without quotes, backslash escapes or folding."""
    words = []
    for token in tokenize(phrase):
        if token.kind == "quoted":
            words.append(re.sub(r"\\(.)", r"\1", token.text[1:-1], flags=re.S))
        elif token.kind != "comment":
            words.append(token.text)
    return re.sub(r"\r?\n(?=[ \t])", "", " ".join(words))
