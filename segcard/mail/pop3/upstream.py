"""The client side of the POP3 proxy: one session with the provider's server.

Async on :class:`segcard.mail.pop3.Channel`, so nothing blocks the event
loop and a message comes through byte for byte: only the dot-stuffing of
RFC 1939 section 3 is undone, every line keeps the ending it came with
(``poplib`` cuts lines over 2,048 octets and drops a CR that starts one).

``pop3s://`` is TLS from the first byte; ``pop3://`` is STLS (RFC 2595),
except to a loopback address, where it may stay plain. Login is USER/PASS,
or AUTH PLAIN (RFC 5034) where the server offers only that.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from dataclasses import dataclass, field
from types import TracebackType

from segcard.config import Config
from segcard.errors import ProtocolError
from segcard.mail.pop3 import Channel, LineTooLong
from segcard.mail.tls import client_endpoint

log = logging.getLogger(__name__)

TIMEOUT = 60.0  # seconds for one reply (RFC 1939 3: servers wait 10 minutes)
MAX_LINE = 16 * 1024 * 1024  # one line of a message; past it, it stays upstream
TERMINATORS = (b".\r\n", b".\n")


class UpstreamError(ProtocolError):
    """The upstream POP3 server could not be reached, failed or refused.

    *login* is set when it refused segcard's own login: a setting to fix,
    not a failure that goes away by trying again.
    """

    def __init__(self, message: str, login: bool = False) -> None:
        super().__init__(message)
        self.login = login


class Refused(UpstreamError):
    """The upstream server answered a command with -ERR."""


@dataclass(frozen=True)
class UpstreamSettings:
    """Where the real mailbox is and how segcard logs in to it."""

    host: str
    port: int
    tls: str  # "ssl" (pop3s://), "starttls", or "none" (loopback only)
    username: str
    password: str = field(repr=False)
    ca_file: str = ""

    @classmethod
    def from_config(
        cls, config: Config, password: str | None = None
    ) -> UpstreamSettings:
        """Settings from ``pop3.*``; *password* saves running the command."""
        end = client_endpoint(
            "pop3.upstream", config["pop3.upstream"], "pop3", (995, 110)
        )
        return cls(
            host=end.host,
            port=end.port,
            tls=end.tls,
            username=config["pop3.username"],
            password=config.secret("pop3") if password is None else password,
            ca_file=config["pop3.ca_file"],
        )

    @property
    def account(self) -> str:
        """The mailbox as one string (the ledger keeps each account apart)."""
        return f"{self.username}@{self.host}:{self.port}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file or None)


class Upstream:
    """One POP3 session with the upstream server (RFC 1939)."""

    def __init__(self, settings: UpstreamSettings, channel: Channel) -> None:
        self.settings = settings
        self.channel = channel
        self.capabilities: dict[str, list[str]] = {}

    @classmethod
    async def connect(cls, settings: UpstreamSettings) -> Upstream:
        """Connect, secure the connection as configured, and log in."""
        loop = asyncio.get_running_loop()
        tls = settings.context() if settings.tls == "ssl" else None
        try:
            _transport, channel = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Channel(MAX_LINE),
                    settings.host,
                    settings.port,
                    ssl=tls,
                    server_hostname=settings.host if tls else None,
                ),
                TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot reach {settings.host}: {exc}") from exc
        upstream = cls(settings, channel)
        try:
            await upstream._open()
        except BaseException:
            upstream.close()
            raise
        return upstream

    async def _open(self) -> None:
        await self._reply("greeting")
        self.capabilities = await self._capa()
        if self.settings.tls == "starttls":
            await self._starttls()
        await self._login()
        log.debug("logged in to %s", self.settings.host)

    async def _starttls(self) -> None:
        if "STLS" not in self.capabilities:
            raise UpstreamError(
                f"{self.settings.host} offers no STLS: use pop3s://, or pop3:// "
                "only on loopback"
            )
        await self.command("STLS")
        try:
            await self.channel.start_tls(
                self.settings.context(),
                server_side=False,
                server_hostname=self.settings.host,
            )
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"TLS with {self.settings.host}: {exc}") from exc
        # RFC 2595 4: forget what was learnt before TLS.
        self.capabilities = await self._capa()

    async def _capa(self) -> dict[str, list[str]]:
        """The capabilities (RFC 2449), or {} from a server without CAPA."""
        await self._send("CAPA")
        ok, _text = await self._status()
        if not ok:
            return {}
        found = {}
        for line in await self._lines():
            words = line.decode("utf-8", "replace").split()
            if words:
                found[words[0].upper()] = [w.upper() for w in words[1:]]
        return found

    async def _login(self) -> None:
        s = self.settings
        sasl_plain = "PLAIN" in self.capabilities.get("SASL", [])
        try:
            if "USER" in self.capabilities or not sasl_plain:
                await self.command(f"USER {s.username}")
                await self.command(f"PASS {s.password}", secret=True)
            else:
                token = f"\0{s.username}\0{s.password}".encode()
                encoded = base64.b64encode(token).decode("ascii")
                await self.command(f"AUTH PLAIN {encoded}", secret=True)
        except Refused as exc:
            raise UpstreamError(
                f"{s.host} refused the login of {s.username}: {exc}", login=True
            ) from exc

    # -- the transaction commands (RFC 1939 5) ---------------------------------

    async def uidl(self) -> dict[int, str]:
        """Message number -> unique id, for every message in the maildrop."""
        try:
            await self.command("UIDL")
        except Refused as exc:
            raise UpstreamError(
                f"{self.settings.host} gives no UIDL, which segcard needs "
                f"to keep message ids stable: {exc}"
            ) from exc
        found = {}
        for line in await self._lines():
            number, _, uidl = line.decode("ascii", "replace").strip().partition(" ")
            if number.isdigit() and uidl:
                found[int(number)] = uidl.strip()
        return found

    async def retr(self, number: int) -> bytes:
        """Message *number*, exactly as stored (dot-stuffing undone)."""
        await self.command(f"RETR {number}")
        return b"".join(await self._lines())

    async def dele(self, number: int) -> None:
        """Mark message *number*; the server deletes it at :meth:`quit`."""
        await self.command(f"DELE {number}")

    async def quit(self) -> None:
        """End the session; the server deletes what was marked (UPDATE state)."""
        await self.command("QUIT")
        self.close()

    def close(self) -> None:
        """Drop the connection without QUIT: the server deletes nothing."""
        self.channel.close()

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the wire ----------------------------------------------------------------

    async def command(self, line: str, secret: bool = False) -> str:
        """Send *line*; return the text of +OK, raise :class:`Refused` on -ERR."""
        await self._send(line, secret)
        ok, text = await self._status()
        if not ok:
            raise Refused(f"{line.split()[0]}: {text[:200]}")
        return text

    async def _send(self, line: str, secret: bool = False) -> None:
        log.debug("%s <- %s", self.settings.host, line.split()[0] if secret else line)
        try:
            await self.channel.write(line.encode("utf-8") + b"\r\n")
        except OSError as exc:
            raise UpstreamError(f"{self.settings.host}: {exc}") from exc

    async def _status(self) -> tuple[bool, str]:
        """(+OK?, text) of one status line."""
        try:
            raw = await self._readline()
        except LineTooLong as exc:
            raise UpstreamError(f"{self.settings.host}: {exc}") from exc
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("+OK"):
            return True, line[3:].strip()
        if line.startswith("-ERR"):
            return False, line[4:].strip()
        raise UpstreamError(f"{self.settings.host} answered {line[:80]!r}")

    async def _reply(self, step: str) -> str:
        ok, text = await self._status()
        if not ok:
            raise UpstreamError(f"{self.settings.host} at {step}: {text[:200]}")
        return text

    async def _lines(self) -> list[bytes]:
        """The lines of a multi-line reply, dot-stuffing undone, endings kept.

        A line over :data:`MAX_LINE` is skipped to the end of the reply,
        which then fails alone: the session goes on.
        """
        lines: list[bytes] = []
        too_long = False
        while True:
            try:
                line = await self._readline()
            except LineTooLong:
                too_long = True
                continue
            if line in TERMINATORS:
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        if too_long:
            raise Refused(f"a line of the reply is over {MAX_LINE} octets")
        return lines

    async def _readline(self) -> bytes:
        """One line; :class:`LineTooLong` (already skipped) passes through."""
        try:
            line = await asyncio.wait_for(self.channel.readline(), TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"{self.settings.host}: {exc or 'timed out'}") from exc
        if not line:
            raise UpstreamError(f"{self.settings.host} closed the connection")
        return line
