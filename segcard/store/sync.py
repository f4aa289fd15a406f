"""The sync engine: keep the index and the CardDAV address book in step.

A sync plans first and then acts. The plan is a pure function of the
server's listing and the index (:func:`plan_pull`); acting fetches what
changed, merges each card's segment with the index's view (tokens are only
ever added, see :func:`segcard.segment.merge`) and then pushes the outbox.

Our own writes come back in the next listing with a new etag. They are not
taken for remote edits: a fetched card whose segment equals the index's and
whose content hash is unchanged changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import unquote, urlsplit

from segcard.errors import (
    AddressBookError,
    CardParseError,
    ServerUnreachable,
    WriteConflict,
)
from segcard.segment import Contact, Segment, merge
from segcard.store import vcard
from segcard.store.index import GIVEN_UP, Index, Row

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 3
# A listing that drops at least this many cards, and more than this share of
# the book, is taken for a server that lost its data, not for deletions.
MASS_LOSS_MIN = 5
MASS_LOSS_SHARE = 0.5
FETCH_BATCH = 500  # cards per addressbook-multiget


class Item(Protocol):
    @property
    def href(self) -> str: ...
    @property
    def etag(self) -> str | None: ...
    @property
    def data(self) -> str | None: ...


class Changes(Protocol):
    @property
    def sync_token(self) -> str | None: ...
    @property
    def changed(self) -> Sequence[Item]: ...
    @property
    def deleted(self) -> Sequence[str]: ...
    @property
    def full(self) -> bool: ...


class Client(Protocol):
    """What the sync engine needs of :class:`segcard.carddav.client.CardDAVClient`."""

    def changes(self, sync_token: str | None) -> Changes: ...
    def multiget(self, hrefs: Sequence[str]) -> Sequence[Item]: ...
    def create(self, href: str, data: str) -> tuple[str, str | None]: ...
    def update(self, href: str, data: str, etag: str) -> str | None: ...
    def delete(self, href: str, etag: str | None) -> None: ...
    def href_for(self, uid: str) -> str: ...


AddressOf = Callable[[Segment], str]


@dataclass
class Report:
    """What one sync did, for the log and ``segcard status``."""

    fetched: int = 0
    updated: int = 0
    removed: int = 0
    pushed: int = 0
    restored: int = 0
    conflicts: int = 0
    unreadable: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    offline: str | None = None
    requests: int = 0

    def summary(self) -> str:
        if self.offline:
            return f"server unreachable ({self.offline}); changes wait in the outbox"
        parts = [
            f"{self.fetched} fetched",
            f"{self.updated} updated",
            f"{self.removed} removed",
            f"{self.pushed} pushed",
        ]
        if self.restored:
            parts.append(f"{self.restored} restored")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable")
        if self.refused:
            parts.append(f"{len(self.refused)} refused by the server")
        return ", ".join(parts)


def norm_href(href: str) -> str:
    """An href as a percent-decoded path, the form kept in the index."""
    return unquote(urlsplit(href).path)


@dataclass(frozen=True)
class PullPlan:
    """What to fetch and what to forget after a listing."""

    fetch: list[str]
    forget: list[str]  # UIDs whose card is gone from the server


def plan_pull(changes: Changes, known: dict[str, tuple[str, str | None]]) -> PullPlan:
    """Decide what to fetch and forget from a listing and the index's hrefs."""
    fetch = []
    seen = set()
    for item in changes.changed:
        href = norm_href(item.href)
        seen.add(href)
        uid_etag = known.get(href)
        if uid_etag is None or uid_etag[1] != item.etag or item.etag is None:
            fetch.append(item.href)
    gone = {norm_href(h) for h in changes.deleted}
    if changes.full:
        gone |= set(known) - seen
    forget = [known[h][0] for h in sorted(gone) if h in known]
    return PullPlan(fetch, forget)


