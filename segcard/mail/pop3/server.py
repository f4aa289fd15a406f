"""The POP3 server the mail client talks to (its service: :mod:`.service`).

RFC 1939 with CAPA and response codes (RFC 2449, 3206), USER/PASS and
AUTH PLAIN (RFC 5034), and STLS (RFC 2595) when a certificate is set; with
one, passwords are taken only over TLS. The client's credentials are
segcard's own (``pop3-credentials`` in the data dir), compared in constant
time; the upstream password never reaches the client side.

Every command that cannot be carried out gets ``-ERR`` with a text that
says why; after :data:`MAX_ERRORS` of them, or :data:`MAX_AUTH_FAILURES`
wrong passwords, the connection ends. A connection that ends without QUIT
deletes nothing (RFC 1939 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import sqlite3
import ssl
from collections.abc import Awaitable, Callable

from segcard.errors import ProtocolError, SegcardError
from segcard.mail.pop3 import Channel, LineTooLong
from segcard.mail.pop3.commands import (
    BadCommand,
    _shown,
    arguments,
    decode_plain,
    message_number,
    no_args,
    parse,
    top,
)
from segcard.mail.pop3.session import (
    Item,
    Mailbox,
    MailboxBusy,
    NoSuchMessage,
    Session,
)
from segcard.mail.pop3.upstream import UpstreamError
from segcard.mail.submission import LoginLimiter

log = logging.getLogger(__name__)

MAX_LINE = 512  # RFC 2449 4 allows 255 octets a command; AUTH PLAIN gets room
MAX_ERRORS = 10  # -ERR replies before the connection ends
MAX_AUTH_FAILURES = 3  # wrong passwords in one connection before it ends
IDLE_TIMEOUT = 600.0  # RFC 1939 3: an autologout timer of at least 10 minutes

GREETING = "+OK segcard POP3 proxy ready"
CAPABILITIES = ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING")
IMPLEMENTATION = "IMPLEMENTATION segcard"
ERR_WRONG_LOGIN = "[AUTH] wrong user name or password"
ERR_BLOCKED = "[AUTH] too many wrong passwords from your address; try again later"
ERR_IN_USE = "[IN-USE] another POP3 session is open; try again once it ends"
ERR_UPSTREAM = "[SYS/TEMP] cannot fetch mail from the mail server; try again later"
ERR_UPSTREAM_LOGIN = (
    "[SYS/PERM] the mail server refused segcard's login; see segcard's log"
)
ERR_INTERNAL = "[SYS/TEMP] segcard cannot open the mailbox; see its log"
ERR_TLS_FIRST = "send STLS first: passwords are taken only over TLS"

_DOT_RE = re.compile(rb"^\.", re.MULTILINE)


class Credentials:
    """The one user name and password the client logs in with."""

    def __init__(self, user: str, password: str) -> None:
        self._user = user.encode("utf-8")
        self._password = password.encode("utf-8")

    def check(self, user: bytes, password: bytes) -> bool:
        """Compare both in constant time, and both always."""
        user_ok = hmac.compare_digest(user, self._user)
        password_ok = hmac.compare_digest(password, self._password)
        return user_ok & password_ok


class Pop3Server:
    """Listens for POP3 clients; each connection gets a :class:`Connection`."""

    def __init__(
        self,
        mailbox: Mailbox,
        credentials: Credentials,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        limiter: LoginLimiter | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.mailbox = mailbox
        self.credentials = credentials
        self.host = host
        self.requested_port = port
        self.tls = tls
        self.limiter = limiter or LoginLimiter()
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept, self.host, self.requested_port
        )
        log.info("POP3 proxy listening on %s:%d", self.host, self.port)

    def _accept(self) -> Channel:
        channel = Channel(MAX_LINE)
        task = asyncio.create_task(self._serve(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return channel

    async def _serve(self, channel: Channel) -> None:
        await channel.connected
        await Connection(self, channel).run()

    async def stop(self) -> None:
        """Stop listening and end every connection (deleting nothing)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


Handler = Callable[["Connection", str], Awaitable[None]]


