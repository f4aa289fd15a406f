"""The SMTP filter: an aiosmtpd server for the domain's MX, or behind an MTA.

Each recipient is judged at RCPT time from the envelope alone and answered
at once (the replies below); after DATA every accepted recipient is judged
again with the header (From, List-Id, References), the message is annotated
(:mod:`segcard.mail.inbound.annotate`) and delivered, and 250 goes out only
once the delivery is durable. Junk a segment keeps quietly goes to the
Maildir's ``Junk`` folder; an LMTP or SMTP next hop gets it with its header
and can file it by that.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sqlite3
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from segcard.book.verdict import Action, Judge, Mail, Reason, Verdict, record
from segcard.errors import SegcardError
from segcard.mail.inbound import is_local, read_mail, visible_note
from segcard.mail.inbound.annotate import annotate
from segcard.mail.inbound.delivery import Copy, Delivery, DeliveryError
from segcard.mail.inbound.lookup import CachedIndex
from segcard.mail.inbound.tarpit import Tarpit
from segcard.store.index import Index, now

log = logging.getLogger(__name__)

# RFC 5321 4.2 reply codes, with RFC 3463 enhanced status codes.
REPLY_RCPT_OK = "250 2.1.5 Recipient ok"
REPLY_UNKNOWN = "550 5.1.1 No such recipient here"
REPLY_BLOCKED = "550 5.7.1 This address does not accept your mail"
REPLY_NOT_LOCAL = "550 5.7.1 Relaying denied"
# RFC 5321 3.4: "551 User not local; please try <forward-path>".
REPLY_MOVED = "551 5.1.6 Recipient has moved; please try <{address}>"
# RFC 5321 4.5.3.1.8: a server must take at least 100 recipients.
REPLY_TOO_MANY = "452 4.5.3 Too many recipients"
REPLY_CHECK_FAILED = "451 4.3.0 Cannot check the recipient now; try again later"
REPLY_DROPPED = "421 4.7.0 Too many unknown recipients; closing the connection"
REPLY_DELIVERED = "250 2.0.0 Delivered"
REPLY_DEFERRED = "451 4.3.0 Delivery failed; try again later"
REPLY_REFUSED = "554 5.0.0 The message was refused on delivery"
REPLY_INTERNAL = "451 4.3.0 Internal error; try again later"

MAX_RECIPIENTS = 100
MAX_CACHED_REPLIES = 100_000

# Verdicts that do not depend on the time (grace periods do) nor on headers
# (RCPT has none): their reply can be kept until the index changes. Unknown
# tokens are left out, so that a guesser cannot fill the cache.
TIMELESS_REASONS = frozenset(
    {Reason.ROLE, Reason.OPEN, Reason.BLOCKED, Reason.KNOWN, Reason.OUTSIDER}
)
JUNK_FOLDER = "Junk"

# Rejections a token guesser earns: they count for the tarpit.
_GUESS_REPLIES = frozenset({REPLY_UNKNOWN, REPLY_NOT_LOCAL})


def rcpt_reply(verdict: Verdict) -> str | None:
    """The RCPT reply for *verdict*, or None when the recipient is accepted."""
    if verdict.action is Action.REDIRECT and verdict.address:
        return REPLY_MOVED.format(address=verdict.address)
    if verdict.action is Action.REJECT and verdict.reason is Reason.BLOCKED:
        return REPLY_BLOCKED
    if verdict.action is Action.JUNK and verdict.contact is None:
        return REPLY_UNKNOWN  # no token, or one no segment ever had
    if verdict.accepted:
        return None
    # A retired token after its grace period, or a removed contact: say no
    # more than for an unknown token, since the address was rotated because
    # it leaked.
    return REPLY_UNKNOWN


def folder_for(verdict: Verdict) -> str | None:
    """The Maildir folder for an accepted *verdict*: Junk or the Inbox."""
    return None if verdict.action in (Action.DELIVER, Action.WARN) else JUNK_FOLDER


def plan_copies(raw: bytes, verdicts: list[tuple[str, Verdict]]) -> list[Copy]:
    """One annotated copy per distinct (folder, header, note), each for the
    recipients that share them."""
    groups: dict[tuple[str | None, str, str], list[str]] = {}
    for rcpt, verdict in verdicts:
        key = (folder_for(verdict), verdict.header(), visible_note(verdict))
        groups.setdefault(key, []).append(rcpt)
    return [
        Copy(tuple(rcpts), annotate(raw, header, note), folder)
        for (folder, header, note), rcpts in groups.items()
    ]


class FilterHandler:
    """The aiosmtpd handler: verdicts at RCPT, delivery after DATA."""

    def __init__(
        self,
        judge: Judge,
        index: Index,
        delivery: Delivery,
        domains: frozenset[str],
        tarpit: Tarpit,
        clock: Callable[[], int] = now,
    ) -> None:
        self.judge = judge
        self.index = index
        self.delivery = delivery
        self.domains = domains
        self.tarpit = tarpit
        self.tarpit_loopback = False  # inbound.tarpit_loopback
        self.clock = clock
        # RCPT replies by (recipient, sender), while the index is unchanged.
        index_of_judge = judge.index
        self._cached = (
            index_of_judge if isinstance(index_of_judge, CachedIndex) else None
        )
        self._replies: dict[tuple[str, str], str | None] = {}
        self._replies_generation = -1

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return REPLY_TOO_MANY
        reply = await self._rcpt_reply(address, envelope.mail_from or "")
        if reply is None:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            return REPLY_RCPT_OK
        if reply in _GUESS_REPLIES:
            return await self._strike(session, reply)
        return reply

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        try:
            verdicts = await asyncio.to_thread(
                self._judge_all, raw, mail_from, envelope.rcpt_tos
            )
            await self.delivery.deliver(mail_from, plan_copies(raw, verdicts))
        except DeliveryError as exc:
            log.warning("delivery from peer %s failed: %s", _peer(session), exc)
            return REPLY_REFUSED if exc.permanent else REPLY_DEFERRED
        except (sqlite3.Error, SegcardError) as exc:
            log.warning("cannot judge mail from peer %s: %s", _peer(session), exc)
            return REPLY_DEFERRED
        try:
            await asyncio.to_thread(self._record, raw, mail_from, verdicts)
        except (sqlite3.Error, SegcardError) as exc:
            # Delivered already: a 4xx now would make the client send it twice.
            log.warning("delivered, but not recorded: %s", exc)
        return REPLY_DELIVERED

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's hook for an unexpected error: log it, tell the peer
        nothing but to try again later."""
        log.error("SMTP filter failed", exc_info=error)
        return REPLY_INTERNAL

    async def _rcpt_reply(self, address: str, mail_from: str) -> str | None:
        if not is_local(address, self.domains):
            return REPLY_NOT_LOCAL
        key = (address.lower(), mail_from.lower())
        try:
            # Inline, not in a thread: with a CachedIndex (lookup.py) this is
            # a dict lookup, or one local read that never waits on a writer.
            if self._replies_valid() and key in self._replies:
                return self._replies[key]
            verdict = self.judge.judge(Mail(address, mail_from), self.clock())
        except (sqlite3.Error, SegcardError) as exc:
            log.warning("cannot judge a recipient: %s", exc)
            return REPLY_CHECK_FAILED
        reply = rcpt_reply(verdict)
        if verdict.reason in TIMELESS_REASONS and self._cached is not None:
            if len(self._replies) >= MAX_CACHED_REPLIES:
                self._replies.clear()
            self._replies[key] = reply
        if log.isEnabledFor(logging.DEBUG):
            uid = verdict.contact.uid if verdict.contact else "-"
            log.debug(
                "RCPT for contact %s: %s (%s)", uid, verdict.action, verdict.reason
            )
        return reply

    def _replies_valid(self) -> bool:
        """Whether the cached RCPT replies still hold (the index unchanged)."""
        if self._cached is None:
            return False
        generation = self._cached.generation()
        if generation != self._replies_generation:
            self._replies.clear()
            self._replies_generation = generation
        return True

    async def _strike(self, session: Session, reply: str) -> str:
        """Count a bad recipient against the client; slow it down or drop it.

        Behind an MTA every client is that MTA (on loopback by default), and
        slowing it would slow every sender: such peers are exempt, and the
        MTA is the place to limit its own clients.
        """
        peer = _peer(session)
        if _is_loopback_peer(peer) and not self.tarpit_loopback:
            return reply
        count = self.tarpit.strike(peer)
        if self.tarpit.drops(count):
            log.warning("dropping peer %s after %d bad recipients", peer, count)
            session.segcard_drop = True  # type: ignore[attr-defined]
            return REPLY_DROPPED
        delay = self.tarpit.delay_for(count)
        if delay:
            log.info(
                "tarpit: peer %s waits %.1fs (bad recipient %d)", peer, delay, count
            )
            await asyncio.sleep(delay)
        return reply

    def _judge_all(
        self, raw: bytes, mail_from: str, rcpt_tos: list[str]
    ) -> list[tuple[str, Verdict]]:
        at = self.clock()
        verdicts = []
        for rcpt in rcpt_tos:
            verdict = self.judge.judge(read_mail(raw, rcpt, mail_from), at)
            if not verdict.accepted:
                # Accepted at RCPT, refused now (blocked in between, or a
                # grace period that just ended): never lose it, junk it.
                verdict = _as_junk(verdict)
            verdicts.append((rcpt, verdict))
        return verdicts

    def _record(
        self, raw: bytes, mail_from: str, verdicts: list[tuple[str, Verdict]]
    ) -> None:
        at = self.clock()
        for rcpt, verdict in verdicts:
            mail = read_mail(raw, rcpt, mail_from)
            record(self.index, verdict, mail, at)
            uid = verdict.contact.uid if verdict.contact else "-"
            log.info(
                "message %s for contact %s: %s (%s)",
                mail.message_id or "(no Message-ID)",
                uid,
                verdict.action,
                verdict.reason,
            )


