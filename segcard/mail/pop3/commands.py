"""Parsing what a POP3 client sends: commands, arguments, AUTH PLAIN, TOP."""

from __future__ import annotations

import base64
import binascii
import re

_LINE_RE = re.compile(rb"[^\n]*\n|[^\n]+")
_SHOWN_RE = re.compile(r"[A-Za-z0-9_-]{1,20}")


class BadCommand(Exception):
    """A command that cannot be carried out; its text goes after -ERR."""


def parse(line: bytes) -> tuple[str, str]:
    """(KEYWORD, the rest of the line) of a command line."""
    try:
        text = line.rstrip(b"\r\n").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadCommand("a command must be text (ASCII or UTF-8)") from exc
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise BadCommand("a command must not hold control characters")
    keyword, _, args = text.partition(" ")
    if not keyword:
        raise BadCommand("empty command: send a keyword such as CAPA")
    return keyword.upper(), args


def arguments(keyword: str, args: str, least: int, most: int) -> list[str]:
    words = args.split()
    if not least <= len(words) <= most:
        wanted = f"{least}" if least == most else f"{least} to {most}"
        raise BadCommand(f"{keyword} takes {wanted} arguments, got {len(words)}")
    return words


def no_args(keyword: str, args: str) -> None:
    arguments(keyword, args, 0, 0)


def message_number(keyword: str, word: str) -> int:
    if not word.isdigit() or len(word) > 9 or int(word) == 0:
        raise BadCommand(f"{keyword} needs a message number (1 or more)")
    return int(word)


def decode_plain(response: str) -> tuple[bytes, bytes]:
    """(user, password) from an AUTH PLAIN response (RFC 4616 2)."""
    if response == "*":
        raise BadCommand("AUTH cancelled")
    try:
        decoded = base64.b64decode(b"" if response == "=" else response, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadCommand("the AUTH PLAIN response is not base64") from exc
    parts = decoded.split(b"\0")
    if len(parts) != 3:
        raise BadCommand("AUTH PLAIN wants authzid NUL user NUL password")
    authzid, user, password = parts
    if authzid and authzid != user:
        # Acting for another user is not offered: a login that must fail.
        return b"", b""
    return user, password


def top(data: bytes, lines: int) -> bytes:
    """The header of *data*, the empty line, and *lines* lines of the body."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data
    head, body = data[: end + 4], data[end + 4 :]
    return head + b"".join(_LINE_RE.findall(body)[:lines])


def _shown(word: str) -> str:
    """*word* fit to be echoed in a reply, or a stand-in."""
    return word if _SHOWN_RE.fullmatch(word) else "(?)"


# -- the service -------------------------------------------------------------------
