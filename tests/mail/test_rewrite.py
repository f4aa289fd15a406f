"""The per-segment copy of an outgoing message, and what is read from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segcard.mail.headers import split_message
from segcard.mail.leaks import header_leaks
from segcard.mail.rewrite import (
    RewriteRefused,
    header_from,
    message_id,
    recipients,
    references,
    rewrite,
)
from tests.corpus import mail_files, require_corpus

from .rewrite_checks import assert_only_intended_changes, split

SEGMENTS = ("john-tom-gh3f3gh3@john.example", "john@bank-k7mz2qpx.segments.example")
ID = "john@john.example"
SEG = SEGMENTS[0]


def message(*headers: str, body: str = "Hello.\r\n", eol: str = "\r\n") -> bytes:
    """A message from header lines (folding written with \\n) and a body."""
    lines = [h.replace("\n", eol) for h in headers]
    return (eol.join(lines) + eol + eol + body.replace("\r\n", eol)).encode("utf-8")


def field(raw: bytes, name: str) -> list[bytes]:
    """Every field called *name* in *raw*, with its exact bytes."""
    fields, _ = split(raw)
    return [f for f in fields if f.lower().startswith(name.lower().encode() + b":")]


@pytest.mark.parametrize("path", mail_files() or [None], ids=lambda p: p and p.name)
def test_corpus_copy_changes_only_identity_fields(path: Path | None) -> None:
    """Every corpus message, rewritten for two segments, differs only where the
    rules say; a From that is not one mailbox is refused instead."""
    if path is None:
        require_corpus()
        return
    original = path.read_bytes()
    try:
        _, identity = header_from(original)
    except RewriteRefused as refused:
        with pytest.raises(RewriteRefused):
            rewrite(original, [], SEG)
        assert refused.reply.startswith("5")
        return

    for segment in SEGMENTS:
        copy = rewrite(original, [identity], segment)

        assert_only_intended_changes(original, copy, [identity], segment)


def test_encoded_display_name_with_comma_is_kept_byte_for_byte() -> None:
    """An encoded name that decodes to "Smith, John" stays one mailbox."""
    raw = message("From: =?utf-8?q?Smith=2C_John?= <john@x.example>", "To: a@b.example")

    copy = rewrite(raw, ["john@x.example"], SEG)

    assert field(copy, "From") == [
        b"From: =?utf-8?q?Smith=2C_John?= <%s>\r\n" % SEG.encode()
    ]
    assert header_from(raw) == ("=?utf-8?q?Smith=2C_John?=", "john@x.example")
    assert_only_intended_changes(raw, copy, ["john@x.example"], SEG)


def test_quoted_display_name_with_comma_is_kept() -> None:
    """A quoted name holding a comma is one mailbox and keeps its bytes."""
    raw = message('From: "Smith, John" <John@John.Example>', "To: a@b.example")

    copy = rewrite(raw, [ID], SEG)

    assert field(copy, "From") == [b'From: "Smith, John" <%s>\r\n' % SEG.encode()]
    assert header_from(raw) == ('"Smith, John"', ID)


def test_folded_from_keeps_its_folding() -> None:
    """A From folded over two lines keeps both lines, only the address changes."""
    raw = message('From: "A rather long display name"\n <john@john.example>', "To: a@b")

    copy = rewrite(raw, [ID], SEG)

    expected = b'From: "A rather long display name"\r\n <%s>\r\n' % SEG.encode()
    assert field(copy, "From") == [expected]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("From: john@john.example", "From: " + SEG),
        ("From: <john@john.example>", "From: <" + SEG + ">"),
        ("From: john@john.example (John Smith)", "From: " + SEG + " (John Smith)"),
        ('From: "john@john.example" <JOHN@john.example>', f'From: "{SEG}" <{SEG}>'),
    ],
)
def test_from_forms_get_the_segment_address(written: str, expected: str) -> None:
    """Bare, bracketed and commented From forms all carry the segment address."""
    raw = message(written, "To: a@b.example")

    copy = rewrite(raw, [ID], SEG)

    assert field(copy, "From") == [expected.encode() + b"\r\n"]


def test_bare_lf_message_keeps_bare_lf() -> None:
    """A message with bare LF line endings gets no CR in any line written."""
    raw = message(
        "From: John <john@john.example>",
        "Subject: =?utf-8?q?a_subject_long_enough_to_be_folded_when_encoded_?=",
        " =?utf-8?q?anew=2C_write_to_john=40john.example?=",
        "Bcc: x@y.example,\n z@y.example",
        body="line\n",
        eol="\n",
    )

    copy = rewrite(raw, [ID], SEG)

    assert b"\r" not in copy
    assert copy.endswith(b"\n\nline\n")
    assert_only_intended_changes(raw, copy, [ID], SEG)


@pytest.mark.parametrize(
    "value",
    ["team: john@john.example, tom@t.example;", "undisclosed-recipients:;"],
)
def test_group_syntax_in_from_is_refused(value: str) -> None:
    """A From with group syntax cannot be rewritten and gets a 5xx reply."""
    raw = message("From: " + value, "To: a@b.example")

    with pytest.raises(RewriteRefused) as refused:
        rewrite(raw, [ID], SEG)

    assert refused.value.reply.startswith("550 ")
    with pytest.raises(RewriteRefused):
        header_from(raw)


@pytest.mark.parametrize(
    "headers",
    [
        ("From: john@john.example, tom@t.example",),
        ("From: john@john.example", "From: tom@t.example"),
        ("Subject: no From at all",),
        ("From: ",),
        ("From: (only a comment)",),
    ],
)
def test_from_without_exactly_one_mailbox_is_refused(headers: tuple[str, ...]) -> None:
    """Several mailboxes, several From fields or none are refused with 5xx."""
    raw = message(*headers)

    with pytest.raises(RewriteRefused) as refused:
        rewrite(raw, [ID], SEG)

    assert refused.value.reply[0] == "5"


def test_folded_bcc_is_removed_entirely() -> None:
    """A Bcc folded over three lines leaves no line behind; neighbours stay."""
    raw = message(
        "From: john@john.example",
        "Bcc: first@a.example,",
        "  second@b.example,",
        "\tthird@c.example",
        "Subject: hi",
    )

    copy = rewrite(raw, [ID], SEG)

    assert copy == message("From: " + SEG, "Subject: hi")
    assert recipients(raw).bcc == [
        ("", "first@a.example"),
        ("", "second@b.example"),
        ("", "third@c.example"),
    ]


def test_autocrypt_naming_the_identity_is_removed() -> None:
    """Autocrypt (and Gossip) naming an identity go; others' Gossip stays."""
    gossip = "Autocrypt-Gossip: addr=tom@t.example; keydata=AAAA\n BBBB"
    raw = message(
        "From: john@john.example",
        "Autocrypt: addr=john@john.example; keydata=\n mQINBF\n xyz=",
        "Autocrypt-Gossip: addr=JOHN@john.example; keydata=CCCC",
        gossip,
    )

    copy = rewrite(raw, [ID], SEG)

    assert copy == message("From: " + SEG, gossip)


