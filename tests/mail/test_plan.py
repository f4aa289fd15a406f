"""Recipients to segments: one copy per segment, contacts made where needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from segcard.app import App
from segcard.mail.plan import LeakRefused, Planner
from segcard.mail.rewrite import RewriteRefused
from segcard.segment import Contact, Kind
from segcard.store import vcard
from tests.mail.smtp_sink import IDENTITY, make_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    found = make_app(tmp_path)
    yield found
    found.close()


def message(to: str, extra: str = "", body: str = "hello\r\n") -> bytes:
    return (
        f"From: John Doe <{IDENTITY}>\r\nTo: {to}\r\nSubject: s\r\n"
        f"Message-ID: <m1@john.example>\r\n{extra}\r\n{body}"
    ).encode()


def test_known_recipient_gets_its_own_segment_address(app: App) -> None:
    """A recipient on a contact gets a copy from that contact's address."""
    tom = app.book.add("Tom Smith", ["tom@example.org"])

    (copy,) = (
        Planner(app.book)
        .prepare(message("Tom <tom@example.org>"), IDENTITY, ["tom@example.org"])
        .copies
    )

    assert copy.sender == app.book.address(tom)
    assert copy.rcpts == ("tom@example.org",)
    assert f"From: John Doe <{copy.sender}>".encode() in copy.data
    assert (copy.uid, copy.token) == (tom.uid, tom.segment.token)  # type: ignore[union-attr]


def test_unknown_recipient_gets_an_automatic_contact_named_from_to(app: App) -> None:
    """A new recipient becomes a Kind.AUTO contact named by its display name."""
    Planner(app.book).prepare(
        message('"Ann Example" <ann@example.net>'), IDENTITY, ["ann@example.net"]
    )

    (ann,) = app.index.by_email("ann@example.net")

    assert ann.name == "Ann Example"
    assert ann.segment is not None and ann.segment.kind == Kind.AUTO
    assert app.index.pending(ann.uid) == "put"


def test_unknown_recipient_without_display_name_is_named_by_local_part(
    app: App,
) -> None:
    """Without a display name the local part names the new contact."""
    Planner(app.book).prepare(message("bob@example.com"), IDENTITY, ["bob@example.com"])

    (bob,) = app.index.by_email("bob@example.com")

    assert bob.name == "bob"


def test_contact_without_segment_is_given_one(app: App) -> None:
    """A known contact that had no segment gets one, not a second contact."""
    card = vcard.new_card("uid-cara", "Cara", ["cara@example.org"], None, None)
    app.index.put(Contact("uid-cara", "Cara", ("cara@example.org",)), card)

    (copy,) = (
        Planner(app.book)
        .prepare(message("cara@example.org"), IDENTITY, ["cara@example.org"])
        .copies
    )

    (cara,) = app.index.by_email("cara@example.org")
    assert cara.uid == "uid-cara" and cara.segment is not None
    assert copy.sender == app.book.address(cara)


def test_recipients_of_one_contact_share_one_copy(app: App) -> None:
    """Two addresses of one contact: one copy with both recipients."""
    app.book.add("Tom", ["tom@example.org", "tom@work.example"])

    copies = (
        Planner(app.book)
        .prepare(
            message("tom@example.org, tom@work.example"),
            IDENTITY,
            ["tom@example.org", "TOM@work.example"],
        )
        .copies
    )

    assert [c.rcpts for c in copies] == [("tom@example.org", "TOM@work.example")]


def test_own_addresses_get_no_contact_and_ride_with_the_first_copy(app: App) -> None:
    """Identities and segment addresses as recipients make no contact."""
    tom = app.book.add("Tom", ["tom@example.org"])
    own_segment = app.book.address(app.book.add("Shop", []))
    before = app.index.count()

    copies = (
        Planner(app.book)
        .prepare(
            message("tom@example.org"),
            IDENTITY,
            ["tom@example.org", IDENTITY, own_segment],
        )
        .copies
    )

    assert app.index.count() == before
    assert [(c.sender, c.rcpts) for c in copies] == [
        (app.book.address(tom), ("tom@example.org", IDENTITY, own_segment))
    ]


