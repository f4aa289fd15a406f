"""The submission proxy: the mail client sends through it (RFC 6409).

An aiosmtpd server on loopback. AUTH PLAIN or LOGIN is required before
MAIL FROM (RFC 4954), the password compared in constant time, and a peer
that keeps guessing is refused for a while. A message is answered 250 only
once it and its plan of copies are fsynced in the spool; the relay takes it
from there.

Where aiosmtpd's own behaviour does not fit, the server class replaces it:

- DATA is read by our own loop, so a line longer than 998 octets or a bare
  LF never loses the message (aiosmtpd refuses lines over 1,000 octets and
  joins bare-LF lines into one). The end of data is only CRLF "." CRLF, as
  RFC 5321 section 4.1.1.4 says; a leading "." is removed after any line
  break (section 4.5.2), which is what clients that send bare LF stuff.
- BDAT (RFC 3030 CHUNKING, which we do not offer) is refused after its
  chunk is read and thrown away, so the chunk is never taken for commands.
- The address of MAIL FROM and RCPT TO is read by the same standard-library
  parser as aiosmtpd's, without the class aiosmtpd defines anew on every
  command (a tenth of a millisecond each).

Every reply is one of the constants below; the text of an exception never
reaches the peer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections import defaultdict, deque
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from segcard.app import App
from segcard.errors import SegcardError
from segcard.mail.envelope import recipient_refusal, reverse_path, sender_refusal
from segcard.mail.plan import LeakRefused, Planner, Prepared
from segcard.mail.relay import Relay
from segcard.mail.rewrite import RewriteRefused
from segcard.mail.spool import Copy, Spool, Warning

log = logging.getLogger(__name__)

REPLY_OK = "250 2.0.0 OK"
REPLY_QUEUED = "250 2.0.0 Queued as {id}"
REPLY_NEED_RCPT = "503 5.5.1 Need RCPT first"
REPLY_DATA_SYNTAX = "501 5.5.4 Syntax: DATA"
REPLY_GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
REPLY_TOO_BIG = "552 5.3.4 Message too big"
REPLY_BDAT = "502 5.5.1 BDAT (CHUNKING) is not supported; use DATA"
REPLY_BDAT_SYNTAX = "501 5.5.4 Syntax: BDAT chunk-size [LAST]; closing"
REPLY_BDAT_TOO_BIG = "552 5.3.4 BDAT chunk larger than the message size limit; closing"
REPLY_TOO_MANY_LOGINS = "454 4.7.0 Too many failed logins; try again later"
REPLY_NEEDS_SMTPUTF8 = "553 5.6.7 A non-ASCII address needs MAIL FROM with SMTPUTF8"
REPLY_UPSTREAM_NO_UTF8 = "555 5.6.7 The upstream server does not accept SMTPUTF8 mail"
REPLY_TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
REPLY_LEAK = "550 5.7.1 Your own address appears in {places}; not sent"
REPLY_NOT_ACCEPTED = "451 4.3.0 Local error; the message was not accepted"
REPLY_INTERNAL = "500 5.3.0 Internal error"

MAX_RECIPIENTS = 1000
LOGIN_FAILURES = 5  # wrong passwords from one peer before it is refused
LOGIN_WINDOW = 300.0  # seconds a wrong password counts against its peer
DISCARD_CHUNK = 65536


class LoginLimiter:
    """Counts wrong passwords per peer address over a sliding window."""

    def __init__(
        self, max_failures: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def blocked(self, peer: str) -> bool:
        """Whether *peer* had too many wrong passwords lately."""
        return len(self._recent(peer)) >= self.max_failures

    def failed(self, peer: str) -> None:
        self._recent(peer).append(time.monotonic())

    def _recent(self, peer: str) -> deque[float]:
        found = self._failures[peer]
        cutoff = time.monotonic() - self.window
        while found and found[0] < cutoff:
            found.popleft()
        return found


class SubmissionHandler:
    """The aiosmtpd handler: AUTH, envelope checks, and DATA into the spool."""

    def __init__(
        self,
        app: App,
        spool: Spool,
        relay: Relay,
        credentials: tuple[str, str],
        limiter: LoginLimiter | None = None,
    ) -> None:
        self.app = app
        self.spool = spool
        self.relay = relay
        self.planner = Planner(app.book)
        self.refuse_leaks = bool(app.config["submission.refuse_leaks"])
        self._user = credentials[0].encode("utf-8")
        self._password = credentials[1].encode("utf-8")
        self.limiter = limiter or LoginLimiter()

    # -- AUTH ---------------------------------------------------------------

    def authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        """aiosmtpd's authenticator: compare in constant time, count failures."""
        peer = _peer(session)
        if isinstance(auth_data, LoginPassword):
            user_ok = hmac.compare_digest(auth_data.login, self._user)
            password_ok = hmac.compare_digest(auth_data.password, self._password)
            if user_ok & password_ok:
                log.info("%s logged in with %s", peer, mechanism)
                return AuthResult(success=True, auth_data=None)
        self.limiter.failed(peer)
        log.warning("%s: wrong user name or password (%s)", peer, mechanism)
        return AuthResult(success=False, handled=False)

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        if self.limiter.blocked(_peer(session)):
            log.warning(
                "%s: login refused after too many wrong passwords", _peer(session)
            )
            return REPLY_TOO_MANY_LOGINS
        return MISSING

    # -- envelope -------------------------------------------------------------

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> Any:
        refusal = sender_refusal(address)
        if refusal is not None:
            return self._refuse(session, refusal)
        utf8 = "SMTPUTF8" in (o.upper() for o in options)
        if not address.isascii() and not utf8:
            return self._refuse(session, REPLY_NEEDS_SMTPUTF8)
        if (utf8 or not address.isascii()) and self.relay.supports("smtputf8") is False:
            return self._refuse(session, REPLY_UPSTREAM_NO_UTF8)
        return MISSING

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> Any:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return self._refuse(session, REPLY_TOO_MANY_RCPTS)
        refusal = recipient_refusal(address)
        if refusal is not None:
            return self._refuse(session, refusal)
        if not address.isascii():
            if not envelope.smtp_utf8:
                return self._refuse(session, REPLY_NEEDS_SMTPUTF8)
            if self.relay.supports("smtputf8") is False:
                return self._refuse(session, REPLY_UPSTREAM_NO_UTF8)
        return MISSING

    @staticmethod
    def _refuse(session: Session, reply: str) -> str:
        log.warning("%s: %s", _peer(session), reply)
        return reply

    # -- DATA -----------------------------------------------------------------

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        peer = _peer(session)
        raw = envelope.original_content
        assert isinstance(raw, bytes) and envelope.mail_from is not None
        try:
            spool_id, copies = await asyncio.to_thread(
                self._accept, raw, reverse_path(envelope.mail_from), envelope, peer
            )
        except RewriteRefused as exc:
            log.warning("%s: message refused: %s", peer, exc)
            return exc.reply
        except LeakRefused as exc:
            log.warning("%s: message refused: %s", peer, exc)
            return leak_reply(exc.places)
        except (SegcardError, OSError) as exc:
            log.error("%s: message not accepted: %s", peer, exc)
            return REPLY_NOT_ACCEPTED
        except Exception:  # noqa: BLE001 - the client must hear 4xx, and retry
            log.exception("%s: message not accepted", peer)
            return REPLY_NOT_ACCEPTED
        self.relay.hand_over(copies)
        return REPLY_QUEUED.format(id=spool_id)

    def _accept(
        self, raw: bytes, mail_from: str, envelope: Envelope, peer: str
    ) -> tuple[str, list[tuple[Copy, bytes]]]:
        """Plan and spool the copies (in a worker thread): the spool id, and
        each copy as spooled with its bytes."""
        prepared = self.planner.prepare(
            raw, mail_from, list(envelope.rcpt_tos), self.refuse_leaks
        )
        return self._spool(raw, prepared, envelope.smtp_utf8, peer)

    def _spool(
        self, raw: bytes, prepared: Prepared, smtputf8: bool, peer: str
    ) -> tuple[str, list[tuple[Copy, bytes]]]:
        """Spool the copies; then note leaks and every copy's Message-ID."""
        warning = None
        if prepared.leaks:
            warning = Warning(0, 0.0, prepared.message_id, prepared.leaks)
        spool_id, spooled = self.spool.accept_copies(
            raw, prepared.copies, smtputf8, peer, prepared.body_start, warning
        )
        log.info(
            "%s: accepted Message-ID %s as %s, %d copies%s",
            peer,
            prepared.message_id,
            spool_id,
            len(prepared.copies),
            "" if prepared.rewritten else " (not rewritten)",
        )
        if prepared.leaks:
            log.warning(
                "Message-ID %s: an identity address appears in %s",
                prepared.message_id,
                ", ".join(prepared.leaks),
            )
        for copy in prepared.copies:
            if not (copy.uid and copy.token and copy.message_id):
                continue
            for rcpt in copy.rcpts:
                self.app.index.record_message(
                    copy.message_id, copy.uid, copy.token, rcpt.lower(), "out"
                )
        pairs = zip(spooled, prepared.copies, strict=True)
        return spool_id, [(copy, new.data) for copy, new in pairs]

    async def handle_exception(self, error: Exception) -> str:
        log.error("submission session failed", exc_info=error)
        return REPLY_INTERNAL


