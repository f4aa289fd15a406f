"""Contract tests of CardDAVClient, run against every CardDAV server flavour."""

from __future__ import annotations

from pathlib import Path

import pytest

from segcard.carddav.client import CardDAVClient, Item, same_href
from segcard.errors import AddressBookError, ServerUnreachable, WriteConflict
from tests.servers import CardDAVServer, RadicaleServer, XandikosServer, root_url

# Corpus cards Xandikos accepts, each with a quirk that must survive storage.
BYTE_EXACT_CARDS = [
    "evolution-3.0-couchdb-uuid-params.vcf",  # folded mid-word, no final CRLF
    "thunderbird-mfffab-ext-3.0-photo-multi-email.vcf",  # mixed CRLF and LF
    "rfc6350-4.0-spec-example-lf.vcf",  # bare LF line ends
    "khard-4.0-photo-data-uri-escaped-comma.vcf",
]


def card(uid: str, name: str = "Tom Example") -> str:
    """A minimal vCard 3.0 with CRLF line ends."""
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"UID:{uid}", f"FN:{name}", "END:VCARD"]
    return "\r\n".join(lines) + "\r\n"


def connect(server: CardDAVServer, url: str | None = None) -> CardDAVClient:
    client = CardDAVClient(url or server.url, server.username, server.password)
    client.discover()
    return client


def read_back(client: CardDAVClient, href: str) -> Item:
    [item] = client.multiget([href])
    return item


def test_discover_keeps_the_collection_url(carddav_server: CardDAVServer) -> None:
    """A URL that is an address book collection is used as it is."""
    client = CardDAVClient(
        carddav_server.url, carddav_server.username, carddav_server.password
    )

    found = client.discover()

    assert same_href(found, carddav_server.url)
    assert client.collection == found


def test_discover_from_server_root_finds_the_address_book(
    carddav_server: CardDAVServer,
) -> None:
    """From the server root, discovery follows principal and home set to the book."""
    client = CardDAVClient(
        root_url(carddav_server.url), carddav_server.username, carddav_server.password
    )

    found = client.discover()

    assert found.startswith("http://127.0.0.1:")
    assert same_href(found, carddav_server.url)


def test_create_update_delete_round_trip(carddav_server: CardDAVServer) -> None:
    """A created card can be read, updated with its etag, and deleted."""
    client = connect(carddav_server)
    href = client.href_for("round-trip-1")

    created_href, _ = client.create(href, card("round-trip-1"))
    first = read_back(client, created_href)
    assert first.etag
    client.update(first.href, card("round-trip-1", "Tim Example"), first.etag)
    second = read_back(client, created_href)
    client.delete(second.href, second.etag)

    assert same_href(created_href, href)
    assert "FN:Tom Example" in (first.data or "")
    assert "FN:Tim Example" in (second.data or "")
    assert second.etag != first.etag
    assert client.list_etags() == {}


def test_update_with_stale_etag_raises_write_conflict(
    carddav_server: CardDAVServer,
) -> None:
    """A PUT with If-Match on an etag the server no longer has fails with 412."""
    client = connect(carddav_server)
    href, _ = client.create(client.href_for("stale-1"), card("stale-1"))
    stale = read_back(client, href).etag
    assert stale is not None
    client.update(href, card("stale-1", "Someone Else"), stale)

    with pytest.raises(WriteConflict):
        client.update(href, card("stale-1", "Lost Update"), stale)

    assert "FN:Someone Else" in (read_back(client, href).data or "")


def test_delete_with_stale_etag_raises_write_conflict(
    carddav_server: CardDAVServer,
) -> None:
    """A DELETE with If-Match on an old etag leaves the card and raises."""
    client = connect(carddav_server)
    href, _ = client.create(client.href_for("stale-2"), card("stale-2"))
    stale = read_back(client, href).etag
    assert stale is not None
    client.update(href, card("stale-2", "Changed"), stale)

    with pytest.raises(WriteConflict):
        client.delete(href, stale)

    assert len(client.list_etags()) == 1


def test_create_over_an_existing_card_raises_write_conflict(
    carddav_server: CardDAVServer,
) -> None:
    """If-None-Match: * refuses to overwrite a card that exists."""
    client = connect(carddav_server)
    href, _ = client.create(client.href_for("twice"), card("twice"))

    with pytest.raises(WriteConflict):
        client.create(href, card("twice", "Overwritten"))

    assert "FN:Tom Example" in (read_back(client, href).data or "")


def test_changes_after_one_edit_lists_exactly_that_href(
    carddav_server: CardDAVServer,
) -> None:
    """An incremental sync after one update reports that card and nothing else."""
    client = connect(carddav_server)
    hrefs = [
        client.create(client.href_for(f"c{i}"), card(f"c{i}"))[0] for i in range(3)
    ]
    start = client.changes(None)
    edited = read_back(client, hrefs[1])
    assert edited.etag is not None
    client.update(edited.href, card("c1", "Edited"), edited.etag)

    changes = client.changes(start.sync_token)

    assert start.full
    assert len(start.changed) == 3
    assert not changes.full
    assert [same_href(item.href, hrefs[1]) for item in changes.changed] == [True]
    assert changes.deleted == []
    assert changes.changed[0].etag != edited.etag
    assert changes.sync_token != start.sync_token


