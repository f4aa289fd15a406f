"""``segcard serve``: composes the services of the daemon in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from pathlib import Path

from segcard import config as configuration
from segcard.app import App
from segcard.errors import ConfigError, SegcardError
from segcard.mail.inbound.service import InboundService
from segcard.mail.submission import MailService

log = logging.getLogger(__name__)

OUTBOX_POLL = 2.0  # seconds between looks at the outbox for local changes


def ensure_config(path: Path) -> None:
    """Write a generated default config when there is none at all."""
    if path.exists():
        return
    from segcard.cli.commands import write_config

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


class Daemon:
    """The running services of one ``segcard serve``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        self.embedded = None

    async def run(self) -> None:
        config = self.app.config
        log.info("config %s: %s", config.path, config.public_view())
        await self.start_embedded()
        mail = MailService(self.app)
        inbound = None
        try:
            await mail.start()
            inbound = InboundService(self.app, mail.spool)
            await inbound.start()
        except BaseException:
            if inbound is not None:
                await inbound.stop()
            await mail.stop()
            await self.stop_embedded()
            raise
        self.install_signals()
        try:
            await self.sync_loop()
        finally:
            await inbound.stop()
            await mail.stop()
            await self.stop_embedded()
            log.info("segcard serve stopped")

    async def start_embedded(self) -> None:
        if not self.app.embedded:
            return
        server = self.app.embedded_server()
        try:
            await server.start_async()
        except OSError as exc:
            raise ConfigError(
                f"embedded address book cannot listen on port "
                f"{self.app.config['embedded.port']}: {exc.strerror}",
                "another program uses the port; change embedded.port in the config",
            ) from exc
        self.embedded = server
        log.info("embedded address book listening on %s", server.url)

    async def stop_embedded(self) -> None:
        if self.embedded is not None:
            await self.embedded.stop_async()

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)

    async def sync_loop(self) -> None:
        interval = self.app.config["carddav.sync_interval"]
        loop = asyncio.get_running_loop()
        next_sync = loop.time()
        seen_outbox: object = None
        while not self.stopping.is_set():
            # A local change (from the CLI or a mail service) shows up as a
            # new outbox entry; a sync then runs at once, not at the interval.
            outbox = self.app.index.outbox()
            if loop.time() >= next_sync or (outbox and outbox != seen_outbox):
                await asyncio.to_thread(self.app.run_sync)
                seen_outbox = self.app.index.outbox()
                next_sync = loop.time() + interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), OUTBOX_POLL)


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
