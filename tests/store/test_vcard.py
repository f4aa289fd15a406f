"""segcard.store.vcard: reading real cards and patching segcard's own lines."""

from __future__ import annotations

import base64
import contextlib
import re
import urllib.request
from pathlib import Path

import pytest
import vobject
from hypothesis import given, settings
from hypothesis import strategies as st

from segcard.address import ALPHABET
from segcard.errors import CardParseError
from segcard.segment import Kind, Policy, Retired, Segment, State
from segcard.store import vcard
from segcard.store.vcard_text import logical_lines
from tests.corpus import corpus_dir
from tests.servers import RadicaleServer

T0 = 1_764_868_992  # 2025-12-04T17:23:12Z
ADDRESS = "john-tom-{}@john.example"

# Hand-checked values: file -> (uid, name, emails) for each of its cards;
# a uid of None means the card has none and normalize_import adds one.
KNOWN: dict[str, list[tuple[str | None, str, tuple[str, ...]]]] = {
    "evolution-3.0-couchdb-uuid-params.vcf": [
        (
            "477343c8e6bf375a9bac1f96a5000837",
            "Mr. John Richter, James Doe Sr.",
            ("john.doe@example.com",),
        )
    ],
    "google-contacts-export-3.0-three-cards-no-final-eol.vcf": [
        (None, "Arnold Smith", ("asmithk@example.com",)),
        (None, "Chris Beatle", ("chrisy55d@example.net",)),
        (None, "Doug White", ("dwhite@example.com",)),
    ],
    "kaddressbook-4.0-full-featured.vcf": [
        (
            "urn:uuid:b8767877-b4a1-4c70-9acc-505d3819e519",
            "Sherlock Holmes",
            ("sherlock.holmes@example.com", "detective@example.com"),
        )
    ],
    "netscape-mozilla-2.1-lowercase-lf.vcf": [
        ("ebvq9Wo9rO", "ann sample", ("sample@example.com",))
    ],
    "thunderbird-test-4.0-photo-data-uri.vcf": [(None, "URI JPEG, version 4.0", ())],
    "davx5-vcard4android-3.0-allfields-grouped.vcf": [
        (
            "mostfields1@at.bitfire.vcard4android",
            "Ämi Display",
            ("private@example.com", "work@example.com"),
        )
    ],
    "android-aosp-4.0-sort-as-japanese.vcf": [(None, "安藤 ロイド", ())],
    "apple-ios6-3.0-crcrlf-grouped-photo.vcf": [
        (None, "Bob Smith", ("bob@example.com",))
    ],
    "apple-addressbook-6.1-3.0-many-props-long-lines.vcf": [
        (
            None,
            "Mr. Doe John I Johny",
            ("john.doe@example.com", "billy_bob@example.com"),
        )
    ],
}


def corpus_files() -> list[Path]:
    """Every vCard file of the corpus (skips or fails per CI when absent)."""
    return sorted((corpus_dir() / "vcards").glob("*.vcf"))


def corpus_cards() -> list[tuple[str, int, bytes]]:
    """(file name, index, raw bytes) of every card in the corpus."""
    return [
        (path.name, index, raw)
        for path in corpus_files()
        for index, raw in enumerate(vcard.split_cards(path.read_bytes()))
    ]


def segment(token: str = "k7mzqpxab") -> Segment:
    return Segment(token=token, label="tom", created_at=T0, kind=Kind.CONTACT)


def foreign_lines(text: str, tokens: tuple[str, ...]) -> list[str]:
    """Raw logical lines of *text* that segcard does not own, in order."""
    lines = logical_lines(text)
    owned_groups = {
        line.text.split(".", 1)[0].lower()
        for line in lines
        if vcard.owned_line(line.text, tokens) and "." in line.text.split(":", 1)[0]
    }
    return [
        line.raw
        for line in lines
        if not vcard.owned_line(line.text, tokens)
        and line.text.split(".", 1)[0].lower() not in owned_groups
    ]


# --- the corpus ---------------------------------------------------------------


def test_corpus_is_split_into_every_card() -> None:
    """split_cards finds every card of a multi-card export, bytes untouched."""
    split = {
        path.name: (path.read_bytes(), vcard.split_cards(path.read_bytes()))
        for path in corpus_files()
    }
    counts = {name: len(cards) for name, (_, cards) in split.items()}

    for data, cards in split.values():
        assert all(
            card in data and card[:11].upper() == b"BEGIN:VCARD" for card in cards
        )
    assert counts["google-contacts-export-3.0-three-cards-no-final-eol.vcf"] == 3
    assert counts["android-sync-2.1-qp-utf8-multi-card.vcf"] == 5
    assert all(
        n == 1
        for name, n in counts.items()
        if "multi-card" not in name and "three-cards" not in name
    )


