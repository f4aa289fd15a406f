"""Fixtures for the control tests: an App with contacts, a real segcard serve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from segcard.app import App
from segcard.cli.commands import write_config
from segcard.control.client import ControlClient, NotRunning
from segcard.segment import Contact

IDENTITY = "john@john.example"
WAIT_SECONDS = 60.0


def config_values(tmp: Path, **options: Any) -> dict[str, Any]:
    flat: dict[str, Any] = {
        "user": "john",
        "domain": "john.example",
        "identities": [IDENTITY],
        "data_dir": str(tmp / "data"),
    }
    flat.update(options)
    return flat


@dataclass
class Book:
    """An App on a temp config with two contacts, Tom and the Bank."""

    app: App
    tom: Contact
    bank: Contact


def make_book(tmp: Path, **options: Any) -> Book:
    app = App(write_config(tmp / "config.toml", config_values(tmp, **options)))
    tom = app.book.add("Tom Smith", ["tom@example.org"])
    bank = app.book.add("Bank", ["service@bank.example"])
    return Book(app, tom, bank)


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    found = make_book(tmp_path)
    yield found
    found.app.close()


def segcard_env(home: Path) -> dict[str, str]:
    """The environment of a segcard process kept inside *home*."""
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "xdg-data"),
        "XDG_CONFIG_HOME": str(home / "xdg-config"),
        "XDG_RUNTIME_DIR": str(home / "xdg-run"),
    }


class Serve:
    """``segcard serve`` as a subprocess on a config, stopped by its pid."""

    def __init__(self, config: Path, home: Path) -> None:
        self.config = config
        self.home = home
        self.log = home / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        app = App.open(config)
        self.socket = app.paths.control_socket
        app.close()

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "segcard.cli.main",
            "--config",
            str(self.config),
            *args,
        ]

    def start(self) -> Serve:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command("serve"),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=segcard_env(self.home),
            )
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited:\n{self.log_tail()}")
            try:
                with ControlClient(self.socket, timeout=5) as client:
                    if client.request({"v": 1, "type": "ping"})["ok"]:
                        return
            except (NotRunning, OSError):
                time.sleep(0.1)
        raise AssertionError(f"serve did not answer in time:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """A running segcard serve whose book holds Tom and the Bank."""
    made = make_book(tmp_path)
    made.app.close()
    running = Serve(tmp_path / "config.toml", tmp_path).start()
    try:
        yield running
    finally:
        running.stop()