def test_message_id_host_becomes_the_segment_domain() -> None:
    """Message-ID keeps its local part and takes the segment address's domain."""
    raw = message("Message-ID: <abc.john.123@John.Example>", "From: john@john.example")

    copy = rewrite(raw, [ID], SEGMENTS[1])

    assert field(copy, "Message-ID") == [
        b"Message-ID: <abc.john.123@bank-k7mz2qpx.segments.example>\r\n"
    ]
    assert message_id(raw) == "abc.john.123@John.Example"


def test_reply_fields_replace_every_identity_occurrence() -> None:
    """Sender, Reply-To, DNT and Return-Receipt-To keep all but the identity."""
    raw = message(
        "From: John <john@john.example>",
        'Reply-To: "Team" <team@t.example>, John@John.Example',
        "Sender: john@john.example",
        "Disposition-Notification-To: <john@john.example>",
        "Return-Receipt-To: john@john.example",
    )

    copy = rewrite(raw, [ID, "j@other.example"], SEG)

    assert copy == message(
        f"From: John <{SEG}>",
        f'Reply-To: "Team" <team@t.example>, {SEG}',
        f"Sender: {SEG}",
        f"Disposition-Notification-To: <{SEG}>",
        f"Return-Receipt-To: {SEG}",
    )


def test_other_fields_carrying_an_identity_are_removed_or_edited() -> None:
    """X-, Return-Path and OpenPGP fields naming an identity go; others are
    edited in place; fields naming other addresses stay untouched."""
    raw = message(
        "Return-Path: <john@john.example>",
        "From: john@john.example",
        "X-Mozilla-Identity: john@john.example",
        "OpenPGP: id=ABCD; url=https://keys.example/john@john.example",
        "To: tom@t.example, john@john.example",
        "Cc: x.john@john.example, john@john.example.org",
        "X-Other: tom@t.example",
    )

    copy = rewrite(raw, [ID], SEG)

    assert copy == message(
        "From: " + SEG,
        f"To: tom@t.example, {SEG}",
        "Cc: x.john@john.example, john@john.example.org",
        "X-Other: tom@t.example",
    )


def test_identity_inside_an_encoded_word_is_encoded_anew() -> None:
    """An identity hidden in an RFC 2047 word is replaced and nothing leaks."""
    raw = message(
        "From: john@john.example",
        "Subject: =?utf-8?q?Mail_me_at_john=40john=2Eexample_?= =?utf-8?q?please?=",
    )

    copy = rewrite(raw, [ID], SEG)

    assert header_leaks(copy, [ID]) == []
    assert_only_intended_changes(raw, copy, [ID], SEG)
    (subject,) = field(copy, "Subject")
    assert subject.startswith(b"Subject: =?utf-8?b?")