def test_corpus_cards_read_their_known_values() -> None:
    """read_card gives the hand-checked UID, name and emails of corpus cards."""
    for name, expected in KNOWN.items():
        raws = vcard.split_cards((corpus_dir() / "vcards" / name).read_bytes())

        infos = [vcard.read_card(vcard.normalize_import(raw)) for raw in raws]

        assert [(i.name, i.emails) for i in infos] == [(n, e) for _, n, e in expected]
        for info, (uid, _, _) in zip(infos, expected, strict=True):
            assert info.uid == uid if uid else info.uid


def test_card_vobject_rejects_in_corpus_is_read_tolerantly() -> None:
    """A corpus card vobject cannot parse (PROFILE line) is read by the fallback."""
    raw = (
        corpus_dir() / "vcards" / "apple-addressbook-6.1-3.0-many-props-long-lines.vcf"
    )
    text = vcard.normalize_import(raw.read_bytes())

    info = vcard.read_card(text)

    with pytest.raises(Exception):  # noqa: B017 - any vobject failure will do
        vobject.readOne(text, allowQP=True)
    assert info.tolerant


def test_corpus_cards_survive_apply_rotate_block_strip() -> None:
    """Patching keeps every foreign line byte-identical and the segment exact."""
    for name, index, raw in corpus_cards():
        original = vcard.normalize_import(raw)
        first = segment()
        rotated = first.rotate("q2w3e4r5t", T0 + 60)
        blocked = rotated.with_state(State.BLOCKED, T0 + 120)
        tokens = blocked.tokens

        text = vcard.apply_segment(original, first, ADDRESS.format(first.token))
        read_first = vcard.read_card(text).segment
        text = vcard.apply_segment(text, rotated, ADDRESS.format(rotated.token))
        read_rotated = vcard.read_card(text).segment
        text = vcard.apply_segment(text, blocked, ADDRESS.format(blocked.token))
        read_blocked = vcard.read_card(text).segment
        stripped = vcard.strip_owned(text)

        where = f"{name} card {index}"
        assert foreign_lines(text, tokens) == foreign_lines(original, tokens), where
        assert stripped == original, where
        assert (read_first, read_rotated, read_blocked) == (first, rotated, blocked), (
            where
        )
        assert vcard.read_card(stripped).segment is None, where
        assert vcard.content_hash(text) == vcard.content_hash(original), where


def test_corpus_cards_all_read_with_uid_and_name_after_import() -> None:
    """After normalize_import every corpus card has a UID and a name."""
    for name, index, raw in corpus_cards():
        info = vcard.read_card(vcard.normalize_import(raw))

        assert info.uid, f"{name} card {index}"
        assert info.name, f"{name} card {index}"


# --- normalize_import -------------------------------------------------------------

ADDED = re.compile(r"(VERSION|UID|FN|N)[;:]")


def assert_only_allowed_changes(raw_text: str, normalized: str) -> None:
    """*normalized* is *raw_text* with CRLF endings plus added header lines."""
    original = re.split(r"\r\r\n|\r\n|\n|\r", raw_text)
    if original[-1] == "":
        original.pop()
    result = normalized.split("\r\n")
    assert result.pop() == "", "must end with CRLF"

    matched, added_at = 0, []
    for index, line in enumerate(result):
        if matched < len(original) and line == original[matched]:
            matched += 1
        else:
            added_at.append(index)

    assert matched == len(original), f"line changed: {original[matched]!r}"
    assert all(ADDED.match(result[i]) for i in added_at), added_at
    if added_at:
        assert added_at == list(range(added_at[0], added_at[0] + len(added_at)))


@pytest.mark.parametrize(
    "name",
    [
        "rfc6350-4.0-spec-example-lf.vcf",  # LF
        "apple-ios6-3.0-crcrlf-grouped-photo.vcf",  # CR CR LF
        "evolution-3.0-couchdb-uuid-params.vcf",  # no final EOL
        "thunderbird-mfffab-ext-3.0-photo-multi-email.vcf",  # CRLF with LF inside
        "netscape-mozilla-2.1-lowercase-lf.vcf",  # lower case, VERSION late
    ],
)
def test_normalize_import_changes_only_line_endings_and_adds_missing(name: str) -> None:
    """normalize_import only makes endings CRLF and adds missing header lines."""
    raw = vcard.split_cards((corpus_dir() / "vcards" / name).read_bytes())[0]

    normalized = vcard.normalize_import(raw)

    assert "\n" not in normalized.replace("\r\n", "")
    assert "\r" not in normalized.replace("\r\n", "")
    assert_only_allowed_changes(raw.decode("utf-8"), normalized)


def test_normalize_import_adds_uid_fn_n_after_version() -> None:
    """Missing UID, FN and N go right after VERSION, FN from N, in card order."""
    raw = b"BEGIN:VCARD\nVERSION:3.0\nN:Doe;Jane;;;\nEMAIL:jane@example.org\nEND:VCARD"

    text = vcard.normalize_import(raw)

    lines = text.split("\r\n")
    assert lines[:2] == ["BEGIN:VCARD", "VERSION:3.0"]
    assert re.fullmatch(r"UID:[0-9a-f-]{36}", lines[2])
    assert lines[3:7] == [
        "FN:Jane Doe",
        "N:Doe;Jane;;;",
        "EMAIL:jane@example.org",
        "END:VCARD",
    ]
    assert text.endswith("END:VCARD\r\n")


