"""``segcard install-service``: run ``segcard serve`` as a user service.

Linux gets a systemd user unit, macOS a launchd agent. Nothing is enabled
behind the user's back: the command prints how to start it.
"""

from __future__ import annotations

import plistlib
import sys
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "segcard.service"
AGENT_LABEL = "org.segcard.serve"


@dataclass(frozen=True)
class Installed:
    """What install wrote (or uninstall removed) and what to run next."""

    path: Path
    next_step: str


def command(config: Path) -> list[str]:
    """The command line the service runs."""
    return [sys.executable, "-m", "segcard.cli.main", "--config", str(config), "serve"]


def systemd_unit(config: Path) -> str:
    exec_start = " ".join(_quote(part) for part in command(config))
    return (
        "[Unit]\n"
        "Description=segcard: one secret address per correspondent\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={exec_start}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "Restart=on-failure\n"
        "RestartSec=10\n\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def _quote(part: str) -> str:
    # systemd splits ExecStart on spaces and honours double quotes.
    return f'"{part}"' if " " in part else part


def launchd_agent(config: Path, logs: Path) -> bytes:
    return plistlib.dumps(
        {
            "Label": AGENT_LABEL,
            "ProgramArguments": command(config),
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "StandardErrorPath": str(logs / "segcard.log"),
        }
    )


def target(home: Path, platform: str = sys.platform) -> Path:
    """Where the unit or agent file goes for this user."""
    if platform == "darwin":
        return home / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist"
    return home / ".config" / "systemd" / "user" / UNIT_NAME


def install(
    config: Path, data_dir: Path, home: Path | None = None, platform: str = sys.platform
) -> Installed:
    """Write the unit or agent for *config*; return where and what to run."""
    path = target(home or Path.home(), platform)
    path.parent.mkdir(parents=True, exist_ok=True)
    if platform == "darwin":
        path.write_bytes(launchd_agent(config, data_dir))
        return Installed(path, f"launchctl load {path}")
    path.write_text(systemd_unit(config), encoding="utf-8")
    return Installed(
        path, "systemctl --user daemon-reload && systemctl --user enable --now segcard"
    )


def uninstall(home: Path | None = None, platform: str = sys.platform) -> Installed:
    """Remove what install wrote; tell how to stop a running service first."""
    path = target(home or Path.home(), platform)
    if not path.exists():
        return Installed(path, "nothing to do: no service was installed")
    path.unlink()
    if platform == "darwin":
        return Installed(
            path, f"removed; if it was loaded: launchctl remove {AGENT_LABEL}"
        )
    return Installed(
        path, "removed; if it ran: systemctl --user stop segcard && "
        "systemctl --user daemon-reload"
    )  # fmt: skip
