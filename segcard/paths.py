"""Where segcard keeps its files: every path comes from here."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from segcard.errors import ConfigError

APP = "segcard"


def config_file(override: str | os.PathLike[str] | None = None) -> Path:
    """The config file: --config, else $SEGCARD_CONFIG, else the platform's."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("SEGCARD_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def default_data_dir() -> Path:
    """The platform's data dir for segcard (index, spool, embedded book)."""
    return Path(platformdirs.user_data_dir(APP))


def default_runtime_dir() -> Path:
    """The platform's runtime dir (control socket, lock), else the data dir."""
    try:
        return Path(platformdirs.user_runtime_dir(APP))
    except Exception:  # noqa: BLE001 - some platforms have none
        return default_data_dir() / "run"


class DataPaths:
    """The files inside one data dir."""

    def __init__(self, data_dir: Path, runtime_dir: Path | None = None) -> None:
        self.root = data_dir
        self.runtime = runtime_dir or data_dir / "run"

    @property
    def index(self) -> Path:
        return self.root / "index.sqlite3"

    @property
    def embedded_book(self) -> Path:
        return self.root / "addressbook"

    @property
    def embedded_credentials(self) -> Path:
        return self.root / "carddav-credentials"

    @property
    def submission_credentials(self) -> Path:
        return self.root / "submission-credentials"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def outbox_maildir(self) -> Path:
        return self.root / "outbox"

    @property
    def notices_maildir(self) -> Path:
        return self.root / "notices"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def lock(self) -> Path:
        return self.root / "serve.lock"

    @property
    def control_socket(self) -> Path:
        return self.runtime / "control.sock"

    def ensure(self) -> None:
        """Create the data and runtime dirs, private to the user."""
        for path in (self.root, self.runtime):
            try:
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(path, 0o700)
            except OSError as exc:
                raise ConfigError(
                    f"cannot use {path} as segcard's data dir: {exc.strerror}",
                    "set data_dir in the config to a directory you can write",
                ) from exc


def write_private(path: Path, text: str) -> None:
    """Write *text* to *path* atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
