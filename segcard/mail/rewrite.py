"""The copy of an outgoing message for one segment, rewritten in place.

The submission proxy gets the raw message as the client sent it and makes one
copy per segment. Only the header fields that would reveal an identity are
touched, each edited inside its own bytes; every other field, the order of
the fields, their folding, the line endings and the body stay byte for byte
what the client wrote. Nothing here re-serializes a message with
``email.policy``: re-folding splits an encoded display name that decodes to
"Surname, Given" into two mailboxes and loses recipients.

Header bytes are handled as latin-1 text, one character per byte, so offsets
never move and 8-bit bytes go back out exactly as they came in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass

from segcard.address import split_address
from segcard.errors import ProtocolError
from segcard.mail.headers import (
    Field,
    Mailbox,
    Message,
    decode_text,
    decode_words,
    encode_words,
    make_field,
    msg_ids,
    parse_address_list,
    split_encoded,
    split_message,
    unquote_phrase,
)
from segcard.mail.leaks import matcher

log = logging.getLogger(__name__)

# RFC 3463 5.6.0: a problem with the content of the message.
REPLY_NO_FROM = "550 5.6.0 The message has no From address"
REPLY_SEVERAL_FROM = "550 5.6.0 From must name exactly one mailbox"
REPLY_GROUP_FROM = "550 5.6.0 From must not use group syntax"
REPLY_WOULD_LEAK = "550 5.7.0 A header would still reveal the sender's address"

# Fields that may carry the sender's own address for replies and receipts.
ADDRESS_FIELDS = frozenset(
    {"sender", "reply-to", "disposition-notification-to", "return-receipt-to"}
)
BLIND_FIELDS = frozenset({"bcc", "resent-bcc"})
AUTOCRYPT_FIELDS = frozenset({"autocrypt", "autocrypt-gossip"})
# Fields removed, not edited, when they carry an identity: client state and
# key announcements whose content would be wrong with another address.
DROPPED_FIELDS = frozenset({"return-path", "openpgp", "autocrypt"})

_MSG_ID_HOST_RE = re.compile(r"(<[^<>@]*@)([^<>]*)(>)")
_BARE_MSG_ID_HOST_RE = re.compile(r"([^\s<>@]+@)([^\s<>()]+)")
# Characters that would break out of an address written into a header.
_UNSAFE_RE = re.compile(r'[\s<>(),;:"\\\[\]\x00-\x1f\x7f]')


class RewriteRefused(ProtocolError):
    """The message cannot be rewritten safely; .reply is the SMTP text to send (5xx)."""

    def __init__(self, message: str, reply: str) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True)
class Recipients:
    """The visible and blind recipients written in a message's header."""

    to: list[tuple[str, str]]  # (display name decoded, address lower-case)
    cc: list[tuple[str, str]]
    bcc: list[tuple[str, str]]


def header_from(raw: bytes | Message) -> tuple[str, str]:
    """(display name as written — raw bytes of the phrase decoded as ascii/utf-8,
    address lower-case) of the From header. Raise RewriteRefused for a From with
    several mailboxes, group syntax, or none.

    The name keeps its quotes and encoded words; for the old ``addr (Name)``
    form it is the comment's text. Bytes that are not UTF-8 read as latin-1.
    """
    mailbox = _from_mailbox(_split(raw).get_all("from"))
    name = mailbox.phrase or mailbox.comment
    return _as_text(re.sub(r"\r?\n(?=[ \t])", "", name)), _address(mailbox)


def recipients(raw: bytes | Message) -> Recipients:
    """The To, Cc and Bcc mailboxes, group members included, with RFC 2047
    decoded display names ("" when there is none)."""
    message = _split(raw)
    return Recipients(
        to=_mailboxes(message.get_all("to")),
        cc=_mailboxes(message.get_all("cc")),
        bcc=_mailboxes(message.get_all("bcc")),
    )


def message_id(raw: bytes | Message) -> str | None:
    """The Message-ID without angle brackets, or None when there is none."""
    for field in _split(raw).get_all("message-id"):
        ids = msg_ids(field.value)
        if ids:
            return ids[0]
        bare = decode_text(field.unfolded)
        if bare:
            return bare
    return None