def _as_junk(verdict: Verdict) -> Verdict:
    return Verdict(
        Action.JUNK,
        verdict.reason,
        contact=verdict.contact,
        token=verdict.token,
        address=verdict.address,
        sender=verdict.sender,
    )


def _is_loopback_peer(peer: str) -> bool:
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def _peer(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class FilterSMTP(SMTP):
    """aiosmtpd's SMTP, closing the connection when the tarpit says so."""

    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: N802
        await super().smtp_RCPT(arg)
        if getattr(self.session, "segcard_drop", False) and self.transport:
            self.transport.close()


class SmtpFilter:
    """The SMTP filter as a service of the daemon's event loop.

    TODO: no STARTTLS yet, so a public MX receives in clear text. It needs
    certificate and key options under ``inbound.`` and an SSL context passed
    to aiosmtpd (``tls_context``), as the submission proxy does.
    """

    def __init__(self, handler: FilterHandler, host: str, port: int) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self, **smtp_options: Any) -> None:
        """Listen on host:port (port 0 picks a free one, read it back)."""
        loop = asyncio.get_running_loop()
        hostname = await asyncio.to_thread(socket.getfqdn)
        options = {
            "enable_SMTPUTF8": True,
            "hostname": hostname,
            "ident": "segcard",  # not the library and its version
            **smtp_options,
        }
        self._server = await loop.create_server(
            lambda: FilterSMTP(self.handler, loop=loop, **options),
            self.host,
            self.port,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("SMTP filter listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
