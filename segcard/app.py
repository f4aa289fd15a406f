"""One user's segcard: config, index, book and the way to the address book.

The command line and the daemon both start from an :class:`App`.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from segcard import config as configuration
from segcard.book import Book
from segcard.carddav.client import CardDAVClient
from segcard.carddav.embedded import ADDRESS_BOOK_PATH, EmbeddedServer
from segcard.config import Config
from segcard.errors import ConfigError, SegcardError
from segcard.paths import write_private
from segcard.store.index import Index
from segcard.store.sync import Report, Syncer

log = logging.getLogger(__name__)

EMBEDDED_USER = "segcard"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on *host* right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Tell whether something listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def read_credentials(path: Path) -> tuple[str, str]:
    """(user, password) from a credentials file written by init."""
    try:
        user, password = path.read_text(encoding="utf-8").split("\n")[:2]
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read credentials {path}", "run 'segcard init' again"
        ) from exc
    return user, password


def make_credentials(path: Path, user: str) -> None:
    """Write a fresh (user, password) pair, mode 0600, unless one exists."""
    if not path.exists():
        write_private(path, f"{user}\n{secrets.token_urlsafe(18)}\n")


def release_memory() -> None:
    """Give memory freed by a big sync back to the system (glibc only)."""
    gc.collect()
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def write_config(path: Path, flat: dict[str, Any]) -> Config:
    """Save a config and create what it needs: data dir, credentials, port."""
    if not flat.get("carddav.url") and "embedded.port" not in flat:
        flat["embedded.port"] = free_port()
    config = configuration.save(path, flat)
    data = config.data
    data.ensure()
    make_credentials(data.embedded_credentials, "segcard")
    make_credentials(data.submission_credentials, config["user"] or "segcard")
    if config["pop3.listen"]:
        from segcard.mail.pop3.service import credentials_path

        make_credentials(credentials_path(data), config["user"] or "segcard")
    return config


class App:
    """The parts of segcard for one config."""

    def __init__(self, config: Config) -> None:
        if not config["carddav.url"] and not config["embedded.port"]:
            # A config written by hand may leave the port out: choose one
            # once and keep it, since subscribed phones remember the URL.
            config = configuration.set_option(config.path, "embedded.port", free_port())
        self.config = config
        self.paths = config.data
        self.paths.ensure()
        self.index = Index(self.paths.index)
        self.book = Book(config, self.index)
        self._syncer: Syncer | None = None

    @classmethod
    def open(cls, path: Path) -> App:
        return cls(configuration.load(path))

    def close(self) -> None:
        self.index.close()

    # -- the address book ---------------------------------------------------

    @property
    def embedded(self) -> bool:
        return not self.config["carddav.url"]

    @property
    def book_url(self) -> str:
        """The address book's URL: the configured one, or the embedded one."""
        if not self.embedded:
            return str(self.config["carddav.url"])
        port = self.config["embedded.port"]
        return f"http://127.0.0.1:{port}{ADDRESS_BOOK_PATH}"

    def embedded_server(self) -> EmbeddedServer:
        user, password = read_credentials(self.paths.embedded_credentials)
        return EmbeddedServer(
            self.paths.embedded_book, user, password, port=self.config["embedded.port"]
        )

    def client(self) -> CardDAVClient:
        """A CardDAV client for the configured (or embedded) address book."""
        if self.embedded:
            user, password = read_credentials(self.paths.embedded_credentials)
            url = self.book_url
            client = CardDAVClient(url, user, password)
            client.collection = url
            return client
        client = CardDAVClient(
            self.config["carddav.url"],
            self.config["carddav.username"] or None,
            self.config.secret("carddav") or None,
        )
        cached = self.index.get_state("collection")
        if (
            cached
            and self.index.get_state("collection_for") == self.config["carddav.url"]
        ):
            client.collection = cached
        else:
            self.index.set_state("collection", client.discover())
            self.index.set_state("collection_for", self.config["carddav.url"])
        return client

    def syncer(self) -> Syncer:
        """The sync engine, made once: its HTTP session is kept between syncs."""
        if self._syncer is None:
            self._syncer = Syncer(self.client(), self.index, self.book.address_of)
        return self._syncer

    @contextmanager
    def reachable(self) -> Iterator[None]:
        """Make sure the address book answers: start the embedded one if needed."""
        port = self.config["embedded.port"]
        if not self.embedded or port_open("127.0.0.1", port):
            yield
            return
        server = self.embedded_server()
        server.start()
        try:
            yield
        finally:
            server.stop()

    def sync(self, full: bool = False) -> Report:
        """One sync, starting the embedded server for it when none runs."""
        with self.reachable():
            return self.run_sync(full)

    def run_sync(self, full: bool = False) -> Report:
        """One sync against a server that is up; the result is kept for status."""
        try:
            report = self.syncer().sync(full)
        except SegcardError as exc:
            report = Report(offline=str(exc))
        release_memory()
        self.index.set_state("last_sync", str(int(time.time())))
        self.index.set_state("last_sync_result", report.summary())
        log.info("sync finished: %s", report.summary())
        return report

    # -- the daemon's lock --------------------------------------------------

    def daemon_running(self) -> bool:
        """Tell whether a ``segcard serve`` holds this data dir."""
        try:
            fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