def test_normalize_import_derives_fn_from_org_then_email_then_unnamed() -> None:
    """FN comes from N, else ORG, else the email, else "Unnamed"; N from FN."""
    org = (
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:1\r\n"
        b"ORG:Acme\\, Inc.;Sales\r\nEND:VCARD\r\n"
    )
    mail = (
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:2\r\nEMAIL:x@example.org\r\nEND:VCARD\r\n"
    )
    empty = b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:3\r\nNOTE:hi\r\nEND:VCARD\r\n"

    names = [
        vcard.read_card(vcard.normalize_import(r)).name for r in (org, mail, empty)
    ]

    assert names == ["Acme, Inc.", "x@example.org", "Unnamed"]
    assert "N:Inc.;Acme\\,;;;\r\n" in vcard.normalize_import(org)


def test_normalize_import_fills_an_empty_uid() -> None:
    """An empty UID line gets a UUID in place; nothing is added twice."""
    raw = b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:\r\nFN:A B\r\nN:B;A;;;\r\nEND:VCARD\r\n"

    text = vcard.normalize_import(raw)

    assert text.count("UID:") == 1
    assert re.search(r"\r\nUID:[0-9a-f-]{36}\r\nFN:A B\r\n", text)


def test_normalize_import_marks_non_ascii_charset_in_21_only() -> None:
    """An FN / N added to a vCard 2.1 card with non-ASCII text says CHARSET."""
    v21 = "BEGIN:VCARD\r\nVERSION:2.1\r\nUID:1\r\nORG:Café Ñu\r\nEND:VCARD\r\n"
    v30 = v21.replace("2.1", "3.0")

    text21 = vcard.normalize_import(v21.encode())
    text30 = vcard.normalize_import(v30.encode())

    assert "\r\nFN;CHARSET=UTF-8:Café Ñu\r\nN;CHARSET=UTF-8:Ñu;Café;;;\r\n" in text21
    assert "\r\nFN:Café Ñu\r\nN:Ñu;Café;;;\r\n" in text30


def test_normalize_import_adds_version_21_to_quoted_printable_card() -> None:
    """A card without VERSION gets 2.1 if it uses quoted-printable, else 3.0."""
    qp = (
        b"BEGIN:VCARD\r\nUID:1\r\n"
        b"FN;ENCODING=QUOTED-PRINTABLE:A=42\r\nN:;;;;\r\nEND:VCARD\r\n"
    )
    plain = b"BEGIN:VCARD\r\nUID:1\r\nFN:A\r\nN:;;;;\r\nEND:VCARD\r\n"

    assert vcard.normalize_import(qp).split("\r\n")[1] == "VERSION:2.1"
    assert vcard.normalize_import(plain).split("\r\n")[1] == "VERSION:3.0"


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("Hélène Müller".encode("latin-1"), "Hélène Müller"),
        ("Zoë “Quote” O’Brien – Šimon".encode("cp1252"), "Zoë “Quote” O’Brien – Šimon"),
        ("山田 太郎".encode("shift_jis"), "山田 太郎"),
        ("タナカ ハナコ".encode("shift_jis"), "タナカ ハナコ"),
        ("ÀÉÎõü façade".encode("latin-1"), "ÀÉÎõü façade"),
    ],
)
def test_normalize_import_transcodes_other_charsets(raw: bytes, name: str) -> None:
    """Latin-1, cp1252 and Shift_JIS bytes without a CHARSET become UTF-8 text."""
    card = b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:1\r\nFN:" + raw + b"\r\nEND:VCARD\r\n"

    text = vcard.normalize_import(card)

    assert vcard.read_card(text).name == name
    assert text.count("\r\n") == 6  # UID, FN present; N added


def test_to_text_follows_declared_charset() -> None:
    """A declared CHARSET wins over guessing when the bytes are not UTF-8."""
    raw = "FN;CHARSET=ISO-8859-7:Αλέξης".encode("iso-8859-7")

    assert vcard.to_text(b"BEGIN:VCARD\r\n" + raw + b"\r\nEND:VCARD").split("\r\n")[
        1
    ] == ("FN;CHARSET=ISO-8859-7:Αλέξης")


def test_to_text_strips_bom_and_keeps_utf8() -> None:
    """A UTF-8 BOM is dropped; UTF-8 text is returned unchanged."""
    assert vcard.to_text(b"\xef\xbb\xbfFN:\xc3\x84mi\r\n") == "FN:Ämi\r\n"


# --- split_cards --------------------------------------------------------------------


