"""Tests of the embedded CardDAV server: auth, byte-exact storage, restarts."""

from __future__ import annotations

import asyncio
import base64
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from segcard.carddav.client import CardDAVClient
from segcard.carddav.embedded import EmbeddedServer
from segcard.errors import ConfigError
from tests.servers import free_port

USERNAME = "owner"
PASSWORD = "correct horse"
PROPFIND = (
    b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>'
)
# Odd folding (a fold inside a word, a tab fold) and no final CRLF.
ODD_CARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:odd-1\r\nFN:Od\r\n d Folding\r\n"
    "NOTE:a, b\\, c\r\n\tcontinued\nEND:VCARD"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A started embedded server, stopped afterwards."""
    embedded = EmbeddedServer(tmp_path / "dav", USERNAME, PASSWORD)
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


def propfind_status(url: str, credentials: tuple[str, str] | None) -> tuple[int, str]:
    """Status and WWW-Authenticate of a raw PROPFIND, with optional Basic auth."""
    request = urllib.request.Request(url, data=PROPFIND, method="PROPFIND")
    request.add_header("Content-Type", "application/xml")
    request.add_header("Depth", "0")
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, ""
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers.get("WWW-Authenticate", "")


def test_request_without_credentials_gets_401(server: EmbeddedServer) -> None:
    """A request with no Authorization header is refused with a Basic challenge."""
    status, challenge = propfind_status(server.url, None)

    assert status == 401
    assert challenge.startswith("Basic ")


def test_request_with_wrong_password_gets_401(server: EmbeddedServer) -> None:
    """A wrong password is refused like a missing one."""
    status, _ = propfind_status(server.url, (USERNAME, "wrong"))

    assert status == 401


def test_request_with_wrong_username_gets_401(server: EmbeddedServer) -> None:
    """The right password under another username is refused."""
    status, _ = propfind_status(server.url, ("intruder", PASSWORD))

    assert status == 401


def test_request_with_right_credentials_gets_multistatus(
    server: EmbeddedServer,
) -> None:
    """The configured username and password reach the address book."""
    status, _ = propfind_status(server.url, (USERNAME, PASSWORD))

    assert status == 207


def test_well_known_carddav_is_also_behind_auth(server: EmbeddedServer) -> None:
    """The /.well-known/carddav redirect gives nothing away without credentials."""
    url = f"http://127.0.0.1:{server.port}/.well-known/carddav"

    status, _ = propfind_status(url, None)

    assert status == 401


def test_stores_a_card_byte_for_byte(server: EmbeddedServer) -> None:
    """A card with odd folding and line ends is stored and read back unchanged."""
    client = CardDAVClient(server.url, USERNAME, PASSWORD)
    client.discover()
    href = client.href_for("odd-1")

    client.create(href, ODD_CARD)
    [item] = client.multiget([href])

    assert item.data == ODD_CARD
    stored = server.root / "user" / "contacts" / "addressbook" / "odd-1.vcf"
    assert stored.read_bytes() == ODD_CARD.encode()


def test_cards_survive_a_restart_with_the_same_root(tmp_path: Path) -> None:
    """A new server on the same root serves the cards the old one stored."""
    first = EmbeddedServer(tmp_path / "dav", USERNAME, PASSWORD)
    first.start()
    client = CardDAVClient(first.url, USERNAME, PASSWORD)
    client.discover()
    href, _ = client.create(client.href_for("kept"), ODD_CARD)
    first.stop()

    second = EmbeddedServer(tmp_path / "dav", USERNAME, PASSWORD)
    second.start()
    try:
        items = CardDAVClient(second.url, USERNAME, PASSWORD).multiget([href])
    finally:
        second.stop()

    assert [item.data for item in items] == [ODD_CARD]


def test_stop_then_start_serves_on_the_same_port(server: EmbeddedServer) -> None:
    """After stop(), start() listens on the port it had before."""
    port = server.port

    server.stop()
    server.start()

    assert server.port == port
    assert propfind_status(server.url, (USERNAME, PASSWORD))[0] == 207


def test_given_port_is_used(tmp_path: Path) -> None:
    """A server asked for a port listens on exactly that port."""
    port = free_port()
    server = EmbeddedServer(tmp_path / "dav", USERNAME, PASSWORD, port=port)

    server.start()
    try:
        status, _ = propfind_status(server.url, (USERNAME, PASSWORD))
    finally:
        server.stop()

    assert server.url == f"http://127.0.0.1:{port}/user/contacts/addressbook/"
    assert status == 207


def test_busy_port_raises_config_error(tmp_path: Path) -> None:
    """A port held by someone else is a ConfigError naming the address."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = EmbeddedServer(tmp_path / "dav", USERNAME, PASSWORD, port=port)

        with pytest.raises(ConfigError, match=str(port)):
            server.start()


def test_default_listens_on_loopback_only(server: EmbeddedServer) -> None:
    """Without a host the server binds 127.0.0.1 and no other address."""
    assert server.url.startswith("http://127.0.0.1:")
    # Linux routes all of 127/8 to lo; a wildcard bind would accept 127.0.0.2.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", server.port), timeout=5).close()


def test_runs_on_the_callers_event_loop(tmp_path: Path) -> None:
    """start_async serves on the running loop while a client calls it from a thread."""
    server = EmbeddedServer(tmp_path / "dav", USERNAME, PASSWORD)

    async def scenario() -> dict[str, str]:
        await server.start_async()
        try:
            client = CardDAVClient(server.url, USERNAME, PASSWORD)
            await asyncio.to_thread(client.discover)
            await asyncio.to_thread(client.create, client.href_for("a1"), ODD_CARD)
            return await asyncio.to_thread(client.list_etags)
        finally:
            await server.stop_async()

    listing = asyncio.run(scenario())

    assert list(listing) == ["/user/contacts/addressbook/a1.vcf"]


def test_empty_password_is_refused(tmp_path: Path) -> None:
    """The server will not run without a password."""
    with pytest.raises(ConfigError):
        EmbeddedServer(tmp_path / "dav", USERNAME, "")


def test_unusable_root_raises_config_error(tmp_path: Path) -> None:
    """A root that is a file, not a directory, is a ConfigError naming it."""
    root = tmp_path / "not-a-dir"
    root.write_text("")
    server = EmbeddedServer(root, USERNAME, PASSWORD)

    with pytest.raises(ConfigError, match="not-a-dir"):
        server.start()


@pytest.mark.parametrize(
    "name",
    [
        "khard-4.0-altid-n.vcf",
        "outlook-2.1-qp-label-photo.vcf",
        "apple-addressbook-6.1-3.0-many-props-long-lines.vcf",
    ],
)
def test_stores_real_cards_xandikos_alone_refuses(
    server: EmbeddedServer, corpus: Path, name: str
) -> None:
    """Cards vobject cannot read (Xandikos refuses them) are stored as sent."""
    text = (corpus / "vcards" / name).read_bytes().decode("utf-8", "surrogateescape")
    text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    client = CardDAVClient(server.url, USERNAME, PASSWORD)
    client.discover()

    href, _etag = client.create(client.href_for("real"), text)

    [item] = client.multiget([href])
    assert item.data == text
