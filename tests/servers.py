"""Real CardDAV servers for the tests, on 127.0.0.1 with free ports.

Each server exposes `url` (the address book collection), `username`,
`password`, `root` (its storage dir), `start()` and `stop()`; after `stop()`,
`start()` serves the same dir on the same port again.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp import web

from segcard.carddav.embedded import EmbeddedServer

HOST = "127.0.0.1"
USERNAME = "tester"
PASSWORD = "s3cret-pw"
STARTUP_SECONDS = 30.0
STOP_SECONDS = 10.0


class CardDAVServer(Protocol):
    """What the tests need from any of the servers."""

    root: Path
    username: str
    password: str

    @property
    def url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def free_port() -> int:
    """A port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def root_url(url: str) -> str:
    """The server root (scheme, host and port) of a collection URL."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.partition('/')[0]}/"


class _Subprocess:
    """A server run as a child process, started and stopped by its pid."""

    root: Path
    port: int
    _process: subprocess.Popen[bytes] | None = None
    _log: Path

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write config and storage before the process starts."""

    def start(self) -> None:
        """Start the process and return once it answers HTTP."""
        if self._process is not None:
            raise RuntimeError("already running")
        self._prepare()
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_answering()

    def stop(self) -> None:
        """Terminate the process by its pid and wait for it."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"server exited at start:\n{self._log_tail()}")
            if _answers(f"http://{HOST}:{self.port}/"):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not answer in time:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-3000:]


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at url (any status counts)."""
    request = urllib.request.Request(url, method="OPTIONS")
    try:
        with urllib.request.urlopen(request, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class XandikosServer(_Subprocess):
    """`xandikos serve --defaults`; it has no auth, so the credentials go unused."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.username = USERNAME
        self.password = PASSWORD
        self._log = root.parent / f"{root.name}.xandikos.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/user/contacts/addressbook/"

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "xandikos",
            "serve",
            "--no-detect-systemd",
            "-d",
            str(self.root),
            "--defaults",
            "-l",
            HOST,
            "-p",
            str(self.port),
        ]


class RadicaleServer(_Subprocess):
    """Radicale with htpasswd (plain) auth and owner_only rights."""

    BOOK = "contacts"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.username = USERNAME
        self.password = PASSWORD
        self._config = root.parent / f"{root.name}.radicale.ini"
        self._htpasswd = root.parent / f"{root.name}.htpasswd"
        self._log = root.parent / f"{root.name}.radicale.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/{self.username}/{self.BOOK}/"

    @property
    def book_dir(self) -> Path:
        """Where Radicale keeps the address book's .vcf files."""
        return self.root / "collection-root" / self.username / self.BOOK

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "radicale", "-C", str(self._config)]

    def _prepare(self) -> None:
        self.book_dir.mkdir(parents=True, exist_ok=True)
        props = self.book_dir / ".Radicale.props"
        if not props.exists():
            props.write_text(json.dumps({"tag": "VADDRESSBOOK"}))
        self._htpasswd.write_text(f"{self.username}:{self.password}\n")
        self._config.write_text(self._config_text())

    def _config_text(self) -> str:
        return (
            f"[server]\nhosts = {HOST}:{self.port}\n"
            f"[auth]\ntype = htpasswd\nhtpasswd_filename = {self._htpasswd}\n"
            "htpasswd_encryption = plain\ndelay = 0\n"
            "[rights]\ntype = owner_only\n"
            f"[storage]\nfilesystem_folder = {self.root}\n"
            "[logging]\nlevel = warning\n"
        )


class EmbeddedFlavour(EmbeddedServer):
    """segcard's own embedded server, shaped like the other two."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, USERNAME, PASSWORD)


def make_server(flavour: str, root: Path) -> CardDAVServer:
    """A not yet started server of the given flavour storing under root."""
    root.mkdir(parents=True, exist_ok=True)
    if flavour == "xandikos":
        return XandikosServer(root)
    if flavour == "radicale":
        return RadicaleServer(root)
    if flavour == "embedded":
        return EmbeddedFlavour(root)
    raise ValueError(f"unknown CardDAV server flavour {flavour!r}")


FLAVOURS = ("xandikos", "radicale", "embedded")


Forward = Callable[[], Awaitable[web.Response]]
Intercept = Callable[[web.Request, bytes, Forward], Awaitable[web.StreamResponse]]


class FaultProxy:
    """A loopback HTTP proxy in front of a real server, to inject faults.

    `intercept(request, body, forward)` answers every request; it may call
    `forward()` to get the real server's answer and return it, changed or not.
    """

    def __init__(self, upstream_url: str, intercept: Intercept) -> None:
        self.upstream = root_url(upstream_url)
        self.intercept = intercept
        self.requests: list[tuple[str, str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url_for(self, upstream_url: str) -> str:
        """The proxy's URL for a URL on the upstream server."""
        return f"http://{HOST}:{self.port}/" + upstream_url[len(self.upstream) :]

    def start(self) -> None:
        """Listen on a free port in a background thread."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    def stop(self) -> None:
        """Stop listening and end the thread."""
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(
                self._runner.cleanup(), self._loop
            )
            future.result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.path))

        async def forward() -> web.Response:
            return await self._forward(request, body)

        return await self.intercept(request, body, forward)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in ("host", "content-length", "transfer-encoding")
        }
        url = self.upstream + request.raw_path.lstrip("/")
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, url, data=body, headers=headers, allow_redirects=False
            ) as answer,
        ):
            content = await answer.read()
            kept = {
                name: value
                for name, value in answer.headers.items()
                if name.lower() not in _HOP_HEADERS
            }
            return web.Response(status=answer.status, body=content, headers=kept)


_HOP_HEADERS = ("content-length", "transfer-encoding", "connection", "keep-alive")
