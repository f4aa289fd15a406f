"""The control API over a real App: every request type, every refusal."""

from __future__ import annotations

from typing import Any

import pytest

from segcard.control.api import API_VERSION, MAX_RECIPIENTS, ControlApi
from segcard.segment import Contact, State
from tests.control.conftest import IDENTITY, Book

TOM = "tom@example.org"
STRANGER = "spam@bulk.example"


@pytest.fixture
def api(book: Book) -> ControlApi:
    return ControlApi(book.app)


def ask(api: ControlApi, kind: str, **fields: Any) -> dict[str, Any]:
    return api.handle({"v": API_VERSION, "id": "t1", "type": kind, **fields})


def address(book: Book, uid: str) -> str:
    contact = book.app.index.get(uid)
    assert contact is not None
    return book.app.book.address(contact)


# -- the envelope of every request ------------------------------------------


def test_ping_answers_with_the_api_version_and_echoes_the_id(api: ControlApi) -> None:
    """A reply carries the version, the request's id and ok."""
    reply = ask(api, "ping")

    assert reply["v"] == 1
    assert reply["id"] == "t1"
    assert reply["ok"] is True
    assert reply["api"] == 1


@pytest.mark.parametrize("kind", ["remove", "__init__", "handle", "", None, 3])
def test_unknown_type_is_refused_and_nothing_runs(
    api: ControlApi, book: Book, kind: object
) -> None:
    """Only the listed types run; anything else is an error reply."""
    before = book.app.index.count()

    reply = api.handle({"v": 1, "id": 7, "type": kind, "contact": book.tom.uid})

    assert reply["ok"] is False
    assert reply["code"] == "unknown_type"
    assert reply["id"] == 7
    assert book.app.index.count() == before


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_other_api_version_is_refused_with_what_to_do(
    api: ControlApi, version: object
) -> None:
    """A request of another version gets bad_version and an instruction."""
    reply = api.handle({"v": version, "type": "ping"})

    assert reply["code"] == "bad_version"
    assert "update the add-on or segcard" in reply["error"]


@pytest.mark.parametrize("request_", [[], "ping", 1, None])
def test_request_that_is_not_an_object_is_refused(
    api: ControlApi, request_: object
) -> None:
    """A request must be a JSON object."""
    reply = api.handle(request_)

    assert reply["ok"] is False
    assert reply["code"] == "bad_request"
    assert reply["id"] is None


@pytest.mark.parametrize("request_id", ["x" * 101, [1], {"a": 1}, True, 1.5])
def test_odd_ids_are_not_echoed(api: ControlApi, request_id: object) -> None:
    """Only short strings and integers come back as the id."""
    reply = api.handle({"v": 1, "id": request_id, "type": "ping"})

    assert reply["ok"] is True
    assert reply["id"] is None


