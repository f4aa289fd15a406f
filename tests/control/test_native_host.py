"""The native-messaging host as Thunderbird runs it, against a real serve."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from segcard.app import App
from segcard.control.native_host import MAX_MESSAGE
from segcard.segment import State
from tests.control.conftest import IDENTITY, Serve, segcard_env

HEADER = struct.Struct("=I")


class Host:
    """``segcard native-host`` started the way Thunderbird starts it."""

    def __init__(self, config: Path, home: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "segcard.cli.main",
            "--config",
            str(config),
            "native-host",
            str(home / "segcard.json"),
            "thunderbird@segcard",
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=segcard_env(home),
        )
        self.next_id = 0

    @property
    def stdin(self) -> IO[bytes]:
        assert self.process.stdin is not None
        return self.process.stdin

    def send_frame(self, payload: bytes, length: int | None = None) -> None:
        size = len(payload) if length is None else length
        self.stdin.write(HEADER.pack(size) + payload)
        self.stdin.flush()

    def read_frame(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        header = self.process.stdout.read(HEADER.size)
        assert len(header) == HEADER.size, self.stderr()
        (length,) = HEADER.unpack(header)
        assert length <= MAX_MESSAGE
        return dict(json.loads(self.process.stdout.read(length)))

    def ask(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.next_id += 1
        request = {"v": 1, "id": f"q{self.next_id}", "type": kind, **fields}
        self.send_frame(json.dumps(request).encode())
        reply = self.read_frame()
        assert reply["id"] == request["id"]
        return reply

    def close(self) -> int:
        """Close stdin as Thunderbird does, and return the exit code."""
        if not self.stdin.closed:
            self.stdin.close()
        return self.process.wait(60)

    def stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")


@pytest.fixture
def host(serve: Serve) -> Iterator[Host]:
    started = Host(serve.config, serve.home)
    yield started
    started.close()


def contacts(serve: Serve) -> dict[str, Any]:
    app = App.open(serve.config)
    try:
        return {c.name: c for c in app.index.contacts()}
    finally:
        app.close()


# -- every request type --------------------------------------------------------


def test_ping_and_status_go_through_to_the_daemon(host: Host) -> None:
    """The host relays requests and the daemon's replies, framed."""
    ping = host.ask("ping")
    status = host.ask("status")

    assert ping["ok"] is True
    assert ping["api"] == 1
    assert status["daemon"] == "running"
    assert status["contacts"] == 2


def test_identities_and_recipients_through_the_host(host: Host, serve: Serve) -> None:
    """identities and recipients answer from the daemon's index."""
    tom = contacts(serve)["Tom Smith"]

    identities = host.ask("identities")
    recipients = host.ask(
        "recipients",
        addresses=["tom@example.org", "x@new.example"],
        **{"from": IDENTITY},
    )

    assert identities["identities"] == [IDENTITY]
    rows = recipients["recipients"]
    assert rows[0]["contact"]["uid"] == tom.uid
    assert rows[0]["from"].startswith("john-tom-")
    assert rows[1]["kind"] == "new_contact"


def test_message_through_the_host(host: Host, serve: Serve) -> None:
    """message tells the contact a message came in on."""
    tom = contacts(serve)["Tom Smith"]
    address = host.ask("recipients", addresses=["tom@example.org"])["recipients"][0]

    reply = host.ask(
        "message", delivered_to=[address["from"]], **{"from": "x@y.example"}
    )

    assert reply["contact"]["uid"] == tom.uid
    assert reply["verdict"]["action"] == "warn"


def test_block_unblock_rotate_trust_change_the_daemons_index(
    host: Host, serve: Serve
) -> None:
    """Each change made through the host lands in the index."""
    bank = contacts(serve)["Bank"]
    before = host.ask("recipients", addresses=["service@bank.example"])

    blocked = host.ask("block", contact=bank.uid)
    state_blocked = contacts(serve)["Bank"].segment.state
    unblocked = host.ask("unblock", contact=bank.uid)
    rotated = host.ask("rotate", contact=bank.uid)
    trusted = host.ask("trust", contact=bank.uid, sender="alerts@bank.example")

    assert blocked["contact"]["state"] == "blocked"
    assert state_blocked is State.BLOCKED
    assert unblocked["contact"]["state"] == "active"
    assert rotated["contact"]["address"] != before["recipients"][0]["from"]
    assert trusted["trusted"] == "alerts@bank.example"
    assert "alerts@bank.example" in contacts(serve)["Bank"].segment.allowed


def test_unknown_type_through_the_host_is_refused(host: Host) -> None:
    """The host passes the type on; the daemon refuses what it does not know."""
    reply = host.ask("exec", command="rm -rf /")

    assert reply["ok"] is False
    assert reply["code"] == "unknown_type"


# -- bad frames -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe\x00", "bad_json"),
        (b"", "bad_json"),
        (b"[1, 2]", "bad_request"),
        (b'"ping"', "bad_request"),
        (b"[" * 50_000, "bad_json"),
    ],
)
def test_bad_frame_gets_an_error_and_the_host_goes_on(
    host: Host, payload: bytes, code: str
) -> None:
    """A frame that is not a JSON object gets an error reply; the next works."""
    host.send_frame(payload)
    error = host.read_frame()
    after = host.ask("ping")

    assert error["ok"] is False
    assert error["code"] == code
    assert error["id"] is None
    assert after["ok"] is True


def test_oversized_frame_is_skipped_whole(host: Host) -> None:
    """A frame over 1 MB is read past and answered too_large; framing holds."""
    body = b'{"v":1,"type":"ping","pad":"' + b"x" * MAX_MESSAGE + b'"}'

    host.send_frame(body)
    error = host.read_frame()
    after = host.ask("ping")

    assert error["code"] == "too_large"
    assert after["ok"] is True


def test_host_ends_quietly_when_thunderbird_closes_stdin(host: Host) -> None:
    """End of stdin ends the host with exit code 0, nothing more on stdout."""
    host.ask("ping")

    code = host.close()

    assert code == 0
    assert host.process.stdout is not None
    assert host.process.stdout.read() == b""


def test_frame_cut_short_by_the_end_of_stdin_ends_the_host(host: Host) -> None:
    """A header announcing more than arrives: the host stops without a reply."""
    host.send_frame(b'{"v":1', length=100)

    code = host.close()

    assert code == 0
    assert host.process.stdout is not None
    assert host.process.stdout.read() == b""


# -- the daemon away ------------------------------------------------------------


def test_without_the_daemon_every_request_says_start_serve(serve: Serve) -> None:
    """No daemon: a plain sentence with what to do, and the host keeps going."""
    serve.stop()
    host = Host(serve.config, serve.home)
    try:
        first = host.ask("ping")
        second = host.ask("status")
    finally:
        host.close()

    assert first["code"] == "not_running"
    assert first["error"] == "segcard is not running: start it with segcard serve"
    assert second["code"] == "not_running"


def test_host_reconnects_after_the_daemon_restarted(host: Host, serve: Serve) -> None:
    """A restarted daemon is reached again without restarting the host."""
    host.ask("ping")
    serve.stop()
    away = host.ask("ping")
    serve.start()

    back = host.ask("ping")

    assert away["code"] in ("not_running", "broken")
    assert back["ok"] is True


def test_without_a_config_the_host_says_what_to_run(tmp_path: Path) -> None:
    """A host with no config to read answers with segcard's own error."""
    host = Host(tmp_path / "missing.toml", tmp_path)
    try:
        reply = host.ask("ping")
    finally:
        host.close()

    assert reply["code"] == "not_configured"
    assert "segcard init" in reply["error"]
