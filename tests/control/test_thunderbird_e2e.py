"""End to end in real Thunderbird: add-on, native host, segcard serve, upstream.

Thunderbird runs headless on a fresh profile whose SMTP server is segcard's
submission proxy; the add-on is loaded from its folder, the host manifest is
in a temp HOME. The add-on's test-only driver (absent from the .xpi) takes
commands from this test through a second, test-only native host.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from segcard.app import App, free_port, read_credentials
from segcard.control import install
from tests.control import thunderbird
from tests.control.conftest import IDENTITY, Serve, make_book, segcard_env
from tests.mail.smtp_sink import Sink
from tests.requires import unavailable

pytestmark = pytest.mark.slow

WAIT_SECONDS = 120.0
E2E_HOST = "segcard_e2e"
API_CALL = re.compile(r"\bapi\.(\w+)\.(\w+)")


class Driver:
    """The test's end of the add-on's e2e driver: one command at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.listener.settimeout(WAIT_SECONDS)
        self.conn: socket.socket | None = None
        self.lines: Any = None
        self.next_id = 0

    def accept(self, alive: Any) -> None:
        """Wait for the driver's connection and its ready message."""
        deadline = time.monotonic() + WAIT_SECONDS
        self.listener.settimeout(1)
        while self.conn is None:
            if time.monotonic() > deadline or not alive():
                raise AssertionError("the add-on's driver never connected")
            try:
                self.conn, _ = self.listener.accept()
            except TimeoutError:
                continue
        self.conn.settimeout(WAIT_SECONDS)
        self.lines = self.conn.makefile("rb")
        assert self._read()["result"] == "ready"

    def call(self, cmd: str, **fields: Any) -> Any:
        assert self.conn is not None
        self.next_id += 1
        command = {"id": self.next_id, "cmd": cmd, **fields}
        self.conn.sendall(json.dumps(command).encode() + b"\n")
        reply = self._read()
        assert reply["id"] == self.next_id
        assert reply["ok"], f"{cmd} failed in Thunderbird: {reply['error']}"
        return reply["result"]

    def _read(self) -> dict[str, Any]:
        line = self.lines.readline()
        assert line, "the driver closed its connection"
        return dict(json.loads(line))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.fixture(scope="module")
def installed() -> None:
    reason = thunderbird.ensure_installed()
    if reason:
        unavailable(reason)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temp dir: Unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sc-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def register_e2e_host(home: Path) -> None:
    """The driver's host manifest and launcher, next to segcard's."""
    launcher = home / "e2e-host"
    script = Path(__file__).with_name("e2e_host.py")
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    launcher.chmod(0o700)
    manifest = install.manifest_dir(home, "linux") / f"{E2E_HOST}.json"
    install.write_json(
        manifest,
        {
            "name": E2E_HOST,
            "description": "segcard end-to-end test driver",
            "path": str(launcher),
            "type": "stdio",
            "allowed_extensions": [install.ADDON_ID],
        },
    )


def card_on_server(app: App, uid: str) -> str:
    """The contact's card as the embedded address book serves it now."""
    row = app.index.row(uid)
    assert row is not None and row.contact.href
    user, password = read_credentials(app.paths.embedded_credentials)
    url = f"http://127.0.0.1:{app.config['embedded.port']}{row.contact.href}"
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return str(reply.read().decode())


def leaked_message(address: str) -> bytes:
    """Mail on Tom's address from a sender who is not Tom."""
    return (
        f"Delivered-To: {address}\r\nFrom: Offers <deals@bulk.example>\r\n"
        f"To: {address}\r\nSubject: offer\r\nMessage-ID: <leak-1@bulk.example>\r\n"
        "Date: Mon, 5 Jan 2026 10:00:00 +0000\r\n\r\nBuy now\r\n"
    ).encode()


def wait_for_label(driver: Driver, tab: int, wanted: str) -> str:
    """The read window button's label, once the add-on has set it."""
    deadline = time.monotonic() + WAIT_SECONDS
    label = ""
    while time.monotonic() < deadline:
        label = str(driver.call("label", tabId=tab))
        if label == wanted:
            break
        time.sleep(0.2)
    return label


def wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in time")
        time.sleep(0.2)


