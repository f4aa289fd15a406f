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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from segcard.address import make_token, normalize_email
from segcard.book import Book
from segcard.errors import ProtocolError
from segcard.mail.leaks import find_leaks
from segcard.mail.rewrite import header_from, message_id, recipients, references
from segcard.mail.rewrite import rewrite as rewrite_for
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


class Planner:
    """Turns submitted messages into copies; one message at a time."""

    def __init__(self, book: Book) -> None:
        self.book = book
        self.index = book.index
        self.config = book.config
        self._lock = threading.Lock()

    @property
    def identities(self) -> list[str]:
        return self.config.identities

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
        _name, sender = header_from(raw)
        if sender not in self.identities:
            return self._prepare_as_is(raw, sender, mail_from, rcpts, refuse_leaks)
        with self._lock:
            found = self.targets(raw, rcpts, create=False)
            if found is None:
                # Contacts must be made: check on a probe copy first, so that
                # a refused message leaves none behind.
                leaks = self._leaks(self._probe(raw), refuse_leaks)
                found = self.targets(raw, rcpts, create=True)
                assert found is not None
                copies = [self._copy(raw, target) for target in found[0]]
            else:
                copies = [self._copy(raw, target) for target in found[0]]
                leaks = self._leaks(copies[0].data, refuse_leaks) if copies else []
        if found[1]:
            copies = self._add_own(raw, mail_from, copies, found[1])
        return Prepared(copies, leaks, True, message_id(raw))

    def _leaks(self, copy: bytes, refuse: bool) -> list[str]:
        """Where an identity shows in *copy*; LeakRefused when *refuse*."""
        leaks = find_leaks(copy, self.identities)
        if leaks and refuse:
            raise LeakRefused(leaks)
        return leaks

    # -- recipients to segments -------------------------------------------

    def targets(
        self, raw: bytes, rcpts: Sequence[str], create: bool = True
    ) -> tuple[list[Target], list[str]] | None:
        """One Target per segment address, and the recipients that are ours.

        Without *create*, None when a recipient needs a contact or a segment
        made for it (nothing is changed then).
        """
        names = _display_names(raw) if create else {}
        replies = self._reply_segments(raw, rcpts)
        grouped: dict[str, tuple[str, str, list[str]]] = {}
        own: list[str] = []
        seen: set[str] = set()
        for rcpt in rcpts:
            email = normalize_email(rcpt)
            if email in seen:
                continue
            seen.add(email)
            if self.book.is_own(email):
                own.append(rcpt)
                continue
            found = replies.get(email) or self._segment_for(email, names, create)
            if found is None:
                return None
            contact, token = found
            assert contact.segment is not None
            address = self.config.address(contact.segment.label, token)
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
        self, raw: bytes, rcpts: Sequence[str]
    ) -> dict[str, tuple[Contact, str]]:
        """Recipients that a replied-to message ties to a segment."""
        wanted = {normalize_email(r) for r in rcpts}
        found: dict[str, tuple[Contact, str]] = {}
        for mid in references(raw):
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

    def _copy(self, raw: bytes, target: Target) -> NewCopy:
        data = rewrite_for(raw, self.identities, target.address)
        return NewCopy(
            sender=target.address,
            rcpts=target.rcpts,
            data=data,
            uid=target.uid,
            token=target.token,
            message_id=message_id(data),
        )

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
        raw: bytes,
        sender: str,
        mail_from: str,
        rcpts: Sequence[str],
        refuse_leaks: bool,
    ) -> Prepared:
        """A message sent as it is; checked for leaks when it is ours."""
        copy = self._as_is(raw, sender, mail_from, rcpts)
        leaks = find_leaks(raw, self.identities) if copy.uid else []
        if leaks and refuse_leaks:
            raise LeakRefused(leaks)
        return Prepared([copy], leaks, False, copy.message_id)

    def _as_is(
        self, raw: bytes, sender: str, mail_from: str, rcpts: Sequence[str]
    ) -> NewCopy:
        """The one copy of a message that is not the user's to rewrite.

        From one of our segment addresses (set by the add-on, say), the
        envelope sender becomes that address too, and the copy is tied to
        its segment for replies.
        """
        token = self.config.template.parse(sender)
        uid = self.index.token_owner(token) if token else None
        if uid and normalize_email(mail_from) in self.identities:
            mail_from = sender
        return NewCopy(
            mail_from,
            tuple(rcpts),
            raw,
            uid=uid,
            token=token if uid else None,
            message_id=message_id(raw),
        )

    def _probe(self, raw: bytes) -> bytes:
        """*raw* rewritten for an address nobody has, for the leak check."""
        return rewrite_for(raw, self.identities, self.config.address("x", make_token()))


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


def _display_names(raw: bytes) -> dict[str, str]:
    """Recipient address to its first non-empty display name in To/Cc/Bcc."""
    found = recipients(raw)
    names: dict[str, str] = {}
    for name, address in (*found.to, *found.cc, *found.bcc):
        if name and not names.get(address):
            names[address] = name
    return names