def test_split_cards_tolerates_bom_blank_lines_and_no_final_newline() -> None:
    """Cards are found after a BOM, between blank lines, and without a last EOL."""
    data = (
        b"\xef\xbb\xbfBEGIN:VCARD\r\nFN:A\r\nEND:VCARD\r\n\r\n\n"
        b"begin:vcard\nFN:B\nend:vcard\n  \r\nBEGIN:VCARD\rFN:C\rEND:VCARD"
    )

    cards = vcard.split_cards(data)

    assert cards == [
        b"BEGIN:VCARD\r\nFN:A\r\nEND:VCARD\r\n",
        b"begin:vcard\nFN:B\nend:vcard\n",
        b"BEGIN:VCARD\rFN:C\rEND:VCARD",
    ]


def test_split_cards_keeps_nested_agent_card_inside() -> None:
    """A vCard 2.1 AGENT card nested in another stays part of its parent."""
    data = (
        b"BEGIN:VCARD\r\nFN:Boss\r\nAGENT:\r\nBEGIN:VCARD\r\nFN:Agent\r\nEND:VCARD\r\n"
        b"END:VCARD\r\nBEGIN:VCARD\r\nFN:Other\r\nEND:VCARD\r\n"
    )

    cards = vcard.split_cards(data)

    assert len(cards) == 2
    assert vcard.read_card(cards[0].decode()).name == "Boss"


# --- the tolerant reader -------------------------------------------------------------

REJECTED_BY_VOBJECT = {
    "quoted-printable soft breaks without charset": (
        "BEGIN:VCARD\r\nVERSION:2.1\r\n"
        "N;ENCODING=QUOTED-PRINTABLE:M=FCller;J=FCrgen\r\n"
        "FN;ENCODING=QUOTED-PRINTABLE:J=FCrgen =\r\nM=FCller\r\n"
        "EMAIL;INTERNET;PREF:J.Mueller@Example.org\r\nEND:VCARD\r\n",
        (None, "Jürgen Müller", ("j.mueller@example.org",)),
    ),
    "data: URI in a b-encoded PHOTO": (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:data-1\r\nFN:Ann Data\r\n"
        "PHOTO;ENCODING=b;TYPE=JPEG:data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ\r\n"
        "EMAIL:ann@example.org\r\nEND:VCARD\r\n",
        ("data-1", "Ann Data", ("ann@example.org",)),
    ),
    "broken base64": (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:b64-1\r\nFN:Bob Base\r\n"
        "PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQEAYABgAAD/2wBDAAYEBQYFBAYGBQYHBw\r\n"
        " GBcUFhYaHSUfGhsjHBYWICwgIyYnKSopGR8tMC0oMCUoKSj/2wBDAQcHB\r\n"
        "EMAIL:bob@example.org\r\nEND:VCARD\r\n",
        ("b64-1", "Bob Base", ("bob@example.org",)),
    ),
    "stray bare CR": (
        "BEGIN:VCARD\rVERSION:3.0\r\nUID:cr-1\r\nFN:Carl Return\r\n"
        "EMAIL:carl@example.org\r\nEND:VCARD\r\n",
        ("cr-1", "Carl Return", ("carl@example.org",)),
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED_BY_VOBJECT))
def test_tolerant_reader_reads_cards_vobject_rejects(case: str) -> None:
    """When vobject fails, the line reader still gets UID, name and emails."""
    text, (uid, name, emails) = REJECTED_BY_VOBJECT[case]
    with pytest.raises(Exception):  # noqa: B017 - the point: vobject fails here
        vobject.readOne(text, allowQP=True)

    info = vcard.read_card(text)

    assert info.tolerant
    assert (info.uid, info.name, info.emails) == (uid, name, emails)


def test_tolerant_reader_reads_segment_like_vobject_reader() -> None:
    """A segment reads back the same from a card that only the fallback reads."""
    text, _ = REJECTED_BY_VOBJECT["broken base64"]
    seg = segment().rotate("q2w3e4r5t", T0 + 5)

    info = vcard.read_card(vcard.apply_segment(text, seg, ADDRESS.format(seg.token)))

    assert info.tolerant
    assert info.segment == seg


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("garbage", "no BEGIN:VCARD"),
        ("BEGIN:VCARD\r\nEND:VCARD", "neither UID, name"),
        (
            "BEGIN:VCARD\r\nVERSION:3.0\r\nNOTE:only a note\r\nEND:VCARD\r\n",
            "neither UID",
        ),
        ("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Cut Short\r\n", "no END:VCARD"),
        ("", "no BEGIN:VCARD"),
    ],
)
def test_hopeless_input_raises_card_parse_error(text: str, reason: str) -> None:
    """Input with no card frame or nothing to identify it is reported, not read."""
    with pytest.raises(CardParseError, match=reason):
        vcard.read_card(text)


# --- apply_segment --------------------------------------------------------------

BASE = (
    "BEGIN:VCARD\nVERSION:3.0\nUID:u-1\nFN:Tom Example\n"
    "item1.URL:mailto:tom@example.org\nitem1.X-ABLabel:private\n"
    "NOTE:a long note that was folded\n  by some client\nEND:VCARD\n"
)


