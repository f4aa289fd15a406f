"""The index as the SMTP filter reads it: fast enough to judge inside the
event loop.

Every RCPT needs the owner of a token and that contact. :class:`CachedIndex`
has its own SQLite connection, so it never waits for the lock of the
connection that the sync engine writes through (in WAL mode readers do not
wait for writers), keeps what it looked up in memory, and forgets all of it
as soon as any other connection commits a change (``PRAGMA data_version``,
one cheap query per lookup). A lookup that misses the cache is one indexed
read of a local file; its busy timeout is short, so a locked database gives
a quick error (a 451 to the client) instead of a stalled loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from sqlite3 import Connection

from segcard.segment import Contact
from segcard.store.index import Index

MAX_ENTRIES = 100_000  # per cache; past it the cache starts again empty
BUSY_TIMEOUT_MS = 200


class CachedIndex(Index):
    """A read-mostly view of the index with an in-memory cache.

    :meth:`generation` grows whenever the cache is dropped, so that a caller
    can keep answers derived from it (the SMTP filter keeps RCPT replies).
    """

    def __init__(self, path: Path | str, max_entries: int = MAX_ENTRIES) -> None:
        super().__init__(path)
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self.max_entries = max_entries
        self._version: int | None = None
        self._generation = 0
        self._just_checked = False
        self._owners: dict[str, str | None] = {}
        self._contacts: dict[str, Contact | None] = {}

    def generation(self) -> int:
        """A number that changes whenever the index may have changed."""
        with self._lock:
            self._check_version()
            self._just_checked = True
            return self._generation

    def token_owner(self, token: str) -> str | None:
        with self._lock:
            self._check_version()
            self._just_checked = True
            if token not in self._owners:
                self._remember(self._owners, token, super().token_owner(token))
            return self._owners[token]

    def get(self, uid: str) -> Contact | None:
        with self._lock:
            # A verdict asks for the owner of a token, then for that contact:
            # one version check serves both.
            if not self._just_checked:
                self._check_version()
            self._just_checked = False
            if uid not in self._contacts:
                self._remember(self._contacts, uid, super().get(uid))
            return self._contacts[uid]

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write through this connection: data_version does not show our
        own commits, so the cache is dropped here."""
        with super().transaction() as db:
            yield db
        with self._lock:
            self._forget()

    def _check_version(self) -> None:
        """Forget everything once another connection has committed."""
        version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            self._forget()
            self._version = version

    def _forget(self) -> None:
        self._owners.clear()
        self._contacts.clear()
        self._generation += 1

    def _remember(self, cache: dict, key: str, value: object) -> None:  # type: ignore[type-arg]
        if len(cache) >= self.max_entries:
            cache.clear()
        cache[key] = value
