"""The durable spool: what is accepted is kept, and each copy's state with it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from segcard.mail.spool import NewCopy, Spool, State

RAW = (
    b"From: John <john@john.example>\r\nTo: tom@example.org\r\nSubject: hi\r\n"
    b"\r\nthe body\r\nsecond line\r\n"
)
COPY = RAW.replace(b"john@john.example", b"john-tom-abcdefghj@john.example")


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    found = Spool(tmp_path / "spool")
    yield found
    found.close()


def new_copy(
    data: bytes = COPY, rcpts: tuple[str, ...] = ("tom@example.org",)
) -> NewCopy:
    return NewCopy("john-tom-abcdefghj@john.example", rcpts, data, "uid-1", "abcdefghj")


def test_accepted_copies_survive_reopening(tmp_path: Path) -> None:
    """A copy accepted before a restart is queued, byte for byte, after it."""
    spool = Spool(tmp_path / "spool")
    spool.accept(RAW, [new_copy(), new_copy(RAW, ("me@example.net",))])
    spool.close()

    reopened = Spool(tmp_path / "spool")
    copies = reopened.copies([State.QUEUED])

    assert [reopened.data(c) for c in copies] == [COPY, RAW]
    assert copies[0].sender == "john-tom-abcdefghj@john.example"
    assert copies[0].rcpts == ("tom@example.org",)
    reopened.close()


def test_copies_share_the_message_body_on_disk(spool: Spool) -> None:
    """The body is stored once, in the message file; copies keep their header."""
    spool.accept(RAW, [new_copy(), new_copy()])

    files = list(spool.messages_dir.glob("*.eml"))

    assert [f.read_bytes() for f in files] == [RAW]
    assert [spool.data(c) for c in spool.copies()] == [COPY, COPY]


def test_copy_with_a_different_body_is_stored_whole(spool: Spool) -> None:
    """A copy whose body differs from the message is still rebuilt exactly."""
    other = b"Subject: x\r\n\r\nanother body\r\n"

    spool.accept(RAW, [new_copy(other)])

    assert spool.data(spool.copies()[0]) == other


def test_sent_copy_is_never_due_again(spool: Spool) -> None:
    """Once marked sent, a copy is not handed to the relay, even on retry."""
    spool.accept(RAW, [new_copy()])
    (copy,) = spool.due(time.time())

    spool.mark_sent(copy.id)
    spool.retry()

    assert spool.due(time.time() + 1e6) == []
    assert spool.get(copy.id).state == State.SENT  # type: ignore[union-attr]


def test_deferred_copy_waits_and_keeps_only_the_recipients_left(spool: Spool) -> None:
    """A deferral counts the try, sets the next one and can narrow recipients."""
    spool.accept(RAW, [new_copy(rcpts=("a@example.org", "b@example.org"))])
    (copy,) = spool.copies()

    spool.defer(copy.id, "451 later", time.time() + 60, ("b@example.org",))

    again = spool.get(copy.id)
    assert again is not None
    assert spool.due(time.time()) == []
    assert (again.attempts, again.rcpts, again.last_error) == (
        1,
        ("b@example.org",),
        "451 later",
    )


def test_retry_makes_a_waiting_copy_due_now(spool: Spool) -> None:
    """segcard queue --retry brings a deferred copy's next try to now."""
    spool.accept(RAW, [new_copy()])
    (copy,) = spool.copies()
    spool.defer(copy.id, "451 later", time.time() + 3600)

    assert spool.retry(copy.id) == 1

    assert [c.id for c in spool.due(time.time())] == [copy.id]


def test_drop_only_removes_queued_copies(spool: Spool) -> None:
    """A queued copy can be dropped; a sent one stays sent."""
    spool.accept(RAW, [new_copy(), new_copy()])
    first, second = spool.copies()
    spool.mark_sent(second.id)

    assert spool.drop(first.id) is True
    assert spool.drop(second.id) is False

    states = [c.state for c in spool.copies()]
    assert states == [State.DROPPED, State.SENT]


def test_not_before_delays_the_first_try(spool: Spool) -> None:
    """A copy spooled with not_before is not due before that time."""
    later = time.time() + 120
    spool.accept(
        RAW, [NewCopy("a@john.example", ("t@example.org",), RAW, not_before=later)]
    )

    assert spool.due(time.time()) == []
    assert spool.next_due() == pytest.approx(later)


def test_non_ascii_address_marks_the_copy_smtputf8(spool: Spool) -> None:
    """A UTF-8 envelope address needs SMTPUTF8 on the way out."""
    spool.accept(RAW, [new_copy(rcpts=("jörg@example.org",)), new_copy()])

    assert [c.smtputf8 for c in spool.copies()] == [True, False]


def test_recover_deletes_files_that_were_never_acknowledged(spool: Spool) -> None:
    """A message file without rows (crash before the commit) is removed."""
    spool.accept(RAW, [new_copy()])
    orphan = spool.messages_dir / "0-orphan.eml"
    orphan.write_bytes(RAW)
    young = spool.messages_dir / "1-young.eml"
    young.write_bytes(RAW)
    hours_ago = time.time() - 7200
    os.utime(orphan, (hours_ago, hours_ago))

    assert spool.recover() == 1

    assert young.exists(), "a file younger than an hour may be an accept under way"

    assert not orphan.exists()
    assert spool.data(spool.copies()[0]) == COPY


def test_purge_deletes_the_file_of_a_finished_message(spool: Spool) -> None:
    """When every copy is final the message file goes; a queued one keeps it."""
    done = spool.accept(RAW, [new_copy()])
    waiting = spool.accept(RAW, [new_copy()])
    spool.mark_sent(spool.copies()[0].id)

    assert spool.purge() == 1

    names = sorted(p.stem for p in spool.messages_dir.glob("*.eml"))
    assert names == [waiting]
    assert done not in names


def test_leak_warnings_are_kept_newest_first(spool: Spool) -> None:
    """A leak warning is recorded with its Message-ID and places."""
    spool.add_warning("a@x", ["body part 1 (text/plain)"])
    spool.add_warning("b@x", ["header X-Foo"])

    found = spool.warnings()

    assert [(w.message_id, w.places) for w in found] == [
        ("b@x", ["header X-Foo"]),
        ("a@x", ["body part 1 (text/plain)"]),
    ]
    assert spool.warning_count() == 2