def test_failure_inside_a_handler_is_an_internal_error_reply(
    api: ControlApi, book: Book, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception becomes a plain reply, never a crash or a trace."""

    def broken(*_args: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(book.app.book, "rotate", broken)

    reply = ask(api, "rotate", contact=book.tom.uid)

    assert reply["code"] == "internal"
    assert "secret detail" not in reply["error"]


# -- reading -----------------------------------------------------------------


def test_identities_lists_the_users_real_addresses(api: ControlApi) -> None:
    """identities gives the identities, user and domain."""
    reply = ask(api, "identities")

    assert reply["identities"] == [IDENTITY]
    assert reply["domain"] == "john.example"


def test_status_counts_contacts_and_waiting_writes(api: ControlApi) -> None:
    """status reports the contacts and the outbox."""
    reply = ask(api, "status")

    assert reply["contacts"] == 2
    assert reply["outbox"] == 2
    assert reply["daemon"] == "not running"


def test_recipients_shows_the_address_each_one_will_see(
    api: ControlApi, book: Book
) -> None:
    """A contact shows its segment address, an unknown address 'new contact',
    and an identity is the user's own."""
    book.app.index.put(Contact("uid-plain", "Plain", ("plain@x.example",)), _card())

    reply = ask(
        api,
        "recipients",
        addresses=[
            "Tom <TOM@example.org>",
            "new@x.example",
            IDENTITY,
            "plain@x.example",
        ],
        **{"from": f"John <{IDENTITY}>"},
    )

    rows = {row["address"]: row for row in reply["recipients"]}
    assert rows[TOM]["kind"] == "segment"
    assert rows[TOM]["from"] == address(book, book.tom.uid)
    assert rows[TOM]["contact"]["name"] == "Tom Smith"
    assert rows["new@x.example"] == {
        "address": "new@x.example",
        "kind": "new_contact",
        "contact": None,
        "from": None,
    }
    assert rows[IDENTITY]["kind"] == "own"
    assert rows["plain@x.example"]["kind"] == "new_segment"
    assert reply["from_kind"] == "identity"
    assert reply["identities"] == [IDENTITY]


def test_recipients_changes_nothing(api: ControlApi, book: Book) -> None:
    """Asking makes no contact and queues no write."""
    contacts, outbox = book.app.index.count(), book.app.index.outbox()

    ask(api, "recipients", addresses=["new@x.example"])

    assert book.app.index.count() == contacts
    assert book.app.index.outbox() == outbox


def test_a_reply_keeps_the_old_address_its_sender_wrote_to(
    api: ControlApi, book: Book
) -> None:
    """A reply to mail that came in on a retired address, from someone who is
    not the contact, goes out from that old address (the planner's rule)."""
    old = book.tom.segment
    assert old is not None
    book.app.index.record_message(
        "m1@x.example", book.tom.uid, old.token, "f@o.example", "in"
    )
    book.app.book.rotate(book.tom)

    reply = ask(
        api, "recipients", addresses=["f@o.example"], references=["<m1@x.example>"]
    )

    row = reply["recipients"][0]
    assert row["from"] == book.app.config.address(old.label, old.token)
    assert row["from"] != address(book, book.tom.uid)


def test_from_kind_tells_identity_segment_and_other(
    api: ControlApi, book: Book
) -> None:
    """from_kind says whose the From address is."""
    kinds = [
        ask(api, "recipients", addresses=[], **{"from": sender})["from_kind"]
        for sender in (IDENTITY, address(book, book.tom.uid), "x@y.example")
    ]

    assert kinds == ["identity", "segment", "other"]


@pytest.mark.parametrize(
    "fields",
    [
        {"addresses": "tom@example.org"},
        {"addresses": ["not an address"]},
        {"addresses": ["a@x.example, b@x.example"]},
        {"addresses": [f"a{i}@x.example" for i in range(MAX_RECIPIENTS + 1)]},
        {"addresses": [1]},
        {"addresses": ["a@x.example"], "references": ["no-brackets@x"]},
        {"addresses": ["a@x.example"], "references": ["<a b@x>"]},
        {"addresses": ["a@x.example"], "from": "John\r\nBcc: x@y <a@b.example>"},
    ],
)
def test_recipients_with_bad_fields_is_refused(
    api: ControlApi, fields: dict[str, Any]
) -> None:
    """Every field is checked for its type, form and size."""
    reply = ask(api, "recipients", **fields)

    assert reply["ok"] is False
    assert reply["code"] == "bad_request"


def test_message_from_its_contact_came_in_via_that_contact(
    api: ControlApi, book: Book
) -> None:
    """Mail from Tom on Tom's address: found, delivered, known sender."""
    tom = address(book, book.tom.uid)

    reply = ask(api, "message", delivered_to=[tom], **{"from": f"Tom <{TOM}>"})

    assert reply["found"] is True
    assert reply["contact"]["uid"] == book.tom.uid
    assert reply["came_in_on"] == tom
    assert reply["verdict"] == {"action": "deliver", "reason": "known sender"}


def test_message_from_a_stranger_is_a_warning_and_records_nothing(
    api: ControlApi, book: Book
) -> None:
    """Someone else on Tom's address gets warn; looking records no leak."""
    tom = address(book, book.tom.uid)

    reply = ask(api, "message", to=[tom], **{"from": STRANGER})

    assert reply["verdict"]["action"] == "warn"
    assert reply["sender"] == STRANGER
    assert "used by spam@bulk.example" in reply["note"]
    assert book.app.index.leaks() == []


def test_message_on_a_retired_address_says_old_address(
    api: ControlApi, book: Book
) -> None:
    """After a rotation the old address is recognised as Tom's old one."""
    old = address(book, book.tom.uid)
    book.app.book.rotate(book.tom)

    reply = ask(api, "message", delivered_to=[old], **{"from": TOM})

    assert reply["verdict"]["reason"] == "old address"
    assert reply["contact"]["address"] != old


def test_message_prefers_the_delivery_address_over_to(
    api: ControlApi, book: Book
) -> None:
    """Delivered-To names the envelope recipient; To may name others."""
    reply = ask(
        api,
        "message",
        delivered_to=[address(book, book.bank.uid)],
        to=[address(book, book.tom.uid)],
        **{"from": "service@bank.example"},
    )

    assert reply["contact"]["uid"] == book.bank.uid


def test_message_found_through_the_verdict_header(api: ControlApi, book: Book) -> None:
    """Without a segment address in the headers, X-Segcard-Verdict's segment=
    names it."""
    header = f'deliver; reason="known sender"; segment={address(book, book.tom.uid)}'

    reply = ask(api, "message", verdict_header=header, to=[IDENTITY], **{"from": TOM})

    assert reply["contact"]["uid"] == book.tom.uid


def test_message_on_an_unknown_token_is_unknown(api: ControlApi, book: Book) -> None:
    """A token no segment ever had: not found, unknown token."""
    reply = ask(api, "message", to=["john-tom-aaaaaaaaa@john.example"])

    assert reply["found"] is False
    assert reply["verdict"]["reason"] == "unknown token"


def test_message_to_an_identity_is_marked_so(api: ControlApi) -> None:
    """Mail to the user's real address is not on any segment."""
    reply = ask(api, "message", to=[IDENTITY], **{"from": TOM})

    assert reply["found"] is False
    assert reply["to_identity"] is True


# -- changing ----------------------------------------------------------------


def test_block_and_unblock_change_the_index_and_queue_a_write(
    api: ControlApi, book: Book
) -> None:
    """block and unblock change the state and the card goes to the outbox."""
    book.app.index.dequeue(book.tom.uid)

    blocked = ask(api, "block", contact=book.tom.uid)
    stored = book.app.index.get(book.tom.uid)
    queued = [entry for entry in book.app.index.outbox() if entry[0] == book.tom.uid]
    unblocked = ask(api, "unblock", contact=book.tom.uid)

    assert blocked["contact"]["state"] == "blocked"
    assert stored is not None and stored.segment is not None
    assert stored.segment.state is State.BLOCKED
    assert queued
    assert unblocked["contact"]["state"] == "active"


def test_rotate_gives_a_new_address(api: ControlApi, book: Book) -> None:
    """rotate answers with the contact's new address."""
    before = address(book, book.tom.uid)

    reply = ask(api, "rotate", contact=book.tom.uid)

    assert reply["contact"]["address"] != before
    assert reply["contact"]["address"] == address(book, book.tom.uid)


def test_trust_makes_the_sender_known(api: ControlApi, book: Book) -> None:
    """A trusted sender is delivered as known on that contact's address."""
    tom = address(book, book.tom.uid)

    trusted = ask(api, "trust", contact=book.tom.uid, sender=f"Friend <{STRANGER}>")
    reply = ask(api, "message", to=[tom], **{"from": STRANGER})

    assert trusted["trusted"] == STRANGER
    assert reply["verdict"] == {"action": "deliver", "reason": "known sender"}


def test_change_calls_back_so_the_daemon_can_sync(book: Book) -> None:
    """Every change tells the caller's on_change."""
    changes: list[int] = []
    api = ControlApi(book.app, on_change=lambda: changes.append(1))

    ask(api, "block", contact=book.tom.uid)
    ask(api, "trust", contact=book.tom.uid, sender="a@b.example")

    assert len(changes) == 2


@pytest.mark.parametrize("kind", ["block", "unblock", "rotate"])
def test_a_contact_that_is_gone_gets_a_plain_sentence(
    api: ControlApi, kind: str
) -> None:
    """An unknown UID: not_found, with what to do."""
    reply = ask(api, kind, contact="no-such-uid")

    assert reply["code"] == "not_found"
    assert "no longer exists" in reply["error"]
    assert "reopen" in reply["error"]


@pytest.mark.parametrize(
    "fields",
    [{}, {"contact": ""}, {"contact": 5}, {"contact": "x" * 201}, {"contact": "a\nb"}],
)
def test_a_missing_or_odd_contact_field_is_refused(
    api: ControlApi, fields: dict[str, Any]
) -> None:
    """contact must be a short UID string."""
    reply = ask(api, "block", **fields)

    assert reply["code"] == "bad_request"


def test_trust_without_a_usable_sender_is_refused(api: ControlApi, book: Book) -> None:
    """trust needs one plain address."""
    missing = ask(api, "trust", contact=book.tom.uid)
    odd = ask(api, "trust", contact=book.tom.uid, sender="we'ird!#@x.example")

    assert missing["code"] == "bad_request"
    assert odd["code"] == "refused"
    assert "cannot be stored" in odd["error"]


def _card() -> str:
    return (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:uid-plain\r\nFN:Plain\r\n"
        "EMAIL:plain@x.example\r\nEND:VCARD\r\n"
    )
