"""``segcard serve``: composes the services of the daemon in one asyncio loop."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from segcard import config as configuration
from segcard.app import App, write_config
from segcard.book import rotation
from segcard.control.server import ControlServer
from segcard.errors import ConfigError, SegcardError
from segcard.mail.inbound.service import InboundService
from segcard.mail.pop3.service import Pop3Service
from segcard.mail.service import MailService
from segcard.store.index import now

log = logging.getLogger(__name__)

OUTBOX_POLL = 2.0  # seconds between looks at the outbox for local changes
ROTATION_CHECK = 60.0  # at most this long between looks at the rotation schedule


class Service(Protocol):
    """A part of the daemon with a start and a stop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def ensure_config(path: Path) -> None:
    """Write a generated default config when there is none at all."""
    if path.exists():
        return
    values = configuration.default_values()
    write_config(path, values)
    log.warning(
        "no config found; started on a default (user %s, domain %s) written to %s. "
        "Set your real values with: segcard init --user NAME --domain DOMAIN "
        "--identity ADDRESS --force",
        values["user"],
        values["domain"],
        path,
    )


def take_lock(app: App) -> int:
    """Hold the data dir's lock for this process, or fail if another has it."""
    fd = os.open(app.paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise ConfigError(
            f"another segcard serve already uses {app.paths.root}",
            "stop it first, or use another config with its own data_dir",
        ) from exc
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


class EmbeddedService:
    """The embedded CardDAV server, when no address book is configured."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.server = app.embedded_server()

    async def start(self) -> None:
        try:
            await self.server.start_async()
        except OSError as exc:
            raise ConfigError(
                f"embedded address book cannot listen on port "
                f"{self.app.config['embedded.port']}: {exc.strerror}",
                "another program uses the port; change embedded.port in the config",
            ) from exc
        log.info("embedded address book listening on %s", self.server.url)

    async def stop(self) -> None:
        await self.server.stop_async()


class Daemon:
    """The running services of one ``segcard serve``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.stopping = asyncio.Event()
        self.reloading = asyncio.Event()
        self.services: list[Service] = []

    def build_services(self) -> Iterator[Service]:
        """Every service the config turns on, in start order.

        A generator: each service is made after the one before it started,
        so the inbound side gets the spool the mail service opened.
        """
        if self.app.embedded:
            yield EmbeddedService(self.app)
        mail = MailService(self.app)
        yield mail
        yield InboundService(self.app, mail.spool)
        if self.app.config["pop3.listen"]:
            yield Pop3Service(self.app, mail.spool)
        yield ControlServer.for_app(self.app)

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT; SIGHUP reloads the config in between."""
        self.install_signals()
        while True:
            await self.run_once()
            if self.stopping.is_set():
                break
            self.reload()
        log.info("segcard serve stopped")

    async def run_once(self) -> None:
        config = self.app.config
        log.info("config %s: %s", config.path, config.public_view())
        await self.start_services()
        try:
            await asyncio.gather(self.sync_loop(), self.rotation_loop())
        finally:
            await self.stop_services()

    async def start_services(self) -> None:
        self.services = []
        try:
            for service in self.build_services():
                await service.start()
                self.services.append(service)
        except BaseException:
            await self.stop_services()
            raise
        listeners = self.listeners()
        for name, where in listeners.items():
            log.info("listening: %s on %s", name, where)
        self.app.index.set_state("listeners", json.dumps(listeners))

    def listeners(self) -> dict[str, str]:
        """Where each part of the daemon can be reached, for logs and status."""
        config = self.app.config
        found = {}
        if self.app.embedded:
            found["address book"] = self.app.book_url
        for key, name in (
            ("submission.listen", "submission"),
            ("inbound.smtp_listen", "smtp filter"),
            ("pop3.listen", "pop3"),
        ):
            if config.values.get(key):
                found[name] = config[key]
        if config["imap.url"]:
            found["imap sorter"] = config["imap.url"]
        found["control socket"] = str(self.app.paths.control_socket)
        return found

    async def stop_services(self) -> None:
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:  # noqa: BLE001 - stop the others all the same
                log.exception("stopping %s failed", type(service).__name__)
        self.services = []

    def reload(self) -> None:
        """Load the config again; keep the old one if the new one is bad."""
        self.reloading.clear()
        try:
            config = configuration.load(self.app.config.path)
        except SegcardError as exc:
            log.error("config not reloaded, keeping the old one: %s", exc)
            return
        self.app.config = config
        self.app.book.config = config
        self.app._syncer = None
        log.info("config reloaded from %s", config.path)

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reloading.set)

    def running(self) -> bool:
        return not (self.stopping.is_set() or self.reloading.is_set())

    async def pause(self, seconds: float) -> None:
        """Sleep up to *seconds*, waking early on stop or reload."""
        stop = asyncio.ensure_future(self.stopping.wait())
        reload = asyncio.ensure_future(self.reloading.wait())
        await asyncio.wait(
            {stop, reload}, timeout=seconds, return_when="FIRST_COMPLETED"
        )
        stop.cancel()
        reload.cancel()

    async def sync_loop(self) -> None:
        interval = self.app.config["carddav.sync_interval"]
        loop = asyncio.get_running_loop()
        next_sync = loop.time()
        seen_outbox: object = None
        while self.running():
            # A local change (from the CLI or a mail service) shows up as a
            # new outbox entry; a sync then runs at once, not at the interval.
            outbox = self.app.index.outbox()
            if loop.time() >= next_sync or (outbox and outbox != seen_outbox):
                await asyncio.to_thread(self.app.run_sync)
                seen_outbox = self.app.index.outbox()
                next_sync = loop.time() + interval
            await self.pause(OUTBOX_POLL)

    async def rotation_loop(self) -> None:
        """Rotate rotating entries when they fall due, also after downtime."""
        await asyncio.to_thread(rotation.publish_all, self.app.book)
        while self.running():
            rotation.rotate_due(self.app.book, now())
            due = rotation.next_due(self.app.book)
            wait = ROTATION_CHECK if due is None else due - now()
            await self.pause(min(max(wait, 1), ROTATION_CHECK))


def serve(path: Path, verbose: int = 0) -> int:
    """Run the daemon until a signal stops it."""
    ensure_config(path)
    app = App.open(path)
    lock = take_lock(app)
    try:
        asyncio.run(Daemon(app).run())
    except SegcardError:
        raise
    finally:
        os.close(lock)
        app.close()
    return 0
