"""Where the SMTP filter puts accepted mail: a Maildir, or an LMTP or SMTP
next hop. Each returns only once the message is safe: fsynced in the
Maildir, or accepted with 250 by the next hop for every recipient.

A delivery is a list of :class:`Copy`: one annotated message with the
recipients it is for, and for a Maildir the folder it goes into.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aiosmtplib

from segcard.config import parse_hostport
from segcard.errors import RelayError
from segcard.mail import maildir

log = logging.getLogger(__name__)

TIMEOUT = 60.0  # seconds for one next-hop command (RFC 5321 4.5.3.2 is longer)
_LINE_END_RE = re.compile(rb"\r?\n")


@dataclass(frozen=True)
class Copy:
    """One annotated message and the recipients it goes to."""

    recipients: tuple[str, ...]
    data: bytes
    folder: str | None = None  # Maildir folder; None is the Inbox


class DeliveryError(RelayError):
    """The message could not be delivered; *permanent* when retrying is
    useless (the next hop refused it with 5xx)."""


class Delivery(Protocol):
    """Something that stores or forwards accepted mail durably."""

    async def deliver(self, mail_from: str, copies: list[Copy]) -> None: ...


class MaildirDelivery:
    """Writes each copy into the Maildir (its folder), fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def deliver(self, mail_from: str, copies: list[Copy]) -> None:
        for copy in copies:
            try:
                where = await asyncio.to_thread(
                    maildir.deliver, self.path, copy.data, copy.folder
                )
            except OSError as exc:
                raise DeliveryError(f"cannot write to {self.path}: {exc}") from exc
            log.debug("delivered to %s", where)


class SmtpDelivery:
    """Forwards each copy to an SMTP next hop with aiosmtplib."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    async def deliver(self, mail_from: str, copies: list[Copy]) -> None:
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=TIMEOUT, start_tls=False
        )
        try:
            await client.connect()
            for copy in copies:
                await self._send(client, mail_from, copy)
        except aiosmtplib.SMTPResponseException as exc:
            raise _refused(self.host, exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"next hop {self.host}:{self.port}: {exc}") from exc
        finally:
            if client.is_connected:
                await _quietly(client.quit())

    @staticmethod
    async def _send(client: aiosmtplib.SMTP, mail_from: str, copy: Copy) -> None:
        # Recipients one by one, so that one refusal stops the copy before
        # DATA: a copy goes to all its recipients or to none.
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        await client.mail(mail_from, options=_mail_options(client, mail_from, copy))
        for rcpt in copy.recipients:
            await client.rcpt(rcpt)
        await client.data(copy.data)


def _mail_options(client: aiosmtplib.SMTP, mail_from: str, copy: Copy) -> list[str]:
    """BODY=8BITMIME and SMTPUTF8 where the message needs them (RFC 6152, 6531)."""
    options = []
    if client.supports_extension("8bitmime") and not copy.data.isascii():
        options.append("BODY=8BITMIME")
    addresses = (mail_from, *copy.recipients)
    if client.supports_extension("smtputf8") and not all(
        a.isascii() for a in addresses
    ):
        options.append("SMTPUTF8")
    return options


class LmtpDelivery:
    """Hands each copy to an LMTP server (RFC 2033): one reply per recipient."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    async def deliver(self, mail_from: str, copies: list[Copy]) -> None:
        try:
            session = await LmtpSession.open(self.host, self.port)
        except OSError as exc:
            raise DeliveryError(f"LMTP {self.host}:{self.port}: {exc}") from exc
        try:
            for copy in copies:
                await session.send(mail_from, copy)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            raise DeliveryError(f"LMTP {self.host}:{self.port}: {exc}") from exc
        finally:
            await session.close()


class LmtpSession:
    """One connection to an LMTP server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.extensions: set[str] = set()

    @classmethod
    async def open(cls, host: str, port: int) -> LmtpSession:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), TIMEOUT
        )
        session = cls(reader, writer)
        await session.expect(await session.reply(), "greeting")
        code, lines = await session.command(f"LHLO {socket.getfqdn()}")
        await session.expect((code, lines), "LHLO")
        session.extensions = {line.split()[0].upper() for line in lines if line}
        return session

    async def send(self, mail_from: str, copy: Copy) -> None:
        """Deliver *copy*; raise DeliveryError unless every recipient took it."""
        body = " BODY=8BITMIME" if "8BITMIME" in self.extensions else ""
        await self.expect(await self.command(f"MAIL FROM:<{mail_from}>{body}"), "MAIL")
        for rcpt in copy.recipients:
            await self.expect(await self.command(f"RCPT TO:<{rcpt}>"), "RCPT")
        await self.expect(await self.command("DATA"), "DATA", ok=354)
        self.writer.write(dot_stuffed(copy.data) + b".\r\n")
        await self.writer.drain()
        for _rcpt in copy.recipients:
            await self.expect(await self.reply(), "DATA")

    async def command(self, line: str) -> tuple[int, list[str]]:
        self.writer.write(line.encode("utf-8") + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def reply(self) -> tuple[int, list[str]]:
        """One (possibly multi-line) reply: its code and its texts."""
        lines = []
        while True:
            raw = await asyncio.wait_for(self.reader.readuntil(b"\n"), TIMEOUT)
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            code = int(text[:3]) if text[:3].isdigit() else 0
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                return code, lines

    async def expect(
        self, reply: tuple[int, list[str]], step: str, ok: int = 250
    ) -> None:
        code, lines = reply
        if not (code == ok or (ok == 250 and code // 100 == 2)):
            if code // 100 in (4, 5):
                await _quietly(self.command("RSET"))
            raise _refused("LMTP server", code, " ".join(lines), step)

    async def close(self) -> None:
        if not self.writer.is_closing():
            await _quietly(self.command("QUIT"))
        self.writer.close()
        await _quietly(self.writer.wait_closed())


def dot_stuffed(data: bytes) -> bytes:
    """*data* with CRLF line ends, a final CRLF, and leading dots doubled
    (RFC 5321 4.5.2)."""
    lines = _LINE_END_RE.split(data)
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join(
        (b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines
    )


def _refused(peer: str, code: int, text: str, step: str = "") -> DeliveryError:
    where = f" at {step}" if step else ""
    return DeliveryError(
        f"{peer} answered {code}{where}: {text[:200]}",
        code=code,
        permanent=500 <= code < 600,
    )


async def _quietly(awaitable: Awaitable[object]) -> None:
    """Await a goodbye whose failure changes nothing."""
    with contextlib.suppress(
        OSError, TimeoutError, aiosmtplib.SMTPException, ValueError
    ):
        await awaitable


def make_delivery(maildir_path: str, lmtp: str, next_hop: str) -> Delivery:
    """The delivery the config asks for: LMTP, SMTP next hop, else Maildir."""
    if lmtp:
        host, port = parse_hostport(lmtp)
        return LmtpDelivery(host, port)
    if next_hop:
        url = urlsplit(next_hop if "://" in next_hop else f"smtp://{next_hop}")
        return SmtpDelivery(url.hostname or "127.0.0.1", url.port or 25)
    return MaildirDelivery(Path(maildir_path).expanduser())
