"""The verdict header and the visible note, added without breaking a message."""

from __future__ import annotations

import pytest

from segcard.mail.headers import split_message
from segcard.mail.inbound.annotate import annotate, header_field, note_allowed
from tests.corpus import mail_files, require_corpus

VERDICT = 'warn; reason="unknown sender"; contact="Tom"; segment=a-b@john.example'
NOTE = "Tom's address was used by spam@evil.test"
SIGNED = {
    "thunderbird-smime-clear-signed-sha256.eml",
    "thunderbird-83-pgp-mime-signed-with-list-footer.eml",
}


def field_of(out: bytes) -> tuple[bytes, bytes]:
    """(the first header field with its folding, the rest of the message)."""
    first = split_message(out).fields[0].raw
    return first, out[len(first) :]


def test_plain_message_gets_header_first_and_note_last() -> None:
    """A plain 7bit text message gets the header on top and the note at the end."""
    raw = b"From: a@b.test\r\nSubject: hi\r\n\r\nHello.\r\n"

    out = annotate(raw, VERDICT, NOTE)

    first, rest = field_of(out)
    assert first.startswith(b"X-Segcard-Verdict: warn;")
    assert rest.startswith(raw)
    assert rest[len(raw) :] == (
        b"\r\n-- \r\n[segcard] Tom's address was used by spam@evil.test\r\n"
    )


def test_header_keeps_the_message_line_ending() -> None:
    """A message with bare LF gets a header and note with bare LF."""
    raw = b"From: a@b.test\nSubject: hi\n\nHello.\n"

    out = annotate(raw, VERDICT, NOTE)

    assert b"\r" not in out
    assert out.endswith(b"\n-- \n[segcard] Tom's address was used by spam@evil.test\n")


def test_body_without_final_newline_gets_one_before_the_note() -> None:
    """The note starts on its own line even when the body does not end in one."""
    raw = b"Subject: hi\r\n\r\nHello."

    out = annotate(raw, VERDICT, NOTE)

    assert b"Hello.\r\n\r\n-- \r\n[segcard]" in out


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Type: multipart/signed; protocol=application/pkcs7-signature",
        b"Content-Type: multipart/encrypted; protocol=application/pgp-encrypted",
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data",
        b"Content-Type: multipart/mixed; boundary=x",
        b"Content-Type: text/html",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable",
        b"Content-Type: text/plain; charset=utf-16",
        b"Content-Type: text/plain\r\nContent-Disposition: attachment",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=b.test; bh=x; b=y",
        b"Content-Type: text/plain\r\nContent-Type: text/html",
    ],
)
def test_note_is_refused_where_it_could_break_something(header: bytes) -> None:
    """Signed, encrypted, multipart, encoded or ambiguous messages get no note."""
    raw = b"From: a@b.test\r\n" + header + b"\r\n\r\nHello.\r\n"

    out = annotate(raw, VERDICT, NOTE)

    assert field_of(out)[1] == raw


@pytest.mark.parametrize(
    "armour",
    [b"-----BEGIN PGP SIGNED MESSAGE-----", b"-----BEGIN PGP MESSAGE-----"],
)
def test_inline_pgp_gets_no_note(armour: bytes) -> None:
    """An inline-signed or inline-encrypted text gets the header only."""
    raw = b"Subject: x\r\n\r\n" + armour + b"\r\nHash: SHA256\r\n\r\nhi\r\n"

    out = annotate(raw, VERDICT, NOTE)

    assert field_of(out)[1] == raw


def test_message_without_body_gets_no_note() -> None:
    """Without an empty line there is no body to add to."""
    raw = b"Subject: x\r\nFrom: a@b.test\r\n"

    assert field_of(annotate(raw, VERDICT, NOTE))[1] == raw


def test_forged_verdict_header_is_removed() -> None:
    """A sender's own X-Segcard-Verdict fields are dropped, ours stays alone."""
    raw = (
        b"X-Segcard-Verdict: deliver\r\nSubject: x\r\n"
        b"x-segcard-verdict: deliver;\r\n\tmore\r\n\r\nb\r\n"
    )

    out = annotate(raw, VERDICT)

    assert out.count(b"deliver") == 0
    assert field_of(out)[1] == b"Subject: x\r\n\r\nb\r\n"


def test_long_header_is_folded_and_ascii() -> None:
    """The header stays within 78 columns, folded between parts, in ASCII."""
    value = (
        'warn; reason="unknown sender"; contact="Zoë Ünïcode-Långname\nX"; '
        "segment=john-zoeunicodelang-abcdefghj@john.example"
    )

    field = header_field(value)

    lines = field.split(b"\r\n")[:-1]
    assert all(len(line) <= 78 for line in lines)
    assert field.isascii() and b"\n" not in field.replace(b"\r\n", b"")
    assert b'contact="Zoe Unicode-Langname X"' in field


def test_utf8_8bit_body_takes_a_utf8_note() -> None:
    """An 8bit UTF-8 body gets the note in UTF-8; a 7bit one in ASCII."""
    head = b"Content-Type: text/plain; charset=utf-8\r\n"
    raw8 = head + b"Content-Transfer-Encoding: 8bit\r\n\r\nhi\r\n"
    raw7 = head + b"\r\nhi\r\n"

    assert "Zoë".encode() in annotate(raw8, VERDICT, "Zoë's address")
    assert b"Zoe's address" in annotate(raw7, VERDICT, "Zoë's address")


def test_note_lines_do_not_start_like_flowed_quotes() -> None:
    """A wrapped note line never starts with '>' or 'From ' (RFC 3676 4.4)."""
    raw = b"Content-Type: text/plain; format=flowed\r\n\r\nhi\r\n"
    note = "x " * 36 + "> quoted From me"

    out = annotate(raw, VERDICT, note)

    tail = out.split(b"-- \r\n")[-1].split(b"\r\n")
    assert not any(line.startswith((b">", b"From ")) for line in tail)


def test_corpus_messages_change_only_by_header_and_allowed_note() -> None:
    """Every corpus message keeps its bytes: only the header, and the note
    where the rule allows it, are added; signed ones never get the note."""
    require_corpus()
    noted = []

    for path in mail_files():
        raw = path.read_bytes()
        out = annotate(raw, VERDICT, NOTE)
        rest = field_of(out)[1]
        assert rest.startswith(raw), path.name
        if rest != raw:
            noted.append(path.name)
            assert note_allowed(split_message(raw)), path.name
            assert rest[len(raw) :].count(b"[segcard]") == 1

    assert noted and not SIGNED & set(noted)
    assert "mutt-plain-text.eml" in noted


def test_signed_corpus_messages_are_byte_identical_but_for_the_header() -> None:
    """S/MIME and PGP/MIME signed corpus messages are untouched below our field."""
    require_corpus()
    paths = [p for p in mail_files() if p.name in SIGNED]

    assert len(paths) == len(SIGNED)
    for path in paths:
        raw = path.read_bytes()
        assert field_of(annotate(raw, VERDICT, NOTE))[1] == raw
