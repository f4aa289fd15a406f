"""The embedded CardDAV server: Xandikos in-process, behind HTTP Basic auth.

Used when no address book is configured. Xandikos keeps every card
byte-for-byte in a git repository under `root`; the address book lives at
/user/contacts/addressbook/, as `xandikos --defaults` creates it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware
from xandikos import web as xandikos_web
from xandikos.store import InvalidFileContents
from xandikos.vcard import VCardFile

from segcard.errors import ConfigError

log = logging.getLogger(__name__)

PRINCIPAL = "/user/"
ADDRESS_BOOK_PATH = "/user/contacts/addressbook/"
REALM = "segcard"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TolerantVCardFile(VCardFile):
    """A card as the embedded server stores it: as sent, if it is framed.

    Xandikos checks every card with vobject and refuses about a third of the
    real cards in the shared corpus (quoted-printable soft breaks, vCard 2.1
    parameters, a PROFILE line). The embedded book is the user's own, and
    segcard reads such cards with its tolerant reader, so it stores them.
    """

    def validate(self) -> None:
        text = b"".join(self.content).strip().upper()
        if not text.startswith(b"BEGIN:VCARD") or not text.endswith(b"END:VCARD"):
            raise InvalidFileContents(
                self.content_type, self.content, "not framed by BEGIN/END:VCARD"
            )

    def _get_index(self, key: str):  # type: ignore[no-untyped-def]
        # Index values feed addressbook-query filters; a card vobject cannot
        # read simply matches none of them.
        try:
            yield from super()._get_index(key)
        except Exception:  # noqa: BLE001 - vobject raises many kinds
            return


class _Backend(xandikos_web.SingleUserFilesystemBackend):
    """Xandikos' backend with the tolerant card handler on every store."""

    def _open_store_uncached(self, path: str):  # type: ignore[no-untyped-def]
        store = super()._open_store_uncached(path)
        store.load_extra_file_handler(TolerantVCardFile)
        return store


def basic_auth_middleware(username: str, password: str) -> Middleware:
    """An aiohttp middleware that lets through only the given Basic credentials."""
    expected = f"{username}:{password}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = _basic_credentials(request.headers.get("Authorization", ""))
        if given is None or not hmac.compare_digest(given, expected):
            return web.Response(
                status=401,
                text="Authentication required.\n",
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        return await handler(request)

    return middleware


def _basic_credentials(header: str) -> bytes | None:
    """The decoded 'user:password' of a Basic Authorization header (RFC 7617)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


class EmbeddedServer:
    """Xandikos serving one address book on loopback, with one user."""

    def __init__(
        self,
        root: Path,
        username: str,
        password: str,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not username or ":" in username:
            raise ConfigError("the embedded server needs a username without ':'")
        if not password:
            raise ConfigError("the embedded server needs a password")
        self.root = Path(root)
        self.username = username
        self.password = password
        self.host = host
        self._requested_port = port
        self._port = 0
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the real one when 0 was asked for)."""
        if not self._port:
            raise RuntimeError("the embedded server is not running")
        return self._port

    @property
    def url(self) -> str:
        """The address book collection URL."""
        return f"http://{self._url_host()}:{self.port}{ADDRESS_BOOK_PATH}"

    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    # -- on the caller's event loop -----------------------------------------

    async def start_async(self) -> None:
        """Start serving on the running event loop; returns once listening."""
        if self._runner is not None:
            raise RuntimeError("the embedded server is already running")
        try:
            app = await asyncio.to_thread(self._build_app)
        except OSError as exc:
            raise ConfigError(
                f"the embedded CardDAV server cannot use {self.root}: {exc.strerror}"
            ) from exc
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port or self._requested_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"the embedded CardDAV server cannot listen on "
                f"{self.host}:{self._requested_port}: {exc.strerror}"
            ) from exc
        self._runner = runner
        self._port = self._bound_port(runner)
        log.info("embedded CardDAV server listening on %s", self.url)

    async def stop_async(self) -> None:
        """Stop serving; the port is kept for a later start."""
        if self._runner is None:
            return
        await self._runner.cleanup()
        self._runner = None
        log.info("embedded CardDAV server stopped")

    # -- in a background thread ------------------------------------------------

    def start(self) -> None:
        """Start serving in a background thread with its own loop."""
        if self._thread is not None:
            raise RuntimeError("the embedded server is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name="segcard-embedded-carddav", daemon=True
        )
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start_async(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        self._loop, self._thread = loop, thread

    def stop(self) -> None:
        """Stop the background thread started by start()."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop_async(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = self._thread = None

    # -- the app -----------------------------------------------------------

    def _build_app(self) -> web.Application:
        """The aiohttp app: Basic auth, then every path to Xandikos."""
        backend = self._backend()
        dav = xandikos_web.XandikosApp(backend, current_user_principal=PRINCIPAL)

        async def handle(request: web.Request) -> web.StreamResponse:
            return await dav.aiohttp_handler(request, "/")

        async def well_known(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound("/")

        app = web.Application(
            middlewares=[basic_auth_middleware(self.username, self.password)]
        )
        for path in xandikos_web.WELLKNOWN_DAV_PATHS:
            app.router.add_route("*", path, well_known)
        app.router.add_route("*", "/{path_info:.*}", handle)
        return app

    def _backend(self) -> xandikos_web.SingleUserFilesystemBackend:
        """The storage under root; the first run creates the address book."""
        self.root.mkdir(parents=True, exist_ok=True)
        backend = _Backend(str(self.root.resolve()))
        backend._mark_as_principal(PRINCIPAL)
        backend.create_principal(PRINCIPAL, create_defaults=True)
        return backend

    @staticmethod
    def _bound_port(runner: web.AppRunner) -> int:
        for address in runner.addresses:
            return int(address[1])
        raise RuntimeError("the embedded server bound no socket")