def test_compose_block_and_send_through_thunderbird(
    installed: None, tmp_path: Path, short_dir: Path
) -> None:
    """Thunderbird composes to Tom, the compose popup's data names Tom's
    address, Block through the host blocks the Bank in the address book, and
    the message reaches the upstream from Tom's segment address."""
    home = tmp_path / "home"
    home.mkdir()
    with Sink() as sink:
        book = make_book(
            tmp_path,
            **{
                "submission.listen": f"127.0.0.1:{free_port()}",
                "upstream.url": sink.url,
            },
        )
        tom_address = book.app.book.address(book.tom)
        user, password = read_credentials(book.app.paths.submission_credentials)
        book.app.close()
        serve = Serve(tmp_path / "config.toml", home).start()
        install.install(serve.config, tmp_path / "data", home=home, system="linux")
        register_e2e_host(home)
        port = int(book.app.config["submission.listen"].rpartition(":")[2])
        account = thunderbird.Account(
            "John Doe", IDENTITY, port, user, password, free_port()
        )
        profile = tmp_path / "profile"
        thunderbird.make_profile(profile, account, install.ADDON_DIR)
        driver = Driver(short_dir / "driver.sock")
        env = {**segcard_env(home), "SEGCARD_E2E_SOCKET": str(driver.path)}
        log = tmp_path / "thunderbird.log"
        process = thunderbird.start(profile, env, log)
        try:
            driver.accept(lambda: process.poll() is None)

            tab = driver.call(
                "compose",
                to=["Tom Smith <tom@example.org>"],
                subject="e2e",
                body="Hi Tom",
            )["tabId"]
            info = driver.call("route", message={"type": "compose-info", "tabId": tab})
            shown = driver.call("display", raw=leaked_message(tom_address).decode())
            display = driver.call(
                "route", message={"type": "display-info", "tabId": shown["tabId"]}
            )
            label = wait_for_label(driver, shown["tabId"], "not from Tom Smith")
            blocked = driver.call(
                "route",
                message={
                    "type": "contact-action",
                    "action": "block",
                    "contact": book.bank.uid,
                },
            )
            sent = driver.call("send", tabId=tab)
            received = sink.wait_for(1, WAIT_SECONDS)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n--- thunderbird log:\n{log.read_text()[-3000:]}"
                f"\n--- serve log:\n{serve.log_tail()}"
            ) from exc
        finally:
            thunderbird.stop(process)
            driver.close()

        app = App.open(serve.config)
        try:
            wait_until(lambda: not app.index.outbox(), "the daemon synced the block")
            bank_card = card_on_server(app, book.bank.uid)
            bank = app.index.get(book.bank.uid)
        finally:
            app.close()
            serve.stop()

    assert info["ok"] is True
    assert [(row["address"], row["kind"], row["from"]) for row in info["rows"]] == [
        ("tom@example.org", "segment", tom_address)
    ]
    assert info["summary"] == {"copies": 1, "shared": tom_address, "split": False}
    assert info["warnings"] == []

    assert display["label"] == "not from Tom Smith"
    assert display["came_in_on"] == tom_address
    assert display["sender"] == "deals@bulk.example"
    assert display["verdict"] == {"action": "warn", "reason": "unknown sender"}
    assert label == "not from Tom Smith"

    assert blocked["ok"] is True
    assert blocked["contact"]["state"] == "blocked"
    assert bank is not None and bank.segment is not None
    assert bank.segment.state.value == "blocked"
    assert re.search(r"^X-SEGMAIL-STATE:blocked@", bank_card, re.M)

    # The add-on set the From before sending: the Sent copy shows it too.
    sent_copy = message_from_bytes(thunderbird.sent_folder(profile).read_bytes())
    assert tom_address in sent_copy["From"]
    assert sent["mode"] == "sendNow"
    assert sent["messages"][0]["author"] == f"John Doe <{tom_address}>"
    assert len(received) == 1
    message = message_from_bytes(received[0].data)
    assert received[0].mail_from == tom_address
    assert received[0].rcpts == ("tom@example.org",)
    assert tom_address in message["From"]
    assert "John Doe" in message["From"]
    assert IDENTITY not in received[0].data.decode(errors="replace").lower()


def test_addon_api_calls_exist_in_the_installed_thunderbird(installed: None) -> None:
    """Every messenger API the add-on calls is in the installed Thunderbird's
    schemas, and usable from Manifest V2."""
    known = thunderbird.schemas()
    used: set[tuple[str, str]] = set()
    for path in install.ADDON_DIR.rglob("*.js"):
        if "tests" not in path.relative_to(install.ADDON_DIR).parts:
            used.update(API_CALL.findall(path.read_text()))

    missing = []
    for namespace, member in sorted(used):
        entry = known.get(namespace, {})
        schema = entry.get("functions", {}).get(member) or entry.get("events", {}).get(
            member
        )
        if schema is None or schema.get("min_manifest_version", 2) > 2:
            missing.append(f"{namespace}.{member}")

    assert used
    assert missing == []


def test_thunderbird_version_is_recorded(installed: None) -> None:
    """The version the e2e test ran against, for the report; 128 or later."""
    out = subprocess.run(
        ["thunderbird", "--version"], capture_output=True, text=True, timeout=60
    ).stdout
    version = re.search(r"(\d+)\.", out)

    assert version is not None, out
    assert int(version.group(1)) >= 128
