"""Real SMTP servers for the mail tests, on 127.0.0.1 with free ports.

- :class:`Sink`: an aiosmtpd server that plays the upstream. It stores what
  it got, can answer 421/451/550 on demand (at MAIL, RCPT or DATA), can
  offer SMTPUTF8 or not, can require AUTH, and can be stopped and started
  again on the same port (an upstream that is down for a while).
- :class:`LoopThread`: an asyncio loop in a thread, for running segcard's
  async services in-process while the test talks to them with smtplib.
- :func:`make_app` and :class:`Proxy`: a segcard App on a temp config, and
  its outgoing mail service (proxy, spool, relay) in a LoopThread.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from segcard.app import App, read_credentials
from segcard.cli.commands import write_config
from segcard.mail.relay import Relay
from segcard.mail.service import MailService
from segcard.mail.spool import Spool, State
from segcard.mail.submission import LoginLimiter

HOST = "127.0.0.1"
WAIT_SECONDS = 30.0

T = TypeVar("T")


def free_port() -> int:
    """A port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Received:
    """One message as the sink got it."""

    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...]


@dataclass
class Failure:
    """An answer the sink gives instead of accepting, *times* times."""

    reply: str
    stage: str  # "MAIL", "RCPT" or "DATA"
    times: int | None  # None: for ever
    only_rcpt: str | None = None  # at RCPT: only for this address


@dataclass
class _Handler:
    sink: Sink
    failures: list[Failure] = field(default_factory=list)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        reply = self.sink.take_failure("MAIL")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        reply = self.sink.take_failure("RCPT", address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.sink.data_attempts += 1
        reply = self.sink.take_failure("DATA")
        if reply:
            return reply
        assert isinstance(envelope.original_content, bytes)
        self.sink.store(
            Received(
                mail_from=str(envelope.mail_from),
                rcpts=tuple(envelope.rcpt_tos),
                data=envelope.original_content,
                mail_options=tuple(envelope.mail_options),
            )
        )
        return "250 2.0.0 Ok: stored"


class _LongLineSMTP(SMTP):
    """aiosmtpd's server taking lines of any length (it refuses over 1,000)."""

    line_length_limit = 1 << 20


class _Controller(Controller):
    def __init__(self, *args: Any, long_lines: bool = False, **kwargs: Any) -> None:
        self.long_lines = long_lines
        super().__init__(*args, **kwargs)

    def factory(self) -> SMTP:
        if not self.long_lines:
            return super().factory()
        return _LongLineSMTP(self.handler, **self.SMTP_kwargs)


class Sink:
    """An upstream submission server for tests; see the module docstring."""

    def __init__(
        self,
        smtputf8: bool = True,
        credentials: tuple[str, str] | None = None,
        port: int | None = None,
        long_lines: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.long_lines = long_lines
        self.smtputf8 = smtputf8
        self.credentials = credentials
        self.received: list[Received] = []
        self.logins: list[str] = []
        self.data_attempts = 0
        self._failures: list[Failure] = []
        self._lock = threading.Condition()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    def start(self) -> Sink:
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": self.smtputf8}
        if self.credentials:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=False,
            )
        self._controller = _Controller(
            _Handler(self),
            hostname=HOST,
            port=self.port,
            long_lines=self.long_lines,
            **kwargs,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- failures on demand ---------------------------------------------

    def fail(
        self,
        reply: str,
        stage: str = "DATA",
        times: int | None = None,
        only_rcpt: str | None = None,
    ) -> None:
        """Answer *reply* at *stage* (the next *times* times, or always)."""
        with self._lock:
            self._failures.append(Failure(reply, stage, times, only_rcpt))

    def heal(self) -> None:
        """Accept everything again."""
        with self._lock:
            self._failures.clear()

    def take_failure(self, stage: str, rcpt: str | None = None) -> str | None:
        with self._lock:
            for failure in self._failures:
                if failure.stage != stage:
                    continue
                if failure.only_rcpt and failure.only_rcpt != rcpt:
                    continue
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                return failure.reply
        return None

    # -- what arrived -----------------------------------------------------

    def store(self, message: Received) -> None:
        with self._lock:
            self.received.append(message)
            self._lock.notify_all()

    def wait_for(self, count: int, seconds: float = WAIT_SECONDS) -> list[Received]:
        """Wait until at least *count* messages arrived; return them all."""
        deadline = time.monotonic() + seconds
        with self._lock:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sink got {len(self.received)} messages, expected {count}"
                    )
                self._lock.wait(left)
            return list(self.received)

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        assert self.credentials is not None
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.credentials
        ok = (
            auth_data.login.decode() == user and auth_data.password.decode() == password
        )
        if ok:
            self.logins.append(user)
        return AuthResult(success=ok, handled=False)


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], seconds: float = WAIT_SECONDS) -> T:
        """Run *coro* in the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(seconds)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT_SECONDS)
        self.loop.close()


def wait_until(predicate: Any, seconds: float = WAIT_SECONDS) -> None:
    """Poll *predicate* until it is true; fail the test when it never is."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# -- segcard's outgoing side, in-process --------------------------------------