def leak_reply(places: list[str]) -> str:
    """The 5xx reply naming where an identity was found, on one ASCII line."""
    text = "; ".join(places)
    text = "".join(c if c.isascii() and c.isprintable() else "?" for c in text)
    return REPLY_LEAK.format(places=text[:400])


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


class SubmissionSMTP(SMTP):
    """aiosmtpd's SMTP with our own DATA reader and a clean BDAT refusal."""

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(REPLY_NEED_RCPT)
            return
        if arg:
            await self.push(REPLY_DATA_SYNTAX)
            return
        await self.push(REPLY_GO_AHEAD)
        data = await read_data(self._reader, self.data_size_limit)
        if data is None:
            self._set_post_data_state()
            await self.push(REPLY_TOO_BIG)
            return
        self.envelope.content = self.envelope.original_content = data
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(REPLY_OK if status is MISSING else status)

    async def smtp_BDAT(self, arg: str | None) -> None:
        words = (arg or "").split()
        valid = len(words) in (1, 2) and words[0].isdigit()
        if not valid or (len(words) == 2 and words[1].upper() != "LAST"):
            await self._push_and_close(REPLY_BDAT_SYNTAX)
            return
        size = int(words[0])
        if self.data_size_limit and size > self.data_size_limit:
            await self._push_and_close(REPLY_BDAT_TOO_BIG)
            return
        while size:
            size -= len(await self._reader.readexactly(min(size, DISCARD_CHUNK)))
        self._set_rset_state()
        log.warning("%s: BDAT refused", _peer(self.session) if self.session else "?")
        await self.push(REPLY_BDAT)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """(address, the rest of *arg*); (None, None) when it does not parse
        or its local part is over the limit; ("", "") for an empty *arg*."""
        if not arg:
            return "", ""
        parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
        try:
            token, rest = parse(arg)
        except HeaderParseError:
            return None, None
        address = str(token.addr_spec)
        local = address.rpartition("@")[0]
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return address, rest

    async def _push_and_close(self, reply: str) -> None:
        await self.push(reply)
        if self.transport is not None:
            self.transport.close()


