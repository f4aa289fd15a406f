"""segcard announce: each contact told its own address, once, slowly."""

from __future__ import annotations

import email
import time
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest

from segcard.app import App
from segcard.cli.main import main
from segcard.errors import ConfigError
from segcard.mail.announce import announce, compose, due_contacts
from segcard.mail.spool import Spool, State
from segcard.segment import Kind
from tests.mail.smtp_sink import Proxy, Sink, make_app, wait_until


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    found = make_app(tmp_path, **{"announce.interval": 0.0})
    yield found
    found.close()


@pytest.fixture
def spool(app: App) -> Iterator[Spool]:
    found = Spool(app.paths.spool)
    yield found
    found.close()


def test_each_contact_gets_one_message_from_its_own_address(app: App) -> None:
    """One message per contact, from and showing that contact's address."""
    tom = app.book.add("Tom Smith", ["tom@example.org"])
    ann = app.book.add("Ann", ["ann@example.net"])

    with Sink() as sink, Proxy(app, sink) as proxy:
        announce(app, due_contacts(app), proxy.spool)
        proxy.loop.loop.call_soon_threadsafe(proxy.relay.wake)
        got = sink.wait_for(2)

    by_rcpt = {g.rcpts: g for g in got}
    for contact, rcpt in ((tom, "tom@example.org"), (ann, "ann@example.net")):
        address = app.book.address(contact)
        message = by_rcpt[(rcpt,)]
        parsed = email.message_from_bytes(message.data, policy=policy.default)
        assert message.mail_from == address
        assert parsed["From"] == address
        assert address in parsed.get_content()  # type: ignore[attr-defined]
    assert (
        "Hello Tom,"
        in email.message_from_bytes(
            by_rcpt[("tom@example.org",)].data, policy=policy.default
        ).get_content()
    )  # type: ignore[attr-defined]


def test_announced_contact_is_not_announced_again(app: App, spool: Spool) -> None:
    """The mark is written into the vCard; a second run finds nobody."""
    tom = app.book.add("Tom", ["tom@example.org"])

    announce(app, due_contacts(app), spool)

    assert due_contacts(app) == []
    row = app.index.row(tom.uid)
    assert row is not None and "X-SEGMAIL-ANNOUNCED:" in row.card
    assert len(spool.copies()) == 1


def test_automatic_rotating_and_addressless_contacts_are_not_announced(
    app: App,
) -> None:
    """Only contacts the user had: not auto-made, rotating or without email."""
    app.book.add("Auto", ["auto@example.org"], kind=Kind.AUTO)
    app.book.add("Web form", [], rotate_every=86400)
    app.book.add("No email", [])
    friend = app.book.add("Friend", ["friend@example.org"])

    assert [c.uid for c in due_contacts(app)] == [friend.uid]


def test_announcements_are_spaced_by_the_interval(tmp_path: Path) -> None:
    """Each message's first try waits announce.interval after the one before."""
    app = make_app(tmp_path, **{"announce.interval": 90.0})
    for name in ("a", "b", "c"):
        app.book.add(name, [f"{name}@example.org"])
    spool = Spool(app.paths.spool)
    try:
        announce(app, due_contacts(app), spool, start=time.time() + 1000)
        tries = sorted(c.next_try for c in spool.copies([State.QUEUED]))
    finally:
        spool.close()
        app.close()

    assert [
        later - earlier for earlier, later in zip(tries, tries[1:], strict=False)
    ] == [90, 90]


def test_template_fills_placeholders_and_keeps_the_display_name(
    tmp_path: Path,
) -> None:
    """A user template: its From display name, Subject and text with values."""
    template = tmp_path / "announce.txt"
    template.write_text(
        "From: John Doe <whatever@example.org>\nSubject: Hi {name}\n\n"
        "Use {address}, {first_name}. {unknown} stays.\n"
    )
    app = make_app(tmp_path, **{"announce.template": str(template)})
    try:
        tom = app.book.add("Tom Smith", ["tom@example.org"])
        item = compose(app, tom, template.read_text())
    finally:
        app.close()

    parsed = email.message_from_bytes(item.data, policy=policy.default)
    assert parsed["From"] == f"John Doe <{item.address}>"
    assert parsed["Subject"] == "Hi Tom Smith"
    body = parsed.get_content()  # type: ignore[attr-defined]
    assert body == f"Use {item.address}, Tom. {{unknown}} stays.\n"


def test_template_without_subject_is_a_config_error(app: App) -> None:
    """A template must start with header lines including Subject."""
    tom = app.book.add("Tom", ["tom@example.org"])

    with pytest.raises(ConfigError, match="Subject"):
        compose(app, tom, "From: x\n\nno subject\n")


def test_dry_run_prints_who_gets_what_and_spools_nothing(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run lists recipient and sending address; nothing is marked."""
    tom = app.book.add("Tom", ["tom@example.org"])

    code = main(["--config", str(app.config.path), "announce", "--dry-run"])

    out = capsys.readouterr().out
    assert code == 0
    assert f"tom@example.org: from {app.book.address(tom)}" in out
    assert [c.uid for c in due_contacts(app)] == [tom.uid]
    spool = Spool(app.paths.spool)
    assert spool.copies() == []
    spool.close()


def test_announce_goes_through_the_spool_and_relays_when_serving(app: App) -> None:
    """The CLI only spools; the running relay sends them later."""
    app.book.add("Tom", ["tom@example.org"])
    code = main(["--config", str(app.config.path), "announce", "tom@example.org"])

    with Sink() as sink, Proxy(app, sink) as proxy:
        (got,) = sink.wait_for(1)
        wait_until(proxy.settled)

    assert code == 0
    assert got.rcpts == ("tom@example.org",)
