"""The domain operations on segments: create, rotate, block, trust, remove.

Every change lands in the index at once and queues a write of the card to
the address book (the outbox); the sync engine delivers it. Nothing here
speaks a protocol.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import replace

from segcard.address import first_word_label, make_token, normalize_email
from segcard.config import Config
from segcard.errors import ContactNotFound, SegcardError
from segcard.segment import Contact, Kind, Policy, Segment, State
from segcard.store import vcard
from segcard.store.index import Index, now

from . import lookup

log = logging.getLogger(__name__)

# Values of X-SEGMAIL-* lines use only these, so no escaping question arises.
SAFE_VALUE = re.compile(r"[A-Za-z0-9._@+:=-]+")


NAME_MAX = 200


def check_name(name: str) -> str:
    """A contact name as given, trimmed; refused when empty or unprintable."""
    name = name.strip()
    if not name:
        raise SegcardError("a contact needs a name", "e.g. segcard add Bank")
    if not name.isprintable():
        raise SegcardError("a contact name cannot hold line breaks or tabs")
    if len(name) > NAME_MAX:
        raise SegcardError(f"a contact name is at most {NAME_MAX} characters")
    return name


class Book:
    """The address book as segcard's users and mail see it."""

    def __init__(self, config: Config, index: Index) -> None:
        self.config = config
        self.index = index

    # -- reading ------------------------------------------------------------

    def find(self, query: str) -> Contact:
        """The one contact *query* names (UID, email, segment address, name)."""
        return lookup.find(self.index, self.config.template, query)

    def address(self, contact: Contact) -> str:
        """The current segment address of *contact*."""
        if contact.segment is None:
            raise ContactNotFound(f"{contact.name} has no segment address yet")
        return self.address_of(contact.segment)

    def address_of(self, segment: Segment) -> str:
        return self.config.address(segment.label, segment.token)

    def is_own(self, email: str) -> bool:
        """Tell whether *email* is an identity or one of our segment addresses."""
        email = normalize_email(email)
        if email in self.config.identities:
            return True
        token = self.config.template.parse(email)
        return bool(token and self.index.token_owner(token))

    # -- creating -----------------------------------------------------------

    def new_segment(self, name: str, kind: Kind, **extra: object) -> Segment:
        """A fresh segment for a contact called *name*, with a token unused so far."""
        token = make_token()
        while self.index.token_owner(token):
            token = make_token()
        at = now()
        return Segment(
            token=token,
            label=first_word_label(name),
            created_at=at,
            state_at=at,
            kind=kind,
            **extra,  # type: ignore[arg-type]
        )

    def add(
        self,
        name: str,
        emails: Sequence[str] = (),
        kind: Kind = Kind.MANUAL,
        rotate_every: int | None = None,
        publish: str | None = None,
    ) -> Contact:
        """Create a contact made to hold a segment, or give one to an existing one."""
        name = check_name(name)
        emails = tuple(dict.fromkeys(normalize_email(e) for e in emails))
        for email in emails:
            existing = self.index.by_email(email)
            if existing:
                return self.ensure_segment(existing[0])
        if rotate_every:
            kind = Kind.ROTATING
        segment = self.new_segment(name, kind, rotate_every=rotate_every)
        uid = str(uuid.uuid4())
        if publish:
            # A local file path: it means nothing on other devices, so it
            # stays in the index instead of the card.
            self.index.set_state(f"publish:{uid}", publish)
        card = vcard.new_card(uid, name, emails, segment, self.address_of(segment))
        contact = Contact(uid, name, emails, segment)
        self._save(contact, card)
        log.info("contact %s created with a segment", uid)
        return contact

    def ensure_segment(self, contact: Contact, kind: Kind = Kind.CONTACT) -> Contact:
        """Give *contact* a segment if it has none; return it either way."""
        if contact.segment:
            return contact
        return self._update(contact, self.new_segment(contact.name, kind))

    # -- changing -----------------------------------------------------------

    def rotate(self, contact: Contact) -> Contact:
        """Give *contact* a new token; the old one is kept as retired."""
        segment = self._segment(contact)
        token = make_token()
        while self.index.token_owner(token):
            token = make_token()
        log.info("contact %s rotated", contact.uid)
        return self._update(contact, segment.rotate(token, now()))

    def block(self, contact: Contact) -> Contact:
        log.info("contact %s blocked", contact.uid)
        return self._update(
            contact, self._segment(contact).with_state(State.BLOCKED, now())
        )

    def unblock(self, contact: Contact) -> Contact:
        log.info("contact %s unblocked", contact.uid)
        return self._update(
            contact, self._segment(contact).with_state(State.ACTIVE, now())
        )

    def trust(self, contact: Contact, sender: str) -> Contact:
        """Accept mail from *sender* on this contact's segment."""
        segment = self._segment(contact)
        sender = normalize_email(sender)
        if not SAFE_VALUE.fullmatch(sender) or "@" not in sender:
            raise SegcardError(
                f"{sender!r} cannot be stored as a trusted sender",
                "give a plain address with letters, digits and . _ + - only",
            )
        allowed = tuple(dict.fromkeys((*segment.allowed, sender)))
        return self._update(contact, replace(segment, allowed=allowed))

    def set_policy(self, contact: Contact, policy: Policy) -> Contact:
        return self._update(contact, replace(self._segment(contact), policy=policy))

    def add_list(self, contact: Contact, list_id: str) -> Contact:
        segment = self._segment(contact)
        list_id = list_id.strip("<> ").lower()
        if not SAFE_VALUE.fullmatch(list_id):
            raise SegcardError(f"{list_id!r} is not a list id segcard can store")
        ids = tuple(dict.fromkeys((*segment.list_ids, list_id)))
        return self._update(contact, replace(segment, list_ids=ids))

    def mark_announced(self, contact: Contact) -> Contact:
        return self._update(
            contact, replace(self._segment(contact), announced_at=now())
        )

    def remove(self, contact: Contact) -> None:
        """Delete the contact's card from the address book; its tokens die too."""
        row = self.index.row(contact.uid)
        self.index.remove(contact.uid)
        self.index.forget_tokens(contact.uid)
        if row and row.contact.href:
            self.index.enqueue(contact.uid, "delete", row.contact.href, row.etag)
        else:
            self.index.dequeue(contact.uid)
        log.info("contact %s removed", contact.uid)

    # -- helpers ------------------------------------------------------------

    def _segment(self, contact: Contact) -> Segment:
        fresh = self.index.get(contact.uid) or contact
        if fresh.segment is None:
            raise ContactNotFound(
                f"{contact.name} has no segment", f"run: segcard add {contact.uid!r}"
            )
        return fresh.segment

    def _update(self, contact: Contact, segment: Segment) -> Contact:
        row = self.index.row(contact.uid)
        if row is None:
            raise ContactNotFound(f"contact {contact.name} no longer exists")
        card = vcard.apply_segment(row.card, segment, self.address_of(segment))
        updated = replace(row.contact, segment=segment)
        self.index.put(updated, card, row.etag, row.hash)
        self.index.enqueue(contact.uid)
        return updated

    def _save(self, contact: Contact, card: str) -> None:
        self.index.put(contact, card)
        self.index.enqueue(contact.uid)