def references(raw: bytes | Message) -> list[str]:
    """In-Reply-To + References msg-ids, in order, deduplicated, without
    angle brackets."""
    message = _split(raw)
    found: dict[str, None] = {}
    for key in ("in-reply-to", "references"):
        for field in message.get_all(key):
            found.update(dict.fromkeys(msg_ids(field.value)))
    return list(found)


def rewrite(
    raw: bytes | Message, identities: Collection[str], segment_address: str
) -> bytes:
    """The copy for one segment:
    - From: keep the display name bytes exactly, replace the address (handles
      `Name <addr>`, bare `addr`, `addr (comment)`, folded From);
    - Sender, Reply-To, Disposition-Notification-To, Return-Receipt-To: every
      occurrence of an identity address (case-insensitive) replaced by the
      segment address, rest of the field byte-identical;
    - Message-ID: host part (after @) set to the segment address's domain;
      the local part is left alone even when it holds an identity's local
      part: it is the unique part that ties the copies of one message (and
      replies to them) together, and without the domain it names nobody —
      with the default template the same word is in the segment address;
    - Bcc (and Resent-Bcc): the field removed with its continuation lines;
    - Autocrypt, Autocrypt-Gossip: removed when they name an identity;
    - any other field whose unfolded value (RFC 2047 decoded too) holds an
      identity: removed if it starts with X- or is Return-Path/Openpgp (or
      is a line without a field name, such as an mbox "From " line), else
      each occurrence replaced in place; an encoded word that holds one is
      encoded anew as UTF-8;
    - no other byte changes. Identities compare case-insensitively.

    The From address is replaced whatever it is: whether the message is
    the user's to rewrite is the caller's decision. Raise RewriteRefused
    when From is not one mailbox, or when an identity would still show in
    a field that cannot be removed.
    """
    return rewrite_message(_split(raw), identities, segment_address).join()


def rewrite_message(
    message: Message, identities: Collection[str], segment_address: str
) -> Message:
    """Like rewrite, from a message already split and to one split the same
    way: its body is the very bytes object of *message*."""
    _check_segment_address(segment_address)
    _from_mailbox(message.get_all("from"))
    editor = _Editor(identities, segment_address, message.eol.decode("ascii"))
    fields = [new for f in message.fields if (new := editor.field(f)) is not None]
    log.debug("rewrote %d of %d header fields", editor.changed, len(message.fields))
    return Message(fields, message.separator, message.body, message.eol)


def _split(raw: bytes | Message) -> Message:
    return raw if isinstance(raw, Message) else split_message(raw)


