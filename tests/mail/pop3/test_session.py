"""The POP3 proxy against a real Dovecot: what the client sees, what stays
upstream, what goes to the quarantine, and that nothing is ever lost."""

from __future__ import annotations

import poplib
import re
import time
from pathlib import Path

import pytest

from segcard import config
from segcard.errors import ConfigError
from segcard.mail.headers import split_message
from segcard.mail.inbound.annotate import note_allowed
from segcard.mail.pop3 import upstream as upstream_module
from segcard.mail.pop3.upstream import UpstreamSettings
from tests.corpus import mail_files, require_corpus
from tests.dovecot import PASSWORD, USER, Dovecot
from tests.mail.inbound.conftest import ANN, STRANGER, TOM, Book, LoopThread
from tests.mail.pop3.conftest import (
    Proxy,
    ProxyFactory,
    TlsDovecot,
    make_proxy,
    message,
    put,
    retr_lines,
    upstream,
)

WAIT = 30.0  # seconds to wait for the server to notice a dropped client


def subjects(pop: poplib.POP3) -> list[str]:
    """The Subject of every message the client sees, in order."""
    found = []
    for number in range(1, pop.stat()[0] + 1):
        header = b"\n".join(pop.top(number, 0)[1])
        found.append(re.search(rb"Subject: (\S+)", header).group(1).decode())  # type: ignore[union-attr]
    return found


def login_when_free(proxy: Proxy) -> poplib.POP3:
    """Log in once the server has noticed that the last client went away."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return proxy.client()
        except poplib.error_proto as exc:
            if b"IN-USE" not in exc.args[0] or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_client_lists_reads_and_deletes_through_segcard(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """A poplib client lists and reads; its DELE reaches upstream at QUIT."""
    put(dovecot, message(book.tom, TOM, "first"), message(book.tom, TOM, "second"))
    pop = proxy.client()

    listed = subjects(pop)
    number = listed.index("first") + 1
    body = retr_lines(pop, number)
    pop.dele(number)
    pop.quit()

    assert sorted(listed) == ["first", "second"]
    assert body.startswith(b"X-Segcard-Verdict: deliver;")
    assert b"Subject: first" in body and b"Hello." in body
    [left] = upstream(dovecot).values()
    assert b"Subject: second" in left
    assert subjects(proxy.client()) == ["second"]


def test_junk_never_reaches_the_client_and_is_in_quarantine(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """Unknown, blocked and quietly junked tokens are held back, with their
    verdict on top; by default they stay upstream."""
    put(
        dovecot,
        message(book.tom, TOM, "good"),
        message(book.unknown, STRANGER, "unknown"),
        message(book.blocked, TOM, "blocked"),
        message(book.quiet, STRANGER, "quiet"),
    )

    seen = subjects(proxy.client())

    assert seen == ["good"]
    held = {e.subject: e.verdict for e in proxy.quarantine.entries()}
    assert set(held) == {"unknown", "blocked", "quiet"}
    assert held["unknown"].startswith("junk;")
    assert held["blocked"].startswith("reject;")
    assert len(upstream(dovecot)) == 4


def test_delete_upstream_removes_quarantined_mail_upstream(
    start_proxy: ProxyFactory, dovecot: Dovecot, book: Book
) -> None:
    """With pop3.delete_upstream, held-back mail leaves the upstream mailbox
    (after it is safe in the quarantine); delivered mail stays."""
    proxy = start_proxy(delete_upstream=True)
    put(dovecot, message(book.tom, TOM, "good"), message(book.unknown, STRANGER, "bad"))

    proxy.client().quit()

    [left] = upstream(dovecot).values()
    assert b"Subject: good" in left
    assert [e.subject for e in proxy.quarantine.entries()] == ["bad"]


def test_warning_carries_header_and_note_and_counts_once(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """A stranger on Tom's address: the client sees the verdict field and the
    note naming Tom and the sender; the leak counts once over two logins."""
    put(dovecot, message(book.tom, STRANGER, "stranger"))

    pop = proxy.client()
    data = retr_lines(pop, 1)
    pop.quit()
    proxy.client().quit()

    assert data.startswith(b'X-Segcard-Verdict: warn; reason="unknown sender"')
    assert data.endswith(
        b"\r\n-- \r\n[segcard] Tom Example's address was used by spam@evil.test\r\n"
    )
    [leak] = book.index.leaks()
    assert (leak.uid, leak.count) == ("tom", 1)


def test_redirect_is_shown_and_the_known_sender_told(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """Mail from Ann on her retired address reaches the client marked
    redirect, and a notice is asked for, once."""
    put(dovecot, message(book.moved, ANN, "moved"))

    pop = proxy.client()
    data = retr_lines(pop, 1)
    pop.quit()

    assert data.startswith(b"X-Segcard-Verdict: redirect;")
    [(verdict, mail)] = proxy.notices
    assert (verdict.sender, mail.recipient) == (ANN, book.moved)


def test_mail_for_no_address_of_ours_comes_through_untouched(
    proxy: Proxy, dovecot: Dovecot
) -> None:
    """A message to someone else's address gets no verdict and no change."""
    sent = message("someone@else.test", STRANGER, "elsewhere")
    put(dovecot, sent)

    pop = proxy.client()
    data = retr_lines(pop, 1)
    pop.quit()

    assert data == sent