IDENTITY = "john@john.example"


def make_app(tmp: Path, **options: Any) -> App:
    """An App on a fresh config in *tmp*; dotted options as keyword dict."""
    flat: dict[str, Any] = {
        "user": "john",
        "domain": "john.example",
        "identities": [IDENTITY],
        "data_dir": str(tmp / "data"),
        "upstream.retry_initial": 0.05,
        "upstream.retry_max": 0.2,
    }
    flat.update(options)
    return App(write_config(tmp / "config.toml", flat))


class Proxy:
    """segcard's MailService (proxy, spool, relay) running in a LoopThread."""

    def __init__(
        self, app: App, sink: Sink | None = None, limiter: LoginLimiter | None = None
    ) -> None:
        self.app = app
        if not app.config["submission.listen"]:
            app.config.values["submission.listen"] = f"{HOST}:{free_port()}"
        if sink is not None:
            app.config.values["upstream.url"] = sink.url
        self.service = MailService(app, limiter)
        self.loop = LoopThread()

    def start(self) -> Proxy:
        self.loop.run(self.service.start())
        return self

    def stop(self) -> None:
        try:
            self.loop.run(self.service.stop())
        finally:
            self.loop.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        port = self.service.port
        assert port is not None
        return port

    @property
    def spool(self) -> Spool:
        assert self.service.spool is not None
        return self.service.spool

    @property
    def relay(self) -> Relay:
        assert self.service.relay is not None
        return self.service.relay

    def credentials(self) -> tuple[str, str]:
        return read_credentials(self.app.paths.submission_credentials)

    def client(self, login: bool = True) -> smtplib.SMTP:
        """An smtplib client connected to the proxy, logged in by default."""
        client = smtplib.SMTP(HOST, self.port, timeout=WAIT_SECONDS)
        if login:
            client.login(*self.credentials())
        return client

    def send(
        self,
        raw: bytes,
        rcpts: list[str],
        mail_from: str = IDENTITY,
        options: tuple[str, ...] = (),
    ) -> None:
        """Submit *raw* as the mail client would; raises on any refusal."""
        with self.client() as client:
            client.sendmail(mail_from, rcpts, raw, mail_options=list(options))

    def settled(self) -> bool:
        """Whether no copy waits in the spool any more."""
        return not self.spool.copies([State.QUEUED])


def wire_form(raw: bytes) -> bytes:
    """*raw* as it leaves the relay when smtplib submitted it as it is.

    smtplib ends DATA with CRLF unless the message already ends so (after a
    bare LF that is a line of its own, RFC 5321 section 4.1.1.4); the relay
    then sends every line break as CRLF.
    """
    sent = raw if raw.endswith(b"\r\n") else raw + b"\r\n"
    return re.sub(rb"\r\n|\n|\r(?!\n)", b"\r\n", sent)