class _Editor:
    """Applies the rewrite rules to one field at a time."""

    def __init__(self, identities: Collection[str], segment: str, eol: str) -> None:
        self.matcher = matcher(identities)
        self.raw_pattern = self.matcher.raw_pattern
        self.text_pattern = self.matcher.pattern
        self.segment = segment.encode("utf-8").decode("latin-1")
        self.domain = split_address(segment)[1]
        self.eol = eol
        self.changed = 0

    def field(self, field: Field) -> Field | None:
        """The field as it goes out, or None when it is removed."""
        new = self._apply_rules(field)
        if new is not field:
            self.changed += 1
        if new is not None and self.carries_identity(new):
            raise RewriteRefused(
                f"an identity is left in header {field.name}", REPLY_WOULD_LEAK
            )
        return new

    def _apply_rules(self, field: Field) -> Field | None:
        key = field.key
        if key == "from":
            return self._from(field)
        if key == "message-id":
            return self._message_id(field)
        if key in BLIND_FIELDS:
            return None
        if not self.carries_identity(field):
            return field
        if key in AUTOCRYPT_FIELDS or self._droppable(key):
            return None
        return self._replace(field, field.value.decode("latin-1"))

    @staticmethod
    def _droppable(key: str) -> bool:
        """Whether a field that carries an identity is removed, not edited."""
        return not key or key.startswith("x-") or key in DROPPED_FIELDS

    def carries_identity(self, field: Field) -> bool:
        """Whether an identity shows in the field, raw or RFC 2047 decoded."""
        if self.matcher.at_sign and b"@" not in field.raw and b"=?" not in field.raw:
            return False  # neither the bytes nor an encoded word hold an address
        text = field.unfolded.decode("latin-1")
        if self.matcher.search_raw(text):
            return True
        text = _as_text(text)
        return self.matcher.search(decode_words(text) if "=?" in text else text)

    def _from(self, field: Field) -> Field:
        value = field.value.decode("latin-1")
        mailbox = parse_address_list(value).mailboxes[0]
        start, end = mailbox.addr_start, mailbox.addr_end
        return self._replace(field, value[:start] + self.segment + value[end:])

    def _message_id(self, field: Field) -> Field:
        value = field.value.decode("latin-1")
        new, count = _MSG_ID_HOST_RE.subn(
            lambda m: m.group(1) + self.domain + m.group(3), value, count=1
        )
        if not count:
            new = _BARE_MSG_ID_HOST_RE.sub(
                lambda m: m.group(1) + self.domain, value, count=1
            )
        return self._replace(field, new)

    def _replace(self, field: Field, value: str) -> Field:
        """The field with *value* after its name, identities replaced."""
        pieces = []
        for is_run, piece in split_encoded(value):
            pieces.append(self._run(piece) if is_run else self._plain(piece))
        new = "".join(pieces).encode("latin-1")
        prefix = field.raw[: len(field.raw) - len(field.value)]
        return field if prefix + new == field.raw else make_field(prefix + new)

    def _plain(self, text: str) -> str:
        return self.raw_pattern.sub(lambda _: self.segment, text)

    def _run(self, run: str) -> str:
        """A run of encoded words, encoded anew if it holds an identity."""
        decoded = decode_words(run)
        if not self.text_pattern.search(decoded):
            return run
        segment = _as_text(self.segment)
        return encode_words(self.text_pattern.sub(lambda _: segment, decoded), self.eol)


def _check_segment_address(address: str) -> None:
    """Raise ValueError unless *address* can be written into a header as is."""
    local, _, domain = address.rpartition("@")
    if not local or not domain or _UNSAFE_RE.search(address):
        raise ValueError(f"not a usable segment address: {address!r}")


def _from_mailbox(fields: list[Field]) -> Mailbox:
    """The one mailbox of the one From field, or RewriteRefused."""
    if not fields:
        raise RewriteRefused("the message has no From field", REPLY_NO_FROM)
    if len(fields) > 1:
        raise RewriteRefused("the message has several From fields", REPLY_SEVERAL_FROM)
    parsed = parse_address_list(fields[0].value.decode("latin-1"))
    if parsed.groups:
        raise RewriteRefused("From uses group syntax", REPLY_GROUP_FROM)
    if len(parsed.mailboxes) > 1:
        raise RewriteRefused("From names several mailboxes", REPLY_SEVERAL_FROM)
    if not parsed.mailboxes or "@" not in parsed.mailboxes[0].address:
        raise RewriteRefused("From names no mailbox", REPLY_NO_FROM)
    return parsed.mailboxes[0]


def _mailboxes(fields: list[Field]) -> list[tuple[str, str]]:
    """(decoded display name, lower-case address) of every mailbox."""
    found = []
    for field in fields:
        for mailbox in parse_address_list(field.value.decode("latin-1")).mailboxes:
            found.append((_display_name(mailbox), _address(mailbox)))
    return found


def _display_name(mailbox: Mailbox) -> str:
    """The display name a person reads: unquoted, RFC 2047 decoded."""
    if mailbox.phrase:
        return decode_words(_as_text(unquote_phrase(mailbox.phrase))).strip()
    return decode_words(_as_text(unquote_phrase(mailbox.comment))).strip()


def _address(mailbox: Mailbox) -> str:
    return _as_text(mailbox.address).lower()


def _as_text(latin1: str) -> str:
    """Header bytes held as latin-1 read as the client meant them."""
    return decode_text(latin1.encode("latin-1"))