class Connection:
    """One client, from the greeting to QUIT or the end of the connection."""

    def __init__(self, server: Pop3Server, channel: Channel) -> None:
        self.server = server
        self.channel = channel
        self.peer = channel.peer()
        self.session: Session | None = None
        self.user: bytes | None = None
        self.errors = 0
        self.auth_failures = 0
        self.done = False

    async def run(self) -> None:
        try:
            await self.send(GREETING)
            while not self.done:
                try:
                    line = await asyncio.wait_for(
                        self.channel.readline(), self.server.idle_timeout
                    )
                except LineTooLong:
                    await self.error("line too long: RFC 2449 allows 255 octets")
                    continue
                if not line:
                    break
                await self.dispatch(line)
        except TimeoutError:
            log.info("%s: POP3 client idle too long", self.peer)
            with contextlib.suppress(OSError):
                await self.send("-ERR autologout: idle for too long")
        except (OSError, ProtocolError) as exc:
            log.debug("%s: POP3 connection ended: %s", self.peer, exc)
        except Exception:
            # A bug must not pass silently, nor its text reach the client.
            log.exception("%s: POP3 connection failed", self.peer)
        finally:
            if self.session is not None:
                self.session.close()
            self.channel.close()

    async def dispatch(self, line: bytes) -> None:
        """Carry out one command line, or answer -ERR saying why not."""
        try:
            keyword, args = parse(line)
            handler, when = COMMANDS.get(keyword, (None, ""))
            if handler is None:
                raise BadCommand(f"unknown command {_shown(keyword)}")
            if when == "before" and self.session is not None:
                raise BadCommand(f"{keyword} is only allowed before login")
            if when == "after" and self.session is None:
                raise BadCommand(f"{keyword} is only allowed after login")
            await handler(self, args)
        except (BadCommand, NoSuchMessage) as exc:
            await self.error(str(exc))

    # -- replies -----------------------------------------------------------------

    async def send(self, line: str) -> None:
        await self.channel.write(line.encode("utf-8") + b"\r\n")

    async def send_lines(self, first: str, lines: list[str]) -> None:
        body = "".join(f"{line}\r\n" for line in lines)
        await self.send_data(first, body.encode("utf-8"))

    async def send_data(self, first: str, data: bytes) -> None:
        """A multi-line reply: *data* dot-stuffed, then the final dot."""
        if data and not data.endswith(b"\r\n"):
            data += b"\r\n"
        stuffed = _DOT_RE.sub(b"..", data)
        await self.channel.write(first.encode("utf-8") + b"\r\n" + stuffed + b".\r\n")

    async def error(self, text: str) -> None:
        """-ERR *text*; the last error allowed ends the connection."""
        self.errors += 1
        if self.errors >= MAX_ERRORS:
            log.warning("%s: too many POP3 errors, closing", self.peer)
            self.done = True
            text += "; too many errors, closing the connection"
        await self.send(f"-ERR {text}")

    # -- AUTHORIZATION state ---------------------------------------------------

    async def do_capa(self, args: str) -> None:
        no_args("CAPA", args)
        lines = list(CAPABILITIES)
        if self.session is None:
            if self.login_allowed:
                lines += ["USER", "SASL PLAIN"]
            if self.server.tls is not None and not self.channel.tls:
                lines.append("STLS")
        lines.append(IMPLEMENTATION)
        await self.send_lines("+OK capability list follows", lines)

    @property
    def login_allowed(self) -> bool:
        return self.server.tls is None or self.channel.tls

    def _check_login_allowed(self) -> None:
        if not self.login_allowed:
            raise BadCommand(ERR_TLS_FIRST)

    async def do_user(self, args: str) -> None:
        self._check_login_allowed()
        if not args.strip():
            raise BadCommand("USER needs a user name")
        self.user = args.strip().encode("utf-8")
        await self.send("+OK now send PASS")

    async def do_pass(self, args: str) -> None:
        self._check_login_allowed()
        user, self.user = self.user, None
        if user is None:
            raise BadCommand("PASS must follow USER")
        if not args:
            raise BadCommand("PASS needs the password")
        # RFC 1939 7: the password is the rest of the line, spaces and all.
        await self.login(user, args.encode("utf-8"))

    async def do_auth(self, args: str) -> None:
        self._check_login_allowed()
        words = args.split()
        if not words:
            await self.send_lines("+OK mechanisms follow", ["PLAIN"])
            return
        if words[0].upper() != "PLAIN":
            raise BadCommand(f"mechanism {_shown(words[0])} is not offered; use PLAIN")
        if len(words) > 2:
            raise BadCommand("AUTH PLAIN takes one initial response")
        response = words[1] if len(words) == 2 else await self._continuation()
        user, password = decode_plain(response)
        await self.login(user, password)

    async def _continuation(self) -> str:
        """The client's answer to an empty challenge (RFC 5034 4)."""
        await self.send("+ ")
        try:
            line = await asyncio.wait_for(
                self.channel.readline(), self.server.idle_timeout
            )
        except LineTooLong as exc:
            raise BadCommand("AUTH response too long") from exc
        if not line:
            raise ConnectionResetError("client left during AUTH")
        return line.decode("ascii", "replace").strip()

    async def do_stls(self, args: str) -> None:
        no_args("STLS", args)
        if self.server.tls is None:
            raise BadCommand("STLS is not offered: segcard has no certificate")
        if self.channel.tls:
            raise BadCommand("TLS is already on")
        await self.send("+OK begin TLS negotiation")
        try:
            await self.channel.start_tls(self.server.tls, server_side=True)
        except ProtocolError:
            log.warning("%s sent commands after STLS, before TLS; closing", self.peer)
            self.done = True
            return
        except (OSError, ssl.SSLError) as exc:
            log.info("%s: TLS handshake failed: %s", self.peer, exc)
            self.done = True
            return
        self.user = None  # RFC 2595 4: start again from a clean state

    async def login(self, user: bytes, password: bytes) -> None:
        """Check the credentials, then open the maildrop."""
        limiter = self.server.limiter
        if limiter.blocked(self.peer):
            log.warning("%s: POP3 login refused after wrong passwords", self.peer)
            self.done = True
            await self.send(f"-ERR {ERR_BLOCKED}")
            return
        if not self.server.credentials.check(user, password):
            limiter.failed(self.peer)
            self.auth_failures += 1
            log.warning("%s: wrong POP3 user name or password", self.peer)
            if self.auth_failures >= MAX_AUTH_FAILURES:
                self.done = True
                await self.send(f"-ERR {ERR_WRONG_LOGIN}; closing the connection")
            else:
                await self.send(f"-ERR {ERR_WRONG_LOGIN}")
            return
        await self._open()

    async def _open(self) -> None:
        try:
            session = await self.server.mailbox.open()
        except MailboxBusy:
            await self.send(f"-ERR {ERR_IN_USE}")
            return
        except UpstreamError as exc:
            log.warning("POP3 login of %s: %s", self.peer, exc)
            await self.send(f"-ERR {ERR_UPSTREAM_LOGIN if exc.login else ERR_UPSTREAM}")
            return
        except (OSError, sqlite3.Error, SegcardError):
            log.exception("POP3 login of %s: cannot open the mailbox", self.peer)
            await self.send(f"-ERR {ERR_INTERNAL}")
            return
        self.session = session
        count, size = session.stat()
        log.info("%s logged in to the POP3 proxy: %d messages", self.peer, count)
        await self.send(f"+OK {count} messages ({size} octets)")

    # -- TRANSACTION state --------------------------------------------------------

    @property
    def maildrop(self) -> Session:
        assert self.session is not None
        return self.session

    async def do_stat(self, args: str) -> None:
        no_args("STAT", args)
        count, size = self.maildrop.stat()
        await self.send(f"+OK {count} {size}")

    async def do_list(self, args: str) -> None:
        await self._listing("LIST", args, lambda n, item: f"{n} {item.size}")

    async def do_uidl(self, args: str) -> None:
        await self._listing("UIDL", args, lambda n, item: f"{n} {item.uidl}")

    async def _listing(
        self, keyword: str, args: str, show: Callable[[int, Item], str]
    ) -> None:
        words = arguments(keyword, args, 0, 1)
        if words:
            number = message_number(keyword, words[0])
            await self.send(f"+OK {show(number, self.maildrop.item(number))}")
            return
        count, size = self.maildrop.stat()
        lines = [show(n, item) for n, item in self.maildrop.live()]
        await self.send_lines(f"+OK {count} messages ({size} octets)", lines)

    async def do_retr(self, args: str) -> None:
        [word] = arguments("RETR", args, 1, 1)
        number = message_number("RETR", word)
        item = self.maildrop.item(number)
        data = await self.maildrop.read(number)
        await self.send_data(f"+OK {item.size} octets", data)

    async def do_top(self, args: str) -> None:
        words = arguments("TOP", args, 2, 2)
        number = message_number("TOP", words[0])
        if not words[1].isdigit():
            raise BadCommand("TOP needs a number of lines (0 or more)")
        data = await self.maildrop.read(number)
        await self.send_data("+OK top of message follows", top(data, int(words[1])))

    async def do_dele(self, args: str) -> None:
        [word] = arguments("DELE", args, 1, 1)
        number = message_number("DELE", word)
        self.maildrop.delete(number)
        await self.send(f"+OK message {number} deleted")

    async def do_noop(self, args: str) -> None:
        no_args("NOOP", args)
        await self.send("+OK")

    async def do_rset(self, args: str) -> None:
        no_args("RSET", args)
        self.maildrop.reset()
        count, size = self.maildrop.stat()
        await self.send(f"+OK {count} messages ({size} octets)")

    async def do_quit(self, args: str) -> None:
        no_args("QUIT", args)
        self.done = True
        session, self.session = self.session, None
        if session is None:
            await self.send("+OK segcard POP3 proxy signing off")
            return
        try:
            applied = await session.quit()
        except (OSError, sqlite3.Error, SegcardError):
            log.exception("%s: deletions not saved", self.peer)
            await self.send("-ERR some deleted messages not removed")
            return
        if applied:
            await self.send("+OK segcard POP3 proxy signing off")
        else:
            await self.send("+OK deletions saved; the mail server gets them next time")


COMMANDS: dict[str, tuple[Handler, str]] = {
    "CAPA": (Connection.do_capa, "any"),
    "QUIT": (Connection.do_quit, "any"),
    "USER": (Connection.do_user, "before"),
    "PASS": (Connection.do_pass, "before"),
    "AUTH": (Connection.do_auth, "before"),
    "STLS": (Connection.do_stls, "before"),
    "STAT": (Connection.do_stat, "after"),
    "LIST": (Connection.do_list, "after"),
    "UIDL": (Connection.do_uidl, "after"),
    "RETR": (Connection.do_retr, "after"),
    "TOP": (Connection.do_top, "after"),
    "DELE": (Connection.do_dele, "after"),
    "NOOP": (Connection.do_noop, "after"),
    "RSET": (Connection.do_rset, "after"),
}


# -- parsing ---------------------------------------------------------------------
