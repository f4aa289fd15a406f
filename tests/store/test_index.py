"""The SQLite index: lookups, and tokens that are never forgotten."""

import pytest

from segcard.segment import Contact, Segment
from segcard.store.index import Index


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "index.sqlite3")
    yield idx
    idx.close()


def contact(uid="u1", token="aaaaaaaaa", emails=("tom@example.org",)):
    return Contact(uid, "Tom", emails, Segment(token, "tom", 1))


def test_lookup_by_current_and_retired_token(index):
    """Both a current and a retired token find their contact."""
    c = contact()
    rotated = Contact(c.uid, c.name, c.emails, c.segment.rotate("bbbbbbbbb", 5))

    index.put(rotated, "card")

    assert index.by_token("aaaaaaaaa").uid == "u1"
    assert index.by_token("bbbbbbbbb").uid == "u1"
    assert index.by_token("ccccccccc") is None


def test_lookup_by_email_ignores_case(index):
    """Email lookup is case-insensitive."""
    index.put(contact(), "card")

    assert [c.uid for c in index.by_email("TOM@Example.org")] == ["u1"]


def test_token_survives_a_card_that_lost_it(index):
    """A token once seen stays known when a later card lacks it."""
    index.put(contact(), "card")

    index.put(Contact("u1", "Tom", (), None), "card without segment")

    assert index.token_owner("aaaaaaaaa") == "u1"


def test_token_survives_removal_from_server(index):
    """A contact removed on the server keeps its tokens known."""
    index.put(contact(), "card")

    index.remove("u1")

    assert index.get("u1") is None
    assert index.token_owner("aaaaaaaaa") == "u1"


def test_outbox_keeps_one_entry_per_contact(index):
    """Queuing the same contact twice leaves one write."""
    index.enqueue("u1")
    index.enqueue("u1")
    index.enqueue("u2", "delete", "/a/u2.vcf", '"e"')

    queued = [(u, op) for u, op, *_ in index.outbox()]
    assert queued == [("u1", "put"), ("u2", "delete")]


def test_index_survives_reopen(tmp_path):
    """The index is on disk: a new process sees what the last one stored."""
    first = Index(tmp_path / "i.sqlite3")
    first.put(contact(), "card")
    first.close()

    second = Index(tmp_path / "i.sqlite3")

    assert second.by_token("aaaaaaaaa").name == "Tom"
    second.close()
