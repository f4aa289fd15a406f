"""The incoming side of ``segcard serve``: the SMTP filter and the IMAP
sorter, each on when its part of the config is set."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from segcard.app import App
from segcard.book.verdict import Judge
from segcard.config import parse_hostport
from segcard.errors import ConfigError
from segcard.mail.inbound import local_domains
from segcard.mail.inbound.delivery import make_delivery
from segcard.mail.inbound.filter import FilterHandler, SmtpFilter
from segcard.mail.inbound.imap_sorter import ImapSorter, make_sorter
from segcard.mail.inbound.lookup import CachedIndex
from segcard.mail.inbound.notice import Notifier
from segcard.mail.inbound.tarpit import Tarpit
from segcard.mail.spool import Spool

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # seconds to wait for the IMAP sorter to log out


class InboundService:
    """Starts and stops the inbound modes the config turns on."""

    def __init__(self, app: App, spool: Spool | None = None) -> None:
        self.app = app
        self.spool = spool
        # Verdicts read through their own cached connection (lookup.py);
        # what they teach is recorded through the app's index.
        self.cached = CachedIndex(app.paths.index)
        self.judge = Judge(app.config, self.cached)
        self.filter: SmtpFilter | None = None
        self.sorter: ImapSorter | None = None
        self._stopping = asyncio.Event()
        self._sorter_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = self.app.config
        if config["inbound.smtp_listen"]:
            self.filter = self._make_filter()
            try:
                await self.filter.start()
            except OSError as exc:
                raise ConfigError(
                    f"inbound.smtp_listen {config['inbound.smtp_listen']}: "
                    f"cannot listen: {exc.strerror}",
                    "another program uses the port, or it needs privileges",
                ) from exc
        if config["imap.url"]:
            self.sorter = await asyncio.to_thread(self._make_sorter)
            self._sorter_task = asyncio.create_task(self.sorter.run(self._stopping))

    def _make_filter(self) -> SmtpFilter:
        config = self.app.config
        maildir, lmtp, hop = (
            config["inbound.maildir"],
            config["inbound.lmtp"],
            config["inbound.next_hop"],
        )
        if not (maildir or lmtp or hop):
            raise ConfigError(
                "inbound.smtp_listen is set but there is nowhere to deliver",
                "set inbound.maildir, inbound.lmtp or inbound.next_hop",
            )
        tarpit = Tarpit(
            config["inbound.tarpit_after"],
            config["inbound.tarpit_delay"],
            config["inbound.drop_after"],
        )
        handler = FilterHandler(
            self.judge,
            self.app.index,
            make_delivery(maildir, lmtp, hop),
            local_domains(config),
            tarpit,
        )
        handler.tarpit_loopback = config["inbound.tarpit_loopback"]
        host, port = parse_hostport(config["inbound.smtp_listen"])
        return SmtpFilter(handler, host, port)

    def _make_sorter(self) -> ImapSorter:
        notifier = Notifier(self.spool, self.app.index) if self.spool else None
        notify = notifier.notify if notifier else None
        return make_sorter(self.app.config, self.judge, self.app.index, notify)

    async def stop(self) -> None:
        self._stopping.set()
        if self.filter is not None:
            await self.filter.stop()
        if self.sorter is not None and self._sorter_task is not None:
            self.sorter.sorter.interrupt()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._sorter_task, STOP_TIMEOUT)
        self.cached.close()
