"""The text of a vCard: physical and logical lines, content lines, values.

Nothing here knows segments: :mod:`segcard.store.vcard` builds on it. The
line model keeps every line's exact bytes (its folding and its own line
ending) beside its unfolded content, so a card can be patched line by line
without re-serializing anybody else's lines.
"""

from __future__ import annotations

import quopri
import re
from dataclasses import dataclass

from segcard.store.vcard_bytes import decode_bytes

BOM = "\ufeff"
CRLF = "\r\n"

# RFC 6350 section 3.2: lines SHOULD be at most 75 octets, line break excluded.
FOLD_OCTETS = 75

# CR CR LF (iOS 6 exports) counts as one line ending; a bare CR as one too.
_EOL_RE = re.compile(r"\r\r\n|\r\n|\n|\r")
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_QP_PARAM_RE = re.compile(r"(?i);\s*(?:ENCODING\s*=\s*)?QUOTED-PRINTABLE\s*(?=[;:]|$)")
# A broken quoted-printable value can end in a soft break just before the
# place where segcard appends its lines; those must never be swallowed.
_OWNED_START_RE = re.compile(r"(?i)X-SEGMAIL-|segcard[0-9]*\.")
_ENCODINGS = frozenset({"QUOTED-PRINTABLE", "BASE64", "B", "8BIT", "7BIT"})


@dataclass(frozen=True)
class PhysicalLine:
    """One line as stored: its content and its own line ending ("" at EOF)."""

    body: str
    eol: str


@dataclass(frozen=True)
class LogicalLine:
    """One content line: its exact text (folds and endings) and unfolded."""

    raw: str
    text: str
    eol: str


@dataclass(frozen=True)
class ContentLine:
    """A parsed content line; *value* is still escaped and encoded."""

    group: str
    name: str
    params: tuple[tuple[str, str], ...]
    value: str

    def param(self, name: str) -> str | None:
        """The first value of parameter *name* (upper case), or None."""
        for key, value in self.params:
            if key == name:
                return value
        return None


def physical_lines(text: str) -> list[PhysicalLine]:
    """Split *text* into physical lines, each keeping its own line ending."""
    lines = []
    pos = 0
    for match in _EOL_RE.finditer(text):
        lines.append(PhysicalLine(text[pos : match.start()], match.group()))
        pos = match.end()
    if pos < len(text):
        lines.append(PhysicalLine(text[pos:], ""))
    return lines


def logical_lines(text: str) -> list[LogicalLine]:
    """Group physical lines into content lines.

    A line starting with a space or tab continues the previous one (RFC 6350
    section 3.2); so does any line after a vCard 2.1 quoted-printable value
    that ends in a soft break ``=`` (RFC 2045 section 6.7).
    """
    result: list[LogicalLine] = []
    current: _Unfolding | None = None
    for line in physical_lines(text):
        if current is not None and current.continues(line):
            current.add(line)
            continue
        if current is not None:
            result.append(current.done())
        current = _Unfolding(line)
    if current is not None:
        result.append(current.done())
    return result


class _Unfolding:
    """One content line being put together from its physical lines.

    The pieces are joined once at the end: joining a string per line made a
    card with a 4 MB photo take minutes.
    """

    def __init__(self, first: PhysicalLine) -> None:
        self.parts = [first]
        self.pieces = [first.body]
        self.qp = is_quoted_printable(first.body)
        self.ends_soft = self.qp and first.body.endswith("=")

    def continues(self, line: PhysicalLine) -> bool:
        if line.body[:1] in (" ", "\t"):
            return True
        if not line.body or is_end(line.body) or _OWNED_START_RE.match(line.body):
            return False
        return self.ends_soft

    def add(self, line: PhysicalLine) -> None:
        if self.ends_soft:
            self._drop_soft_break()
            piece = line.body
        else:
            piece = line.body[1:]
        self.parts.append(line)
        self.pieces.append(piece)
        if piece:
            self.ends_soft = self.qp and piece.endswith("=")

    def _drop_soft_break(self) -> None:
        for i in range(len(self.pieces) - 1, -1, -1):
            if self.pieces[i]:
                self.pieces[i] = self.pieces[i][:-1]
                return

    def done(self) -> LogicalLine:
        return _logical(self.parts, "".join(self.pieces))


def _logical(parts: list[PhysicalLine], unfolded: str) -> LogicalLine:
    raw = "".join(p.body + p.eol for p in parts)
    return LogicalLine(raw, unfolded, parts[-1].eol)


def is_quoted_printable(first_line: str) -> bool:
    """Tell whether a content line declares quoted-printable encoding."""
    head = first_line.split(":", 1)[0]
    return _QP_PARAM_RE.search(head) is not None


def is_begin(text: str) -> bool:
    """Tell whether an unfolded line is ``BEGIN:VCARD`` (a BOM before it too)."""
    return text.strip().lstrip(BOM).upper() == "BEGIN:VCARD"