def test_changes_reports_a_deleted_card(carddav_server: CardDAVServer) -> None:
    """A card deleted since the token is listed in `deleted`, not `changed`."""
    client = connect(carddav_server)
    keep, _ = client.create(client.href_for("keep"), card("keep"))
    gone, _ = client.create(client.href_for("gone"), card("gone"))
    start = client.changes(None)
    client.delete(gone, None)

    changes = client.changes(start.sync_token)

    assert not changes.full
    assert changes.changed == []
    assert [same_href(href, gone) for href in changes.deleted] == [True]


def test_changes_with_no_change_is_empty(carddav_server: CardDAVServer) -> None:
    """Asking again with the latest token reports nothing."""
    client = connect(carddav_server)
    client.create(client.href_for("still"), card("still"))
    start = client.changes(None)

    changes = client.changes(start.sync_token)

    assert (changes.changed, changes.deleted, changes.full) == ([], [], False)


def test_invalid_sync_token_gives_a_full_listing(carddav_server: CardDAVServer) -> None:
    """A token the server does not know leads to a full listing, full=True."""
    client = connect(carddav_server)
    href, _ = client.create(client.href_for("listed"), card("listed"))
    bogus = root_url(carddav_server.url) + "sync/no-such-token-12345"

    changes = client.changes(bogus)

    assert changes.full
    assert [same_href(item.href, href) for item in changes.changed] == [True]
    assert changes.changed[0].etag
    assert changes.sync_token


def test_list_etags_matches_multiget(carddav_server: CardDAVServer) -> None:
    """The etag listing and the multiget agree on href and etag."""
    client = connect(carddav_server)
    for uid in ("e1", "e2"):
        client.create(client.href_for(uid), card(uid))

    listing = client.list_etags()
    items = client.multiget(list(listing))

    assert len(listing) == 2
    assert {item.href: item.etag for item in items} == listing


def test_multiget_leaves_out_a_missing_href(carddav_server: CardDAVServer) -> None:
    """An href the server does not have is left out of the multiget answer."""
    client = connect(carddav_server)
    href, _ = client.create(client.href_for("present"), card("present"))

    items = client.multiget([href, client.href_for("absent")])

    assert [same_href(item.href, href) for item in items] == [True]
    assert items[0].data and "UID:present" in items[0].data


def test_multiget_in_batches_returns_every_card(carddav_server: CardDAVServer) -> None:
    """Splitting the hrefs into small batches still returns every card once."""
    client = connect(carddav_server)
    hrefs = [
        client.create(client.href_for(f"b{i}"), card(f"b{i}"))[0] for i in range(5)
    ]

    items = client.multiget(hrefs, batch=2)

    assert sorted(item.href for item in items) == sorted(client.list_etags())


def test_uid_with_space_and_at_round_trips(carddav_server: CardDAVServer) -> None:
    """An href made from a UID with a space and @ names the same card on return."""
    client = connect(carddav_server)
    uid = "john doe@example.org"
    href = client.href_for(uid)

    created, _ = client.create(href, card(uid))
    listed = client.list_etags()
    [item] = client.multiget([href])

    assert " " not in href and "@" not in href.rpartition("/")[2]
    assert same_href(created, href)
    assert [same_href(h, href) for h in listed] == [True]
    assert same_href(item.href, href)
    assert f"UID:{uid}" in (item.data or "")


def test_stopped_server_raises_server_unreachable(
    carddav_server: CardDAVServer,
) -> None:
    """With the server down calls raise ServerUnreachable; they work once it is back."""
    client = connect(carddav_server)
    href, _ = client.create(client.href_for("down"), card("down"))
    carddav_server.stop()

    with pytest.raises(ServerUnreachable):
        client.changes(None)
    with pytest.raises(ServerUnreachable):
        client.create(client.href_for("while-down"), card("while-down"))
    carddav_server.start()

    assert [same_href(h, href) for h in client.list_etags()] == [True]


def test_wrong_password_raises_address_book_error(
    carddav_server: CardDAVServer,
) -> None:
    """Refused credentials are an AddressBookError that names no password."""
    if isinstance(carddav_server, XandikosServer):
        pytest.skip("the Xandikos test server has no auth")
    client = CardDAVClient(carddav_server.url, carddav_server.username, "wrong-pw")

    with pytest.raises(AddressBookError) as raised:
        client.discover()

    assert not isinstance(raised.value, ServerUnreachable)
    assert "wrong-pw" not in str(raised.value)
    assert "401" in str(raised.value)


@pytest.mark.parametrize("name", BYTE_EXACT_CARDS)
def test_xandikos_stores_cards_byte_for_byte(
    carddav_server: CardDAVServer, corpus: Path, name: str
) -> None:
    """Xandikos keeps a card's folding and line ends exactly, on disk and on read."""
    if isinstance(carddav_server, RadicaleServer):
        pytest.skip("Radicale re-serializes every card")
    original = (corpus / "vcards" / name).read_bytes()
    client = connect(carddav_server)
    href = client.href_for(name.removesuffix(".vcf"))

    client.create(href, original.decode("utf-8"))
    [item] = client.multiget([href])

    assert item.data is not None
    assert item.data.encode("utf-8") == original
    stored = carddav_server.root / "user" / "contacts" / "addressbook" / Path(href).name
    assert stored.read_bytes() == original


def test_same_href_compares_decoded_paths() -> None:
    """Hrefs match after percent-decoding and ignoring scheme and host."""
    assert same_href("/book/a%20b%40c.vcf", "/book/a b@c.vcf")
    assert same_href("http://127.0.0.1:1/book/x.vcf", "/book/x.vcf")
    assert same_href("/book/", "/book")
    assert not same_href("/book/x.vcf", "/book/y.vcf")
    assert not same_href("/book/a+b.vcf", "/book/a b.vcf")
