"""Contract tests of CardDAVClient, run against every CardDAV server flavour."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from segcard.carddav.client import CardDAVClient, Item, same_href
from segcard.errors import AddressBookError, ServerUnreachable, WriteConflict
from tests.servers import (
    CardDAVServer,
    FaultProxy,
    Forward,
    Intercept,
    XandikosServer,
    make_server,
    root_url,
)

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


def started(flavour: str, tmp_path: Path) -> Iterator[CardDAVServer]:
    server = make_server(flavour, tmp_path / flavour)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["radicale", "embedded"])
def auth_server(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A server that checks credentials (the Xandikos test server has none)."""
    yield from started(request.param, tmp_path)


@pytest.fixture(params=["xandikos", "embedded"])
def exact_server(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A server that stores what it is sent (Radicale re-serializes)."""
    yield from started(request.param, tmp_path)


@pytest.fixture
def radicale(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield from started("radicale", tmp_path)


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
    auth_server: CardDAVServer,
) -> None:
    """Refused credentials are an AddressBookError that names no password."""
    carddav_server = auth_server
    client = CardDAVClient(carddav_server.url, carddav_server.username, "wrong-pw")

    with pytest.raises(AddressBookError) as raised:
        client.discover()

    assert not isinstance(raised.value, ServerUnreachable)
    assert "wrong-pw" not in str(raised.value)
    assert "401" in str(raised.value)


@pytest.mark.parametrize("name", BYTE_EXACT_CARDS)
def test_xandikos_stores_cards_byte_for_byte(
    exact_server: CardDAVServer, corpus: Path, name: str
) -> None:
    """Xandikos keeps a card's folding and line ends exactly, on disk and on read."""
    carddav_server = exact_server
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


def test_discover_from_a_path_that_is_no_dav_resource(
    carddav_server: CardDAVServer,
) -> None:
    """From a URL the server does not know, discovery goes through .well-known."""
    url = root_url(carddav_server.url) + "no/such/place/"
    client = CardDAVClient(url, carddav_server.username, carddav_server.password)

    found = client.discover()

    assert same_href(found, carddav_server.url)


def test_card_the_server_cannot_parse_is_no_write_conflict(
    xandikos: XandikosServer, corpus: Path
) -> None:
    """Xandikos' 412 with valid-address-data is a refused card, not a conflict."""
    client = connect(xandikos)
    text = (corpus / "vcards" / "khard-4.0-altid-n.vcf").read_text()

    with pytest.raises(AddressBookError) as raised:
        client.create(client.href_for("refused"), text)

    assert not isinstance(raised.value, WriteConflict)
    assert "valid-address-data" in str(raised.value)
    assert client.list_etags() == {}


# -- faults injected by a proxy in front of a real Xandikos ------------------

BOOK = "/user/contacts/addressbook/"
NO_SYNC = b'<D:error xmlns:D="DAV:"><D:supported-report/></D:error>'


def is_sync_report(request: web.Request, body: bytes) -> bool:
    return request.method == "REPORT" and b"sync-collection" in body


def xml_response(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/xml")


@pytest.fixture
def xandikos(tmp_path: Path) -> Iterator[XandikosServer]:
    """A started Xandikos subprocess."""
    server = XandikosServer(tmp_path / "xandikos")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def proxied(server: XandikosServer, intercept: Intercept) -> Iterator[FaultProxy]:
    proxy = FaultProxy(server.url, intercept)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_server_without_sync_collection_gets_etag_listings(
    xandikos: XandikosServer,
) -> None:
    """Without sync-collection, changes() lists every etag and says full=True."""

    async def refuse_sync(request: web.Request, body: bytes, forward: Forward) -> Any:
        if is_sync_report(request, body):
            return xml_response(403, NO_SYNC)
        return await forward()

    with proxied(xandikos, refuse_sync) as proxy:
        client = connect(xandikos, proxy.url_for(xandikos.url))
        keep, _ = client.create(client.href_for("keep"), card("keep"))
        gone, _ = client.create(client.href_for("gone"), card("gone"))
        first = client.changes(None)
        client.delete(gone, None)
        second = client.changes(first.sync_token)
        reports = [method for method, _ in proxy.requests if method == "REPORT"]

    assert (first.full, first.sync_token, len(first.changed)) == (True, None, 2)
    assert second.full
    assert [same_href(item.href, keep) for item in second.changed] == [True]
    assert reports == ["REPORT"]  # asked once, then remembered


def test_token_refused_with_a_plain_4xx_gives_a_full_listing(
    xandikos: XandikosServer,
) -> None:
    """Any 4xx on a non-empty token leads to a sync from scratch, full=True."""

    async def refuse_tokens(request: web.Request, body: bytes, forward: Forward) -> Any:
        if is_sync_report(request, body) and b"sync-token>" in body:
            return web.Response(status=400, text="bad token")
        return await forward()

    with proxied(xandikos, refuse_tokens) as proxy:
        client = connect(xandikos, proxy.url_for(xandikos.url))
        href, _ = client.create(client.href_for("one"), card("one"))
        start = client.changes(None)
        changes = client.changes(start.sync_token)

    assert changes.full and changes.sync_token
    assert [same_href(item.href, href) for item in changes.changed] == [True]


def test_truncated_sync_answer_is_asked_again(xandikos: XandikosServer) -> None:
    """A 507 on the collection means more to come: ask with the new token."""
    pages = {
        b"<D:sync-token/>": sync_page(
            ['a.vcf" etag="1'], [], truncated=True, token="t1"
        ),
        b"<D:sync-token>t1<": sync_page(['b.vcf" etag="2'], ["a.vcf"], False, "t2"),
    }

    async def paged(request: web.Request, body: bytes, forward: Forward) -> Any:
        if not is_sync_report(request, body):
            return await forward()
        [page] = [page for key, page in pages.items() if key in body]
        return xml_response(207, page)

    with proxied(xandikos, paged) as proxy:
        changes = connect(xandikos, proxy.url_for(xandikos.url)).changes(None)

    assert changes.sync_token == "t2"
    assert [(item.href, item.etag) for item in changes.changed] == [
        (BOOK + "b.vcf", '"2"')
    ]
    assert changes.deleted == [BOOK + "a.vcf"]
    assert changes.full


def sync_page(
    changed: list[str], deleted: list[str], truncated: bool, token: str
) -> bytes:
    """A canned sync-collection answer; `changed` holds 'name" etag="value'."""
    responses = []
    for spec in changed:
        name, _, etag = spec.partition('" etag="')
        responses.append(
            f"<D:response><D:href>{BOOK}{name}</D:href><D:propstat><D:prop>"
            f'<D:getetag>"{etag}"</D:getetag></D:prop>'
            "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
        )
    for name in deleted:
        responses.append(
            f"<D:response><D:href>{BOOK}{name}</D:href>"
            "<D:status>HTTP/1.1 404 Not Found</D:status></D:response>"
        )
    if truncated:
        responses.append(
            f"<D:response><D:href>{BOOK}</D:href>"
            "<D:status>HTTP/1.1 507 Insufficient Storage</D:status></D:response>"
        )
    return (
        '<D:multistatus xmlns:D="DAV:">'
        + "".join(responses)
        + f"<D:sync-token>{token}</D:sync-token></D:multistatus>"
    ).encode()


def test_gateway_error_raises_server_unreachable(xandikos: XandikosServer) -> None:
    """A 502 from a proxy in front of the server counts as the server being down."""
    down = {"now": False}

    async def gateway(request: web.Request, body: bytes, forward: Forward) -> Any:
        if down["now"]:
            return web.Response(status=502, text="Bad Gateway")
        return await forward()

    with proxied(xandikos, gateway) as proxy:
        client = connect(xandikos, proxy.url_for(xandikos.url))
        down["now"] = True

        with pytest.raises(ServerUnreachable):
            client.changes(None)
        with pytest.raises(ServerUnreachable):
            client.update(client.href_for("x"), card("x"), '"etag"')


def test_unauthorized_sync_raises_instead_of_resetting(
    xandikos: XandikosServer,
) -> None:
    """A 401 on sync-collection is an auth failure, not a reason for a full sync."""

    async def deny_sync(request: web.Request, body: bytes, forward: Forward) -> Any:
        if is_sync_report(request, body):
            return web.Response(
                status=401, headers={"WWW-Authenticate": 'Basic realm="x"'}
            )
        return await forward()

    with proxied(xandikos, deny_sync) as proxy:
        client = connect(xandikos, proxy.url_for(xandikos.url))

        with pytest.raises(AddressBookError, match="401"):
            client.changes("some-token")


def test_put_answer_with_location_and_weak_etag(xandikos: XandikosServer) -> None:
    """create() follows a Location header and drops a weak etag."""

    async def move(request: web.Request, body: bytes, forward: Forward) -> Any:
        answer = await forward()
        if request.method == "PUT":
            answer.headers["ETag"] = 'W/"weak"'
            answer.headers["Location"] = f"http://127.0.0.1:1{BOOK}moved.vcf"
        return answer

    with proxied(xandikos, move) as proxy:
        client = connect(xandikos, proxy.url_for(xandikos.url))

        href, etag = client.create(client.href_for("asked"), card("asked"))

    assert (href, etag) == (BOOK + "moved.vcf", None)


def test_put_answer_with_strong_etag_returns_it(xandikos: XandikosServer) -> None:
    """create() and update() return the strong etag the server sent."""
    client = connect(xandikos)

    href, etag = client.create(client.href_for("strong"), card("strong"))
    listed = client.list_etags()
    assert etag is not None
    new_etag = client.update(href, card("strong", "Changed"), etag)

    assert listed == {href: etag}
    assert new_etag is not None and new_etag != etag
    assert client.list_etags() == {href: new_etag}


def test_duplicate_uid_refused_by_radicale_is_no_write_conflict(
    radicale: CardDAVServer,
) -> None:
    """Radicale's 409 no-uid-conflict is a refused card, not a stale etag."""
    client = connect(radicale)
    client.create(client.href_for("first"), card("same-uid"))

    with pytest.raises(AddressBookError, match="no-uid-conflict") as raised:
        client.create(client.href_for("second"), card("same-uid"))

    assert not isinstance(raised.value, WriteConflict)