def test_new_lines_use_the_cards_own_line_ending() -> None:
    """Owned lines go before END:VCARD with the ending of the line before it."""
    seg = segment()

    text = vcard.apply_segment(BASE, seg, ADDRESS.format(seg.token))

    assert "\r" not in text
    assert text.startswith(BASE.removesuffix("END:VCARD\n"))
    assert text.endswith(
        f"segcard1.URL:mailto:{ADDRESS.format(seg.token)}\n"
        "segcard1.X-ABLabel:segcard address\nEND:VCARD\n"
    )


def test_apply_segment_is_idempotent() -> None:
    """Applying the same segment twice gives the same text."""
    seg = segment().rotate("q2w3e4r5t", T0 + 9)
    once = vcard.apply_segment(BASE, seg, ADDRESS.format(seg.token))

    twice = vcard.apply_segment(once, seg, ADDRESS.format(seg.token))

    assert twice == once


def test_renumbered_readable_url_is_found_by_its_value() -> None:
    """A phone's renumbered copy of our URL goes, with its label; others stay."""
    seg = segment()
    card = BASE.replace(
        "END:VCARD\n",
        f"item7.URL;type=pref:mailto:{ADDRESS.format(seg.token).upper()}\n"
        "item7.X-ABLabel:segcard address\n"
        "SegCard3.X-ABLabel:left over\nEND:VCARD\n",
    )

    text = vcard.strip_owned(vcard.apply_segment(card, seg, None))

    assert text == BASE


def test_readable_url_of_a_retired_token_goes_too() -> None:
    """A URL naming a token the card retired is removed on the next write."""
    old = segment()
    card = vcard.apply_segment(BASE, old, ADDRESS.format(old.token))
    card = card.replace("segcard1.", "item9.")  # a phone renumbered the group
    new = old.rotate("q2w3e4r5t", T0 + 1)

    text = vcard.apply_segment(card, new, ADDRESS.format(new.token))

    assert old.token not in text.replace(f"X-SEGMAIL-RETIRED:{old.token}", "")
    assert "item9." not in text


def test_owned_lines_anywhere_are_moved_before_end() -> None:
    """Owned lines a server moved elsewhere are gathered again before END."""
    seg = segment()
    card = BASE.replace("FN:", f"x-segmail-token:{seg.token}\nx-segmail-label:old\nFN:")

    text = vcard.apply_segment(card, seg, None)

    assert text.count(seg.token) == 1
    assert vcard.strip_owned(text) == BASE
    assert vcard.read_card(text).segment == seg


QP_SOFT_BREAK_AT_END = (
    "BEGIN:VCARD\r\nVERSION:2.1\r\nUID:qp-1\r\nFN:Quinn\r\n"
    "NOTE;ENCODING=QUOTED-PRINTABLE:ends in a soft break=\r\nEND:VCARD\r\n"
)


def test_owned_lines_after_a_dangling_soft_break_stay_readable() -> None:
    """Lines appended after a QP value ending in ``=`` are not swallowed by it."""
    seg = segment()

    text = vcard.apply_segment(QP_SOFT_BREAK_AT_END, seg, ADDRESS.format(seg.token))

    assert vcard.read_card(text).segment == seg
    assert vcard.apply_segment(text, seg, ADDRESS.format(seg.token)) == text
    assert vcard.strip_owned(text) == QP_SOFT_BREAK_AT_END


def test_apply_segment_keeps_a_bom() -> None:
    """A card that starts with a BOM is patched, the BOM kept."""
    card = "\ufeff" + BASE
    seg = segment()

    text = vcard.apply_segment(card, seg, None)

    assert text.startswith("\ufeffBEGIN:VCARD\n")
    assert vcard.strip_owned(text) == card


def test_only_the_first_card_of_a_text_is_read_and_patched() -> None:
    """Given two cards in one text, segcard reads and patches the first."""
    two = BASE + BASE.replace("u-1", "u-2").replace("Tom", "Ann")
    seg = segment()

    text = vcard.apply_segment(two, seg, None)

    assert vcard.read_card(two).uid == "u-1"
    assert text.index(seg.token) < text.index("u-2")
    assert vcard.strip_owned(text) == two


def test_a_mangled_token_line_does_not_claim_foreign_urls() -> None:
    """Only token-shaped values from the card decide which mailto URLs are ours."""
    card = BASE.replace("END:VCARD\n", "X-SEGMAIL-TOKEN:o\nEND:VCARD\n")

    text = vcard.strip_owned(card)

    assert text == BASE
    assert "item1.URL:mailto:tom@example.org\nitem1.X-ABLabel:private\n" in text


def test_apply_segment_refuses_a_card_without_end() -> None:
    """A card cut short is never rewritten."""
    with pytest.raises(CardParseError):
        vcard.apply_segment("BEGIN:VCARD\r\nFN:x\r\n", segment(), None)


