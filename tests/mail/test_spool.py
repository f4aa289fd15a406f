"""The durable spool: what is accepted is kept, and each copy's state with it."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from segcard.mail.spool import SCHEMA, NewCopy, Spool, State, Warning

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


def stored(spool: Spool, query: str) -> list[tuple]:  # type: ignore[type-arg]
    """Rows read from the spool database by a connection of the test's own."""
    db = sqlite3.connect(spool.root / "spool.sqlite3")
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def test_copies_share_the_message_body_on_disk(spool: Spool) -> None:
    """The body is stored once, with the message; copies keep their header."""
    spool.accept(RAW, [new_copy(), new_copy()])

    messages = stored(spool, "SELECT raw FROM messages")
    headers = stored(spool, "SELECT header FROM copies")

    assert messages == [(RAW,)]
    assert headers == [(COPY.split(b"\r\n\r\n")[0] + b"\r\n\r\n",)] * 2
    assert [spool.data(c) for c in spool.copies()] == [COPY, COPY]


def test_accepting_writes_no_file_beside_the_database(spool: Spool) -> None:
    """The message and its copies are one transaction: no file to fsync too."""
    spool.accept(RAW, [new_copy()])

    assert list(spool.messages_dir.iterdir()) == []


def test_sent_mark_survives_a_crash_of_the_process(tmp_path: Path) -> None:
    """A copy marked sent stays sent for a spool opened without a clean close."""
    crashed = Spool(tmp_path / "spool")
    crashed.accept(RAW, [new_copy()])
    (copy,) = crashed.copies()
    crashed.mark_sent(copy.id)

    reopened = Spool(tmp_path / "spool")

    assert reopened.get(copy.id).state == State.SENT  # type: ignore[union-attr]
    assert reopened.due(time.time() + 1e6) == []
    reopened.close()
    crashed.close()


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


def test_accept_hands_back_the_copies_as_stored(spool: Spool) -> None:
    """The copies accept_copies returns are the rows the spool holds."""
    message, handed = spool.accept_copies(
        RAW, [new_copy(), new_copy(RAW, ("jörg@example.org",))]
    )

    assert handed == spool.copies()
    assert [c.message for c in handed] == [message, message]


def test_several_copies_are_marked_sent_at_once(spool: Spool) -> None:
    """mark_all_sent settles every copy named and no other."""
    spool.accept(RAW, [new_copy(), new_copy(), new_copy()])
    first, second, third = spool.copies()

    spool.mark_all_sent([first.id, third.id])

    states = [c.state for c in spool.copies()]
    assert states == [State.SENT, State.QUEUED, State.SENT]


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


def test_purge_drops_the_bytes_of_a_finished_message(spool: Spool) -> None:
    """When every copy is final the message bytes go; a queued one keeps them."""
    done = spool.accept(RAW, [new_copy()])
    waiting = spool.accept(RAW, [new_copy()])
    first, second = spool.copies()
    spool.mark_sent(first.id)

    assert spool.purge() == 1

    kept = stored(spool, "SELECT id, raw FROM messages ORDER BY id")
    assert kept == sorted([(done, None), (waiting, RAW)])
    assert spool.data(second) == COPY


def older_spool(root: Path) -> str:
    """A spool as segcard wrote it before the bytes moved into the database:
    the message in msg/<id>.eml, rows without the bytes; its message id."""
    (root / "msg").mkdir(parents=True)
    db = sqlite3.connect(root / "spool.sqlite3")
    db.executescript(SCHEMA.replace(",\n    raw BLOB", ""))
    db.execute("INSERT INTO messages VALUES ('0-old', 1.0, 'peer', ?)", (len(RAW),))
    body_offset = RAW.index(b"\r\n\r\n") + 4
    db.execute(
        "INSERT INTO copies (message, sender, rcpts, header, body_offset, smtputf8, "
        "state, next_try, created_at, updated_at) VALUES "
        "('0-old', 'a@john.example', '[\"t@example.org\"]', ?, ?, 0, 'queued', "
        "1.0, 1.0, 1.0)",
        (COPY[: COPY.index(b"\r\n\r\n") + 4], body_offset),
    )
    db.commit()
    db.close()
    (root / "msg" / "0-old.eml").write_bytes(RAW)
    return "0-old"


def test_older_spool_is_read_then_purged_from_its_files(tmp_path: Path) -> None:
    """Copies of an older spool relay from their file, which purge removes."""
    older_spool(tmp_path / "spool")
    spool = Spool(tmp_path / "spool")
    (copy,) = spool.due(time.time())

    data = spool.data(copy)
    spool.mark_sent(copy.id)
    purged = spool.purge()

    assert data == COPY
    assert purged == 1
    assert list((tmp_path / "spool" / "msg").iterdir()) == []
    spool.close()


def test_leak_warning_is_recorded_with_the_message(spool: Spool) -> None:
    """A warning handed to accept_copies is kept with the accepted message."""
    warning = Warning(0, 0.0, "m1@john.example", ["body part 1 (text/plain)"])

    spool.accept_copies(RAW, [new_copy()], warning=warning)

    (found,) = spool.warnings()
    assert (found.message_id, found.places) == (warning.message_id, warning.places)


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
