"""The incoming side: the SMTP filter and the IMAP sorter.

Both judge each recipient with :class:`segcard.book.verdict.Judge`; what
they share is here: which domains are the user's, and how the parts of a
message the verdict looks at are read from its raw header.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from segcard.address import Template, normalize_email, split_address
from segcard.book.verdict import Action, Mail, Reason, Verdict
from segcard.config import Config
from segcard.mail.headers import (
    Message,
    decode_text,
    msg_ids,
    parse_address_list,
    split_message,
)

# Where an MTA or MDA writes the address a message was delivered to.
RECIPIENT_FIELDS = ("delivered-to", "x-original-to", "envelope-to")

# One address and nothing else, in angle brackets or not: an addr-spec with
# no phrase, comment, quoting or route (RFC 5322 3.4.1).
_BARE_ADDRESS_RE = re.compile(
    r"\s*<?([^\s<>()\[\],;:\\\"@]+@[^\s<>()\[\],;:\\\"@]+)>?\s*"
)

# Verdicts whose note the user should see in the message itself; the
# co-recipient note is a soft one and stays in the header.
VISIBLE_NOTES = frozenset(
    {(Action.WARN, Reason.OUTSIDER), (Action.DELIVER, Reason.GRACE)}
)


def local_domains(config: Config) -> frozenset[str]:
    """The user's domains: the segment domain and those of the identities."""
    addresses = [*config["identities"], *config["open_identities"]]
    domains = {split_address(a)[1] for a in addresses}
    return frozenset(d for d in {config["domain"].lower(), *domains} if d)


def is_local(address: str, domains: Iterable[str]) -> bool:
    """Whether *address* is on one of *domains* or a sub-domain of one
    (templates may put the label and token in the host part)."""
    _local, domain = split_address(normalize_email(address))
    return any(domain == d or domain.endswith(f".{d}") for d in domains)


def read_mail(raw: bytes | Message, recipient: str, mail_from: str = "") -> Mail:
    """The parts of *raw* (a message, just its header, or either already
    split) that the verdict uses."""
    message = raw if isinstance(raw, Message) else split_message(raw)
    return Mail(
        recipient=recipient,
        mail_from=mail_from,
        header_from=_first_address(message, "from"),
        list_id=_text(message, "list-id"),
        references=tuple(_references(message)),
        message_id=_message_id(message),
    )


def find_recipient(
    message: Message, template: Template, domains: frozenset[str]
) -> str | None:
    """The segment address *message* came in on, or None: the first address
    on *domains* with a token, looking at the envelope fields (Delivered-To,
    X-Original-To, Envelope-To) first, then To and Cc; else the first
    address on *domains*."""
    first_local = None
    for key in (*RECIPIENT_FIELDS, "to", "cc"):
        for address in addresses(message, key):
            if not is_local(address, domains):
                continue
            if template.parse(address):
                return address
            first_local = first_local or address
    return first_local


def visible_note(verdict: Verdict) -> str:
    """The note to show inside the message for *verdict*, or ""."""
    if (verdict.action, verdict.reason) in VISIBLE_NOTES:
        return verdict.note
    return ""


def addresses(message: Message, key: str) -> list[str]:
    """The addresses in every *key* field of *message*, lower case."""
    found = []
    for field in message.get_all(key):
        value = decode_text(field.unfolded)
        bare = _BARE_ADDRESS_RE.fullmatch(value)
        if bare:  # Delivered-To and the like: no need for the full parser
            found.append(normalize_email(bare.group(1)))
            continue
        mailboxes = parse_address_list(value).mailboxes
        found += [normalize_email(m.address) for m in mailboxes]
    return [a for a in found if "@" in a]


def _first_address(message: Message, key: str) -> str:
    found = addresses(message, key)
    return found[0] if found else ""


def _text(message: Message, key: str) -> str:
    found = message.get_all(key)
    return decode_text(found[0].unfolded) if found else ""


def _references(message: Message) -> list[str]:
    found: dict[str, None] = {}
    for key in ("in-reply-to", "references"):
        for field in message.get_all(key):
            found.update(dict.fromkeys(f"<{m}>" for m in msg_ids(field.value)))
    return list(found)


def _message_id(message: Message) -> str:
    for field in message.get_all("message-id"):
        ids = msg_ids(field.value)
        if ids:
            return f"<{ids[0]}>"
    return ""
