"""Segment addresses: tokens, labels, and the template that joins them.

A template is a string with the fields ``{user}``, ``{label}``, ``{token}``
and ``{domain}``, for example ``{user}-{label}-{token}@{domain}`` (default),
``{user}+{label}-{token}@{domain}`` or ``{user}@{label}-{token}.{domain}``.
Parsing finds the token by its place in the template and never trusts the
label: a label mangled by a correspondent's software still resolves.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from functools import cached_property

# No 0/o and no 1/l/i, so a token read aloud or retyped stays the same.
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"

# 31 symbols give 4.95 bits each; 8 of them are 39.6 bits, short of the 40
# bits the design asks for, so a token has 9 characters (44.6 bits).
TOKEN_LENGTH = 9

# Tokens of other lengths that we still recognise when parsing, so that a
# change of TOKEN_LENGTH never makes an address already given out bounce.
TOKEN_LENGTHS = (8, 9, 10, 11, 12)

LABEL_MAX = 20
DEFAULT_TEMPLATE = "{user}-{label}-{token}@{domain}"
FIELDS = ("user", "label", "token", "domain")

_TOKEN_RE = f"[{ALPHABET}]{{{min(TOKEN_LENGTHS)},{max(TOKEN_LENGTHS)}}}"


def make_token(length: int = TOKEN_LENGTH) -> str:
    """Return a new random token from the system's secure source."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def is_token(text: str) -> bool:
    """Tell whether *text* has the shape of a token."""
    return re.fullmatch(_TOKEN_RE, text) is not None


def make_label(name: str) -> str:
    """Derive a short ASCII label from a contact name; never empty."""
    folded = unicodedata.normalize("NFKD", name)
    ascii_only = folded.encode("ascii", "ignore").decode("ascii").lower()
    label = re.sub(r"[^a-z0-9]", "", ascii_only)[:LABEL_MAX]
    return label or "contact"


def first_word_label(name: str) -> str:
    """Label from the first word of a name ("Tom Smith" gives "tom")."""
    words = [w for w in re.split(r"[\s,;]+", name) if make_label(w) != "contact"]
    return make_label(words[0]) if words else make_label(name)


class TemplateError(ValueError):
    """The address template is not usable."""


@dataclass(frozen=True)
class Template:
    """One address template, with its parser compiled once."""

    pattern: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        names = re.findall(r"{(\w*)}", self.pattern)
        unknown = [n for n in names if n not in FIELDS]
        if unknown:
            raise TemplateError(f"unknown field {{{unknown[0]}}} in address template")
        if names.count("token") != 1:
            raise TemplateError("the address template needs exactly one {token}")
        if "domain" not in names or "@" not in self.pattern:
            raise TemplateError("the address template needs @ and {domain}")
        if self.pattern.count("@") != 1:
            raise TemplateError("the address template needs exactly one @")

    def build(self, user: str, label: str, token: str, domain: str) -> str:
        """Return the segment address for these parts."""
        return self.pattern.format(
            user=user, label=label, token=token, domain=domain
        ).lower()

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        parts = re.split(r"({\w+})", self.pattern)
        out = []
        for part in parts:
            if part == "{token}":
                out.append(f"(?P<token>{_TOKEN_RE})")
            elif part == "{label}":
                # Any label, even a mangled one; it is never trusted.
                out.append(r"[^@]*?")
            elif part == "{user}":
                out.append(r"(?P<user>[^@]+?)")
            elif part == "{domain}":
                out.append(r"(?P<domain>[^@]+)")
            else:
                out.append(re.escape(part.lower()))
        return re.compile("".join(out))

    def parse(self, address: str) -> str | None:
        """Return the token in *address*, or None if it does not fit."""
        if not isinstance(address, str):
            return None
        match = self._regex.fullmatch(address.strip().lower())
        return match.group("token") if match else None

    def parse_parts(self, address: str) -> tuple[str, str, str] | None:
        """Return (user, token, domain) of *address*, or None."""
        if not isinstance(address, str):
            return None
        match = self._regex.fullmatch(address.strip().lower())
        if not match:
            return None
        return match.group("user"), match.group("token"), match.group("domain")


def split_address(address: str) -> tuple[str, str]:
    """Split an address into local part and lower-cased domain."""
    local, _, domain = address.rpartition("@")
    return local, domain.lower()


def normalize_email(address: str) -> str:
    """Lower-case an email address for comparison and lookup."""
    return address.strip().strip("<>").lower()
