"""The command line as a user drives it, on the embedded address book."""

from __future__ import annotations

import re
import time

from segcard import config as configuration
from segcard.app import App

ADDRESS = re.compile(r"john-([a-z0-9]+)-([a-z0-9]+)@john\.example")


def server_cards(segcard) -> list[str]:
    """The cards the embedded address book holds, read over CardDAV."""
    app = App(configuration.load(segcard.config))
    with app.reachable():
        client = app.client()
        items = client.multiget(list(client.list_etags()))
    app.close()
    return [i.data for i in items]


def test_add_prints_a_segment_address(john):
    """add prints the new address, built from the template."""
    result = john("add", "Bank")

    assert result.code == 0, result.err
    match = ADDRESS.fullmatch(result.out.strip())
    assert match and match.group(1) == "bank"


def test_added_contact_reaches_the_embedded_address_book(john):
    """A contact made on the command line is a card on the CardDAV server."""
    address = john("add", "Tom Smith", "--email", "tom@example.org").out.strip()

    cards = server_cards(john)

    assert any(f"mailto:{address}" in c.replace("\r\n ", "") for c in cards)


def test_list_show_address(john):
    """list, show and address agree on a contact's address."""
    address = john("add", "Tom Smith", "--email", "tom@example.org").out.strip()

    listing = john("list").out
    shown = john("show", "tom@example.org").out
    looked_up = john("address", "tom@example.org").out.strip()

    assert "Tom Smith" in listing and address in listing
    assert address in shown and looked_up == address


def test_rotate_keeps_old_address_as_retired(john):
    """rotate gives a new address; show lists the old one as retired."""
    old = john("add", "Bank").out.strip()

    john("rotate", "Bank")
    shown = john("show", "Bank").out

    new = john("address", "Bank").out.strip()
    assert new != old
    assert re.search(rf"retired:\s+{re.escape(old)}", shown)


def test_block_and_unblock(john):
    """block and unblock change the state list shows."""
    john("add", "Bank")

    john("block", "Bank")
    blocked = john("list").out
    john("unblock", "Bank")

    assert "blocked" in blocked
    assert "blocked" not in john("list").out


def test_ambiguous_name_lists_candidates_and_changes_nothing(john):
    """A name matching two contacts is refused with both listed."""
    john("add", "Tom Smith")
    john("add", "Tom Jones")
    before = john("list").out

    result = john("block", "Tom")

    assert result.code == 1
    assert "Tom Smith" in result.err and "Tom Jones" in result.err
    assert john("list").out == before


def test_unknown_contact_is_one_clear_line(john):
    """Errors are a message and exit 1, never a traceback."""
    result = john("rotate", "Nobody")

    assert result.code == 1
    assert "Traceback" not in result.err and "Nobody" in result.err


def test_remove_needs_confirmation(john):
    """remove without --yes and without a terminal removes nothing."""
    john("add", "Bank")

    refused = john("remove", "Bank", stdin="")
    removed = john("remove", "Bank", "--yes")

    assert refused.code == 1 and removed.code == 0
    assert "Bank" not in john("list").out


def test_commands_work_while_address_book_is_unreachable(john):
    """With the server unreachable, changes land in the index and wait."""
    cfg = configuration.load(john.config)
    flat = {k: v for k, v in cfg.values.items() if k != "carddav.url"}
    flat["carddav.url"] = "http://127.0.0.1:9/book/"  # port 9: nothing listens
    configuration.save(john.config, flat)

    result = john("add", "Bank")

    assert result.code == 0 and "unreachable" in result.err
    assert "Bank" in john("list").out
    assert "outbox" in john("status").out


def test_import_shows_progress_and_gives_segments(john, corpus):
    """import reads an exported book, each contact gets an address."""
    path = corpus / "vcards" / "google-contacts-export-3.0-three-cards-no-final-eol.vcf"

    result = john("import", str(path))

    assert result.code == 0, result.err
    assert "3/3" in result.err
    assert len(ADDRESS.findall(john("list").out)) == 3


