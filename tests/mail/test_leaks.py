"""The leak check: an identity is found wherever and however it is encoded."""

from __future__ import annotations

import base64
import quopri

import pytest

from segcard.mail.leaks import find_leaks, header_leaks

ID = "john@john.example"
SEG = "john-tom-gh3f3gh3@john.example"
HEAD = f"From: {SEG}\r\nTo: tom@t.example\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"


def single(content_type: str, encoding: str, payload: bytes) -> bytes:
    """A one-part message with this content and transfer encoding."""
    return (
        HEAD.encode()
        + f"Content-Type: {content_type}\r\n".encode()
        + f"Content-Transfer-Encoding: {encoding}\r\n\r\n".encode()
        + payload
    )


def multipart(*parts: bytes) -> bytes:
    """A multipart/mixed message of these parts (each: headers, blank, body)."""
    out = HEAD.encode() + b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    for part in parts:
        out += b"--XX\r\n" + part + b"\r\n"
    return out + b"--XX--\r\n"


def test_clean_message_has_no_leaks() -> None:
    """A message without the identity, or with look-alike addresses, is clean."""
    body = b"To jimbob@john.example, x.john@john.example, john@john.example.org\r\n"
    raw = single("text/plain; charset=us-ascii", "7bit", body)

    assert find_leaks(raw, [ID]) == []


def test_identity_quoted_in_plain_text_is_found() -> None:
    """The identity in a quoted reply line of a text/plain part is found."""
    body = b"Yes.\r\n\r\nOn Monday, John <John@John.Example> wrote:\r\n> hi\r\n"
    raw = single("text/plain; charset=us-ascii", "7bit", body)

    assert find_leaks(raw, [ID]) == ["body part 1 (text/plain)"]
    assert find_leaks(raw, [" <JOHN@john.example> "]) == ["body part 1 (text/plain)"]


def test_identity_split_by_quoted_printable_soft_break_is_found() -> None:
    """Quoted-printable is decoded first, soft line breaks included."""
    body = b"> On Monday John <john@jo=\r\nhn.example> wrote:\r\n"
    raw = single("text/plain; charset=utf-8", "quoted-printable", body)

    assert find_leaks(raw, [ID]) == ["body part 1 (text/plain)"]


def test_identity_in_base64_text_part_is_found() -> None:
    """A base64 text part is decoded, in its charset, before searching."""
    text = "Grüße, John <john@john.example>\r\n".encode("utf-16")
    part = (
        b"Content-Type: text/plain; charset=utf-16\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(text)
    )
    raw = multipart(b"Content-Type: text/plain\r\n\r\nhello\r\n", part)

    assert find_leaks(raw, [ID]) == ["body part 2 (text/plain)"]


def test_mailto_link_in_html_is_found_through_escapes() -> None:
    """A mailto: link is found behind percent-escapes and character references."""
    html = b'<p>Mail <a href="mailto:john%40john.example?subject=hi">me</a></p>\r\n'
    encoded = quopri.encodestring(html)
    raw = multipart(
        b"Content-Type: text/plain\r\n\r\nhello\r\n",
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + encoded,
    )

    assert find_leaks(raw, [ID]) == ["mailto: link in body part 2 (text/html)"]


def test_character_reference_in_html_text_is_found() -> None:
    """HTML text hiding the "@" as a character reference is still a leak."""
    raw = single("text/html; charset=utf-8", "7bit", b"<p>john&#64;john.example</p>")

    assert find_leaks(raw, [ID]) == ["body part 1 (text/html)"]


def test_identity_in_encoded_header_is_found() -> None:
    """Header fields are searched after RFC 2047 decoding."""
    raw = (HEAD + "X-Note: =?utf-8?b?am9obkBqb2huLmV4YW1wbGU=?=\r\n\r\nhi\r\n").encode()

    assert header_leaks(raw, [ID]) == ["header X-Note"]
    assert find_leaks(raw, [ID]) == ["header X-Note"]


def test_headers_of_an_attached_message_are_searched() -> None:
    """A forwarded message/rfc822 part that is From the identity is a leak."""
    inner = f"From: John <{ID}>\r\nSubject: old\r\n\r\nold text\r\n".encode()
    raw = multipart(
        b"Content-Type: text/plain\r\n\r\nsee below\r\n",
        b"Content-Type: message/rfc822\r\n\r\n" + inner,
    )

    assert find_leaks(raw, [ID]) == ["header From of attached message (body part 2)"]
    assert header_leaks(raw, [ID]) == []


def test_part_fields_and_binary_attachment_are_searched() -> None:
    """A part's MIME fields and the ASCII content of a binary part are searched."""
    raw = multipart(
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Description: keys of john@john.example\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"\x00\x01ORGANIZER:mailto:JOHN@john.example\x00"),
    )

    assert find_leaks(raw, [ID]) == [
        "header Content-Description of body part 1 (application/octet-stream)",
        "mailto: link in body part 1 (application/octet-stream)",
    ]


HIDDEN = "jdoe@mail.example"  # its local part is nowhere else in the message


@pytest.mark.parametrize(
    ("content_type", "payload"),
    [
        (
            "text/plain; charset=utf-7",
            b"+AGoAZABvAGUAQABtAGEAaQBsAC4AZQB4AGEAbQBwAGwAZQ-",
        ),
        ("text/plain; charset=utf-8", b"write to mailto:%6Adoe@mail.example"),
        ("text/html; charset=utf-8", b"<p>&#106;doe@mail.example</p>"),
        ("text/html; charset=utf-8", b"<p>&#x6A;doe&commat;mail.example</p>"),
    ],
    ids=["utf-7", "percent-escape", "decimal-reference", "hex-reference"],
)
def test_identity_hidden_from_a_byte_search_is_found(
    content_type: str, payload: bytes
) -> None:
    """An identity whose letters only show once decoded is found all the same."""
    raw = single(content_type, "7bit", payload + b"\r\n")

    assert find_leaks(raw, [HIDDEN]) != []


def test_letter_look_alike_counts_as_the_letter() -> None:
    """A Kelvin sign where the identity has a "k" matches, as the pattern says."""
    raw = single("text/plain; charset=utf-8", "8bit", "\u212aate@example.org".encode())

    assert find_leaks(raw, ["kate@example.org"]) == ["body part 1 (text/plain)"]


def test_plain_body_is_clean_without_the_identity_and_found_with_it() -> None:
    """A body with nothing encoded is clean unless the identity is in it."""
    clean = single("text/plain; charset=utf-8", "8bit", "Grüße, Tom\r\n".encode())
    quoted = single("text/plain; charset=utf-8", "8bit", f"> {HIDDEN}\r\n".encode())

    assert find_leaks(clean, [HIDDEN]) == []
    assert find_leaks(quoted, [HIDDEN.upper()]) == ["body part 1 (text/plain)"]