class Syncer:
    """Runs syncs of one index against one address book."""

    def __init__(self, client: Client, index: Index, address_of: AddressOf) -> None:
        self.client = client
        self.index = index
        self.address_of = address_of
        self._unreadable: set[str] = set()

    def sync(self, full: bool = False) -> Report:
        """Pull the server's changes, then push the outbox."""
        report = Report()
        try:
            self.pull(report, full)
            self.push(report)
            if report.pushed:
                # Move the sync-token past our own writes. Xandikos' tokens
                # name the collection's content, so a token from before a
                # create names the same state as after a later delete.
                self.pull(report)
        except ServerUnreachable as exc:
            report.offline = str(exc)
            log.warning("sync stopped: %s", exc)
        return report

    # -- pull ---------------------------------------------------------------

    def pull(self, report: Report, full: bool = False) -> None:
        if full:
            self.index.reset()
        token = self.index.get_state("sync_token")
        changes = self.client.changes(token)
        report.requests += 1
        if changes.full and token:
            log.info("sync-token no longer valid; did a full listing")

        plan = plan_pull(changes, self.index.hrefs())
        for items in self._fetch_batches(plan.fetch):
            report.requests += 1
            report.fetched += len(items)
            self.apply_remote(items, report)
        if self._mass_loss(plan, changes):
            self._restore(plan.forget, report)
        else:
            for uid in plan.forget:
                self._forget(uid, report)
        self.index.set_state("sync_token", changes.sync_token)

    def _mass_loss(self, plan: PullPlan, changes: Changes) -> bool:
        """Whether a listing drops so many cards that the server lost them.

        A user deletes contacts a few at a time; a server that comes back
        empty, or a URL that now points at another book, drops most of them
        at once. Forgetting them would make their addresses bounce.
        """
        known = len(self.index.hrefs())
        lost = len(plan.forget)
        return lost >= MASS_LOSS_MIN and lost > known * MASS_LOSS_SHARE

    def _restore(self, uids: list[str], report: Report) -> None:
        """Write the cards the server lost back to it, from the index."""
        log.warning(
            "the address book dropped %d of its cards at once; keeping them "
            "and writing them back (delete contacts with 'segcard remove')",
            len(uids),
        )
        for uid in uids:
            row = self.index.row(uid)
            if row is None:
                continue
            contact = replace(row.contact, href=None)
            self.index.put(contact, row.card)
            self.index.enqueue(uid)
            report.restored += 1

    def _fetch_batches(self, hrefs: list[str]) -> Iterator[Sequence[Item]]:
        """Fetch cards in batches, the next batch while the last is merged.

        The server answers one request while we parse the previous answer,
        which on an initial sync roughly halves the time.
        """
        batches = [
            hrefs[i : i + FETCH_BATCH] for i in range(0, len(hrefs), FETCH_BATCH)
        ]
        if not batches:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="segcard-fetch") as pool:
            pending = [pool.submit(self.client.multiget, b) for b in batches[:2]]
            for following in [*batches[2:], None]:
                items = pending.pop(0).result()
                if following is not None:
                    pending.append(pool.submit(self.client.multiget, following))
                yield items
            for future in pending:
                yield future.result()

    def _forget(self, uid: str, report: Report) -> None:
        if self.index.pending(uid) == "put":
            # The card was deleted on the server while we had a change for it:
            # drop the change with the card; its tokens stay known.
            self.index.dequeue(uid)
        self.index.remove(uid)
        report.removed += 1
        log.info("contact %s removed on the server", uid)

    def apply_remote(self, items: Iterable[Item], report: Report) -> None:
        """Merge fetched cards into the index; queue restores where needed."""
        rows = []
        self._unreadable = {href for href, _e, _r in self.index.unreadable()}
        for item in items:
            row = self._merge_item(item, report)
            if row:
                rows.append(row)
        self.index.put_many(rows)

    def _merge_item(
        self, item: Item, report: Report
    ) -> tuple[Contact, str, str | None, str | None] | None:
        href = norm_href(item.href)
        text = item.data or ""
        try:
            info = vcard.read_card(text)
        except CardParseError as exc:
            log.warning("card %s cannot be read, left alone: %s", href, exc)
            self.index.mark_unreadable(href, item.etag, str(exc))
            report.unreadable.append(href)
            return None
        if href in self._unreadable:
            self.index.clear_unreadable(href)

        uid = info.uid or f"href:{href}"
        local = self.index.row(uid)
        if local and local.contact.href and local.contact.href != href:
            log.warning("UID %s is on two cards; keeping %s apart", uid, href)
            uid = f"{uid}#{href}"
            local = self.index.row(uid)

        ours = local.contact.segment if local else None
        merged = merge(ours, info.segment)
        card = text
        if merged is not None and merged != info.segment:
            card = vcard.apply_segment(text, merged, self.address_of(merged))
            self.index.enqueue(uid)
            if info.segment is None and ours is not None:
                report.restored += 1
                log.warning("card %s lost segcard's lines; restoring them", uid)
        content_hash = vcard.content_hash(text)
        if local is None or local.hash != content_hash or merged != ours:
            report.updated += 1

        contact = Contact(uid, info.name, info.emails, merged, href)
        return contact, card, item.etag, content_hash

    # -- push ---------------------------------------------------------------

    def push(self, report: Report) -> None:
        """Send every queued write; stop at the first sign the server is away."""
        for uid, op, href, etag, attempts in self.index.outbox():
            if attempts >= GIVEN_UP:
                continue
            try:
                if op == "delete":
                    self._push_delete(uid, href, etag)
                else:
                    self._push_put(uid, report)
            except ServerUnreachable:
                raise
            except AddressBookError as exc:
                # The server will not take this card as it is (some servers
                # refuse cards their vCard parser rejects). The index keeps
                # the segment; the write waits for the next local change.
                self.index.give_up(uid, str(exc))
                report.refused.append(f"{uid}: {exc}")
                log.warning("card %s refused by the server: %s", uid, exc)
                continue
            report.pushed += 1

    def _push_delete(self, uid: str, href: str | None, etag: str | None) -> None:
        if href:
            try:
                self.client.delete(href, etag)
            except WriteConflict:
                # Changed elsewhere since; delete whatever is there now.
                self.client.delete(href, None)
        self.index.dequeue(uid)
        log.info("contact %s deleted from the address book", uid)

    def _push_put(self, uid: str, report: Report) -> None:
        for _ in range(CONFLICT_RETRIES):
            row = self.index.row(uid)
            if row is None:
                self.index.dequeue(uid)
                return
            try:
                href = self._write(row)
            except WriteConflict:
                report.conflicts += 1
                log.info("card %s changed on the server; merging", uid)
                href = row.contact.href or self.client.href_for(uid)
                self._refetch(href, report)
                continue
            self.index.dequeue(uid)
            self._read_back(uid, href, report)
            return
        self.index.note_failure(uid, "conflict kept recurring")
        log.warning("card %s: gave up after %d conflicts", uid, CONFLICT_RETRIES)

    def _write(self, row: Row) -> str:
        contact = row.contact
        if contact.href is None:
            href, _etag = self.client.create(
                self.client.href_for(contact.uid), row.card
            )
            log.info("contact %s created in the address book", contact.uid)
            return href
        if row.etag is None:
            raise WriteConflict("no etag known")
        self.client.update(contact.href, row.card, row.etag)
        log.info("contact %s written to the address book", contact.uid)
        return contact.href

    def _refetch(self, href: str | None, report: Report) -> None:
        if href:
            self.apply_remote(self.client.multiget([href]), report)

    def _read_back(self, uid: str, href: str, report: Report) -> None:
        """Read the card back: many servers rewrite what they store."""
        items = self.client.multiget([href])
        report.requests += 1
        if not items:
            return
        self.apply_remote(items, report)
        if self.index.pending(uid) == "put":
            # The server dropped our lines again at once: a lossy server. The
            # index keeps the tokens; try again at the next sync, not now.
            log.warning("server does not keep segcard's lines on %s", uid)
