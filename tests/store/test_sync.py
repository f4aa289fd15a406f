"""The sync engine against real CardDAV servers (the contract suite).

Each test runs against Xandikos, Radicale and segcard's embedded server.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from segcard.app import App
from segcard.carddav.client import CardDAVClient
from segcard.cli.commands import write_config
from segcard.store import vcard
from tests.servers import RadicaleServer

TOM_CARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:tom-1\r\nFN:Tom Smith\r\nN:Smith;Tom;;;\r\n"
    "EMAIL;TYPE=INTERNET:tom@example.org\r\nNOTE:first\\, second\r\nEND:VCARD\r\n"
)


@pytest.fixture
def app(carddav_server, tmp_path):
    config = write_config(
        tmp_path / "config.toml",
        {
            "user": "john",
            "domain": "john.example",
            "identities": ["john@john.example"],
            "carddav.url": carddav_server.url,
            "carddav.username": carddav_server.username,
            "carddav.password": carddav_server.password,
            "data_dir": str(tmp_path / "data"),
        },
    )
    application = App(config)
    yield application
    application.close()


@pytest.fixture
def other(carddav_server):
    """A second client of the same address book (a phone, say)."""
    client = CardDAVClient(
        carddav_server.url, carddav_server.username, carddav_server.password
    )
    client.discover()
    return client


def server_card(client: CardDAVClient, uid: str) -> tuple[str, str]:
    """(href, text) of the card with *uid* as the server has it now."""
    listing = client.list_etags()
    for item in client.multiget(list(listing)):
        if vcard.read_card(item.data).uid == uid:
            return item.href, item.data
    raise AssertionError(f"no card with UID {uid} on the server")


def plant(server, name: str, text: str) -> None:
    """Put a card straight into a server's storage (both refuse it over HTTP)."""
    if isinstance(server, RadicaleServer):
        (server.book_dir / name).write_text(text, newline="")
        return
    book = Path(server.root) / "user" / "contacts" / "addressbook"
    (book / name).write_text(text, newline="")
    git = ["git", "-C", str(book), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", name], check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", "plant"], check=True, capture_output=True)


def tokens_in(text: str) -> set[str]:
    unfolded = re.sub(r"\r?\n[ \t]", "", text)
    found = re.findall(r"(?im)^X-SEGMAIL-(?:TOKEN|RETIRED):([a-z0-9]+)", unfolded)
    return set(found)


def test_added_contact_reaches_the_server(app, other):
    """A contact made with add is on the server with its segment lines."""
    contact = app.book.add("Bank")

    report = app.run_sync()

    _href, text = server_card(other, contact.uid)
    assert report.offline is None and report.pushed == 1
    assert contact.segment.token in tokens_in(text)
    assert f"mailto:{app.book.address(contact)}" in text.replace("\r\n ", "")
    assert "EMAIL" not in text.upper().replace("X-SEGMAIL", "")


def test_remote_card_gets_a_segment_and_keeps_its_lines(app, other):
    """A card made elsewhere gets a segment; its own lines survive."""
    other.create(other.href_for("tom-1"), TOM_CARD)
    app.run_sync()
    tom = app.book.find("tom@example.org")

    app.book.ensure_segment(tom)
    app.run_sync()

    _href, text = server_card(other, "tom-1")
    assert app.book.find("tom-1").segment.token in tokens_in(text)
    assert "tom@example.org" in text


def test_rotate_keeps_old_token_on_server(app, other):
    """After rotate, the server card holds the new token and the retired one."""
    contact = app.book.add("Bank")
    app.run_sync()

    rotated = app.book.rotate(contact)
    app.run_sync()

    _href, text = server_card(other, contact.uid)
    assert {contact.segment.token, rotated.segment.token} <= tokens_in(text)


def test_block_reaches_server(app, other):
    """A block is written to the card."""
    contact = app.book.add("Shop")
    app.run_sync()

    app.book.block(contact)
    app.run_sync()

    _href, text = server_card(other, contact.uid)
    assert re.search(r"(?im)^X-SEGMAIL-STATE:blocked@", text)


def test_incremental_sync_fetches_only_the_changed_card(app, other):
    """After one remote edit, the next sync fetches that one card."""
    for name in ("A", "B", "C"):
        app.book.add(name)
    app.run_sync()
    app.run_sync()
    contact = app.book.find("B")
    href, text = server_card(other, contact.uid)
    etag = other.list_etags()[href]
    other.update(href, text.replace("FN:B", "FN:Bee"), etag)

    report = app.run_sync()

    assert report.fetched == 1
    assert app.book.find(contact.uid).name == "Bee"


def test_conflict_keeps_the_other_clients_edit(app, other):
    """412: a card edited elsewhere between read and write keeps that edit."""
    other.create(other.href_for("tom-1"), TOM_CARD)
    app.run_sync()
    tom = app.book.ensure_segment(app.book.find("tom-1"))
    app.run_sync()
    href, text = server_card(other, "tom-1")
    rotated = app.book.rotate(tom)  # local change, not pushed yet
    other.update(
        href, text.replace("FN:Tom Smith", "FN:Thomas Smith"), other.list_etags()[href]
    )

    report = app.run_sync()

    _href, final = server_card(other, "tom-1")
    assert "FN:Thomas Smith" in final
    assert rotated.segment.token in tokens_in(final)
    assert tom.segment.token in tokens_in(final)
    assert report.offline is None