def test_unsafe_values_are_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ALLOW / LIST / PUBLISH values outside the safe set are not written."""
    seg = Segment(
        token="k7mzqpxab",
        label="tom",
        created_at=T0,
        allowed=("ok@example.org", "bad,addr@example.org"),
        list_ids=("list.example.org", "bad list"),
        publish="/srv/www/addr;x",
    )

    text = vcard.apply_segment(BASE, seg, None)

    assert vcard.read_card(text).segment == Segment(
        token="k7mzqpxab",
        label="tom",
        created_at=T0,
        allowed=("ok@example.org",),
        list_ids=("list.example.org",),
    )
    assert "not written" in caplog.text
    assert caplog.text.count("not written") == 3


def test_missing_created_state_and_label_take_defaults() -> None:
    """Only a TOKEN line: created 0, active at 0, label from the name."""
    card = BASE.replace("END:VCARD\n", "X-SEGMAIL-TOKEN:k7mzqpxab\nEND:VCARD\n")

    seg = vcard.read_card(card).segment

    assert seg == Segment(token="k7mzqpxab", label="tomexample", created_at=0)


def test_owned_line_knows_segcard_lines() -> None:
    """X-SEGMAIL lines, segcard groups, and URLs naming a token are owned."""
    assert vcard.owned_line("x-segmail-token:abc")
    assert vcard.owned_line("segcard2.X-ABLabel:whatever")
    assert vcard.owned_line("item3.URL:mailto:a-k7mzqpxab@b.example", ["K7MZQPXAB"])
    assert not vcard.owned_line("item3.URL:mailto:a-k7mzqpxab@b.example")
    assert not vcard.owned_line("URL:https://k7mzqpxab.example", ["k7mzqpxab"])
    assert not vcard.owned_line("EMAIL:a-k7mzqpxab@b.example", ["k7mzqpxab"])


# --- set_uid and content_hash ------------------------------------------------------


def test_set_uid_replaces_only_the_uid_line() -> None:
    """set_uid changes the UID line and nothing else."""
    text = vcard.set_uid(BASE, "new-uid")

    assert text == BASE.replace("UID:u-1\n", "UID:new-uid\n")


def test_set_uid_inserts_a_missing_uid_after_version() -> None:
    """A card without UID gets one right after BEGIN / VERSION."""
    card = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:x\r\nEND:VCARD\r\n"

    text = vcard.set_uid(card, "urn:uuid:1")

    assert (
        text == "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:1\r\nFN:x\r\nEND:VCARD\r\n"
    )


def test_set_uid_drops_extra_uid_lines_and_refuses_non_cards() -> None:
    """A second UID line goes; text without BEGIN:VCARD raises CardParseError."""
    card = BASE.replace("FN:", "UID:dup\nFN:")

    text = vcard.set_uid(card, "one")

    assert text == BASE.replace("UID:u-1", "UID:one")
    with pytest.raises(CardParseError, match="BEGIN:VCARD"):
        vcard.set_uid("garbage", "one")


def test_content_hash_ignores_owned_lines_order_folding_and_case() -> None:
    """Re-serialization (reorder, refold, upper-case names, CRLF) keeps the hash."""
    seg = segment()
    ours = vcard.apply_segment(BASE, seg, ADDRESS.format(seg.token))
    rewritten = (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Tom Example\r\nUID:u-1\r\n"
        "NOTE:a long note that was folded \r\n by some client\r\n"
        "ITEM1.URL:mailto:tom@example.org\r\nITEM1.X-ABLABEL:private\r\nEND:VCARD\r\n"
    )

    assert vcard.content_hash(ours) == vcard.content_hash(BASE)
    assert vcard.content_hash(rewritten) == vcard.content_hash(BASE)


def test_content_hash_ignores_decoding_and_trailing_empty_components() -> None:
    """Decoded quoted-printable, dropped trailing ";" and "\\;" in URIs hash alike."""
    encoded = (
        "BEGIN:VCARD\r\nVERSION:2.1\r\nUID:q\r\nN:Doe;Ann;;;\r\n"
        "FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:Ann D=C3=B6e\r\n"
        "TEL;VALUE=uri:tel:+1-555-0100;ext=7\r\nEND:VCARD\r\n"
    )
    decoded = (
        "BEGIN:VCARD\r\nVERSION:2.1\r\nUID:q\r\nN:Doe;Ann\r\n"
        "FN:Ann Döe\r\nTEL;VALUE=URI:tel:+1-555-0100\\;ext=7\r\nEND:VCARD\r\n"
    )

    assert vcard.content_hash(encoded) == vcard.content_hash(decoded)


def test_content_hash_changes_on_a_real_edit() -> None:
    """A changed value gives another hash."""
    edited = BASE.replace("FN:Tom Example", "FN:Tom Exampel")

    assert vcard.content_hash(edited) != vcard.content_hash(BASE)


def _put_and_get(server: RadicaleServer, name: str, text: str) -> str:
    """PUT *text* as card *name* on *server* and GET back what it stored."""
    auth = base64.b64encode(f"{server.username}:{server.password}".encode())
    headers = {"Authorization": "Basic " + auth.decode(), "Content-Type": "text/vcard"}
    url = f"{server.url}{name}.vcf"
    put = urllib.request.Request(url, text.encode(), headers, method="PUT")
    with urllib.request.urlopen(put):
        pass
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as got:
        return got.read().decode("utf-8")


# Cards Radicale takes and re-serializes without losing content.
RADICALE_LOSSLESS = [
    "apple-ios6-3.0-crcrlf-grouped-photo.vcf",
    "evolution-3.0-couchdb-uuid-params.vcf",
    "kaddressbook-4.0-full-featured.vcf",
    "rfc6350-4.0-spec-example-lf.vcf",
]


def test_content_hash_and_segment_survive_radicale(tmp_path: Path) -> None:
    """Radicale rewrites our cards; the content hash and the segment stay."""
    seg = segment().rotate("q2w3e4r5t", T0 + 7).with_state(State.BLOCKED, T0 + 8)
    address = ADDRESS.format(seg.token)
    texts = {
        "new": vcard.new_card("n-1", "Doe, Ann; Ö", ["a@example.org"], seg, address)
    }
    for name in RADICALE_LOSSLESS:
        raw = (corpus_dir() / "vcards" / name).read_bytes()
        texts[name] = vcard.apply_segment(vcard.normalize_import(raw), seg, address)
    server = RadicaleServer(tmp_path / "radicale")
    server.root.mkdir()
    server.start()
    try:
        stored = {
            n: _put_and_get(server, f"card{i}", t)
            for i, (n, t) in enumerate(texts.items())
        }
    finally:
        server.stop()

    for name, text in texts.items():
        assert stored[name] != text, name  # Radicale did rewrite it
        assert vcard.content_hash(stored[name]) == vcard.content_hash(text), name
        assert vcard.read_card(stored[name]).segment == seg, name


# --- new_card -----------------------------------------------------------------------

NAMES = [
    "Doe, John",
    "Acme; Sales, Inc.",
    'Back\\slash "quoted"',
    "Ämi Größe-Ñúñez",
    "安藤 ロイド",
    "A" * 40 + " Very-Long-Family-Name-" + "é" * 30,
]


@pytest.mark.parametrize("name", NAMES)
def test_new_card_parses_back_with_vobject_and_read_card(name: str) -> None:
    """A new card is valid vCard 3.0 that both readers read back exactly."""
    seg = segment().rotate("q2w3e4r5t", T0 + 3)
    emails = ["tom@example.org", "t.o.m@example.net"]

    text = vcard.new_card("uid-1", name, emails, seg, ADDRESS.format(seg.token))

    parsed = vobject.readOne(text)
    assert parsed.fn.value == name
    assert parsed.version.value == "3.0"
    assert [e.value for e in parsed.contents["email"]] == emails
    assert vcard.read_card(text) == vcard.CardInfo(
        "uid-1", name, tuple(emails), seg, "3.0", False
    )
    assert all(len(x.encode()) <= 75 for x in text.split("\r\n"))
    assert text.endswith("END:VCARD\r\n") and "\n" not in text.replace("\r\n", "")


@pytest.mark.parametrize("name", NAMES)
def test_content_hash_is_stable_under_vobject_reserialization(name: str) -> None:
    """vobject's re-serialization of our own card keeps its content hash."""
    seg = segment()
    text = vcard.new_card(
        "uid-1", name, ["tom@example.org"], seg, ADDRESS.format(seg.token)
    )

    reserialized = vobject.readOne(text).serialize()

    assert reserialized != text
    assert vcard.content_hash(reserialized) == vcard.content_hash(text)
    assert vcard.content_hash(vcard.strip_owned(reserialized)) == vcard.content_hash(
        vcard.strip_owned(text)
    )
    assert vcard.read_card(reserialized).segment == seg


