"""``segcard check``: will the upstream take mail from a segment address?

The most common way this kind of set-up fails is an upstream that only lets
an account send from the addresses it knows. The check connects, sets up
TLS, logs in, says ``MAIL FROM:<segment address>`` and then RSET: nothing is
ever sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field, replace

import aiosmtplib

from segcard.address import make_token
from segcard.app import App
from segcard.mail.upstream import Upstream, client_for, parse_upstream

TIMEOUT_SECONDS = 30.0


@dataclass
class CheckResult:
    """What the check found, as lines for a person, and the verdict."""

    ok: bool = False
    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)


def check(app: App) -> CheckResult:
    """Check the upstream of *app*'s config with one of its segment addresses."""
    config = app.config
    if not config["upstream.url"]:
        result = CheckResult(ok=True)
        result.say("no upstream configured (upstream.url is empty):")
        result.say(
            f"copies are written to the outbox Maildir {app.paths.outbox_maildir}"
        )
        return result
    upstream = parse_upstream(
        config["upstream.url"],
        config["upstream.username"],
        config.secret("upstream"),
        config["upstream.ca_file"],
    )
    return asyncio.run(check_upstream(upstream, sender_for_check(app)))


def sender_for_check(app: App) -> str:
    """A segment address to try: an existing one, else one made up for it."""
    for contact in app.index.contacts():
        if contact.segment is not None:
            return app.book.address_of(contact.segment)
    return app.config.address("check", make_token())


async def check_upstream(
    upstream: Upstream, sender: str, timeout: float = TIMEOUT_SECONDS
) -> CheckResult:
    """Connect, log in, try MAIL FROM with *sender*, RSET, QUIT."""
    result = CheckResult()
    client = client_for(replace(upstream, username="", password=""), timeout)
    try:
        await _steps(client, upstream, sender, result)
    except aiosmtplib.SMTPException as exc:
        result.say(f"failed: {_first_line(exc)}")
    except OSError as exc:
        result.say(f"cannot connect to {upstream.label}: {exc.strerror or exc}")
    finally:
        if client.is_connected:
            with contextlib.suppress(Exception):
                await client.quit()
    return result


async def _steps(
    client: aiosmtplib.SMTP, upstream: Upstream, sender: str, result: CheckResult
) -> None:
    await client.connect()
    if client.last_ehlo_response is None:
        await client.ehlo()
    tls = {"smtps": "implicit TLS", "smtp+starttls": "STARTTLS", "smtp": "no TLS"}
    result.say(f"connected to {upstream.label} ({tls[upstream.scheme]})")
    extensions = sorted(e.upper() for e in client.esmtp_extensions)
    result.say("extensions: " + (", ".join(extensions) or "none"))
    if upstream.username:
        await client.login(upstream.username, upstream.password)
        result.say(f"logged in as {upstream.username}")
    else:
        result.say("no upstream.username: not logging in")
    try:
        reply = await client.mail(sender)
    except aiosmtplib.SMTPSenderRefused as exc:
        await client.rset()
        result.say(f"the upstream REFUSES {sender} as sender: {exc.code} {exc.message}")
        result.say(
            "mail from segment addresses will bounce; allow them at the provider "
            "(an alias or catch-all for the domain, or a 'send as' permission)"
        )
        return
    await client.rset()
    result.ok = True
    result.say(f"the upstream accepts {sender} as sender ({reply.code})")


def _first_line(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    text = (str(getattr(exc, "message", "")) or str(exc)).splitlines()
    return f"{code} {text[0] if text else ''}".strip() if code else (text or [""])[0]
