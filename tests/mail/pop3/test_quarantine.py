"""The quarantine Maildir: listing, stable ids, release, and the command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segcard.errors import SegcardError
from segcard.mail.inbound.annotate import annotate
from segcard.mail.pop3.quarantine import Quarantine
from tests.cli_runner import Segcard
from tests.mail.inbound.conftest import STRANGER
from tests.mail.pop3.conftest import message

JUNK = 'junk; reason="unknown token"'


def held(subject: str) -> bytes:
    """A message as the proxy keeps it: the verdict field on top."""
    return annotate(message("x-zz@john.example", STRANGER, subject), JUNK)


def test_entry_shows_sender_subject_and_verdict(tmp_path: Path) -> None:
    """What the listing needs is read from the message's own header."""
    quarantine = Quarantine(tmp_path / "q")
    encoded = held("x").replace(b"Subject: x", b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=")

    quarantine.put(encoded)
    [entry] = quarantine.entries()

    assert (entry.sender, entry.subject, entry.verdict) == (
        f"<{STRANGER}>",
        "Grüße",
        JUNK,
    )
    assert len(entry.id) == 8 and entry.read() == encoded


def test_entries_are_kept_byte_for_byte_in_a_maildir(tmp_path: Path) -> None:
    """Each message is one file in new/, private to the user."""
    quarantine = Quarantine(tmp_path / "q")

    name = quarantine.put(held("a"))

    path = tmp_path / "q" / "new" / name
    assert path.read_bytes() == held("a")
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_id_stays_when_a_mail_program_moves_the_file(tmp_path: Path) -> None:
    """Moving from new/ to cur/ with flags added keeps the id."""
    quarantine = Quarantine(tmp_path / "q")
    name = quarantine.put(held("a"))
    [before] = quarantine.entries()

    os.rename(tmp_path / "q" / "new" / name, tmp_path / "q" / "cur" / f"{name}:2,S")
    [after] = quarantine.entries()

    assert after.id == before.id and after.path.parent.name == "cur"


def test_release_moves_the_entry_into_the_released_folder(tmp_path: Path) -> None:
    """A released entry leaves the listing and waits in .Released."""
    quarantine = Quarantine(tmp_path / "q")
    quarantine.put(held("keep"))
    quarantine.put(held("free"))
    free = next(e for e in quarantine.entries() if e.subject == "free")

    released = quarantine.release(free.id[:4])

    assert [e.subject for e in quarantine.entries()] == ["keep"]
    assert [e.id for e in quarantine.released()] == [free.id] == [released.id]
    assert released.path.parent == tmp_path / "q" / ".Released" / "new"


def test_unknown_or_empty_id_is_an_error_with_a_hint(tmp_path: Path) -> None:
    """Releasing what is not there says how to find the ids."""
    quarantine = Quarantine(tmp_path / "q")
    quarantine.put(held("a"))

    for wanted in ("zzzzzzzz", ""):
        with pytest.raises(SegcardError) as caught:
            quarantine.release(wanted)
        assert "segcard quarantine" in caught.value.hint


def test_empty_quarantine_lists_nothing(tmp_path: Path) -> None:
    """A quarantine that was never written to is empty, not an error."""
    quarantine = Quarantine(tmp_path / "none")

    assert quarantine.entries() == [] and quarantine.released() == []


def test_command_lists_and_releases(john: Segcard) -> None:
    """segcard quarantine lists the held messages; --release ID frees one."""
    quarantine = Quarantine(john.home / "data" / "quarantine")
    quarantine.put(held("offer"))
    [entry] = quarantine.entries()

    listing = john("quarantine")
    released = john("quarantine", "--release", entry.id)
    after = john("quarantine")
    again = john("quarantine", "--release", entry.id)

    assert listing.code == 0 and entry.id in listing.out and "offer" in listing.out
    assert released.code == 0 and f"released {entry.id}" in released.out
    assert "empty" in after.out
    assert again.code == 1 and "no message" in again.err
    assert [e.id for e in quarantine.released()] == [entry.id]