# --- hypothesis -------------------------------------------------------------------

SAFE = "abcdefghijklmnopqrstuvwxyz0123456789._-+"
tokens = st.text(alphabet=ALPHABET, min_size=8, max_size=12)
times = st.integers(min_value=0, max_value=4_102_444_800)
safe_words = st.text(alphabet=SAFE, min_size=1, max_size=30)
emails = st.builds(lambda a, b: f"{a}@{b}.example", safe_words, safe_words)


@st.composite
def segments(draw: st.DrawFn) -> Segment:
    """Random segments with distinct tokens and values from the safe set."""
    all_tokens = draw(st.lists(tokens, min_size=1, max_size=5, unique=True))
    retired = tuple(Retired(t, draw(times)) for t in all_tokens[1:])
    return Segment(
        token=all_tokens[0],
        label=draw(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1)
        ),
        created_at=draw(times),
        state=draw(st.sampled_from(State)),
        state_at=draw(times),
        kind=draw(st.sampled_from(Kind)),
        retired=retired,
        rotate_every=draw(st.none() | st.integers(min_value=1, max_value=10**9)),
        policy=draw(st.sampled_from(Policy)),
        allowed=tuple(draw(st.lists(emails, max_size=3, unique=True))),
        list_ids=tuple(draw(st.lists(safe_words, max_size=3, unique=True))),
        announced_at=draw(st.none() | times),
        publish=draw(st.none() | safe_words),
    )


