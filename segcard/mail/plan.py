"""From one submitted message to its copies: recipients to segments.

The steps, in an order that leaves nothing behind when a message is
refused:

1. read From (one mailbox, else refused) and decide what the message is:
   from an identity (rewritten per segment), from one of our own segment
   addresses (sent as it is, from that address), or from anybody else
   (sent as it is);
2. for a rewritten message, rewrite it once for a probe address and run the
   leak check on the result: a refusal comes before any contact is made;
3. give every envelope recipient a segment: a reply keeps the segment the
   replied-to message came in on (In-Reply-To, References, looked up in the
   index); else the recipient's contact, given a segment if it has none;
   else a new contact (Kind.AUTO) named from its To/Cc display name or its
   local part. The user's own identities and segment addresses get no
   contact: they ride along with the first copy;
4. one copy per segment address, each with its envelope and its bytes.

The message is split into its header fields once; every step reads that
split, and each copy shares its body bytes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from segcard.address import Template, make_token, normalize_email
from segcard.book import Book
from segcard.config import Config
from segcard.errors import ProtocolError
from segcard.mail.headers import Message, split_message
from segcard.mail.leaks import find_leaks
from segcard.mail.rewrite import (
    header_from,
    message_id,
    recipients,
    references,
    rewrite_message,
)
from segcard.mail.spool import NewCopy
from segcard.segment import Contact, Kind

log = logging.getLogger(__name__)


class LeakRefused(ProtocolError):
    """An identity shows in the message and the config says to refuse it."""

    def __init__(self, places: Sequence[str]) -> None:
        super().__init__("an identity address appears in " + ", ".join(places))
        self.places = list(places)


@dataclass(frozen=True)
class Target:
    """One segment address and the envelope recipients it writes to."""

    address: str
    uid: str
    token: str
    rcpts: tuple[str, ...]


@dataclass
class Prepared:
    """What the submission server spools for one message."""

    copies: list[NewCopy]
    leaks: list[str] = field(default_factory=list)  # where an identity shows
    rewritten: bool = False
    message_id: str | None = None
    body_start: int | None = None  # where the body of the message starts


@dataclass(frozen=True)
class _Settings:
    """What the planner reads from the config for every message."""

    identities: list[str]
    identity_set: frozenset[str]
    template: Template
    user: str
    domain: str


class Planner:
    """Turns submitted messages into copies; one message at a time."""

    def __init__(self, book: Book) -> None:
        self.book = book
        self.index = book.index
        self._lock = threading.Lock()
        self._settings: _Settings | None = None
        self._settings_key: tuple[object, ...] = ()

    @property
    def config(self) -> Config:
        return self.book.config

    @property
    def settings(self) -> _Settings:
        """The identities and the address template, parsed again only when
        the config changed."""
        config = self.config
        key: tuple[object, ...] = tuple(
            config[name] for name in ("identities", "template", "user", "domain")
        )
        if self._settings is None or key != self._settings_key:
            identities = config.identities
            self._settings = _Settings(
                identities,
                frozenset(identities),
                config.template,
                config["user"],
                config["domain"],
            )
            self._settings_key = key
        return self._settings

    @property
    def identities(self) -> list[str]:
        return self.settings.identities

    def prepare(
        self,
        raw: bytes,
        mail_from: str,
        rcpts: Sequence[str],
        refuse_leaks: bool = False,
    ) -> Prepared:
        """The copies of *raw* for the envelope (*mail_from*, *rcpts*).

        Raise RewriteRefused for a From that is not one mailbox, or an
        identity that cannot be removed from a header; LeakRefused when
        *refuse_leaks* and an identity shows anywhere else.
        """
        message = split_message(raw)
        _name, sender = header_from(message)
        if sender not in self.settings.identity_set:
            return self._prepare_as_is(
                message, raw, sender, mail_from, rcpts, refuse_leaks
            )
        with self._lock:
            found = self.targets(message, rcpts, create=False)
            if found is None:
                # Contacts must be made: check on a probe copy first, so that
                # a refused message leaves none behind.
                leaks = self._leaks(self._probe(message), refuse_leaks)
                found = self.targets(message, rcpts, create=True)
                assert found is not None
                copies = [self._copy(message, target)[0] for target in found[0]]
            else:
                made = [self._copy(message, target) for target in found[0]]
                copies = [copy for copy, _ in made]
                leaks = self._leaks(made[0][1], refuse_leaks) if made else []
        if found[1]:
            copies = self._add_own(raw, mail_from, copies, found[1])
        body_start = len(raw) - len(message.body)
        return Prepared(copies, leaks, True, message_id(message), body_start)

    def _leaks(self, copy: Message, refuse: bool) -> list[str]:
        """Where an identity shows in *copy*; LeakRefused when *refuse*."""
        leaks = find_leaks(copy, self.identities)
        if leaks and refuse:
            raise LeakRefused(leaks)
        return leaks

    def is_own(self, email: str) -> bool:
        """Whether *email* is an identity or one of our segment addresses
        (Book.is_own, without parsing the config again)."""
        email = normalize_email(email)
        settings = self.settings
        if email in settings.identity_set:
            return True
        token = settings.template.parse(email)
        return bool(token and self.index.token_owner(token))

    def address(self, label: str, token: str) -> str:
        """The segment address for *label* and *token* (Config.address,
        without parsing the template again)."""
        settings = self.settings
        return settings.template.build(settings.user, label, token, settings.domain)

    # -- recipients to segments -------------------------------------------

    def targets(
        self, raw: bytes | Message, rcpts: Sequence[str], create: bool = True
    ) -> tuple[list[Target], list[str]] | None:
        """One Target per segment address, and the recipients that are ours.

        Without *create*, None when a recipient needs a contact or a segment
        made for it (nothing is changed then).
        """
        message = raw if isinstance(raw, Message) else split_message(raw)
        names = _display_names(message) if create else {}
        replies = self._reply_segments(message, rcpts)
        grouped: dict[str, tuple[str, str, list[str]]] = {}
        own: list[str] = []
        seen: set[str] = set()
        for rcpt in rcpts:
            email = normalize_email(rcpt)
            if email in seen:
                continue
            seen.add(email)
            if self.is_own(email):
                own.append(rcpt)
                continue
            found = replies.get(email) or self._segment_for(email, names, create)
            if found is None:
                return None
            contact, token = found
            assert contact.segment is not None
            address = self.address(contact.segment.label, token)
            grouped.setdefault(address, (contact.uid, token, []))[2].append(rcpt)
        targets = [
            Target(address, uid, token, tuple(found))
            for address, (uid, token, found) in grouped.items()
        ]
        return targets, own

    def _segment_for(
        self, email: str, names: dict[str, str], create: bool
    ) -> tuple[Contact, str] | None:
        """The recipient's contact with a segment, made if needed (and if
        *create*, else None)."""
        known = self.index.by_email(email)
        if not create:
            segment = known[0].segment if known else None
            return (known[0], segment.token) if segment else None
        if known:
            contact = self.book.ensure_segment(known[0])
        else:
            name = names.get(email) or email.rpartition("@")[0] or email
            contact = self.book.add(name, [email], kind=Kind.AUTO)
            log.info("new contact %s for a recipient of outgoing mail", contact.uid)
        assert contact.segment is not None
        return contact, contact.segment.token

    def _reply_segments(
        self, message: Message, rcpts: Sequence[str]
    ) -> dict[str, tuple[Contact, str]]:
        """Recipients that a replied-to message ties to a segment."""
        wanted = {normalize_email(r) for r in rcpts}
        found: dict[str, tuple[Contact, str]] = {}
        for mid in references(message):
            row = self.index.message(mid)
            if row is None:
                continue
            uid, token, peer, _direction = row
            peer = normalize_email(peer or "")
            contact = self.index.get(uid)
            if peer in wanted and peer not in found and contact and contact.segment:
                found[peer] = (contact, _reply_token(contact, token, peer))
        return found

    # -- copies -------------------------------------------------------------

    def _copy(self, message: Message, target: Target) -> tuple[NewCopy, Message]:
        """The copy for *target*, and its message as split."""
        rewritten = rewrite_message(message, self.identities, target.address)
        copy = NewCopy(
            sender=target.address,
            rcpts=target.rcpts,
            data=rewritten.join(),
            uid=target.uid,
            token=target.token,
            message_id=message_id(rewritten),
        )
        return copy, rewritten

    def _add_own(
        self, raw: bytes, mail_from: str, copies: list[NewCopy], own: list[str]
    ) -> list[NewCopy]:
        """Give the user's own recipients the first copy, or the original."""
        if not copies:
            return [NewCopy(mail_from, tuple(own), raw, message_id=message_id(raw))]
        first = copies[0]
        joined = NewCopy(
            first.sender,
            first.rcpts + tuple(own),
            first.data,
            first.uid,
            first.token,
            first.message_id,
        )
        return [joined, *copies[1:]]

    def _prepare_as_is(
        self,
        message: Message,
        raw: bytes,
        sender: str,
        mail_from: str,
        rcpts: Sequence[str],
        refuse_leaks: bool,
    ) -> Prepared:
        """A message sent as it is; checked for leaks when it is ours."""
        copy = self._as_is(message, raw, sender, mail_from, rcpts)
        leaks = find_leaks(message, self.identities) if copy.uid else []
        if leaks and refuse_leaks:
            raise LeakRefused(leaks)
        body_start = len(raw) - len(message.body)
        return Prepared([copy], leaks, False, copy.message_id, body_start)

    def _as_is(
        self,
        message: Message,
        raw: bytes,
        sender: str,
        mail_from: str,
        rcpts: Sequence[str],
    ) -> NewCopy:
        """The one copy of a message that is not the user's to rewrite.

        From one of our segment addresses (set by the add-on, say), the
        envelope sender becomes that address too, and the copy is tied to
        its segment for replies.
        """
        token = self.settings.template.parse(sender)
        uid = self.index.token_owner(token) if token else None
        if uid and normalize_email(mail_from) in self.settings.identity_set:
            mail_from = sender
        return NewCopy(
            mail_from,
            tuple(rcpts),
            raw,
            uid=uid,
            token=token if uid else None,
            message_id=message_id(message),
        )

    def _probe(self, message: Message) -> Message:
        """*message* rewritten for an address nobody has, for the leak check."""
        probe = self.address("x", make_token())
        return rewrite_message(message, self.identities, probe)


def _reply_token(contact: Contact, token: str, peer: str) -> str:
    """The token a reply to *peer* goes out on.

    The current one, unless the replied-to message came in on a retired
    token and *peer* is not one of the contact's own addresses: the old
    address is one *peer* already knows, and a rotated address must not be
    told to whoever may have leaked the old one.
    """
    segment = contact.segment
    assert segment is not None
    if token == segment.token or token not in segment.tokens:
        return segment.token
    if peer in contact.known_senders:
        return segment.token
    return token


def _display_names(message: Message) -> dict[str, str]:
    """Recipient address to its first non-empty display name in To/Cc/Bcc."""
    found = recipients(message)
    names: dict[str, str] = {}
    for name, address in (*found.to, *found.cc, *found.bcc):
        if name and not names.get(address):
            names[address] = name
    return names
