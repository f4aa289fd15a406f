"""Mark a delivered message with its verdict, without breaking it.

The rule:

- Every message gets one ``X-Segcard-Verdict`` field, prepended to the raw
  bytes in the message's own line ending. Fields of that name already in
  the message were written by someone else (a sender forging a verdict) and
  are removed; nothing else in the header is touched.
- A visible note is appended at the end of the body only when that cannot
  break anything: a single-part ``text/plain`` message (or one without a
  Content-Type, which means the same) with no transfer encoding or a 7bit or
  8bit one, in a charset where ASCII is ASCII, that carries no signature and
  no encryption: no DKIM or ARC signature over its body, and no PGP armour
  (inline-signed or encrypted) in it. Multipart messages, S/MIME
  (multipart/signed, application/pkcs7-mime) and PGP/MIME never qualify,
  nor does anything quoted-printable or base64, where the note would have to
  be encoded into the existing content. Every other message gets the field
  only.
- The note follows a signature separator (``-- ``), so that mail clients show
  it as a signature and do not quote it into a reply to the sender.

The message is never parsed into objects and written back: everything but
the added bytes stays exactly as it arrived.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata

from segcard.mail.headers import Message, decode_text, split_message

HEADER = "X-Segcard-Verdict"
NOTE_PREFIX = "[segcard] "
NOTE_WIDTH = 76
FOLD_WIDTH = 78

# Fields whose signature covers the body (RFC 6376 3.7, RFC 8617 4.1.2).
BODY_SIGNATURES = frozenset({"dkim-signature", "arc-message-signature"})
PLAIN_ENCODINGS = frozenset({"", "7bit", "8bit"})
# Charsets in which an ASCII byte may not stand for itself (RFC 2152, 2781).
NOT_ASCII_CHARSETS = ("utf-16", "utf-32", "ucs-2", "ucs-4", "utf-7")
PGP_ARMOUR = b"-----BEGIN PGP "

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")
_COMMENT_RE = re.compile(r"\([^()]*\)")


def annotate(raw: bytes, verdict: str, note: str = "") -> bytes:
    """*raw* with ``X-Segcard-Verdict: verdict`` first and, where the rule in
    the module docstring allows it, *note* appended to the body."""
    message = split_message(raw)
    if any(f.key == HEADER.lower() for f in message.fields):
        message = _without_forged(message)
        raw = message.join()
    eol = message.eol
    out = header_field(verdict, eol) + raw
    if note and note_allowed(message):
        out += note_block(out, note, _note_charset(message), eol)
    return out


def header_field(value: str, eol: bytes = b"\r\n") -> bytes:
    """The ``X-Segcard-Verdict`` field: ASCII, folded at "; " past 78 columns."""
    parts = [_ascii(part) for part in value.split("; ")]
    lines = [f"{HEADER}: {parts[0]}"]
    for part in parts[1:]:
        if len(lines[-1]) + 2 + len(part) > FOLD_WIDTH:
            lines[-1] += ";"
            lines.append(f" {part}")
        else:
            lines[-1] += f"; {part}"
    return eol.join(line.encode("ascii") for line in lines) + eol


def note_allowed(message: Message) -> bool:
    """Whether a note can be appended to *message* (see the module docstring)."""
    if not message.separator or _ambiguous(message):
        return False
    if any(f.key in BODY_SIGNATURES for f in message.fields):
        return False
    if _field_value(message, "content-disposition").startswith("attachment"):
        return False
    content_type, charset = _content_type(message)
    if content_type != "text/plain" or charset.startswith(NOT_ASCII_CHARSETS):
        return False
    if _field_value(message, "content-transfer-encoding") not in PLAIN_ENCODINGS:
        return False
    return PGP_ARMOUR not in message.body


def note_block(raw: bytes, note: str, charset: str, eol: bytes) -> bytes:
    """The bytes to append to *raw* for *note*: separator, then the note."""
    encoding = "utf-8" if charset == "utf-8" else "ascii"
    text = note if encoding == "utf-8" else _ascii(note)
    lines = textwrap.wrap(
        NOTE_PREFIX + _CONTROL_RE.sub(" ", text),
        NOTE_WIDTH,
        break_long_words=False,
        break_on_hyphens=False,
    )
    # RFC 3676 4.4: a line starting like this would be read as quoted or
    # stuffed in format=flowed; a leading space is harmless elsewhere.
    lines = [f" {ln}" if ln.startswith(("From ", ">", " ")) else ln for ln in lines]
    start = b"" if raw.endswith(b"\n") or not raw else eol
    body = eol.join(ln.encode(encoding) for ln in ["", "-- ", *lines]) + eol
    return start + body


def _ambiguous(message: Message) -> bool:
    """Whether the MIME fields occur more than once (readers disagree then)."""
    keys = ("content-type", "content-transfer-encoding", "content-disposition")
    return any(len(message.get_all(key)) > 1 for key in keys)


def _note_charset(message: Message) -> str:
    """ "utf-8" when an 8bit UTF-8 body may take a UTF-8 note, else "ascii"."""
    _type, charset = _content_type(message)
    encoding = _field_value(message, "content-transfer-encoding")
    return "utf-8" if charset == "utf-8" and encoding == "8bit" else "ascii"


def _content_type(message: Message) -> tuple[str, str]:
    """(type/subtype, charset) in lower case; RFC 2045 5.2 defaults."""
    value = _field_value(message, "content-type")
    if not value:
        return "text/plain", "us-ascii"
    kind, *params = (p.strip() for p in value.split(";"))
    charset = "us-ascii"
    for param in params:
        name, _, arg = param.partition("=")
        if name.strip() == "charset":
            charset = arg.strip().strip('"').lower()
    return kind.replace(" ", ""), charset


def _field_value(message: Message, key: str) -> str:
    """The last *key* field, unfolded, comments removed, lower case; or ""."""
    found = message.get_all(key)
    if not found:
        return ""
    text = decode_text(found[-1].unfolded)
    return _COMMENT_RE.sub("", text).strip().lower()


def _without_forged(message: Message) -> Message:
    kept = [f for f in message.fields if f.key != HEADER.lower()]
    return Message(kept, message.separator, message.body, message.eol)


def _ascii(text: str) -> str:
    """*text* as printable ASCII on one line: accents dropped, the rest '?'."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return _CONTROL_RE.sub(" ", folded.encode("ascii", "replace").decode("ascii"))


__all__ = ["HEADER", "annotate", "header_field", "note_allowed"]
