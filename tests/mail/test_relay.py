"""The relay against a real aiosmtpd upstream, and ``segcard check``."""

from __future__ import annotations

import asyncio
import email
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest

from segcard.mail.check import check_upstream
from segcard.mail.relay import BATCH, Relay, Retry
from segcard.mail.spool import NewCopy, Spool, State
from segcard.mail.upstream import Upstream, client_for, parse_upstream
from tests.mail.smtp_sink import HOST, LoopThread, Sink, free_port, wait_until

SENDER = "john-tom-abcdefghj@john.example"
RAW = (
    f"From: John <{SENDER}>\r\nTo: tom@example.org\r\nSubject: hello\r\n"
    "Message-ID: <m1@john.example>\r\n\r\nthe body\r\n"
).encode()
FAST = Retry(initial=0.05, maximum=0.2, give_up_after=3600)


class Running:
    """A Relay over a spool in tmp, running in its own loop thread."""

    def __init__(
        self,
        tmp: Path,
        upstream: Upstream | None,
        retry: Retry = FAST,
        connections: int = 2,
    ):
        self.tmp = tmp
        self.spool = Spool(tmp / "spool")
        self.loop = LoopThread()
        self.relay = Relay(
            self.spool, upstream, tmp / "outbox", tmp / "notices", retry, connections
        )
        self.task = asyncio.run_coroutine_threadsafe(self.relay.run(), self.loop.loop)

    def spool_copy(self, *rcpts: str, data: bytes = RAW) -> int:
        rcpts = rcpts or ("tom@example.org",)
        copy = NewCopy(SENDER, rcpts, data, "uid-1", "abcdefghj", "m1@john.example")
        self.spool.accept(data, [copy])
        self.loop.loop.call_soon_threadsafe(self.relay.wake)
        return self.spool.copies()[-1].id

    def state(self, copy_id: int) -> State:
        copy = self.spool.get(copy_id)
        assert copy is not None
        return copy.state

    def notices(self) -> list[bytes]:
        return [
            p.read_bytes() for p in sorted((self.tmp / "notices" / "new").glob("*"))
        ]

    def close(self) -> None:
        self.loop.loop.call_soon_threadsafe(self.relay.stop)
        self.task.result(30)
        self.loop.close()
        self.spool.close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as found:
        yield found


@pytest.fixture
def relay(tmp_path: Path, sink: Sink) -> Iterator[Running]:
    running = Running(tmp_path, parse_upstream(sink.url))
    yield running
    running.close()


def test_copy_reaches_upstream_with_its_envelope(relay: Running, sink: Sink) -> None:
    """A spooled copy is relayed once, from its segment address, and marked sent."""
    copy_id = relay.spool_copy("tom@example.org")

    (got,) = sink.wait_for(1)
    wait_until(lambda: relay.state(copy_id) == State.SENT)

    assert (got.mail_from, got.rcpts, got.data) == (SENDER, ("tom@example.org",), RAW)