def test_import_reports_unreadable_card_and_goes_on(john, tmp_path):
    """A card that cannot be read is named; the others are imported."""
    path = tmp_path / "book.vcf"
    path.write_bytes(
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Good One\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Cut Short\r\n"
    )

    result = john("import", str(path))

    assert "Good One" in john("list").out
    assert "unreadable" in result.err and "Cut Short" in result.err


def test_status_json(john):
    """status --json gives the address book URL and user."""
    import json

    data = json.loads(john("status", "--json").out)

    assert data["address_book"]["url"].startswith("http://127.0.0.1:")
    assert data["address_book"]["user"] == "segcard"


def test_serve_without_config_starts_on_a_default(segcard):
    """serve with no config at all writes a default and runs."""
    proc = segcard.popen("serve")
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not segcard.config.exists():
            time.sleep(0.2)
        time.sleep(2)
        running = proc.poll() is None
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)

    assert running, err
    assert "segcard init" in err
    assert proc.returncode == 0


def test_second_serve_refuses_to_start(john):
    """Two daemons on one data dir: the second exits 1 with a clear message."""
    first = john.popen("serve")
    try:
        time.sleep(3)
        second = john("serve")
    finally:
        first.terminate()
        first.communicate(timeout=30)

    assert second.code == 1 and "already" in second.err


def test_init_keeps_identities_open_by_default(john):
    """Mail to the user's real address is delivered unless they close it."""
    from segcard.book.verdict import Action, Judge, Mail

    app = App(configuration.load(john.config))

    verdict = Judge(app.config, app.index).judge(
        Mail("john@john.example", "a@example.org"), 0
    )

    assert verdict.action is Action.DELIVER
    app.close()


def test_import_of_a_file_without_vcards_fails_clearly(john, tmp_path):
    """A file with no vCard in it is an error, not 'imported 0'."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"just some text\n")

    result = john("import", str(path))

    assert result.code == 1 and "no vCard" in result.err


def test_import_from_standard_input(john):
    """import - reads the vCards from standard input."""
    card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:s1\r\nFN:Piped In\r\nEND:VCARD\r\n"

    result = john("import", "-", stdin=card)

    assert result.code == 0 and "Piped In" in john("list").out


def test_importing_one_export_twice_adds_each_contact_once(john, corpus):
    """Cards without a UID get the same UID each time they are imported."""
    path = corpus / "vcards" / "google-contacts-export-3.0-three-cards-no-final-eol.vcf"

    john("import", str(path))
    again = john("import", str(path))

    assert "already there 3" in again.out
    assert len(ADDRESS.findall(john("list").out)) == 3


def test_empty_or_multiline_names_are_refused(john):
    """A contact name must be printable and not empty."""
    assert john("add", " ").code == 1
    assert john("add", "two\nlines").code == 1
    assert john("show", "").code == 1
    assert "no contacts yet" in john("list").out


def test_names_match_without_accents(john):
    """'zoe' finds Zoë."""
    john("add", "Zoë Ångström")

    assert john("show", "zoe").code == 0


def test_global_options_also_after_the_command(john):
    """segcard list --config FILE works like segcard --config FILE list."""
    result = john("list", "--config", str(john.config), "-v")

    assert result.code == 0


def test_init_force_keeps_the_embedded_address_book_url(john):
    """Running init again keeps the port, so subscribed clients still sync."""
    before = configuration.load(john.config)["embedded.port"]

    john("init", "--user", "john", "--domain", "john.example", "--force")

    assert configuration.load(john.config)["embedded.port"] == before


def test_damaged_index_is_one_clear_error(john):
    """A damaged index file gives a sentence saying how to rebuild it."""
    data = configuration.load(john.config).data
    data.index.write_bytes(b"this is not sqlite" * 100)

    result = john("list")

    assert result.code == 1 and "sync --full" in result.err
    assert "Traceback" not in result.err
