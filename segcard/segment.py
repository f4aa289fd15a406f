"""The data: a contact, its segment, its retired tokens. No I/O here.

Times are whole seconds since the epoch (UTC). In a vCard they are written
as ``20261204T170312Z`` (see :mod:`segcard.store.vcard`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class State(enum.StrEnum):
    """Whether mail on a segment's current token is accepted."""

    ACTIVE = "active"
    BLOCKED = "blocked"


class Kind(enum.StrEnum):
    """How a segment came to be."""

    CONTACT = "contact"  # a segment on a contact the user already had
    MANUAL = "manual"  # a contact made only to hold a segment
    AUTO = "auto"  # created by the submission proxy for a new recipient
    ROTATING = "rotating"  # rotates itself on a schedule


class Policy(enum.StrEnum):
    """What to do with mail on a blocked or retired token."""

    REJECT = "reject"
    JUNK = "junk"
    REDIRECT = "redirect"


@dataclass(frozen=True)
class Retired:
    """A token that was current once; it still identifies its segment."""

    token: str
    retired_at: int


@dataclass(frozen=True)
class Segment:
    """The segcard state of one contact."""

    token: str
    label: str
    created_at: int
    state: State = State.ACTIVE
    state_at: int = 0
    kind: Kind = Kind.CONTACT
    retired: tuple[Retired, ...] = ()
    rotate_every: int | None = None  # seconds
    policy: Policy = Policy.REJECT
    allowed: tuple[str, ...] = ()  # extra sender addresses, lower case
    list_ids: tuple[str, ...] = ()
    announced_at: int | None = None
    publish: str | None = None  # file that receives the current address

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token of this segment, current first."""
        return (self.token, *(r.token for r in self.retired))

    @property
    def rotated_at(self) -> int:
        """When the current token became current."""
        return max([self.created_at, *(r.retired_at for r in self.retired)])

    def retired_at(self, token: str) -> int | None:
        """When *token* was retired, or None if it is not a retired token."""
        for r in self.retired:
            if r.token == token:
                return r.retired_at
        return None

    def rotate(self, new_token: str, now: int) -> Segment:
        """Return this segment with *new_token* current and the old one retired."""
        retired = (*self.retired, Retired(self.token, now))
        return replace(self, token=new_token, retired=retired)

    def with_state(self, state: State, now: int) -> Segment:
        """Return this segment in *state*, stamped with *now*."""
        return replace(self, state=state, state_at=now)

    def due(self, now: int) -> bool:
        """Tell whether a rotating segment should rotate at *now*."""
        if not self.rotate_every:
            return False
        return now >= self.rotated_at + self.rotate_every


@dataclass(frozen=True)
class Contact:
    """One vCard as segcard sees it."""

    uid: str
    name: str
    emails: tuple[str, ...] = ()
    segment: Segment | None = None
    href: str | None = None

    @property
    def known_senders(self) -> frozenset[str]:
        """Every address this contact may write from, lower case."""
        allowed = self.segment.allowed if self.segment else ()
        return frozenset(e.lower() for e in (*self.emails, *allowed))


@dataclass
class MergeResult:
    """The outcome of merging two views of one segment."""

    segment: Segment
    changed_local: bool = False  # the local view learnt something
    changed_remote: bool = False  # the remote view lacks something we know
    notes: list[str] = field(default_factory=list)


def merge(local: Segment | None, remote: Segment | None) -> Segment | None:
    """Merge two views of one segment: tokens are only ever added, and for
    the state and the current token the latest change wins.

    The address book is a replica that may lose segcard's lines, and two
    devices may edit one card; this keeps every token either side has seen.
    """
    if local is None or remote is None:
        return local or remote

    newer, older = (
        (remote, local)
        if remote.rotated_at > local.rotated_at
        else (
            local,
            remote,
        )
    )
    seen = {r.token: r for r in (*older.retired, *newer.retired)}
    for tok, at in ((older.token, newer.rotated_at),):
        if tok != newer.token and tok not in seen:
            seen[tok] = Retired(tok, at)
    seen.pop(newer.token, None)
    retired = tuple(sorted(seen.values(), key=lambda r: (r.retired_at, r.token)))

    state_src = remote if remote.state_at > local.state_at else local
    return replace(
        newer,
        retired=retired,
        state=state_src.state,
        state_at=state_src.state_at,
        created_at=min(local.created_at, remote.created_at),
        allowed=tuple(dict.fromkeys((*local.allowed, *remote.allowed))),
        list_ids=tuple(dict.fromkeys((*local.list_ids, *remote.list_ids))),
        announced_at=local.announced_at or remote.announced_at,
    )