async def read_data(reader: asyncio.StreamReader, limit: int | None) -> bytes | None:
    """The message after DATA, dot-unstuffed; None when it exceeds *limit*.

    Reads to CRLF "." CRLF whatever the lines in between look like; the
    whole message is read even when it is too big, so that the session stays
    in step with the client. It reads up to each ".\r\n" (or as much as the
    reader holds), not line by line: a line ending in a dot is rare.
    """
    parts: list[bytes] = []
    size = 0  # octets of the message, unstuffed
    before = b"\r\n"  # the two octets before the next part
    while True:
        try:
            part = await reader.readuntil(b".\r\n")
        except asyncio.LimitOverrunError as exc:
            part = await reader.read(exc.consumed)
        ended = part.endswith(b".\r\n") and (before + part)[-5:-3] == b"\r\n"
        content = part[:-3] if ended else part
        # A "." that starts a line was doubled by the client (section 4.5.2).
        at_start = before.endswith(b"\n") and content.startswith(b".")
        size += len(content) - content.count(b"\n.") - int(at_start)
        if not limit or size <= limit:
            parts.append(content)
        if ended:
            break
        before = (before + part)[-2:]
    if limit and size > limit:
        return None
    return _LINE_DOT.sub(b"", b"".join(parts))


_LINE_DOT = re.compile(rb"^\.", re.MULTILINE)
