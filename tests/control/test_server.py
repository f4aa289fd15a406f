"""The control socket: framing, limits, permissions, stale sockets."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from segcard.control.api import ControlApi
from segcard.control.client import ControlClient, NotRunning
from segcard.control.server import MAX_FRAME, ControlServer, encode
from segcard.errors import ConfigError
from tests.control.conftest import Book
from tests.mail.smtp_sink import LoopThread


class Running:
    """A ControlServer in a loop thread."""

    def __init__(self, book: Book) -> None:
        self.path = book.app.paths.control_socket
        self.server = ControlServer(ControlApi(book.app), self.path)
        self.loop = LoopThread()

    def start(self) -> Running:
        self.loop.run(self.server.start())
        return self

    def stop(self) -> None:
        try:
            self.loop.run(self.server.stop())
        finally:
            self.loop.close()

    def raw(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(str(self.path))
        return sock


@pytest.fixture
def running(book: Book) -> Iterator[Running]:
    server = Running(book).start()
    yield server
    server.stop()


def read_line(sock: socket.socket) -> dict[str, object]:
    """One reply line, read a byte at a time so that nothing is read ahead."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise AssertionError(f"closed after {data!r}")
        data += chunk
    return dict(json.loads(data))


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_socket_is_private_to_the_user(running: Running) -> None:
    """The socket has mode 0600 inside a 0700 runtime dir."""
    mode = running.path.stat().st_mode

    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(running.path.parent.stat().st_mode) == 0o700


SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="needs /usr/bin/python3")
def test_another_user_cannot_connect(book: Book) -> None:
    """A process of another user (uid 8) is refused by the socket's own mode,
    even in a directory that user may enter."""
    folder = Path(tempfile.mkdtemp(prefix="segcard-ctl-"))
    os.chmod(folder, 0o755)
    server = ControlServer(ControlApi(book.app), folder / "control.sock")
    loop = LoopThread()
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        "try: s.connect(sys.argv[1])\n"
        "except PermissionError: print('refused')\n"
        "else: print('connected')\n"
    )
    try:
        loop.run(server.start())
        done = subprocess.run(
            [str(SYSTEM_PYTHON), "-c", script, str(server.path)],
            user=8,
            capture_output=True,
            text=True,
            timeout=60,
        )
        loop.run(server.stop())
    finally:
        loop.close()
        shutil.rmtree(folder)

    assert done.stdout.strip() == "refused", done.stderr


def test_requests_on_one_connection_are_answered_in_order(running: Running) -> None:
    """Each line gets one reply line, in the order sent."""
    with running.raw() as sock:
        sock.sendall(
            b'{"v":1,"id":1,"type":"ping"}\n{"v":1,"id":2,"type":"identities"}\n'
        )
        first, second = read_line(sock), read_line(sock)

    assert (first["id"], second["id"]) == (1, 2)
    assert second["identities"] == ["john@john.example"]


@pytest.mark.parametrize(
    "line", [b"{not json\n", b'\xff\xfe{"v":1}\n', b"[" * 100_000 + b"\n", b"1e999x\n"]
)
def test_bad_json_gets_an_error_and_the_connection_goes_on(
    running: Running, line: bytes
) -> None:
    """Invalid JSON or UTF-8 gets bad_json; the next request still works."""
    with running.raw() as sock:
        sock.sendall(line)
        error = read_line(sock)
        sock.sendall(b'{"v":1,"id":"after","type":"ping"}\n')
        after = read_line(sock)

    assert error["code"] == "bad_json"
    assert after["id"] == "after"
    assert after["ok"] is True


def test_oversized_frame_gets_an_error_then_the_connection_closes(
    running: Running,
) -> None:
    """A line over 1 MB is answered with too_large and the connection ends."""
    with running.raw() as sock:
        sock.sendall(b'{"v":1,"type":"ping","pad":"' + b"x" * MAX_FRAME + b'"}\n')
        error = read_line(sock)

        assert error["code"] == "too_large"
        assert closed(sock)


def test_a_last_request_without_newline_is_answered(running: Running) -> None:
    """A request cut short only by the end of the stream still gets its reply."""
    with running.raw() as sock:
        sock.sendall(b'{"v":1,"id":9,"type":"ping"}')
        sock.shutdown(socket.SHUT_WR)
        reply = read_line(sock)

    assert reply["id"] == 9


def test_client_talks_to_the_server(running: Running) -> None:
    """ControlClient sends requests and decodes replies on one connection."""
    with ControlClient(running.path) as client:
        first = client.request({"v": 1, "type": "ping"})
        second = client.request({"v": 1, "type": "status"})

    assert first["ok"] and second["ok"]
    assert second["contacts"] == 2


def test_client_without_a_server_says_segcard_is_not_running(tmp_path: Path) -> None:
    """Nothing listening: NotRunning, with the sentence the add-on shows."""
    with pytest.raises(NotRunning, match="start it with segcard serve"):
        ControlClient(tmp_path / "none.sock").request({"v": 1, "type": "ping"})


def test_a_stale_socket_is_replaced_at_start(book: Book) -> None:
    """A socket file left by a crash does not stop the next start."""
    path = book.app.paths.control_socket
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()

    server = Running(book).start()
    try:
        with ControlClient(path) as client:
            reply = client.request({"v": 1, "type": "ping"})
    finally:
        server.stop()

    assert reply["ok"] is True
    assert not path.exists()


def test_a_file_that_is_not_a_socket_is_left_alone(book: Book) -> None:
    """segcard removes only sockets: a regular file there stops the start."""
    path = book.app.paths.control_socket
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("mine")
    server = Running(book)

    try:
        with pytest.raises(ConfigError, match="not a socket"):
            server.start()
    finally:
        server.loop.close()

    assert path.read_text() == "mine"


def test_a_reply_over_the_limit_becomes_an_error_reply() -> None:
    """No reply line is larger than the browser accepts from a host."""
    line = encode({"v": 1, "id": 3, "ok": True, "pad": "x" * MAX_FRAME})

    assert len(line) < 1000
    assert json.loads(line) == {
        "v": 1,
        "id": 3,
        "ok": False,
        "code": "too_large",
        "error": "the reply would be larger than 1 MB: ask for fewer addresses",
    }
