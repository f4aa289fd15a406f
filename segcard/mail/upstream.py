"""The upstream submission server: its URL, its clients, and the lane to it.

A Lane is one relay worker's connection: it sends a copy and reports how
it went to the relay (Outcomes), which records it in the spool.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from segcard.errors import ConfigError
from segcard.mail.spool import Copy

SCHEMES = {"smtp+starttls": 587, "smtps": 465, "smtp": 25}
TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Upstream:
    """Where copies go: the user's provider's submission server."""

    scheme: str
    host: str
    port: int
    username: str = ""
    password: str = ""
    ca_file: str = ""

    @property
    def label(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_upstream(
    url: str, username: str = "", password: str = "", ca_file: str = ""
) -> Upstream:
    """An Upstream from ``scheme://host[:port]``; user info in the URL is
    taken as the user name only."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigError(
            f"upstream.url: {url!r} is not a submission server URL",
            "use smtp+starttls://host:587, smtps://host:465 or smtp://host:port",
        )
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError as exc:
        raise ConfigError(f"upstream.url: bad port in {url!r}") from exc
    user = username or unquote(parts.username or "")
    return Upstream(parts.scheme, parts.hostname, port, user, password, ca_file)


def client_for(upstream: Upstream, timeout: float = TIMEOUT_SECONDS) -> aiosmtplib.SMTP:
    """An unconnected aiosmtplib client for *upstream*."""
    tls = upstream.scheme != "smtp"
    return aiosmtplib.SMTP(
        hostname=upstream.host,
        port=upstream.port,
        username=upstream.username or None,
        password=upstream.password or None,
        use_tls=upstream.scheme == "smtps",
        start_tls=upstream.scheme == "smtp+starttls",
        tls_context=tls_context(upstream.ca_file) if tls else None,
        timeout=timeout,
    )


@functools.lru_cache(maxsize=8)
def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """The client TLS context for the upstream, made once: loading the
    system's CA certificates takes milliseconds, and a relay that made it
    for every connection kept the event loop busy while the upstream was
    down."""
    return ssl.create_default_context(cafile=ca_file or None)


async def open_client(
    upstream: Upstream, timeout: float = TIMEOUT_SECONDS
) -> aiosmtplib.SMTP:
    """A client connected to *upstream*, its EHLO done (extensions known)."""
    client = client_for(upstream, timeout)
    await client.connect()
    if client.last_ehlo_response is None:
        await client.ehlo()
    return client


class Outcomes(Protocol):
    """What a Lane reports to: the relay, which records each outcome."""

    upstream: Upstream | None
    capabilities: frozenset[str] | None

    async def delivered(self, copy: Copy) -> None: ...

    async def deferred(
        self, copy: Copy, error: str, rcpts: tuple[str, ...] | None = None
    ) -> None: ...

    async def failed(
        self,
        copy: Copy,
        error: str,
        rcpts: tuple[str, ...] | None = None,
        settle: bool = True,
    ) -> None: ...


class Lane:
    """One worker's connection to the upstream, opened when needed."""

    def __init__(self, relay: Outcomes) -> None:
        self.relay = relay
        self.client: aiosmtplib.SMTP | None = None

    async def connect(self) -> aiosmtplib.SMTP:
        if self.client is not None and self.client.is_connected:
            return self.client
        assert self.relay.upstream is not None
        client = await open_client(self.relay.upstream)
        self.relay.capabilities = frozenset(client.esmtp_extensions)
        self.client = client
        return client

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):
                await client.quit()

    async def send(self, copy: Copy, data: bytes) -> None:
        relay = self.relay
        try:
            client = await self.connect()
            errors, _ = await client.sendmail(
                copy.sender,
                list(copy.rcpts),
                data,
                mail_options=_options(client, copy, data),
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = {r.recipient: (r.code, r.message) for r in exc.recipients}
            await self._partial(copy, codes, accepted=False)
        except aiosmtplib.SMTPAuthenticationError as exc:
            await self.close()
            await relay.deferred(copy, f"the upstream refused the login: {exc.code}")
        except aiosmtplib.SMTPResponseException as exc:
            await self._refused(copy, exc.code, exc.message)
        except aiosmtplib.SMTPNotSupported:
            await relay.failed(copy, "the upstream server does not support SMTPUTF8")
        except ValueError as exc:
            # aiosmtplib refuses an address it cannot put on a command line
            # (ValueError, or UnicodeEncodeError): no later try would differ.
            await self.close()
            await relay.failed(copy, f"the envelope cannot be sent: {describe(exc)}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            await relay.deferred(copy, f"upstream unreachable: {describe(exc)}")
        else:
            codes = {r: (e.code, e.message) for r, e in errors.items()}
            await self._partial(copy, codes, accepted=True)

    async def _refused(self, copy: Copy, code: int, message: str) -> None:
        reply = f"{code} {message}".strip()
        if 500 <= code < 600:
            await self.relay.failed(copy, f"the upstream answered {reply}")
        else:
            if code == 421:
                await self.close()
            await self.relay.deferred(copy, f"the upstream answered {reply}")

    async def _partial(
        self, copy: Copy, refused: dict[str, tuple[int, str]], accepted: bool
    ) -> None:
        """Settle a copy some (or all) of whose recipients were refused."""
        relay = self.relay
        final = tuple(r for r, (code, _) in refused.items() if 500 <= code < 600)
        later = tuple(r for r in refused if r not in final)
        if final:
            reasons = "; ".join(f"{r}: {refused[r][0]} {refused[r][1]}" for r in final)
            settle = not later and not accepted
            await relay.failed(copy, f"the upstream refused {reasons}", final, settle)
        if later:
            reasons = "; ".join(f"{r}: {refused[r][0]} {refused[r][1]}" for r in later)
            await relay.deferred(copy, f"the upstream answered {reasons}", later)
        elif accepted:
            await relay.delivered(copy)


def _options(client: aiosmtplib.SMTP, copy: Copy, data: bytes) -> list[str]:
    """MAIL FROM parameters: SMTPUTF8 when needed, BODY=8BITMIME if 8-bit."""
    options = ["SMTPUTF8"] if copy.smtputf8 else []
    if not data.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    return options


def describe(exc: BaseException) -> str:
    """A short description of a connection-level error, for logs and queue."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
