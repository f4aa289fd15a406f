"""The POP3 server as a client meets it: commands, errors, logins, STLS, and
``segcard serve`` running it from the config."""

from __future__ import annotations

import base64
import poplib
import ssl
import time
from pathlib import Path

import pytest

from segcard.app import free_port, read_credentials
from segcard.mail.pop3.server import MAX_ERRORS
from segcard.mail.pop3.service import credentials_path
from segcard.mail.submission import LoginLimiter
from segcard.paths import DataPaths
from tests.cli_runner import Segcard
from tests.dovecot import PASSWORD, USER, Dovecot
from tests.mail.inbound.conftest import TOM, Book
from tests.mail.pop3.conftest import (
    CLIENT_PASSWORD,
    CLIENT_USER,
    Proxy,
    ProxyFactory,
    RawClient,
    message,
    put,
    self_signed,
)

WAIT = 30.0  # seconds to wait for serve to listen; not asserted


def plain(authzid: str, user: str, password: str) -> str:
    """An AUTH PLAIN response (RFC 4616)."""
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def capabilities(client: RawClient) -> list[bytes]:
    assert client.command("CAPA").startswith(b"+OK")
    return client.multiline().splitlines()


# -- commands --------------------------------------------------------------------


def test_capabilities_before_and_after_login(proxy: Proxy) -> None:
    """CAPA offers USER and SASL PLAIN before login, not after; never STLS
    without a certificate."""
    client = proxy.raw()

    before = capabilities(client)
    client.login()
    after = capabilities(client)

    assert client.greeting.startswith(b"+OK")
    for capability in (b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING"):
        assert capability in before and capability in after
    assert b"USER" in before and b"SASL PLAIN" in before
    assert b"USER" not in after and b"STLS" not in before


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"FROB", b"-ERR unknown command FROB"),
        (b"", b"-ERR empty command"),
        (b"STAT", b"-ERR STAT is only allowed after login"),
        (b"PASS x", b"-ERR PASS must follow USER"),
        (b"USER", b"-ERR USER needs a user name"),
        (b"AUTH CRAM-MD5", b"-ERR mechanism CRAM-MD5 is not offered; use PLAIN"),
        (b"AUTH PLAIN !!!", b"-ERR the AUTH PLAIN response is not base64"),
        (b"AUTH PLAIN " + base64.b64encode(b"a\0b"), b"-ERR AUTH PLAIN wants"),
        (b"STLS", b"-ERR STLS is not offered"),
        (b"CAPA now", b"-ERR CAPA takes 0 arguments, got 1"),
        (b"USER \x01", b"-ERR a command must not hold control characters"),
        (b"USER \xff", b"-ERR a command must be text"),
        (b"X" * 600, b"-ERR line too long"),
    ],
)
def test_malformed_command_before_login_gets_a_clear_error(
    proxy: Proxy, command: bytes, expected: bytes
) -> None:
    """Each bad command gets -ERR saying what is wrong; the next one works."""
    client = proxy.raw()

    answer = client.command(command)

    assert answer.startswith(expected), answer
    assert client.command("CAPA").startswith(b"+OK")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("RETR", b"-ERR RETR takes 1 arguments, got 0"),
        ("RETR one", b"-ERR RETR needs a message number"),
        ("RETR 0", b"-ERR RETR needs a message number"),
        ("RETR 2", b"-ERR no message 2"),
        ("DELE 1 2", b"-ERR DELE takes 1 arguments, got 2"),
        ("LIST 7", b"-ERR no message 7"),
        ("LIST 1 2", b"-ERR LIST takes 0 to 1 arguments, got 2"),
        ("TOP 1", b"-ERR TOP takes 2 arguments, got 1"),
        ("TOP 1 -3", b"-ERR TOP needs a number of lines"),
        ("USER john", b"-ERR USER is only allowed before login"),
        ("STAT 1", b"-ERR STAT takes 0 arguments"),
    ],
)
def test_malformed_command_after_login_gets_a_clear_error(
    proxy: Proxy, dovecot: Dovecot, book: Book, command: str, expected: bytes
) -> None:
    """Bad arguments and commands of the wrong state get -ERR with the reason."""
    put(dovecot, message(book.tom, TOM, "one"))
    client = proxy.raw()
    client.login()

    answer = client.command(command)

    assert answer.startswith(expected), answer
    assert client.command("NOOP") == b"+OK\r\n"


