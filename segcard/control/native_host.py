"""``segcard native-host``: the native-messaging host between the add-on and segcard.

Thunderbird starts it with the host manifest's path and the add-on's id as
arguments, and talks over stdio: each message is a 4-byte length in native
byte order followed by that many bytes of UTF-8 JSON. The host is a thin
relay to the running daemon's control socket: it checks the framing and that
a message is a JSON object, and passes it on; the daemon validates the rest.
Nothing it receives is ever executed. A bad frame gets an error reply and the
host keeps reading; it ends when Thunderbird closes its stdin.

Only frames go to stdout: logging goes to stderr, which Thunderbird shows in
its error console.
"""

from __future__ import annotations

import json
import logging
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

from segcard import config as configuration
from segcard.control.api import error_reply
from segcard.control.client import ControlClient, NotRunning
from segcard.errors import ProtocolError, SegcardError

log = logging.getLogger(__name__)

HEADER = struct.Struct("=I")  # native byte order, as the browser writes it
# The browser refuses messages over 1 MB from a host; the host holds requests
# to the same limit, as no request of the add-on comes near it.
MAX_MESSAGE = 1024 * 1024
CHUNK = 65536

TOO_LARGE = "the message is larger than 1 MB, so segcard's helper dropped it"
BAD_JSON = "the message is not JSON in UTF-8, so segcard's helper dropped it"
NOT_OBJECT = "the message is not a JSON object, so segcard's helper dropped it"
BROKEN = "the connection to segcard broke: check that segcard serve runs, then retry"


class FrameTooLarge(ProtocolError):
    """A frame over the size limit; its bytes were read and dropped."""


def read_exact(stream: BinaryIO, size: int) -> bytes | None:
    """*size* bytes, or None when the stream ends first."""
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(stream: BinaryIO) -> bytes | None:
    """The payload of the next frame; None at the end of the stream.

    Raise FrameTooLarge for a frame over the limit, after reading past it so
    that the next frame starts where it should.
    """
    header = read_exact(stream, HEADER.size)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    if length > MAX_MESSAGE:
        if not _discard(stream, length):
            return None
        raise FrameTooLarge(f"frame of {length} bytes")
    return read_exact(stream, length)


def _discard(stream: BinaryIO, length: int) -> bool:
    while length > 0:
        chunk = stream.read(min(CHUNK, length))
        if not chunk:
            return False
        length -= len(chunk)
    return True


def write_frame(stream: BinaryIO, message: dict[str, Any]) -> None:
    """Write one message as a frame; one over the limit becomes an error."""
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        reply = error_reply(message.get("id"), "too_large", TOO_LARGE)
        data = json.dumps(reply).encode()
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


class NativeHost:
    """Relays frames from stdin to the control socket and replies to stdout."""

    def __init__(
        self,
        socket_path: Path | None,
        stdin: BinaryIO,
        stdout: BinaryIO,
        setup_error: SegcardError | None = None,
    ) -> None:
        self.client = ControlClient(socket_path) if socket_path else None
        self.stdin = stdin
        self.stdout = stdout
        self.setup_error = setup_error

    def run(self) -> int:
        """Serve until stdin ends; the exit code for the process."""
        log.debug("native host started")
        while True:
            try:
                frame = read_frame(self.stdin)
            except FrameTooLarge as exc:
                log.warning("native host: dropped a %s", exc)
                write_frame(self.stdout, error_reply(None, "too_large", TOO_LARGE))
                continue
            if frame is None:
                break
            write_frame(self.stdout, self.answer(frame))
        if self.client is not None:
            self.client.close()
        log.debug("native host stopped: stdin closed")
        return 0

    def answer(self, frame: bytes) -> dict[str, Any]:
        """The reply to one frame's payload."""
        try:
            request = json.loads(frame.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return error_reply(None, "bad_json", BAD_JSON)
        if not isinstance(request, dict):
            return error_reply(None, "bad_request", NOT_OBJECT)
        request_id = request.get("id")
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            request_id = None
        return self.relay(request, request_id)

    def relay(self, request: dict[str, Any], request_id: object) -> dict[str, Any]:
        if self.client is None:
            error = self.setup_error or SegcardError("segcard is not set up")
            hint = f": {error.hint}" if error.hint else ""
            return error_reply(request_id, "not_configured", f"{error}{hint}")
        try:
            return self._send(request)
        except NotRunning as exc:
            return error_reply(request_id, "not_running", str(exc))
        except ProtocolError:
            return error_reply(request_id, "broken", BROKEN)

    def _send(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send through the open connection; once more on a fresh one if the
        daemon closed it meanwhile (it was restarted, say)."""
        assert self.client is not None
        reused = self.client.connected
        try:
            return self.client.request(request)
        except ProtocolError:
            if not reused:
                raise
            log.info("native host: reconnecting to the control socket")
            return self.client.request(request)


def main(config_path: Path) -> int:
    """Run the host on stdio for the config at *config_path*."""
    socket_path: Path | None = None
    error: SegcardError | None = None
    try:
        socket_path = configuration.load(config_path).data.control_socket
    except SegcardError as exc:
        error = exc
    return NativeHost(socket_path, sys.stdin.buffer, sys.stdout.buffer, error).run()
