"""Finding the contact a user means: by UID, email, segment address or name."""

from __future__ import annotations

import unicodedata

from segcard.address import Template, normalize_email
from segcard.errors import AmbiguousContact, ContactNotFound
from segcard.segment import Contact
from segcard.store.index import Index


def find(index: Index, template: Template, query: str) -> Contact:
    """Resolve *query* to exactly one contact, or raise a ContactError."""
    query = query.strip()
    if not query:
        raise ContactNotFound("no contact named: the name is empty")
    by_uid = index.get(query)
    if by_uid:
        return by_uid
    if "@" in query:
        return _by_address(index, template, query)
    return _by_name(index, query)


def _by_address(index: Index, template: Template, query: str) -> Contact:
    token = template.parse(query)
    if token:
        owner = index.by_token(token)
        if owner:
            return owner
    found = index.by_email(normalize_email(query))
    if len(found) == 1:
        return found[0]
    if found:
        raise _ambiguous(query, found)
    raise ContactNotFound(f"no contact has the address {query}", "see 'segcard list'")


def fold(text: str) -> str:
    """Text for matching names: case and accents do not count (zoe finds Zoë)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _by_name(index: Index, query: str) -> Contact:
    wanted = fold(query)
    contacts = index.contacts()
    for rule in (_exact, _word_prefix, _substring):
        found = [c for c in contacts if rule(fold(c.name), wanted)]
        if len(found) == 1:
            return found[0]
        if found:
            raise _ambiguous(query, found)
    raise ContactNotFound(f"no contact is called {query!r}", "see 'segcard list'")


def _exact(name: str, wanted: str) -> bool:
    return name == wanted


def _word_prefix(name: str, wanted: str) -> bool:
    return any(word.startswith(wanted) for word in name.split())


def _substring(name: str, wanted: str) -> bool:
    return wanted in name


def _ambiguous(query: str, found: list[Contact]) -> AmbiguousContact:
    names = [
        f"{c.name} <{', '.join(c.emails) or 'no email'}> (UID {c.uid})" for c in found
    ]
    return AmbiguousContact(f"{query!r} matches {len(found)} contacts", names)