def test_deleted_message_is_out_of_reach(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """After DELE the message cannot be read, listed or deleted again."""
    put(dovecot, message(book.tom, TOM, "one"))
    client = proxy.raw()
    client.login()
    client.command("DELE 1")

    answers = [client.command(c) for c in ("RETR 1", "LIST 1", "UIDL 1", "DELE 1")]

    assert all(a == b"-ERR message 1 is deleted\r\n" for a in answers)
    assert client.command("STAT") == b"+OK 0 0\r\n"


def test_repeated_errors_end_the_connection(proxy: Proxy) -> None:
    """After MAX_ERRORS bad commands the server says so and hangs up."""
    client = proxy.raw()

    answers = [client.command("FROB") for _ in range(MAX_ERRORS)]

    assert answers[-1].endswith(b"too many errors, closing the connection\r\n")
    assert all(a.startswith(b"-ERR") for a in answers)
    assert client.closed()


def test_third_wrong_password_ends_the_connection(proxy: Proxy) -> None:
    """Wrong passwords answer [AUTH]; the third ends the connection."""
    client = proxy.raw()

    answers = [client.login(CLIENT_USER, "wrong") for _ in range(3)]

    assert answers[0] == b"-ERR [AUTH] wrong user name or password\r\n"
    assert answers[2].startswith(b"-ERR [AUTH]") and b"closing" in answers[2]
    assert client.closed()


def test_user_and_password_must_both_be_right(proxy: Proxy) -> None:
    """The right password with another user name is refused, and so is the
    right user with a password that only starts like the right one."""
    client = proxy.raw()

    other_user = client.login("root", CLIENT_PASSWORD)
    prefix = client.login(CLIENT_USER, CLIENT_PASSWORD[:-1])

    assert other_user.startswith(b"-ERR [AUTH]")
    assert prefix.startswith(b"-ERR [AUTH]")


def test_peer_with_many_wrong_passwords_is_refused_for_a_while(
    start_proxy: ProxyFactory,
) -> None:
    """Past the limiter's count, even the right password is refused and the
    connection ends."""
    proxy = start_proxy(limiter=LoginLimiter(max_failures=2))
    for _ in range(2):
        proxy.raw().login(CLIENT_USER, "wrong")
    client = proxy.raw()

    answer = client.login()

    assert answer.startswith(b"-ERR [AUTH] too many wrong passwords")
    assert client.closed()


def test_auth_plain_logs_in(proxy: Proxy) -> None:
    """AUTH PLAIN with an initial response, and after an empty challenge."""
    first, second = proxy.raw(), proxy.raw()

    direct = first.command(f"AUTH PLAIN {plain('', CLIENT_USER, CLIENT_PASSWORD)}")
    first.command("QUIT")
    challenge = second.command("AUTH PLAIN")
    answer = second.command(plain(CLIENT_USER, CLIENT_USER, CLIENT_PASSWORD))

    assert direct.startswith(b"+OK 0 messages")
    assert challenge == b"+ \r\n"
    assert answer.startswith(b"+OK")


def test_auth_plain_can_be_cancelled_and_acts_for_nobody_else(proxy: Proxy) -> None:
    """'*' cancels AUTH; an authzid naming another user fails the login."""
    client = proxy.raw()

    client.command("AUTH PLAIN")
    cancelled = client.command("*")
    other = client.command(f"AUTH PLAIN {plain('boss', CLIENT_USER, CLIENT_PASSWORD)}")

    assert cancelled == b"-ERR AUTH cancelled\r\n"
    assert other.startswith(b"-ERR [AUTH]")


def test_top_gives_the_header_and_the_first_body_lines(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """TOP n 1: every header field, the empty line, one line of the body."""
    put(dovecot, message(book.tom, TOM, "top", body="line 1\r\nline 2\r\n"))
    pop = proxy.client()

    lines = pop.top(1, 1)[1]

    assert lines[0].startswith(b"X-Segcard-Verdict: deliver;")
    assert lines[-2:] == [b"", b"line 1"]


def test_lines_starting_with_a_dot_come_through(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """Dot-stuffing is undone from the upstream and done again for the client."""
    body = ".\r\n..two\r\n.three\r\n"
    put(dovecot, message(book.tom, TOM, "dots", body=body))
    client = proxy.raw()
    client.login()

    client.command("RETR 1")
    data = client.multiline()

    assert data.endswith(body.encode())


def test_pipelined_commands_are_answered_in_order(
    proxy: Proxy, dovecot: Dovecot, book: Book
) -> None:
    """Several commands in one write (RFC 2449 PIPELINING) get their replies
    in order."""
    put(dovecot, message(book.tom, TOM, "one"))
    client = proxy.raw()
    client.login()

    client.send(b"STAT\r\nNOOP\r\nDELE 1\r\nSTAT\r\n")
    answers = [client.line() for _ in range(4)]

    assert answers[0].startswith(b"+OK 1 ")
    assert answers[1:] == [b"+OK\r\n", b"+OK message 1 deleted\r\n", b"+OK 0 0\r\n"]


def test_idle_client_is_logged_out_and_nothing_deleted(
    start_proxy: ProxyFactory, dovecot: Dovecot, book: Book
) -> None:
    """The autologout timer ends an idle session without applying DELE."""
    put(dovecot, message(book.tom, TOM, "one"))
    proxy = start_proxy(idle_timeout=0.5)
    client = proxy.raw()
    client.login()
    client.command("DELE 1")

    goodbye = client.line()

    assert goodbye.startswith(b"-ERR autologout")
    assert client.closed()
    assert proxy.raw().login().startswith(b"+OK 1 messages")


# -- STLS -------------------------------------------------------------------------


@pytest.fixture
def tls_proxy(start_proxy: ProxyFactory, tmp_path: Path) -> tuple[Proxy, Path]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return start_proxy(tls=context), cert


def test_with_a_certificate_passwords_wait_for_stls(
    tls_proxy: tuple[Proxy, Path],
) -> None:
    """CAPA offers STLS and no login; USER is refused until TLS is on; then
    poplib logs in over TLS."""
    proxy, cert = tls_proxy
    client = proxy.raw()

    offered = capabilities(client)
    refused = client.command(f"USER {CLIENT_USER}")
    pop = proxy.connect()
    pop.stls(ssl.create_default_context(cafile=str(cert)))
    after = pop.capa()
    pop.user(CLIENT_USER)
    answer = pop.pass_(CLIENT_PASSWORD)

    assert b"STLS" in offered and b"USER" not in offered
    assert refused.startswith(b"-ERR send STLS first")
    assert "USER" in after and "STLS" not in after
    assert answer.startswith(b"+OK")


def test_commands_sent_with_stls_end_the_connection(
    tls_proxy: tuple[Proxy, Path],
) -> None:
    """Plain text pipelined after STLS is never taken as if it came over TLS
    (CVE-2011-0411): the server hangs up."""
    proxy, _cert = tls_proxy
    client = proxy.raw()

    client.send(f"STLS\r\nUSER {CLIENT_USER}\r\n".encode())
    answer = client.line()

    assert answer.startswith(b"+OK")
    assert client.closed()


# -- segcard serve ------------------------------------------------------------------


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            poplib.POP3("127.0.0.1", port, timeout=5).quit()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing listens on {port}")


def test_serve_runs_the_proxy_set_up_by_init(
    segcard: Segcard, dovecot: Dovecot
) -> None:
    """init --pop3 ... writes the settings and the client's credentials;
    serve then proxies the upstream mailbox."""
    port = free_port()
    put(dovecot, message("someone@else.test", TOM, "hello"))
    result = segcard(
        *("init", "--user", "john", "--domain", "john.example"),
        *("--data-dir", str(segcard.home / "data"), "--pop3", f"127.0.0.1:{port}"),
        *("--pop3-upstream", f"pop3://127.0.0.1:{dovecot.pop3_port}"),
        *("--pop3-user", USER, "--pop3-password-command", f"echo {PASSWORD}"),
    )
    assert result.code == 0, result.err
    user, password = read_credentials(
        credentials_path(DataPaths(segcard.home / "data"))
    )
    serve = segcard.popen("serve")
    try:
        wait_for_port(port)
        pop = poplib.POP3("127.0.0.1", port, timeout=30)
        pop.user(user)
        pop.pass_(password)
        count = pop.stat()[0]
        pop.quit()
    finally:
        serve.terminate()
        serve.communicate(timeout=30)

    assert count == 1
