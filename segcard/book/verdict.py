"""The verdict: what to do with mail arriving at one recipient address.

A pure function of the message's envelope and a few headers, the time and
the index (the table in DESIGN.md, "Incoming mail"). Side effects (leak
evidence, Message-IDs) are recorded separately by :func:`record`, so the
rules can be tested without a socket and judged twice without counting twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from segcard.address import normalize_email, split_address
from segcard.config import Config
from segcard.segment import Contact, Policy, State
from segcard.store.index import Index


class Action(enum.StrEnum):
    DELIVER = "deliver"
    WARN = "warn"
    JUNK = "junk"
    REJECT = "reject"
    REDIRECT = "redirect"


class Reason(enum.StrEnum):
    ROLE = "role address"
    OPEN = "open identity"
    NO_TOKEN = "no token"
    UNKNOWN = "unknown token"
    REMOVED = "contact removed"
    BLOCKED = "blocked"
    KNOWN = "known sender"
    LIST = "mailing list"
    CORECIPIENT = "co-recipient"
    OUTSIDER = "unknown sender"
    GRACE = "old address"
    RETIRED_KNOWN = "old address, known sender"
    RETIRED = "old address"


@dataclass(frozen=True)
class Mail:
    """What the verdict looks at in one message, for one recipient."""

    recipient: str
    mail_from: str = ""  # envelope sender
    header_from: str = ""
    list_id: str = ""
    references: tuple[str, ...] = ()
    message_id: str = ""


@dataclass(frozen=True)
class Verdict:
    """The decision for one recipient."""

    action: Action
    reason: Reason
    contact: Contact | None = None
    token: str | None = None
    address: str | None = None  # the segment's current address
    note: str = ""  # for the user, never sent to the sender
    sender: str = ""
    evidence: bool = False  # counts as evidence of a leak
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """Whether the message goes into a mailbox (Inbox or Junk)."""
        return self.action in (Action.DELIVER, Action.WARN, Action.JUNK)

    def header(self) -> str:
        """The value of X-Segcard-Verdict for this verdict (ASCII, one line)."""
        parts = [self.action.value, f'reason="{self.reason.value}"']
        if self.contact is not None:
            name = self.contact.name.encode("ascii", "replace").decode("ascii")
            parts.append(f'contact="{name.replace(chr(34), "")}"')
        if self.address:
            parts.append(f"segment={self.address}")
        return "; ".join(parts)


def sender_of(mail: Mail) -> str:
    return normalize_email(mail.header_from or mail.mail_from)


class Judge:
    """Applies the verdict table with one config and index."""

    def __init__(self, config: Config, index: Index) -> None:
        self.config = config
        self.index = index
        # Built once: Config.template makes a new Template (and compiles its
        # parser) on every access, which was half the cost of a verdict.
        self.template = config.template
        self.open_ids = frozenset(normalize_email(a) for a in config["open_identities"])

    def judge(self, mail: Mail, now: int) -> Verdict:
        """The verdict for *mail*'s recipient at time *now*."""
        recipient = normalize_email(mail.recipient)
        special = self._special(recipient, mail)
        if special:
            return special
        token = self.template.parse(recipient)
        if token is None:
            return Verdict(Action.JUNK, Reason.NO_TOKEN, sender=sender_of(mail))
        owner = self.index.token_owner(token)
        if owner is None:
            return Verdict(
                Action.JUNK, Reason.UNKNOWN, token=token, sender=sender_of(mail)
            )
        contact = self.index.get(owner)
        if contact is None or contact.segment is None:
            return Verdict(
                Action.REJECT, Reason.REMOVED, token=token, sender=sender_of(mail)
            )
        return self._by_segment(contact, token, mail, now)

    def _special(self, recipient: str, mail: Mail) -> Verdict | None:
        local, domain = split_address(recipient)
        if local in self.config["role_addresses"]:
            return Verdict(Action.DELIVER, Reason.ROLE, sender=sender_of(mail))
        if recipient in self.open_ids:
            return Verdict(Action.DELIVER, Reason.OPEN, sender=sender_of(mail))
        return None

    def _by_segment(
        self, contact: Contact, token: str, mail: Mail, now: int
    ) -> Verdict:
        segment = contact.segment
        assert segment is not None
        base = {
            "contact": contact,
            "token": token,
            "address": self.template.build(
                self.config["user"], segment.label, segment.token, self.config["domain"]
            ),
            "sender": sender_of(mail),
        }
        if segment.state is State.BLOCKED:
            action = Action.JUNK if segment.policy is Policy.JUNK else Action.REJECT
            return Verdict(action, Reason.BLOCKED, **base)  # type: ignore[arg-type]
        retired_at = segment.retired_at(token)
        if retired_at is not None:
            return self._retired(contact, retired_at, mail, now, base)
        return self._current(contact, mail, base)

    def _retired(
        self, contact: Contact, retired_at: int, mail: Mail, now: int, base: dict
    ) -> Verdict:
        segment = contact.segment
        assert segment is not None
        grace = self.config["grace_days"] * 86400
        if now - retired_at < grace:
            note = (
                f"sent to an old address of {contact.name}; "
                f"the new one is {base['address']}"
            )
            return Verdict(Action.DELIVER, Reason.GRACE, note=note, **base)
        if segment.policy is Policy.JUNK:
            return Verdict(Action.JUNK, Reason.RETIRED, **base)
        if self._known(contact, mail):
            return Verdict(Action.REDIRECT, Reason.RETIRED_KNOWN, **base)
        # Reveal nothing: the address was rotated because it leaked.
        return Verdict(Action.REJECT, Reason.RETIRED, **base)

    def _current(self, contact: Contact, mail: Mail, base: dict) -> Verdict:
        segment = contact.segment
        assert segment is not None
        list_id = _list_id(mail.list_id)
        if list_id and list_id in segment.list_ids:
            return Verdict(Action.DELIVER, Reason.LIST, **base)
        if self._known(contact, mail):
            return Verdict(Action.DELIVER, Reason.KNOWN, **base)
        sender = base["sender"]
        if sender and sender in self.index.thread_peers(list(mail.references)):
            note = f"{sender} wrote in a thread shared with {contact.name}"
            return Verdict(Action.DELIVER, Reason.CORECIPIENT, note=note, **base)
        note = f"{contact.name}'s address was used by {sender or 'an unknown sender'}"
        return Verdict(Action.WARN, Reason.OUTSIDER, note=note, evidence=True, **base)

    @staticmethod
    def _known(contact: Contact, mail: Mail) -> bool:
        known = contact.known_senders
        senders = {normalize_email(mail.mail_from), normalize_email(mail.header_from)}
        return bool(known & (senders - {""}))


def _list_id(value: str) -> str:
    """The list id inside a List-Id header ("Name <id>" or "id")."""
    value = value.strip()
    if "<" in value and ">" in value:
        value = value[value.rindex("<") + 1 : value.rindex(">")]
    return value.strip().lower()


def record(index: Index, verdict: Verdict, mail: Mail, now: int) -> None:
    """Keep what a verdict teaches: leak evidence, and the Message-ID."""
    contact = verdict.contact
    if contact is None or verdict.token is None:
        return
    if verdict.evidence:
        _local, domain = split_address(verdict.sender or "unknown@unknown")
        index.record_leak(contact.uid, verdict.token, domain or "unknown", now)
    if mail.message_id and verdict.accepted:
        index.record_message(
            mail.message_id, contact.uid, verdict.token, verdict.sender, "in"
        )
