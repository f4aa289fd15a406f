"""A blocking client for the control socket, for the native host and the CLI."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from segcard.control.server import MAX_FRAME
from segcard.errors import ProtocolError, SegcardError

TIMEOUT = 60.0  # seconds; a rotate waits for nothing but the index


class NotRunning(SegcardError):
    """No ``segcard serve`` answers on the control socket."""

    def __init__(self) -> None:
        super().__init__(
            "segcard is not running: start it with segcard serve",
            "then try again",
        )


class ControlClient:
    """One connection to the control socket, opened on first use."""

    def __init__(self, path: Path, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    @property
    def connected(self) -> bool:
        """Whether a connection is open (it may still have been closed by
        the daemon since)."""
        return self._sock is not None

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its reply.

        Raise NotRunning when nothing listens, ProtocolError when the daemon
        closes the connection or answers with something that is not JSON.
        """
        line = json.dumps(request, ensure_ascii=False, separators=(",", ":"))
        reply = self.exchange(line.encode("utf-8") + b"\n")
        try:
            found = json.loads(reply)
        except ValueError as exc:
            raise ProtocolError("segcard answered with something not JSON") from exc
        if not isinstance(found, dict):
            raise ProtocolError("segcard answered with something not an object")
        return found

    def exchange(self, line: bytes) -> bytes:
        """Send one encoded request line; return the reply line."""
        sock = self._connect()
        try:
            sock.sendall(line)
            return self._read_line(sock)
        except OSError as exc:
            self.close()
            raise ProtocolError("the connection to segcard broke") from exc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer = b""

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise NotRunning() from exc
        self._sock = sock
        return sock

    def _read_line(self, sock: socket.socket) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_FRAME:
                raise OSError("reply line too long")
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("closed by segcard")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line