HYPOTHESIS_BASES = [
    BASE,
    BASE.replace("\n", "\r\n"),
    BASE.replace("\n", "\r\r\n").removesuffix("\r\r\n"),
    QP_SOFT_BREAK_AT_END,
    vcard.new_card("u-2", "Ann Other, Jr.", ["ann@example.org"], None, None),
    REJECTED_BY_VOBJECT["broken base64"][0],
]


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from(HYPOTHESIS_BASES),
    first=segments(),
    second=segments(),
)
def test_apply_segment_round_trips_and_is_idempotent(
    base: str, first: Segment, second: Segment
) -> None:
    """Any segment applied reads back exactly; applying it again changes nothing."""
    with_first = vcard.apply_segment(base, first, ADDRESS.format(first.token))

    text = vcard.apply_segment(with_first, second, ADDRESS.format(second.token))

    assert vcard.apply_segment(text, second, ADDRESS.format(second.token)) == text
    assert vcard.read_card(text).segment == second
    assert vcard.strip_owned(text) == base
    assert vcard.content_hash(text) == vcard.content_hash(base)


names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1
).filter(str.strip)


@settings(max_examples=200, deadline=None)
@given(name=names)
def test_new_card_round_trips_any_name(name: str) -> None:
    """Any printable name survives new_card, vobject and read_card."""
    text = vcard.new_card("u-3", name, ["ann@example.org"], None, None)

    parsed = vobject.readOne(text)

    assert parsed.fn.value == name.strip()
    assert vcard.read_card(text).name == name.strip()
    assert vcard.content_hash(parsed.serialize()) == vcard.content_hash(text)


SOUP = [
    "BEGIN:VCARD",
    "END:VCARD",
    "\ufeffBEGIN:VCARD",
    "VERSION:2.1",
    "FN:Ann",
    "UID:",
    "EMAIL:a@b.example",
    "NOTE;ENCODING=QUOTED-PRINTABLE:abc=",
    "=42",
    " folded",
    "",
    "item1.URL:mailto:x@y.example",
    "item1.X-ABLabel:l",
    "PHOTO;ENCODING=b:abc",
    'X-FOO;"a:b"=c:d',
    "AGENT:",
    "x-segmail-token:abc",
    "segcard2.URL:x",
]
soup_lines = st.lists(
    st.tuples(
        st.sampled_from(SOUP) | st.text(max_size=20),
        st.sampled_from(["\r\n", "\n", "\r", "\r\r\n", ""]),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(parts=soup_lines)
def test_any_line_soup_is_read_or_refused_and_patched_safely(
    parts: list[tuple[str, str]],
) -> None:
    """Broken input raises only CardParseError; a patched card stays consistent."""
    text = "".join(body + eol for body, eol in parts)
    seg = segment()
    with contextlib.suppress(CardParseError):
        vcard.read_card(vcard.normalize_import(text.encode()))
    try:
        patched = vcard.apply_segment(text, seg, ADDRESS.format(seg.token))
    except CardParseError:
        return

    again = vcard.apply_segment(patched, seg, ADDRESS.format(seg.token))

    assert again == patched
    assert vcard.strip_owned(patched) == vcard.strip_owned(text)
    assert vcard.content_hash(patched) == vcard.content_hash(text)


def test_card_with_a_big_photo_is_read_without_handing_the_photo_to_vobject() -> None:
    """A multi-megabyte PHOTO neither stops the fields being read nor reaches
    vobject, whose unfolding grows with the square of a value's length."""
    import base64

    from segcard.store.vcard_read import _without_blobs
    from segcard.store.vcard_text import logical_lines

    photo = base64.b64encode(bytes(range(256)) * 4000).decode()
    folded = "\r\n ".join(photo[i : i + 74] for i in range(0, len(photo), 74))
    card = (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:p1\r\nFN:Photo Person\r\n"
        f"EMAIL:p@example.org\r\nPHOTO;ENCODING=b;TYPE=JPEG:{folded}\r\nEND:VCARD\r\n"
    )

    info = vcard.read_card(card)
    for_vobject = _without_blobs(logical_lines(card))

    assert (info.uid, info.name, info.emails) == (
        "p1",
        "Photo Person",
        ("p@example.org",),
    )
    assert not info.tolerant
    assert "PHOTO" not in for_vobject and "FN:Photo Person" in for_vobject
    assert vcard.strip_owned(vcard.apply_segment(card, None, None)) == card
