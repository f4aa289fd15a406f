"""The control socket: JSON requests on a Unix domain socket, one per line.

A frame is one JSON object in UTF-8 ending with a newline, at most
:data:`MAX_FRAME` bytes; each request gets one reply line, in order. The
socket lives in the runtime dir (mode 0700) with mode 0600, and a peer of
another user is turned away where the system tells (``SO_PEERCRED``). A
socket left behind by a crash is removed at start: the daemon's lock on the
data dir makes sure no other ``segcard serve`` still uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from segcard.app import App
from segcard.control.api import ControlApi, error_reply
from segcard.errors import ConfigError

log = logging.getLogger(__name__)

# A native-messaging host may send the browser at most 1 MB per message, so
# no reply may be larger; requests get the same limit.
MAX_FRAME = 1024 * 1024

TOO_LARGE = "the request is larger than 1 MB: send fewer addresses at once"
BAD_JSON = "the request is not one JSON object in UTF-8"
REPLY_TOO_LARGE = "the reply would be larger than 1 MB: ask for fewer addresses"


def encode(reply: dict[str, Any]) -> bytes:
    """One reply line; a reply over the limit becomes an error reply."""
    line = json.dumps(reply, ensure_ascii=False, separators=(",", ":")) + "\n"
    data = line.encode("utf-8")
    if len(data) > MAX_FRAME:
        return encode(error_reply(reply.get("id"), "too_large", REPLY_TOO_LARGE))
    return data


def decode(line: bytes) -> object:
    """The request in one line; ValueError when it is not JSON in UTF-8."""
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(BAD_JSON) from exc


class ControlServer:
    """The control socket of one ``segcard serve``."""

    def __init__(self, api: ControlApi, path: Path) -> None:
        self.api = api
        self.path = path
        self._server: asyncio.AbstractServer | None = None

    @classmethod
    def for_app(cls, app: App) -> ControlServer:
        return cls(ControlApi(app), app.paths.control_socket)

    async def start(self) -> None:
        sock = self._bind()
        self._server = await asyncio.start_unix_server(
            self._serve, sock=sock, limit=MAX_FRAME
        )
        log.info("control socket listening on %s", self.path)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        log.info("control socket closed")

    def _bind(self) -> socket.socket:
        """A listening socket at self.path, mode 0600, never world-reachable.

        It is bound under a temporary name, made private, then renamed into
        place, so no moment exists at which another user could connect.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(tmp))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            sock.listen(16)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on the control socket {self.path}: {exc.strerror}",
                "check that the runtime dir is yours and writable",
            ) from exc
        return sock

    def _remove_stale(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ConfigError(
                f"{self.path} exists and is not a socket",
                "move it away; segcard keeps its control socket there",
            )
        log.info("removing stale control socket %s", self.path)
        self.path.unlink()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            if not _same_user(writer):
                log.warning("control socket: refused a peer of another user")
                return
            await self._requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer lines until the peer closes or sends an oversized frame."""
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                # The rest of the frame cannot be found again: answer and close.
                writer.write(encode(error_reply(None, "too_large", TOO_LARGE)))
                await writer.drain()
                return
            except asyncio.IncompleteReadError as exc:
                if not exc.partial.strip():
                    return
                line = exc.partial  # a last request without its newline
            writer.write(encode(await self.answer(line)))
            await writer.drain()

    async def answer(self, line: bytes) -> dict[str, Any]:
        """The reply to one request line."""
        try:
            request = decode(line)
        except ValueError:
            return error_reply(None, "bad_json", BAD_JSON)
        return await asyncio.to_thread(self.api.handle, request)


def _same_user(writer: asyncio.StreamWriter) -> bool:
    """Whether the peer runs as this user; True where the system cannot tell."""
    sock = writer.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return True
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())
