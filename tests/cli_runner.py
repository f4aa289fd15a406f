"""Run the real ``segcard`` command in a temp home (fixtures in conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    code: int
    out: str
    err: str


class Segcard:
    """The ``segcard`` command with its own config and data dir."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.config = home / "config.toml"
        self.env = {
            **os.environ,
            "SEGCARD_CONFIG": str(self.config),
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "cfg"),
            "XDG_RUNTIME_DIR": str(home / "run"),
        }

    def __call__(self, *args: str, stdin: str | None = None) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "segcard.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=120,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "segcard.cli.main", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