def test_uidls_are_the_upstream_ones_and_stay(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """The client sees the upstream UIDL of each shown message, the same in
    every session, and new mail does not renumber the old."""
    put(dovecot, message(book.tom, TOM, "a"), message(book.unknown, STRANGER, "b"))
    pop = proxy.client()
    first = [line.split()[1] for line in pop.uidl()[1]]
    pop.quit()
    put(dovecot, message(book.tom, TOM, "c"))

    pop = proxy.client()
    second = [line.split()[1] for line in pop.uidl()[1]]
    pop.quit()

    everything = {u.encode() for u in upstream(dovecot)}
    assert len(first) == 1 and second[0] == first[0] and len(second) == 2
    assert set(second) < everything


def test_dropped_connection_deletes_nothing(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """DELE without QUIT: the connection drops, and everything is still
    there, for the next session and upstream."""
    put(dovecot, message(book.tom, TOM, "one"), message(book.tom, TOM, "two"))
    pop = proxy.client()
    pop.dele(1)
    pop.dele(2)

    pop.close()  # no QUIT: the connection just ends

    assert sorted(subjects(login_when_free(proxy))) == ["one", "two"]
    assert len(upstream(dovecot)) == 2


def test_rset_takes_the_deletions_back(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """RSET unmarks every DELE of the session."""
    put(dovecot, message(book.tom, TOM, "one"))
    pop = proxy.client()
    pop.dele(1)

    pop.rset()
    pop.quit()

    assert len(upstream(dovecot)) == 1


def test_deletions_wait_for_an_upstream_that_is_down_at_quit(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """QUIT while the upstream is down: the deletion is kept, the message is
    gone for the client, and upstream gets the DELE at the next login."""
    put(dovecot, message(book.tom, TOM, "one"), message(book.tom, TOM, "two"))
    pop = proxy.client()
    pop.dele(subjects(pop).index("one") + 1)
    dovecot.stop()

    answer = pop.quit()
    dovecot.start()
    seen = subjects(proxy.client())

    assert answer.startswith(b"+OK deletions saved")
    assert seen == ["two"]
    [left] = upstream(dovecot).values()
    assert b"Subject: two" in left


def test_message_with_an_overlong_line_stays_upstream_alone(
    proxy: Proxy, dovecot: Dovecot, book: Book, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message with a line over the limit is left at the provider, and the
    messages after it still come through."""
    monkeypatch.setattr(upstream_module, "MAX_LINE", 2000)
    put(
        dovecot,
        message(book.tom, TOM, "huge", body="x" * 3000 + "\r\n"),
        message(book.tom, TOM, "fine"),
    )

    seen = subjects(proxy.client())

    assert seen == ["fine"]
    assert len(upstream(dovecot)) == 2


def test_upstream_down_at_login_is_a_temporary_error(
    proxy: Proxy, dovecot: Dovecot
) -> None:
    """With the upstream down, login answers [SYS/TEMP] and the next login
    works again."""
    dovecot.stop()

    with pytest.raises(poplib.error_proto) as caught:
        proxy.client()
    dovecot.start()

    assert caught.value.args[0].startswith(b"-ERR [SYS/TEMP]")
    proxy.client().quit()


def test_wrong_upstream_password_is_a_permanent_error(
    start_proxy: ProxyFactory, book: Book, dovecot: Dovecot
) -> None:
    """An upstream that refuses segcard's login: [SYS/PERM], the client's
    own login was right."""
    proxy = start_proxy()
    proxy.mailbox.settings = UpstreamSettings(
        "127.0.0.1", dovecot.pop3_port, "none", "john", "wrong"
    )

    with pytest.raises(poplib.error_proto) as caught:
        proxy.client()

    assert caught.value.args[0].startswith(b"-ERR [SYS/PERM]")


def test_one_session_at_a_time(proxy: Proxy, dovecot: Dovecot, book: Book) -> None:
    """A second login while a session is open gets [IN-USE]."""
    put(dovecot, message(book.tom, TOM, "one"))
    first = proxy.client()

    with pytest.raises(poplib.error_proto) as caught:
        proxy.client()
    first.quit()

    assert caught.value.args[0].startswith(b"-ERR [IN-USE]")
    proxy.client().quit()


def test_message_deleted_upstream_by_another_client_disappears(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """When another client deletes a message upstream, segcard's copy goes."""
    put(dovecot, message(book.tom, TOM, "one"), message(book.tom, TOM, "two"))
    proxy.client().quit()
    direct = poplib.POP3("127.0.0.1", dovecot.pop3_port, timeout=30)
    direct.user(USER)
    direct.pass_(PASSWORD)
    direct.dele(subjects(direct).index("one") + 1)
    direct.quit()

    seen = subjects(proxy.client())

    assert seen == ["two"]
    assert len(list((proxy.mailbox.cache).iterdir())) == 1


def test_released_message_joins_the_next_session(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """A released message is shown at the next login with its upstream
    UIDL; deleting it then deletes it upstream too."""
    put(dovecot, message(book.unknown, STRANGER, "wanted"))
    proxy.client().quit()
    [entry] = proxy.quarantine.entries()
    [uidl] = upstream(dovecot)

    proxy.quarantine.release(entry.id)
    pop = proxy.client()
    listed = pop.uidl()[1]
    data = retr_lines(pop, 1)
    pop.dele(1)
    pop.quit()

    assert listed == [f"1 {uidl}".encode()]
    assert data.startswith(b"X-Segcard-Verdict: junk;") and b"Subject: wanted" in data
    assert upstream(dovecot) == {}
    assert proxy.quarantine.entries() == proxy.quarantine.released() == []


def test_released_message_deleted_upstream_is_still_shown(
    start_proxy: ProxyFactory, dovecot: Dovecot, book: Book
) -> None:
    """With delete_upstream, a released message lives only in segcard; it
    is shown and then deleted locally."""
    proxy = start_proxy(delete_upstream=True)
    put(dovecot, message(book.unknown, STRANGER, "wanted"))
    proxy.client().quit()
    proxy.quarantine.release(proxy.quarantine.entries()[0].id)

    pop = proxy.client()
    seen = subjects(pop)
    pop.dele(1)
    pop.quit()

    assert seen == ["wanted"]
    assert subjects(proxy.client()) == []


# -- TLS to the upstream -----------------------------------------------------------


@pytest.mark.parametrize("tls", ["ssl", "starttls"])
def test_upstream_over_tls_with_its_ca_trusted(
    tls_dovecot: TlsDovecot,
    book: Book,
    loop_thread: LoopThread,
    tmp_path: Path,
    tls: str,
) -> None:
    """POP3S and STLS to the upstream, its certificate checked against
    pop3.ca_file."""
    port = tls_dovecot.pop3s_port if tls == "ssl" else tls_dovecot.pop3_port
    tls_settings = UpstreamSettings(
        "127.0.0.1", port, tls, USER, PASSWORD, ca_file=str(tls_dovecot.cert)
    )
    put(tls_dovecot, message(book.tom, TOM, "secure"))
    proxy = make_proxy(book, loop_thread, tls_settings, tmp_path)
    try:
        seen = subjects(proxy.client())
    finally:
        loop_thread.run(proxy.server.stop())
        proxy.mailbox.close()

    assert seen == ["secure"]


def test_upstream_certificate_not_trusted_is_refused(
    tls_dovecot: TlsDovecot, book: Book, loop_thread: LoopThread, tmp_path: Path
) -> None:
    """Without its CA the upstream's certificate fails: no login, no mail."""
    tls_settings = UpstreamSettings(
        "127.0.0.1", tls_dovecot.pop3s_port, "ssl", USER, PASSWORD
    )
    put(tls_dovecot, message(book.tom, TOM, "secure"))
    proxy = make_proxy(book, loop_thread, tls_settings, tmp_path)
    try:
        with pytest.raises(poplib.error_proto) as caught:
            proxy.client()
    finally:
        loop_thread.run(proxy.server.stop())
        proxy.mailbox.close()

    assert caught.value.args[0].startswith(b"-ERR [SYS/TEMP]")


# -- settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("pop3s://pop.example.org", ("pop.example.org", 995, "ssl")),
        ("pop3://pop.example.org:1110", ("pop.example.org", 1110, "starttls")),
        ("pop3://127.0.0.1:1110", ("127.0.0.1", 1110, "none")),
    ],
)
def test_upstream_url_says_how_to_secure_the_connection(
    tmp_path: Path, url: str, expected: tuple[str, int, str]
) -> None:
    """pop3s:// is TLS; pop3:// is STLS except on loopback, where it is plain."""
    cfg = config.save(tmp_path / "c.toml", {"user": "john", "pop3.upstream": url})

    settings = UpstreamSettings.from_config(cfg, password="x")

    assert (settings.host, settings.port, settings.tls) == expected


def test_upstream_url_of_another_scheme_is_a_config_error(tmp_path: Path) -> None:
    """An imap:// URL in pop3.upstream is refused, naming the option."""
    with pytest.raises(ConfigError, match="pop3.upstream"):
        config.save(tmp_path / "c.toml", {"user": "john", "pop3.upstream": "imap://x"})


# -- the corpus ------------------------------------------------------------------


def on_the_wire(raw: bytes) -> bytes:
    """*raw* as a POP3 server sends it: CRLF line ends (RFC 1939 3)."""
    wire = re.sub(rb"\r?\n", b"\r\n", raw)
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"


def test_corpus_messages_come_through_byte_identical(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """Every corpus message reaches the client exactly as the upstream serves
    it, with only the X-Segcard-Verdict field on top and, where allowed, the
    note at the end."""
    require_corpus()
    stored = {
        path.name: f"Delivered-To: {book.tom}\n".encode() + path.read_bytes()
        for path in mail_files()
    }
    put(dovecot, *stored.values())
    direct = upstream(dovecot)
    by_wire = {on_the_wire(raw): name for name, raw in stored.items()}
    noted = 0

    client = proxy.raw()
    client.login()
    seen = client.messages()
    client.command("QUIT")

    assert set(seen) == set(direct)
    for uidl, data in seen.items():
        name = by_wire[direct[uidl]]  # the upstream served the file as it is
        first = split_message(data).fields[0].raw
        rest = data[len(first) :]
        assert first.startswith(b"X-Segcard-Verdict: warn;"), name
        assert rest.startswith(direct[uidl]), name
        if rest != direct[uidl]:
            assert note_allowed(split_message(stored[name])), name
            noted += 1
    assert len(seen) >= 25 and noted >= 5
