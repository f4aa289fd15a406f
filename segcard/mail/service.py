"""The outgoing side of ``segcard serve``: spool, relay and the proxy's listener."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import warnings
from typing import Any

from segcard.app import App, read_credentials
from segcard.config import parse_hostport
from segcard.errors import ConfigError
from segcard.mail.relay import Relay, Retry
from segcard.mail.spool import Spool
from segcard.mail.submission import LoginLimiter, SubmissionHandler, SubmissionSMTP
from segcard.mail.tls import server_context
from segcard.mail.upstream import parse_upstream

log = logging.getLogger(__name__)


class _QuietAuthWarning(logging.Filter):
    """Drops aiosmtpd's per-connection warnings about AUTH without TLS (our
    choice on loopback; start refuses it anywhere else) and about an
    attribute it sets itself after every login."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "auth_require_tls" not in text and "login_data is deprecated" not in text


class MailService:
    """The outgoing side of ``segcard serve``: spool, relay and proxy."""

    def __init__(self, app: App, limiter: LoginLimiter | None = None) -> None:
        self.app = app
        self.limiter = limiter
        self.spool: Spool | None = None
        self.relay: Relay | None = None
        self.handler: SubmissionHandler | None = None
        self._server: asyncio.Server | None = None
        self._relay_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int | None:
        """The port the proxy listens on, or None when it is off."""
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        config = self.app.config
        listen = config["submission.listen"]
        tls = self._tls_context(listen)
        self.spool = Spool(self.app.paths.spool)
        self.relay = await asyncio.to_thread(self._make_relay)
        self._relay_task = asyncio.create_task(self.relay.run())
        if listen:
            await self._listen(listen, tls)

    def _make_relay(self) -> Relay:
        config = self.app.config
        assert self.spool is not None
        upstream = None
        if config["upstream.url"]:
            upstream = parse_upstream(
                config["upstream.url"],
                config["upstream.username"],
                config.secret("upstream"),
                config["upstream.ca_file"],
            )
        retry = Retry(
            config["upstream.retry_initial"],
            config["upstream.retry_max"],
            config["upstream.give_up_after"],
        )
        identities = config.identities
        return Relay(
            self.spool,
            upstream,
            self.app.paths.outbox_maildir,
            self.app.paths.notices_maildir,
            retry,
            notice_to=identities[0] if identities else "",
            template=config.template,
        )

    def _tls_context(self, listen: str) -> ssl.SSLContext | None:
        """The proxy's TLS context; refuse a non-loopback bind without one."""
        return server_context(self.app.config, "submission", listen)

    async def _listen(self, listen: str, tls: ssl.SSLContext | None) -> None:
        assert self.spool is not None and self.relay is not None
        host, port = parse_hostport(listen)
        credentials = read_credentials(self.app.paths.submission_credentials)
        self.handler = SubmissionHandler(
            self.app, self.spool, self.relay, credentials, self.limiter
        )
        implicit = bool(self.app.config["submission.implicit_tls"])
        logging.getLogger("mail.log").addFilter(_QuietAuthWarning())
        warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        factory = self._factory(tls, implicit)
        try:
            self._server = await asyncio.get_running_loop().create_server(
                factory, host, port, ssl=tls if implicit else None
            )
        except OSError as exc:
            raise ConfigError(
                f"submission proxy cannot listen on {listen}: {exc.strerror}",
                "another program uses the port; change submission.listen",
            ) from exc
        log.info("submission proxy listening on %s:%d", host, self.port)

    def _factory(self, tls: ssl.SSLContext | None, implicit: bool) -> Any:
        assert self.handler is not None
        handler = self.handler
        hostname = socket.gethostname()
        max_size = self.app.config["submission.max_size"]
        starttls = tls if tls and not implicit else None

        def make() -> SubmissionSMTP:
            return SubmissionSMTP(
                handler,
                data_size_limit=max_size,
                enable_SMTPUTF8=True,
                hostname=hostname,
                ident="segcard submission",
                tls_context=starttls,
                require_starttls=starttls is not None,
                auth_required=True,
                auth_require_tls=tls is not None and not implicit,
                authenticator=handler.authenticate,
            )

        return make

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        if self.relay is not None:
            self.relay.stop()
        if self._relay_task is not None:
            with contextlib.suppress(Exception):
                await self._relay_task
        if self.spool is not None:
            self.spool.close()
