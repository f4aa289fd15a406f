"""The POP3 proxy as a part of ``segcard serve``: settings, credentials, TLS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from segcard.app import App, make_credentials, read_credentials
from segcard.book.verdict import Judge
from segcard.config import Config, parse_hostport
from segcard.errors import ConfigError
from segcard.mail.inbound.lookup import CachedIndex
from segcard.mail.inbound.notice import Notifier
from segcard.mail.pop3.quarantine import Quarantine
from segcard.mail.pop3.server import Credentials, Pop3Server
from segcard.mail.pop3.session import Mailbox
from segcard.mail.pop3.upstream import UpstreamSettings
from segcard.mail.spool import Spool
from segcard.mail.tls import server_context
from segcard.paths import DataPaths

CREDENTIALS_FILE = "pop3-credentials"


def credentials_path(paths: DataPaths) -> Path:
    """Where the client's POP3 user name and password are kept."""
    return paths.root / CREDENTIALS_FILE


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The POP3 listener's TLS context (STLS); see :func:`server_context`."""
    return server_context(config, "pop3", config["pop3.listen"])


class Pop3Service:
    """The POP3 proxy as a part of ``segcard serve``."""

    def __init__(self, app: App, spool: Spool | None = None) -> None:
        self.app = app
        self.spool = spool
        self.mailbox: Mailbox | None = None
        self.server: Pop3Server | None = None
        self._verdicts: CachedIndex | None = None

    async def start(self) -> None:
        config = self.app.config
        if not config["pop3.upstream"]:
            raise ConfigError(
                "pop3.listen is set but pop3.upstream is empty",
                "set pop3.upstream to pop3s://HOST:PORT of your mailbox",
            )
        settings = await asyncio.to_thread(UpstreamSettings.from_config, config)
        credentials = await asyncio.to_thread(self._credentials)
        self.mailbox = self._mailbox(settings)
        host, port = parse_hostport(config["pop3.listen"])
        self.server = Pop3Server(
            self.mailbox, credentials, host, port, tls_context(config)
        )
        try:
            await self.server.start()
        except OSError as exc:
            raise ConfigError(
                f"pop3.listen {config['pop3.listen']}: cannot listen: {exc.strerror}",
                "another program uses the port; change pop3.listen",
            ) from exc

    def _credentials(self) -> Credentials:
        path = credentials_path(self.app.paths)
        make_credentials(path, self.app.config["user"] or "segcard")
        return Credentials(*read_credentials(path))

    def _mailbox(self, settings: UpstreamSettings) -> Mailbox:
        paths = self.app.paths
        # Verdicts read through their own cached connection, like the SMTP
        # filter's; what they teach is recorded through the app's index.
        self._verdicts = CachedIndex(paths.index)
        judge = Judge(self.app.config, self._verdicts)
        notifier = Notifier(self.spool, self.app.index) if self.spool else None
        return Mailbox(
            settings,
            judge,
            self.app.index,
            paths.root / "pop3",
            Quarantine(paths.quarantine),
            bool(self.app.config["pop3.delete_upstream"]),
            notifier.notify if notifier else None,
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.mailbox is not None:
            self.mailbox.close()
            self.mailbox = None
        if self._verdicts is not None:
            self._verdicts.close()
            self._verdicts = None
