"""The relay: takes spooled copies to the upstream submission server.

The submission server hands over the copies it has just spooled, bytes and
all; a feeder reads the others from the spool (retries, copies spooled by
other parts or processes, all of them at start), a batch at a time. A few
workers take them in turn; each keeps one connection to the upstream
(aiosmtplib: smtp+starttls, smtps or plain smtp, with AUTH) while it has
work, and records every outcome in the spool:

- accepted: the copy is marked sent and never goes out again. Marks are
  written a batch at a time by a task of their own, so a worker goes on to
  its next copy meanwhile; a copy stays in hand until its mark is written;
- 4xx, a dropped connection, a timeout: the copy waits for its next try,
  with a delay that doubles from ``retry_initial`` up to ``retry_max``; after
  ``give_up_after`` seconds it is bounced;
- 5xx: final; a bounce notice goes into the notices Maildir;
- some recipients refused: the accepted ones are done, the 5xx ones
  bounced, the 4xx ones stay queued on the same copy.

With no upstream configured the copies go into the outbox Maildir instead,
so that a new user sees exactly what would have been sent.

The connection to the upstream is in upstream.py, the bounce notice in
bounce.py; ``client_for`` and ``parse_upstream`` are still importable here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from segcard.address import Template
from segcard.mail import maildir
from segcard.mail.bounce import bounce_notice
from segcard.mail.headers import line_ending
from segcard.mail.spool import Copy, Spool
from segcard.mail.upstream import Lane, Upstream, describe, open_client
from segcard.mail.upstream import client_for as client_for
from segcard.mail.upstream import parse_upstream as parse_upstream

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0  # a look at the spool at least this often (segcard queue)
BATCH = 32  # copies handed to the workers at a time
BATCH_BYTES = 8 << 20  # bytes of those read along with them; the rest later
IDLE_SECONDS = 10.0  # an idle worker closes its connection after this
PURGE_SECONDS = 3600.0


@dataclass(frozen=True)
class Retry:
    """How long to wait between tries, and when to give up."""

    initial: float = 30.0
    maximum: float = 3600.0
    give_up_after: float = 5 * 86400.0

    def delay(self, attempts: int) -> float:
        """The wait after the *attempts*-th failed try (counted from 0)."""
        return float(min(self.initial * 2 ** min(attempts, 30), self.maximum))


class Relay:
    """Delivers what the spool holds; see the module docstring."""

    def __init__(
        self,
        spool: Spool,
        upstream: Upstream | None,
        outbox: Path,
        notices: Path,
        retry: Retry | None = None,
        connections: int = 2,
        notice_to: str = "",
        template: Template | None = None,
    ) -> None:
        self.spool = spool
        self.upstream = upstream
        self.outbox = outbox
        self.notices = notices
        self.retry = retry or Retry()
        self.connections = connections
        self.notice_to = notice_to
        self.template = template  # finds the tokens to mask in log lines
        self.capabilities: frozenset[str] | None = None
        self._queue: asyncio.Queue[tuple[Copy, bytes | None]] = asyncio.Queue()
        self._inflight: set[int] = set()  # queued, being sent, or being marked
        self._settled: set[int] | None = None  # left the hand while a read ran
        self._more_due = False  # the last read may have left due copies behind
        self._marks: list[int] = []  # sent, mark not yet written
        self._marking: set[int] = set()
        self._marks_waiting = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False

    # -- what the submission server asks ------------------------------------

    def supports(self, extension: str) -> bool | None:
        """Whether the upstream offers *extension*; None while unknown."""
        if self.upstream is None:
            return True
        if self.capabilities is None:
            return None
        return extension.lower() in self.capabilities

    def wake(self) -> None:
        """Look at the spool now: something was just accepted."""
        self._wake.set()

    def hand_over(self, copies: Iterable[tuple[Copy, bytes]]) -> None:
        """Take copies just spooled, with their bytes, without reading them
        back from the spool; while a batch waits already, they wait in the
        spool instead, so that a slow upstream does not pile up bytes here."""
        now = time.time()
        for copy, data in copies:
            if copy.next_try > now:
                self._wake.set()  # the feeder's timer must know of it
            elif self._queue.qsize() >= BATCH:
                self._more_due = True
            elif copy.id not in self._inflight:
                self._take(copy, data)

    # -- running ------------------------------------------------------------

    async def run(self) -> None:
        """Relay until :meth:`stop`; every queued copy is due at start."""
        await asyncio.to_thread(self._start_up)
        workers = [asyncio.create_task(self._worker()) for _ in range(self.connections)]
        helpers = [
            asyncio.create_task(self._quiet_probe()),
            asyncio.create_task(self._mark_sent()),
        ]
        try:
            await self._feed()
        finally:
            for task in (*workers, *helpers):
                task.cancel()
            await asyncio.gather(*workers, *helpers, return_exceptions=True)
            if self._marks:
                await asyncio.to_thread(self.spool.mark_all_sent, self._marks)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _start_up(self) -> None:
        self.spool.recover()
        self.spool.purge()
        waiting = self.spool.retry()
        if waiting:
            log.info("%d copies waiting in the spool", waiting)

    async def _feed(self) -> None:
        last_purge = time.monotonic()
        while not self._stopping:
            self._wake.clear()
            next_due = None
            if self._queue.qsize() < BATCH // 2:
                next_due = await self._fill()
            await self._sleep(next_due, time.time())
            if time.monotonic() - last_purge > PURGE_SECONDS:
                await asyncio.to_thread(self.spool.recover)
                await asyncio.to_thread(self.spool.purge)
                last_purge = time.monotonic()

    async def _fill(self) -> float | None:
        """Queue the due copies that are not in hand yet; when the next is due.

        A copy that enters or leaves the hand while the spool is read may
        be in the answer as it was before: it is left out, or it would be
        sent twice.
        """
        limit = BATCH - self._queue.qsize()
        self._settled = set()
        try:
            found, next_due = await asyncio.to_thread(
                self._due, time.time(), limit, frozenset(self._inflight)
            )
            skip = self._inflight | self._settled
        finally:
            self._settled = None
        for copy, data in found:
            if copy.id not in skip:
                self._take(copy, data)
        self._more_due = len(found) >= limit
        return next_due

    def _due(
        self, now: float, limit: int, exclude: frozenset[int]
    ) -> tuple[list[tuple[Copy, bytes | None]], float | None]:
        """Due copies, with the bytes of the first few; the next due time."""
        found: list[tuple[Copy, bytes | None]] = []
        budget = BATCH_BYTES
        for copy in self.spool.due(now, limit, exclude):
            data = self.spool.data(copy) if budget > 0 else None
            budget -= len(data) if data is not None else 0
            found.append((copy, data))
        return found, self.spool.next_due()

    def _take(self, copy: Copy, data: bytes | None) -> None:
        """Put *copy* in hand: queued for the next free worker."""
        self._inflight.add(copy.id)
        if self._settled is not None:
            self._settled.add(copy.id)
        self._queue.put_nowait((copy, data))

    def _release(self, copy_id: int) -> None:
        """*copy_id* is out of hand: settled, or waiting in the spool again."""
        self._inflight.discard(copy_id)
        if self._settled is not None:
            self._settled.add(copy_id)
        if self._more_due and self._queue.qsize() < BATCH // 2:
            self._wake.set()

    async def _sleep(self, next_due: float | None, now: float) -> None:
        """Wait for a wake-up, the next due copy, or the poll interval."""
        timeout = POLL_SECONDS
        if next_due is not None and next_due > now:
            timeout = min(timeout, next_due - now)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _worker(self) -> None:
        lane = Lane(self)
        try:
            # Python 3.11's wait_for can swallow a cancel that comes as the
            # queue hands over a copy, so the flag is what ends the loop.
            while not self._stopping:
                try:
                    copy, data = await asyncio.wait_for(self._queue.get(), IDLE_SECONDS)
                except TimeoutError:
                    await lane.close()
                    continue
                try:
                    await self._handle(lane, copy, data)
                finally:
                    if copy.id not in self._marking:
                        self._release(copy.id)
        finally:
            await lane.close()

    async def _mark_sent(self) -> None:
        """Write the marks of sent copies, all that wait in one transaction."""
        while True:
            await self._marks_waiting.wait()
            self._marks_waiting.clear()
            marks, self._marks = self._marks, []
            try:
                await asyncio.to_thread(self.spool.mark_all_sent, marks)
            except Exception:  # noqa: BLE001 - keep them, and try again
                log.exception("marking %d copies sent failed", len(marks))
                self._marks = marks + self._marks
                await asyncio.sleep(1.0)
                self._marks_waiting.set()
                continue
            for copy_id in marks:
                self._marking.discard(copy_id)
                self._release(copy_id)

    async def _handle(self, lane: Lane, copy: Copy, data: bytes | None) -> None:
        try:
            if data is None:
                data = await asyncio.to_thread(self.spool.data, copy)
            if self.upstream is None:
                await asyncio.to_thread(self._to_outbox, copy, data)
                return
            await lane.send(copy, data)
        except Exception as exc:  # noqa: BLE001 - one bad copy must not stop the relay
            await self._unexpected(copy, exc)

    async def _unexpected(self, copy: Copy, exc: Exception) -> None:
        """An exception nothing foresaw: one log line (its traceback only at
        debug level), then a defer for a local I/O error and a bounce for
        anything else, which a later try would only meet again."""
        text = f"{type(exc).__name__}: {describe(exc)}"
        log.error(
            "copy %d, Message-ID %s: unexpected failure: %s",
            copy.id,
            self.masked(copy, copy.message_id),
            self.masked(copy, text),
        )
        log.debug("copy %d: traceback of the failure", copy.id, exc_info=exc)
        try:
            if isinstance(exc, OSError):
                await self.deferred(copy, f"local error: {text}")
            else:
                await self.failed(copy, f"internal error: {text}")
        except Exception as again:  # noqa: BLE001 - the copy stays queued
            log.error("copy %d: outcome not recorded: %s", copy.id, describe(again))

    # -- outcomes -------------------------------------------------------------

    async def delivered(self, copy: Copy) -> None:
        """The upstream took *copy*: its mark goes to the next batch."""
        self._marking.add(copy.id)
        self._marks.append(copy.id)
        self._marks_waiting.set()
        log.info(
            "relayed copy %d, Message-ID %s, from %s to %s",
            copy.id,
            self.masked(copy, copy.message_id),
            self.masked(copy, copy.sender),
            self.masked(copy, ", ".join(copy.rcpts)),
        )

    async def deferred(
        self, copy: Copy, error: str, rcpts: tuple[str, ...] | None = None
    ) -> None:
        """A temporary failure: try again later, or bounce when it is too late."""
        if time.time() - copy.created_at >= self.retry.give_up_after:
            days = self.retry.give_up_after / 86400
            await self.failed(
                copy, f"not accepted for {days:g} days; last error: {error}", rcpts
            )
            return
        next_try = time.time() + self.retry.delay(copy.attempts)
        await asyncio.to_thread(self.spool.defer, copy.id, error, next_try, rcpts)
        self._wake.set()  # the feeder's timer must know of the next try
        log.warning(
            "copy %d, Message-ID %s, to %s deferred: %s",
            copy.id,
            self.masked(copy, copy.message_id),
            self.masked(copy, ", ".join(rcpts or copy.rcpts)),
            self.masked(copy, error),
        )

    async def failed(
        self,
        copy: Copy,
        error: str,
        rcpts: tuple[str, ...] | None = None,
        settle: bool = True,
    ) -> None:
        """A final refusal for *rcpts* (all of the copy's when None): a bounce
        notice, and with *settle* the copy is marked failed."""
        refused = rcpts or copy.rcpts
        log.warning(
            "copy %d, Message-ID %s, to %s refused for good: %s",
            copy.id,
            self.masked(copy, copy.message_id),
            self.masked(copy, ", ".join(refused)),
            self.masked(copy, error),
        )
        await asyncio.to_thread(self._bounce, copy, refused, error)
        if settle:
            await asyncio.to_thread(self.spool.fail, copy.id, error)

    def masked(self, copy: Copy, text: str | None) -> str | None:
        """*text* for a log line, every token of *copy*'s envelope starred
        out: the copy's own, and those of segment addresses among its
        recipients (the user's own, riding along)."""
        if not text:
            return text
        for token in self._tokens(copy):
            text = re.sub(re.escape(token), "*" * len(token), text, flags=re.I)
        return text

    def _tokens(self, copy: Copy) -> set[str]:
        found = {copy.token} if copy.token else set()
        if self.template is not None:
            for address in (copy.sender, *copy.rcpts):
                token = self.template.parse(address)
                if token:
                    found.add(token)
        return found

    # -- local delivery -------------------------------------------------------

    def _to_outbox(self, copy: Copy, data: bytes) -> None:
        eol = line_ending(data)
        trace = b"Return-Path: <" + copy.sender.encode() + b">" + eol
        for rcpt in copy.rcpts:
            trace += b"Delivered-To: " + rcpt.encode() + eol
        path = maildir.deliver(self.outbox, trace + data)
        self.spool.mark_sent(copy.id)
        log.info(
            "copy %d, Message-ID %s, from %s to %s written to the outbox %s",
            copy.id,
            self.masked(copy, copy.message_id),
            self.masked(copy, copy.sender),
            self.masked(copy, ", ".join(copy.rcpts)),
            path.name,
        )

    def _bounce(self, copy: Copy, rcpts: tuple[str, ...], error: str) -> None:
        notice = bounce_notice(
            self.spool.data(copy), copy, rcpts, error, self.notice_to
        )
        maildir.deliver(self.notices, notice)

    async def _quiet_probe(self) -> None:
        with contextlib.suppress(Exception):
            await self.probe()

    async def probe(self) -> frozenset[str]:
        """Connect, learn the upstream's extensions, disconnect."""
        if self.upstream is None:
            return frozenset()
        client = await open_client(self.upstream)
        try:
            self.capabilities = frozenset(client.esmtp_extensions)
        finally:
            with contextlib.suppress(Exception):
                await client.quit()
        return self.capabilities
