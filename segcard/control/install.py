"""``segcard install-thunderbird``: register the native host, build the add-on.

What it writes for the current user (and ``--uninstall`` removes):

- a launcher script in the data dir that runs ``segcard native-host`` with
  this Python and this config (Thunderbird starts hosts without a shell);
- the host manifest, named :data:`HOST_NAME`, whose ``allowed_extensions``
  holds the add-on's id only: in ``~/.mozilla/native-messaging-hosts/`` on
  Linux, ``~/Library/Mozilla/NativeMessagingHosts/`` on macOS, and on
  Windows in the data dir with a registry key under HKCU pointing to it;
- the add-on as an ``.xpi`` in the data dir: a zip with ``manifest.json`` at
  its root, without the tests and the test-only entry.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcard.errors import ConfigError, SegcardError

log = logging.getLogger(__name__)

HOST_NAME = "segcard"
ADDON_ID = "thunderbird@segcard"  # browser_specific_settings.gecko.id
ADDON_DIR = next(
    (
        path
        for path in (
            Path(__file__).resolve().parents[2] / "thunderbird-addon",  # source tree
            Path(sys.prefix) / "share" / "segcard" / "thunderbird-addon",  # wheel
        )
        if (path / "manifest.json").exists()
    ),
    Path(__file__).resolve().parents[2] / "thunderbird-addon",
)
XPI_NAME = "segcard-thunderbird.xpi"
REGISTRY_KEY = rf"Software\Mozilla\NativeMessagingHosts\{HOST_NAME}"

# Left out of the .xpi: the tests, the end-to-end driver and Node's file.
EXCLUDED_DIRS = frozenset({"tests", "e2e", "node_modules"})
EXCLUDED_FILES = frozenset({"package.json", "package-lock.json"})
TEST_ENTRY_PREFIX = "e2e/"
TEST_ONLY_PERMISSIONS = frozenset({"compose.send"})  # the driver sends mail
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so one source gives one .xpi


@dataclass
class Installed:
    """Where install() put things."""

    manifest: Path
    launcher: Path
    xpi: Path
    registry_key: str | None = None


def manifest_dir(home: Path, system: str) -> Path:
    """Where Thunderbird looks for host manifests of this user."""
    if system == "darwin":
        return home / "Library" / "Mozilla" / "NativeMessagingHosts"
    return home / ".mozilla" / "native-messaging-hosts"


def locations(data_dir: Path, home: Path, system: str) -> Installed:
    windows = system == "win32"
    folder = data_dir if windows else manifest_dir(home, system)
    return Installed(
        manifest=folder / f"{HOST_NAME}.json",
        launcher=data_dir / ("native-host.bat" if windows else "native-host"),
        xpi=data_dir / XPI_NAME,
        registry_key=REGISTRY_KEY if windows else None,
    )


def install(
    config_path: Path,
    data_dir: Path,
    home: Path | None = None,
    system: str = sys.platform,
    addon_dir: Path = ADDON_DIR,
) -> Installed:
    """Write the launcher, the host manifest and the .xpi; return their places."""
    where = locations(data_dir, home or Path.home(), system)
    build_xpi(addon_dir, where.xpi)
    write_launcher(where.launcher, config_path, windows=system == "win32")
    write_json(where.manifest, host_manifest(where.launcher))
    if where.registry_key:
        _set_registry(where.registry_key, where.manifest)
    log.info("native host registered in %s", where.manifest)
    return where


def uninstall(
    data_dir: Path, home: Path | None = None, system: str = sys.platform
) -> list[str]:
    """Remove what install() wrote; return what was removed."""
    where = locations(data_dir, home or Path.home(), system)
    removed = []
    for path in (where.manifest, where.launcher, where.xpi):
        if path.exists():
            path.unlink()
            removed.append(str(path))
    if where.registry_key and _delete_registry(where.registry_key):
        removed.append(f"HKEY_CURRENT_USER\\{where.registry_key}")
    return removed


# -- the host -------------------------------------------------------------------


def host_manifest(launcher: Path) -> dict[str, Any]:
    return {
        "name": HOST_NAME,
        "description": "segcard: links the Thunderbird add-on to segcard serve",
        "path": str(launcher),
        "type": "stdio",
        "allowed_extensions": [ADDON_ID],
    }


def launcher_text(config_path: Path, windows: bool = False) -> str:
    """The launcher: this Python, this config, and the browser's arguments."""
    if windows:
        return (
            "@echo off\r\n"
            f'"{sys.executable}" -m segcard.cli.main --config "{config_path}" '
            "native-host %*\r\n"
        )
    command = [sys.executable, "-m", "segcard.cli.main", "--config", str(config_path)]
    return (
        "#!/bin/sh\n"
        "# Written by 'segcard install-thunderbird'; Thunderbird runs it.\n"
        f'exec {shlex.join(command)} native-host "$@"\n'
    )


def write_launcher(path: Path, config_path: Path, windows: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(launcher_text(config_path, windows), encoding="utf-8")
    os.chmod(path, 0o700)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _set_registry(key_path: str, manifest: Path) -> None:
    if sys.platform != "win32":
        raise SegcardError("the registry exists on Windows only")
    import winreg

    with winreg.CreateKey(winreg.HKEY_CURRENT_USER, key_path) as key:
        winreg.SetValueEx(key, "", 0, winreg.REG_SZ, str(manifest))


def _delete_registry(key_path: str) -> bool:
    if sys.platform != "win32":
        return False
    import winreg

    try:
        winreg.DeleteKey(winreg.HKEY_CURRENT_USER, key_path)
    except FileNotFoundError:
        return False
    return True


# -- the add-on -----------------------------------------------------------------


def shipped_files(addon_dir: Path) -> list[Path]:
    """The add-on's files that go into the .xpi, sorted, manifest excluded."""
    found = []
    for path in sorted(addon_dir.rglob("*")):
        relative = path.relative_to(addon_dir)
        if not path.is_file() or relative.name == "manifest.json":
            continue
        if EXCLUDED_DIRS & set(relative.parts[:-1]) or relative.name in EXCLUDED_FILES:
            continue
        if relative.name.startswith("."):
            continue
        found.append(path)
    return found


def release_manifest(addon_dir: Path) -> dict[str, Any]:
    """The add-on's manifest without the test-only entry and permission."""
    try:
        manifest = json.loads((addon_dir / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the add-on's manifest in {addon_dir}",
            "install segcard from its source tree, which holds thunderbird-addon/",
        ) from exc
    background = manifest.get("background", {})
    scripts = background.get("scripts", [])
    background["scripts"] = [s for s in scripts if not s.startswith(TEST_ENTRY_PREFIX)]
    permissions = manifest.get("permissions", [])
    manifest["permissions"] = [p for p in permissions if p not in TEST_ONLY_PERMISSIONS]
    return dict(manifest)


def build_xpi(addon_dir: Path, target: Path) -> Path:
    """Zip the add-on into *target*, manifest.json first, reproducibly."""
    manifest = release_manifest(addon_dir)
    if manifest["browser_specific_settings"]["gecko"]["id"] != ADDON_ID:
        raise SegcardError(f"the add-on in {addon_dir} is not {ADDON_ID}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as xpi:
        _add(xpi, "manifest.json", json.dumps(manifest, indent=2).encode() + b"\n")
        for path in shipped_files(addon_dir):
            _add(xpi, path.relative_to(addon_dir).as_posix(), path.read_bytes())
    os.replace(tmp, target)
    return target


def _add(xpi: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    xpi.writestr(info, data)
