"""Checks of the envelope addresses the submission proxy is given.

aiosmtpd hands over whatever its parser made of MAIL FROM and RCPT TO: a
null path comes as ``<>``, and ``<not an address>`` as a quoted local part
without a domain. A recipient such as these would become a contact and a
copy the upstream can never take, so each address is checked here, at
MAIL or RCPT time, against the mailbox syntax of RFC 5321 section 4.1.2
(with the UTF-8 of RFC 6531).
"""

from __future__ import annotations

import re

NULL_PATH = "<>"  # how aiosmtpd gives the null reverse-path (section 4.5.5)

REPLY_BAD_SENDER = "501 5.1.7 Bad sender address syntax"
REPLY_BAD_RCPT = "501 5.1.3 Bad recipient address syntax"
REPLY_NULL_RCPT = "553 5.1.3 A recipient cannot be the null address <>"
REPLY_ADDRESS_LITERAL = "553 5.1.3 Address literals are not accepted as recipients"

# atext of RFC 5322 section 3.2.3, and any non-ASCII character (RFC 6531).
_ATEXT = r"[^\x00-\x20\x7f()<>\[\]:;@\\,.\"]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*"'
_LETTER = r"[A-Za-z0-9\x80-\U0010ffff]"
_LABEL = rf"{_LETTER}(?:[A-Za-z0-9\x80-\U0010ffff-]*{_LETTER})?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[[^\[\]\\\s]+\]"
_MAILBOX = re.compile(
    rf"(?:{_DOT_ATOM}|{_QUOTED})@(?:{_DOMAIN}|(?P<literal>{_LITERAL}))"
)
_MAX_LENGTH = 254  # a path is at most 256 octets with its brackets (4.5.3.1.3)


def sender_refusal(address: str) -> str | None:
    """The reply refusing *address* as MAIL FROM, or None when it is fine;
    the null path is fine (relayed as ``<>``)."""
    if address == NULL_PATH or _match(address):
        return None
    return REPLY_BAD_SENDER


def recipient_refusal(address: str) -> str | None:
    """The reply refusing *address* as RCPT TO, or None when it is fine."""
    if address == NULL_PATH:
        return REPLY_NULL_RCPT
    match = _match(address)
    if match is None:
        return REPLY_BAD_RCPT
    if match.group("literal"):
        return REPLY_ADDRESS_LITERAL
    return None


def reverse_path(mail_from: str) -> str:
    """The envelope sender as spooled: the null path as an empty string,
    which is what the SMTP client sends as ``<>``."""
    return "" if mail_from == NULL_PATH else mail_from


def _match(address: str) -> re.Match[str] | None:
    if len(address) > _MAX_LENGTH:
        return None
    return _MAILBOX.fullmatch(address)
