"""The POP3 proxy: the mail client reads POP3 from segcard, which reads the
real mailbox and filters on the way (issue 5, DESIGN.md "Incoming mail").

    mail client --POP3--> server.py --> session.py --> upstream.py --POP3--> provider
                                            |
                                            +--> quarantine.py (junk, rejected)

- ``server``: the POP3 server the client talks to (RFC 1939, 2449, 5034,
  STLS), and the service ``segcard serve`` starts;
- ``session``: fetches and judges at login, keeps what the client sees,
  applies DELE upstream only at QUIT;
- ``upstream``: the client side, to the provider;
- ``quarantine``: the Maildir that holds junk and rejected mail.

This module holds :class:`Channel`, the line-based connection both ends
speak over. It is an ``asyncio.Protocol`` with its own buffer rather than a
``StreamReader``, so that bytes that arrive in plain text before a TLS
handshake are seen and refused instead of being read as if they had come
over TLS (the STARTTLS command injection of CVE-2011-0411).
"""

from __future__ import annotations

import asyncio
import ssl

from segcard.errors import ProtocolError

HANDSHAKE_TIMEOUT = 30.0


class LineTooLong(ProtocolError):
    """A peer sent a line longer than the channel takes; it was skipped."""


class Channel(asyncio.Protocol):
    """One TCP connection, read line by line, written with flow control."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = (
            asyncio.get_running_loop().create_future()
        )
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no line end
        self._overlong = False  # skipping the rest of a line that was too long
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > 2 * self.max_line and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("connection lost"))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- reading ---------------------------------------------------------------

    @property
    def buffered(self) -> bool:
        """Whether bytes were received that nobody has read yet."""
        return bool(self._buffer)

    async def readline(self) -> bytes:
        """The next line with its line ending; b"" once the peer has closed
        (a last line without its ending is dropped).

        Raises :class:`LineTooLong` for a line over ``max_line`` octets,
        after skipping it, so that the next call reads the line after it.
        """
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) > self.max_line:
                self._overlong = True
                self._buffer.clear()
                self._resume_reading()
            self._scanned = len(self._buffer)
            if self._eof:
                return b""
            await self._wait()

    def _take(self, size: int) -> bytes:
        line = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._scanned = 0
        self._resume_reading()
        if self._overlong or len(line) > self.max_line:
            self._overlong = False
            raise LineTooLong(f"a line longer than {self.max_line} octets")
        return line

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    # -- writing and the rest ----------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Send *data*, waiting while the peer is slow to read."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        self.transport.write(data)
        if self._writing_paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        """Switch to TLS; refuse if the peer already sent more plain text."""
        if self._buffer:
            raise ProtocolError("data was sent after the TLS command, before TLS")
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        # No await between the check above and start_tls pausing the
        # transport: nothing can slip into the buffer in between.
        transport = await loop.start_tls(
            self.transport,
            self,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )
        if transport is None:
            raise ConnectionResetError("connection closed during the TLS handshake")
        self.transport = transport

    @property
    def tls(self) -> bool:
        return bool(self.transport and self.transport.get_extra_info("sslcontext"))

    def peer(self) -> str:
        """The peer's address, for logs."""
        found = self.transport.get_extra_info("peername") if self.transport else None
        return str(found[0]) if found else "?"

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


__all__ = ["Channel", "LineTooLong"]