def test_reply_keeps_the_segment_the_message_came_in_on(app: App) -> None:
    """A reply to a message that arrived on X goes out from X, no new contact."""
    bank = app.book.add("Bank", [])
    assert bank.segment is not None
    app.index.record_message(
        "in-1@bank.example", bank.uid, bank.segment.token, "noreply@bank.example", "in"
    )
    before = app.index.count()
    reply = message(
        "noreply@bank.example",
        "In-Reply-To: <in-1@bank.example>\r\nReferences: <in-1@bank.example>\r\n",
    )

    (copy,) = (
        Planner(app.book).prepare(reply, IDENTITY, ["noreply@bank.example"]).copies
    )

    assert copy.sender == app.book.address(bank)
    assert app.index.count() == before


def test_reply_on_a_retired_address_to_a_stranger_keeps_the_old_address(
    app: App,
) -> None:
    """A rotated address is not revealed by replying to whoever used the old one."""
    shop = app.book.add("Shop", ["orders@shop.example"])
    assert shop.segment is not None
    old = app.book.address(shop)
    app.index.record_message(
        "in-2@x.example", shop.uid, shop.segment.token, "someone@x.example", "in"
    )
    shop = app.book.rotate(shop)
    reply = message("someone@x.example", "In-Reply-To: <in-2@x.example>\r\n")

    (copy,) = Planner(app.book).prepare(reply, IDENTITY, ["someone@x.example"]).copies

    assert copy.sender == old != app.book.address(shop)


def test_reply_on_a_retired_address_to_the_contact_uses_the_new_one(
    app: App,
) -> None:
    """The contact's own address learns the current address."""
    shop = app.book.add("Shop", ["orders@shop.example"])
    assert shop.segment is not None
    app.index.record_message(
        "in-3@x.example", shop.uid, shop.segment.token, "orders@shop.example", "in"
    )
    shop = app.book.rotate(shop)
    reply = message("orders@shop.example", "In-Reply-To: <in-3@x.example>\r\n")

    (copy,) = Planner(app.book).prepare(reply, IDENTITY, ["orders@shop.example"]).copies

    assert copy.sender == app.book.address(shop)


def test_mail_from_another_address_passes_unchanged(app: App) -> None:
    """From is not an identity: one copy, the message and envelope as sent."""
    raw = message("tom@example.org").replace(IDENTITY.encode(), b"boss@corp.example")

    prepared = Planner(app.book).prepare(raw, "boss@corp.example", ["tom@example.org"])

    assert [(c.sender, c.rcpts, c.data) for c in prepared.copies] == [
        ("boss@corp.example", ("tom@example.org",), raw)
    ]
    assert not prepared.rewritten
    assert app.index.by_email("tom@example.org") == []


def test_mail_from_a_segment_address_goes_out_from_it(app: App) -> None:
    """From already a segment address (the add-on): envelope sender follows."""
    tom = app.book.add("Tom", ["tom@example.org"])
    address = app.book.address(tom)
    raw = message("tom@example.org").replace(IDENTITY.encode(), address.encode())

    (copy,) = Planner(app.book).prepare(raw, IDENTITY, ["tom@example.org"]).copies

    assert (copy.sender, copy.data, copy.uid) == (address, raw, tom.uid)


@pytest.mark.parametrize(
    "sender",
    [f"{IDENTITY}, other@example.org", f"team: {IDENTITY}, other@example.org;"],
)
def test_from_with_several_mailboxes_or_a_group_is_refused_untouched(
    app: App, sender: str
) -> None:
    """Refused with a 5xx reply, and no contact is created on the way."""
    raw = message("new@example.org").replace(
        f"John Doe <{IDENTITY}>".encode(), sender.encode()
    )

    with pytest.raises(RewriteRefused) as refused:
        Planner(app.book).prepare(raw, IDENTITY, ["new@example.org"])

    assert refused.value.reply.startswith("550 ")
    assert app.index.count() == 0


def test_leak_refusal_comes_before_any_contact_is_made(app: App) -> None:
    """With refuse_leaks, an identity in the body refuses the message first."""
    raw = message("new@example.org", body=f"write to {IDENTITY} instead\r\n")

    with pytest.raises(LeakRefused) as refused:
        Planner(app.book).prepare(raw, IDENTITY, ["new@example.org"], refuse_leaks=True)

    assert refused.value.places == ["body part 1 (text/plain)"]
    assert app.index.count() == 0


def test_leak_is_reported_when_not_refused(app: App) -> None:
    """By default the copies are made and the places reported."""
    raw = message("new@example.org", body=f"mailto:{IDENTITY}\r\n")

    prepared = Planner(app.book).prepare(raw, IDENTITY, ["new@example.org"])

    assert len(prepared.copies) == 1
    assert prepared.leaks == ["mailto: link in body part 1 (text/plain)"]