def test_invalid_sync_token_triggers_full_resync(app, other):
    """A sync-token the server does not know leads to a full listing."""
    contact = app.book.add("Bank")
    app.run_sync()
    app.index.set_state("sync_token", "http://bogus/sync/123")

    report = app.run_sync()

    assert report.offline is None
    assert app.book.find(contact.uid).segment.token == contact.segment.token


def test_server_down_then_back_loses_nothing(app, other, carddav_server):
    """While the server is away commands work; the outbox drains later."""
    app.run_sync()
    carddav_server.stop()

    contact = app.book.add("Bank")
    offline = app.run_sync()
    carddav_server.start()
    back = app.run_sync()

    assert offline.offline is not None
    assert back.offline is None and app.index.outbox() == []
    _href, text = server_card(other, contact.uid)
    assert contact.segment.token in tokens_in(text)


def test_lossy_server_lines_are_restored(app, other):
    """A card that lost segcard's lines gets them back; no token is lost."""
    contact = app.book.add("Bank")
    app.book.rotate(contact)
    app.run_sync()
    href, text = server_card(other, contact.uid)
    stripped = vcard.strip_owned(text)
    other.update(href, stripped, other.list_etags()[href])

    report = app.run_sync()

    _href, text = server_card(other, contact.uid)
    assert report.restored == 1
    assert set(app.book.find(contact.uid).segment.tokens) <= tokens_in(text)


def test_sync_settles_after_server_rewrites(app, other):
    """Our own writes read back are not taken for remote changes (no loop)."""
    other.create(other.href_for("tom-1"), TOM_CARD)
    app.book.add("Bank")
    app.run_sync()
    app.book.ensure_segment(app.book.find("tom-1"))
    app.run_sync()

    again = app.run_sync()

    assert (again.pushed, again.fetched) == (0, 0)
    assert app.index.outbox() == []


def test_remote_delete_removes_contact_but_keeps_token(app, other):
    """A card deleted elsewhere leaves the index; its token stays known."""
    contact = app.book.add("Bank")
    app.run_sync()
    href, _text = server_card(other, contact.uid)
    other.delete(href, None)

    app.run_sync()

    assert app.index.get(contact.uid) is None
    assert app.index.token_owner(contact.segment.token) == contact.uid


def test_unreadable_card_is_reported_and_left_alone(app, other, carddav_server):
    """A card with nothing segcard can use is reported and never rewritten."""
    junk = "BEGIN:VCARD\r\nVERSION:3.0\r\nNOTE:x\r\nEND:VCARD\r\n"
    plant(carddav_server, "broken.vcf", junk)

    report = app.run_sync()

    if isinstance(carddav_server, RadicaleServer):
        # Radicale itself hides a card it cannot parse: nothing to report,
        # and the file must still be there as it was.
        assert (carddav_server.book_dir / "broken.vcf").read_bytes() == junk.encode()
        return
    assert len(report.unreadable) == 1 and app.index.unreadable()
    [item] = [i for i in other.multiget(list(other.list_etags())) if "NOTE:x" in i.data]
    assert item.data == junk


def test_full_sync_rebuilds_the_index(app, other, tmp_path):
    """sync --full after losing the index rebuilds it from the server."""
    contact = app.book.add("Bank")
    app.run_sync()
    app.index.remove(contact.uid)

    app.run_sync(full=True)

    assert app.book.find("Bank").segment.token == contact.segment.token


def test_foreign_lines_survive_write_back(app, other, carddav_server):
    """Foreign lines stay byte-identical (by content where the server rewrites)."""
    other.create(other.href_for("tom-1"), TOM_CARD)
    app.run_sync()

    app.book.ensure_segment(app.book.find("tom-1"))
    app.run_sync()

    _href, text = server_card(other, "tom-1")
    if isinstance(carddav_server, RadicaleServer):
        # Radicale re-serializes every card it stores (and cuts the NOTE at
        # its escaped comma on the way in): compare what it kept by content.
        assert "tom@example.org" in text and "FN:Tom Smith" in text
    else:
        assert vcard.strip_owned(text) == TOM_CARD


def test_server_that_comes_back_empty_loses_no_contact(app, other, carddav_server):
    """A book emptied at once is taken for data loss: cards are written back."""
    contacts = [app.book.add(f"Shop {n}") for n in range(6)]
    app.run_sync()
    for href in list(other.list_etags()):
        other.delete(href, None)

    report = app.run_sync()
    app.run_sync()

    assert report.restored == 6
    assert all(app.index.get(c.uid) for c in contacts)
    restored = {
        vcard.read_card(i.data).uid for i in other.multiget(list(other.list_etags()))
    }
    assert restored == {c.uid for c in contacts}


def test_a_few_remote_deletions_are_taken_as_deletions(app, other):
    """Deleting one card of many on a phone removes that contact only."""
    contacts = [app.book.add(f"Shop {n}") for n in range(6)]
    app.run_sync()
    href, _text = server_card(other, contacts[0].uid)
    other.delete(href, None)

    app.run_sync()

    assert app.index.get(contacts[0].uid) is None
    assert all(app.index.get(c.uid) for c in contacts[1:])