def test_copy_settled_while_the_spool_is_read_is_not_sent_again(
    tmp_path: Path, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy sent while a slow read of the spool is on its way is not queued
    again from that read's stale answer."""
    running = Running(tmp_path, parse_upstream(sink.url), connections=1)
    read_due = running.spool.due
    reading = [0]  # reads of the spool under way
    lock = threading.Lock()

    def slow_due(*args: object) -> list[object]:
        with lock:
            reading[0] += 1
        try:
            found = read_due(*args)  # type: ignore[arg-type]
            time.sleep(0.3)  # the fault: the answer comes after the copy was sent
            return found  # type: ignore[return-value]
        finally:
            with lock:
                reading[0] -= 1

    monkeypatch.setattr(running.spool, "due", slow_due)
    try:
        first = NewCopy(SENDER, ("a@example.org",), RAW)
        second = NewCopy(SENDER, ("b@example.org",), RAW)
        running.spool.accept(RAW, [first, second])
        running.loop.loop.call_soon_threadsafe(running.relay.wake)
        wait_until(lambda: running.spool.counts()[State.SENT] == 2)
        wait_until(lambda: reading[0] == 0)
        last = running.spool_copy("c@example.org")
        wait_until(lambda: running.state(last) == State.SENT)
    finally:
        running.close()

    rcpts = sorted(got.rcpts for got in sink.received)
    assert rcpts == [("a@example.org",), ("b@example.org",), ("c@example.org",)]


def test_sent_copy_whose_mark_failed_is_marked_by_stop_and_not_resent(
    tmp_path: Path, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sent copy stays in hand while its mark cannot be written; the relay
    writes it before it stops, so a restart does not send it again."""
    running = Running(tmp_path, parse_upstream(sink.url))
    write = running.spool.mark_all_sent
    failed: list[list[int]] = []

    def failing_once(copy_ids: list[int]) -> None:
        if not failed:
            failed.append(list(copy_ids))
            raise sqlite3.OperationalError("disk I/O error")  # the fault
        write(copy_ids)

    monkeypatch.setattr(running.spool, "mark_all_sent", failing_once)
    try:
        copy_id = running.spool_copy()
        sink.wait_for(1)
        wait_until(lambda: bool(failed))
        running.loop.loop.call_soon_threadsafe(running.relay.wake)
    finally:
        running.close()
    reopened = Spool(tmp_path / "spool")
    state = reopened.get(copy_id).state  # type: ignore[union-attr]
    reopened.close()

    assert failed == [[copy_id]]
    assert state == State.SENT
    assert len(sink.received) == 1


def test_copies_handed_over_past_a_batch_wait_in_the_spool_and_go_once(
    relay: Running, sink: Sink
) -> None:
    """Copies handed over beyond one batch are left to the spool, then sent;
    each copy arrives exactly once."""
    rcpts = [f"r{n}@example.org" for n in range(BATCH + 8)]
    new = [NewCopy(SENDER, (rcpt,), RAW) for rcpt in rcpts]
    _, spooled = relay.spool.accept_copies(RAW, new)
    handed = [(copy, RAW) for copy in spooled]

    relay.loop.loop.call_soon_threadsafe(relay.relay.hand_over, handed)
    got = sink.wait_for(len(rcpts))
    wait_until(lambda: relay.spool.counts()[State.SENT] == len(rcpts))

    assert sorted(g.rcpts[0] for g in got) == sorted(rcpts)
    assert len(sink.received) == len(rcpts)


def test_upstream_down_for_a_while_gets_the_copy_after(tmp_path: Path) -> None:
    """Connection failures are retried; the copy arrives once the upstream is up."""
    sink = Sink()
    running = Running(tmp_path, parse_upstream(sink.url))
    try:
        copy_id = running.spool_copy()
        wait_until(lambda: running.spool.get(copy_id).attempts >= 2)  # type: ignore[union-attr]
        waiting = running.spool.get(copy_id)

        with sink:
            got = sink.wait_for(1)
            wait_until(lambda: running.state(copy_id) == State.SENT)
    finally:
        running.close()

    assert len(got) == 1
    assert waiting is not None and "unreachable" in (waiting.last_error or "")


@pytest.mark.parametrize("reply", ["451 4.3.0 Try again later", "421 4.7.0 Closing"])
def test_temporary_failure_is_retried_until_accepted(
    relay: Running, sink: Sink, reply: str
) -> None:
    """A 4xx at DATA is retried with back-off; the copy then arrives once."""
    sink.fail(reply, "DATA", times=2)

    copy_id = relay.spool_copy()
    wait_until(lambda: relay.state(copy_id) == State.SENT)

    assert len(sink.received) == 1
    assert sink.data_attempts == 3
    assert relay.spool.get(copy_id).attempts == 2  # type: ignore[union-attr]


def test_permanent_failure_bounces_and_is_not_retried(
    relay: Running, sink: Sink
) -> None:
    """A 5xx is final: a bounce notice is delivered and nothing is retried."""
    sink.fail("550 5.7.1 Sender address rejected", "DATA")

    copy_id = relay.spool_copy("tom@example.org")
    wait_until(lambda: relay.state(copy_id) == State.FAILED)
    relay.spool.retry()
    relay.loop.loop.call_soon_threadsafe(relay.relay.wake)
    (notice,) = relay.notices()

    assert sink.data_attempts == 1
    assert sink.received == []
    parsed = email.message_from_bytes(notice, policy=policy.default)
    assert parsed["Subject"] == "Undelivered: hello"
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "550 5.7.1 Sender address rejected" in text
    assert "tom@example.org" in text


def test_address_the_smtp_client_refuses_bounces_in_one_log_line(
    relay: Running, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy whose address aiosmtplib will not send (the null path as a
    recipient) fails for good with a bounce, logged without a traceback."""
    caplog.set_level(logging.INFO)

    copy_id = relay.spool_copy("<>")
    wait_until(lambda: relay.state(copy_id) == State.FAILED)
    (notice,) = relay.notices()

    assert sink.data_attempts == 0
    assert b"the envelope cannot be sent" in notice
    assert not [r for r in caplog.records if r.exc_info or r.exc_text]


@pytest.mark.parametrize(
    ("fault", "state"),
    [(RuntimeError("bug"), State.FAILED), (OSError(28, "full"), State.QUEUED)],
)
def test_unexpected_failure_is_one_log_line_then_a_bounce_or_a_defer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: Exception,
    state: State,
) -> None:
    """An exception nobody foresaw is logged as one line; a local I/O error
    defers the copy, anything else bounces it instead of retrying for days."""
    caplog.set_level(logging.INFO)

    def broken(*args: object) -> None:
        raise fault

    monkeypatch.setattr(Relay, "_to_outbox", broken)  # the fault
    running = Running(tmp_path, None)
    try:
        copy_id = running.spool_copy()
        wait_until(lambda: _tried(running.spool, copy_id))
        got = running.state(copy_id)
        notices = running.notices()
    finally:
        running.close()

    assert got == state
    assert len(notices) == (state == State.FAILED)
    failures = [r for r in caplog.records if "unexpected failure" in r.getMessage()]
    assert len(failures) >= 1
    assert not [r for r in caplog.records if r.exc_info or r.exc_text]


def _tried(spool: Spool, copy_id: int) -> bool:
    copy = spool.get(copy_id)
    return copy is not None and (copy.attempts > 0 or copy.state != State.QUEUED)


def test_refused_recipient_bounces_while_the_others_get_the_copy(
    relay: Running, sink: Sink
) -> None:
    """One recipient refused with 5xx at RCPT: the rest are served, it bounces."""
    sink.fail("550 5.1.1 No such user", "RCPT", only_rcpt="bad@example.org")

    copy_id = relay.spool_copy("good@example.org", "bad@example.org")
    wait_until(lambda: relay.state(copy_id) == State.SENT)

    assert [r.rcpts for r in sink.received] == [("good@example.org",)]
    (notice,) = relay.notices()
    assert b"bad@example.org" in notice
    assert b"good@example.org" not in notice.split(b"Recipients:")[1].split(b"\n")[0]


def test_recipient_deferred_alone_is_retried_alone(relay: Running, sink: Sink) -> None:
    """A 4xx for one recipient keeps only that recipient queued."""
    sink.fail("451 4.2.0 Mailbox busy", "RCPT", times=1, only_rcpt="b@example.org")

    copy_id = relay.spool_copy("a@example.org", "b@example.org")
    got = sink.wait_for(2)
    wait_until(lambda: relay.state(copy_id) == State.SENT)

    assert [r.rcpts for r in got] == [("a@example.org",), ("b@example.org",)]


def test_refusal_after_give_up_time_bounces(tmp_path: Path, sink: Sink) -> None:
    """A copy still refused after give_up_after is bounced, not retried."""
    sink.fail("451 4.3.0 Later", "DATA")
    running = Running(tmp_path, parse_upstream(sink.url), Retry(0.05, 0.1, 0.0))
    try:
        copy_id = running.spool_copy()
        wait_until(lambda: running.state(copy_id) == State.FAILED)
        notices = running.notices()
    finally:
        running.close()

    assert len(notices) == 1
    assert b"not accepted for" in notices[0]


def test_without_upstream_copies_go_to_the_outbox_maildir(tmp_path: Path) -> None:
    """No upstream: the copy is written to the outbox with its envelope on top."""
    running = Running(tmp_path, None)
    try:
        copy_id = running.spool_copy("tom@example.org")
        wait_until(lambda: running.state(copy_id) == State.SENT)
    finally:
        running.close()

    (path,) = (tmp_path / "outbox" / "new").iterdir()
    assert path.read_bytes() == (
        f"Return-Path: <{SENDER}>\r\nDelivered-To: tom@example.org\r\n".encode() + RAW
    )


def test_utf8_copy_to_upstream_without_smtputf8_bounces(tmp_path: Path) -> None:
    """A copy that needs SMTPUTF8 bounces at an upstream that lacks it."""
    with Sink(smtputf8=False) as sink:
        running = Running(tmp_path, parse_upstream(sink.url))
        try:
            copy_id = running.spool_copy("jörg@example.org")
            wait_until(lambda: running.state(copy_id) == State.FAILED)
            notices = running.notices()
        finally:
            running.close()

    assert sink.received == []
    assert b"SMTPUTF8" in notices[0]


def test_utf8_copy_is_relayed_with_smtputf8(relay: Running, sink: Sink) -> None:
    """A UTF-8 recipient goes out with MAIL FROM ... SMTPUTF8."""
    relay.spool_copy("jörg@example.org")

    (got,) = sink.wait_for(1)

    assert got.rcpts == ("jörg@example.org",)
    assert "SMTPUTF8" in got.mail_options


def test_8bit_body_is_declared_8bitmime(relay: Running, sink: Sink) -> None:
    """A body with 8-bit bytes goes out with BODY=8BITMIME."""
    data = RAW.replace(b"the body", "grüße".encode())

    relay.spool_copy(data=data)
    (got,) = sink.wait_for(1)

    assert "BODY=8BITMIME" in got.mail_options
    assert got.data == data


def test_relay_logs_in_to_the_upstream(tmp_path: Path) -> None:
    """With a user name the relay authenticates before sending."""
    with Sink(credentials=("john", "up-secret")) as sink:
        upstream = parse_upstream(sink.url, "john", "up-secret")
        running = Running(tmp_path, upstream)
        try:
            running.spool_copy()
            sink.wait_for(1)
        finally:
            running.close()

    assert sink.logins[:1] == ["john"]


def test_wrong_upstream_password_defers_instead_of_bouncing(tmp_path: Path) -> None:
    """A refused login is a set-up problem: the copy waits, nothing bounces."""
    with Sink(credentials=("john", "up-secret")) as sink:
        running = Running(tmp_path, parse_upstream(sink.url, "john", "wrong"))
        try:
            copy_id = running.spool_copy()
            wait_until(lambda: running.spool.get(copy_id).attempts >= 1)  # type: ignore[union-attr]
            state = running.state(copy_id)
            notices = running.notices()
        finally:
            running.close()

    assert state == State.QUEUED
    assert notices == []


def test_parse_upstream_knows_the_three_schemes() -> None:
    """Default ports follow the scheme; anything else is a config error."""
    assert parse_upstream("smtp+starttls://mail.example").port == 587
    assert parse_upstream("smtps://mail.example").port == 465
    assert parse_upstream("smtp://127.0.0.1:2525").port == 2525
    with pytest.raises(Exception, match="not a submission server URL"):
        parse_upstream("http://mail.example")


def test_tls_context_is_made_once_and_not_for_plain_smtp() -> None:
    """Every connection to a TLS upstream shares one context; plain SMTP
    (loopback only) makes none."""
    first = client_for(parse_upstream("smtp+starttls://mail.example"))
    second = client_for(parse_upstream("smtps://mail.example"))
    plain = client_for(parse_upstream("smtp://127.0.0.1:2525"))

    assert first.tls_context is not None
    assert first.tls_context is second.tls_context
    assert plain.tls_context is None


# -- segcard check -------------------------------------------------------------


def test_check_says_the_upstream_accepts_the_segment_address(sink: Sink) -> None:
    """check logs in, tries MAIL FROM and RSET, and sends nothing."""
    upstream = parse_upstream(sink.url)

    result = asyncio.run(check_upstream(upstream, SENDER))

    assert result.ok
    assert any(f"accepts {SENDER}" in line for line in result.lines)
    assert sink.received == [] and sink.data_attempts == 0


def test_check_says_clearly_when_the_sender_is_refused(sink: Sink) -> None:
    """An upstream refusing the segment address as sender fails the check."""
    sink.fail("553 5.7.1 Sender address not owned by user", "MAIL")

    result = asyncio.run(check_upstream(parse_upstream(sink.url), SENDER))

    assert not result.ok
    assert any("REFUSES" in line and "553" in line for line in result.lines)


def test_check_reports_an_unreachable_upstream() -> None:
    """Nothing listening: the check fails and says it could not connect."""
    upstream = parse_upstream(f"smtp://{HOST}:{free_port()}")

    result = asyncio.run(check_upstream(upstream, SENDER, timeout=5))

    assert not result.ok
    assert "cannot connect" in result.lines[-1] or "failed" in result.lines[-1]
