"""Rotating entries rotate on schedule and publish their current address."""

from __future__ import annotations

from dataclasses import replace

import pytest

from segcard.app import App
from segcard.book import rotation
from segcard.cli.commands import write_config

HOUR = 3600


@pytest.fixture
def app(tmp_path):
    config = write_config(
        tmp_path / "c.toml",
        {"user": "john", "domain": "john.example", "data_dir": str(tmp_path / "d")},
    )
    application = App(config)
    yield application
    application.close()


def age(app, contact, seconds):
    """Pretend the contact's segment was made *seconds* earlier."""
    row = app.index.row(contact.uid)
    segment = replace(
        row.contact.segment, created_at=row.contact.segment.created_at - seconds
    )
    app.index.put(replace(row.contact, segment=segment), row.card, row.etag, row.hash)
    return app.index.get(contact.uid)


def test_rotating_entry_rotates_when_due(app):
    """An entry whose period has passed gets a new token; the old one is kept."""
    web = app.book.add("web", rotate_every=HOUR)
    now = web.segment.created_at

    early = rotation.rotate_due(app.book, now + HOUR - 1)
    late = rotation.rotate_due(app.book, now + HOUR)

    assert early == []
    [done] = late
    assert done.contact.segment.token != web.segment.token
    assert web.segment.token in done.contact.segment.tokens


def test_missed_periods_rotate_once(app):
    """After the machine was off for three periods, it rotates once, not three times."""
    web = age(app, app.book.add("web", rotate_every=HOUR), 3 * HOUR + 5)

    rotation.rotate_due(app.book, web.segment.created_at + 3 * HOUR + 5)
    again = rotation.rotate_due(app.book, web.segment.created_at + 3 * HOUR + 6)

    assert len(app.index.get(web.uid).segment.retired) == 1
    assert again == []


def test_publish_file_gets_the_current_address(app, tmp_path):
    """--publish writes the current address, and again after each rotation."""
    target = tmp_path / "www" / "contact.txt"
    web = app.book.add("web", rotate_every=HOUR, publish=str(target))
    rotation.publish_all(app.book)
    first = target.read_text()

    [done] = rotation.rotate_due(app.book, web.segment.created_at + HOUR)

    assert first.strip() == app.book.address(web)
    assert target.read_text().strip() == done.address != first.strip()
    assert not list(target.parent.glob(".*tmp"))


def test_plain_entries_never_rotate(app):
    """Entries without a period are not touched by the scheduler."""
    bank = app.book.add("Bank")

    rotation.rotate_due(app.book, bank.segment.created_at + 10**9)

    assert app.index.get(bank.uid).segment.token == bank.segment.token
    assert rotation.next_due(app.book) is None