def test_identity_split_across_encoding_boundary_is_refused() -> None:
    """When the identity cannot be replaced in place the message is refused."""
    raw = message("From: john@john.example", "Subject: =?utf-8?q?john?=@john.example")

    with pytest.raises(RewriteRefused) as refused:
        rewrite(raw, [ID], SEG)

    assert refused.value.reply.startswith("550 5.7.0")


def test_body_is_never_touched() -> None:
    """Identity and header-like lines in the body are left as written."""
    body = "From: john@john.example\r\nBcc: x@y\r\n\r\nmail john@john.example\r\n"
    raw = message("From: john@john.example", body=body)

    copy = rewrite(raw, [ID], SEG)

    assert copy.endswith(b"\r\n\r\n" + body.encode())


def test_recipients_decode_names_and_flatten_groups() -> None:
    """To/Cc/Bcc give decoded names and lower-case addresses, group members too."""
    raw = message(
        "From: john@john.example",
        'To: =?utf-8?q?Smith=2C_John?= <JS@X.example>, "Doe, Jane" <jd@x.example>',
        "Cc: friends: a@f.example, B <b@f.example>;, c@f.example (Carl)",
        "To: undisclosed-recipients:;",
    )

    found = recipients(raw)

    assert found.to == [("Smith, John", "js@x.example"), ("Doe, Jane", "jd@x.example")]
    assert found.cc == [
        ("", "a@f.example"),
        ("B", "b@f.example"),
        ("Carl", "c@f.example"),
    ]
    assert found.bcc == []


def test_references_list_in_reply_to_first_without_duplicates() -> None:
    """In-Reply-To comes first, then References, each msg-id once."""
    raw = message(
        "From: john@john.example",
        "References: <a@x.example>\n <b@x.example> <c@x.example>",
        "In-Reply-To: <c@x.example> (Tom's message)",
    )

    assert references(raw) == ["c@x.example", "a@x.example", "b@x.example"]
    assert message_id(raw) is None


def test_header_from_reads_name_as_written() -> None:
    """header_from keeps quotes and encoded words; 8-bit bytes read as latin-1."""
    raw = b'From: "J\xfcrgen" <Juergen@Example.DE>\r\n\r\n'

    assert header_from(raw) == ('"J\u00fcrgen"', "juergen@example.de")
    assert header_from(message("From: a@b.example (Al B)")) == ("Al B", "a@b.example")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_any_bytes_split_and_join_unchanged(raw: bytes) -> None:
    """Cutting a message into fields and joining them again changes no byte."""
    assert split_message(raw).join() == raw


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_any_bytes_are_rewritten_or_refused(raw: bytes) -> None:
    """Whatever the client sends, rewrite answers a copy or RewriteRefused,
    and a copy's body (after the first empty line) is the original's."""
    try:
        copy = rewrite(raw, [ID], SEG)
    except RewriteRefused as refused:
        assert refused.reply.startswith("5")
        return

    assert split(copy)[1] == split(raw)[1]


NAMES = st.sampled_from(['"Smith, John"', "John", "=?utf-8?q?J=C3=B6rg?=", ""])
OTHER = st.sampled_from(
    [
        "Subject: hello",
        "To: tom@t.example, =?utf-8?q?Doe=2C_Jane?= <jd@x.example>",
        "Cc: john@john.example, x.john@john.example",
        "Reply-To: JOHN@john.example",
        "Sender: list-admin@l.example",
        "X-Mozilla-Identity-Key: id1 john@john.example",
        "X-Mailer: test\n\tcontinued",
        "Bcc: hidden@h.example,\n other@h.example",
        "Autocrypt: addr=john@john.example; keydata=\n QUJD",
        "Autocrypt-Gossip: addr=tom@t.example; keydata=REVG",
        "Message-ID: <1.john@john.example>",
        "Disposition-Notification-To: John <john@john.example>",
        "Received: from john@john.example by mx",
        "References: <a@b.example>\n <c@d.example>",
    ]
)


@settings(max_examples=200)
@given(
    name=NAMES,
    others=st.lists(OTHER, max_size=8),
    position=st.integers(min_value=0, max_value=8),
    eol=st.sampled_from(["\r\n", "\n"]),
)
def test_generated_messages_change_only_identity_fields(
    name: str, others: list[str], position: int, eol: str
) -> None:
    """Any mix of client header fields gets only the intended changes."""
    sender = f"From: {name} <John@john.example>" if name else "From: john@john.example"
    headers = [*others[:position], sender, *others[position:]]
    raw = message(*headers, body="Hi john@john.example\r\n", eol=eol)

    copy = rewrite(raw, [ID], SEG)

    assert_only_intended_changes(raw, copy, [ID], SEG)


@pytest.mark.parametrize(
    "segment",
    ["", "no-at-sign", "a@b.example\r\nBcc: x@y", "a b@c.example", "@c.example"],
)
def test_unusable_segment_address_is_a_programming_error(segment: str) -> None:
    """A segment address that would break the header is refused with ValueError."""
    raw = message("From: john@john.example")

    with pytest.raises(ValueError):
        rewrite(raw, [ID], segment)
