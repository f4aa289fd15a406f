"""install-service writes a user unit (Linux) or agent (macOS) and removes it."""

from __future__ import annotations

import plistlib
import sys

from segcard.control import service_unit


def test_systemd_unit_runs_serve_with_this_config(john):
    """The unit starts this interpreter's segcard with the user's config."""
    result = john("install-service")

    unit = john.home / ".config" / "systemd" / "user" / "segcard.service"
    text = unit.read_text()
    assert result.code == 0 and "systemctl --user" in result.out
    assert f"{sys.executable} -m segcard.cli.main --config {john.config}" in text
    assert text.rstrip().endswith("WantedBy=default.target")
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text


def test_uninstall_removes_the_unit(john):
    """--uninstall removes exactly what install wrote."""
    john("install-service")

    result = john("install-service", "--uninstall")

    assert result.code == 0
    assert not (john.home / ".config" / "systemd" / "user" / "segcard.service").exists()


def test_launchd_agent_on_macos(tmp_path):
    """On macOS the agent is a plist in ~/Library/LaunchAgents."""
    done = service_unit.install(tmp_path / "c.toml", tmp_path, tmp_path, "darwin")

    agent = plistlib.loads(done.path.read_bytes())
    assert done.path.parent == tmp_path / "Library" / "LaunchAgents"
    assert agent["ProgramArguments"][-1] == "serve"
    assert agent["RunAtLoad"] is True
