"""segcard serve as a process: start-up errors, reload, rotation on start."""

from __future__ import annotations

import signal
import socket
import time
from dataclasses import replace

from segcard import config as configuration
from segcard.app import App


def wait_for(predicate, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_port_in_use_is_one_message_and_exit_1(john):
    """A busy port for the embedded book: a clear message, exit code 1."""
    port = configuration.load(john.config)["embedded.port"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()

        result = john("serve")

    assert result.code == 1
    assert "port" in result.err and "Traceback" not in result.err


def test_bad_config_is_one_message_and_exit_1(john):
    """A config with a bad value stops serve with the option named."""
    john.config.write_text(john.config.read_text() + "\ngrace_days = 'x'\n")

    result = john("serve")

    assert result.code == 1 and "grace_days" in result.err


def test_sighup_reloads_the_config(john):
    """SIGHUP makes serve read its config again without stopping."""
    proc = john.popen("-v", "serve")
    try:
        time.sleep(3)
        proc.send_signal(signal.SIGHUP)
        time.sleep(3)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)

    assert alive
    assert "config reloaded" in err


def test_overdue_rotating_entry_rotates_at_start(john, tmp_path):
    """An entry that fell due while segcard was off rotates when it starts."""
    target = tmp_path / "published.txt"
    john("add", "web", "--rotate-every", "1h", "--publish", str(target))
    app = App(configuration.load(john.config))
    [web] = app.index.rotating()
    old = replace(web.segment, created_at=web.segment.created_at - 7200)
    row = app.index.row(web.uid)
    app.index.put(replace(web, segment=old), row.card, row.etag, row.hash)
    app.close()

    proc = john.popen("serve")
    try:
        rotated = wait_for(
            lambda: target.exists() and old.token not in target.read_text()
        )
    finally:
        proc.terminate()
        proc.communicate(timeout=30)

    assert rotated
    app = App(configuration.load(john.config))
    segment = app.index.get(web.uid).segment
    assert segment.token in target.read_text() and old.token in segment.tokens
    app.close()


def test_sigterm_stops_cleanly(john):
    """SIGTERM ends serve with exit code 0 and a last log line."""
    proc = john.popen("-v", "serve")
    time.sleep(3)

    proc.terminate()
    _out, err = proc.communicate(timeout=30)

    assert proc.returncode == 0
    assert "segcard serve stopped" in err


def test_cli_changes_go_through_the_running_daemon(john, tmp_path):
    """With serve running, block is carried out by the daemon's control API."""
    import subprocess
    import sys

    bank = john("add", "Bank").out.strip()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "segcard.cli.main", "-v", "serve"],
        env=john.env, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        control = configuration.load(john.config).data.control_socket
        assert wait_for(control.exists)

        result = john("block", "Bank")
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()

    served = (tmp_path / "serve.log").read_text()
    assert result.code == 0 and bank in result.out and "blocked" in result.out
    assert "blocked" in served  # the daemon, not the command, made the change
    assert "blocked" in john("list").out