def is_end(text: str) -> bool:
    """Tell whether an unfolded line is ``END:VCARD``."""
    return text.strip().upper() == "END:VCARD"


def parse_content_line(text: str) -> ContentLine | None:
    """Parse ``[group.]name[;param...]:value``; None if it is not one."""
    match = _NAME_RE.match(text)
    if match is None or match.end() == len(text) or text[match.end()] not in ";:":
        return None
    group, _, name = match.group().rpartition(".")
    head, value = _split_head(text[match.end() :])
    if value is None:
        return None
    params = tuple(_param(p) for p in split_unquoted(head, ";") if p.strip())
    return ContentLine(group, name.upper(), params, value)


def _split_head(rest: str) -> tuple[str, str | None]:
    """Split ``;params:value`` at the first colon outside double quotes."""
    quoted = False
    for i, char in enumerate(rest):
        if char == '"':
            quoted = not quoted
        elif char == ":" and not quoted:
            return rest[:i], rest[i + 1 :]
    return rest, None


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        # vCard 2.1 bare parameter: an encoding, or else a type.
        bare = key.strip().upper()
        return ("ENCODING" if bare in _ENCODINGS else "TYPE", key.strip())
    return key.strip().upper(), value.strip().strip('"')


def split_unquoted(text: str, sep: str) -> list[str]:
    """Split *text* at *sep* outside double quotes."""
    parts, start, quoted = [], 0, False
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def split_escaped(value: str, sep: str = ";") -> list[str]:
    """Split a structured value at each *sep* not escaped by a backslash."""
    if "\\" not in value:
        return value.split(sep)  # fast path: base64 photos are long
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            current.append(value[i : i + 2])
            i += 2
            continue
        if char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def unescape_text(value: str) -> str:
    """Undo RFC 6350 section 3.4 escapes; other backslashes stay as written."""
    return re.sub(
        r"\\([\\,;:nN])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), value
    )


def escape_text(value: str) -> str:
    """Escape a text value for vCard 3.0 / 4.0."""
    value = value.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
    return value.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def decode_component(line: ContentLine, component: str) -> str:
    """Decode one (already split) component of *line*'s value to plain text."""
    encoding = (line.param("ENCODING") or "").upper()
    if encoding == "QUOTED-PRINTABLE":
        data = quopri.decodestring(component.encode("utf-8"))
        component = decode_bytes(data, line.param("CHARSET"))
    return unescape_text(component).strip()


def fold(line: str, eol: str = CRLF) -> str:
    """Fold one unfolded content line at 75 octets and end it with *eol*.

    Never cuts a UTF-8 sequence; continuation lines start with one space.
    """
    chunks: list[str] = []
    current: list[str] = []
    size, limit = 0, FOLD_OCTETS
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > limit:
            chunks.append("".join(current))
            current, size, limit = [], 0, FOLD_OCTETS - 1
        current.append(char)
        size += width
    chunks.append("".join(current))
    return (eol + " ").join(chunks) + eol


def normalize_eol(text: str) -> str:
    """Make every line ending CRLF (bare LF, bare CR and CR CR LF included)."""
    return re.sub(r"\r+\n|\r|\n", CRLF, text)


def outer_lines(lines: list[LogicalLine]) -> list[tuple[int, LogicalLine]]:
    """Each line of the first outermost card with its index.

    Lines of a nested card (vCard 2.1 AGENT), lines outside the card, and the
    outer BEGIN and END lines themselves are left out.
    """
    result, depth = [], 0
    for index, line in enumerate(lines):
        if is_begin(line.text):
            depth += 1
        elif is_end(line.text) and depth > 0:
            depth -= 1
            if depth == 0:
                break
        elif depth == 1:
            result.append((index, line))
    return result


def content_lines(lines: list[LogicalLine]) -> list[tuple[int, ContentLine]]:
    """The parsable content lines of the outermost card, with their index."""
    result = []
    for index, line in outer_lines(lines):
        parsed = parse_content_line(line.text)
        if parsed is not None:
            result.append((index, parsed))
    return result


def frame(lines: list[LogicalLine]) -> tuple[int, int] | None:
    """Indexes of the first card's BEGIN:VCARD and of the END:VCARD closing it.

    Nested cards (vCard 2.1 AGENT) are skipped over; None when no card is
    both opened and closed.
    """
    depth, begin = 0, 0
    for index, line in enumerate(lines):
        if is_begin(line.text):
            begin = index if depth == 0 else begin
            depth += 1
        elif is_end(line.text) and depth > 0:
            depth -= 1
            if depth == 0:
                return begin, index
    return None


def has_frame(lines: list[LogicalLine]) -> bool:
    """Tell whether the lines hold a card opened by BEGIN and closed by END."""
    return frame(lines) is not None


def outer_end(lines: list[LogicalLine]) -> int:
    """Index of the END:VCARD line that closes the first card.

    The lines must hold a whole card (see :func:`has_frame`).
    """
    found = frame(lines)
    if found is None:
        raise ValueError("no card is both opened and closed")
    return found[1]
