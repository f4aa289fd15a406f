"""install-thunderbird: host manifest, launcher, .xpi, and --uninstall."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from segcard.cli.commands import write_config
from segcard.control import install
from segcard.errors import ConfigError
from tests.control.conftest import config_values, segcard_env

HEADER = struct.Struct("=I")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    write_config(path, config_values(tmp_path))
    return path


def test_linux_manifest_names_the_launcher_and_only_the_addon(
    config: Path, tmp_path: Path
) -> None:
    """The host manifest sits in ~/.mozilla/native-messaging-hosts and lets only
    segcard's add-on start the host."""
    done = install.install(config, tmp_path / "data", home=tmp_path, system="linux")

    manifest = json.loads(done.manifest.read_text())
    assert done.manifest == tmp_path / ".mozilla/native-messaging-hosts/segcard.json"
    assert manifest == {
        "name": "segcard",
        "description": manifest["description"],
        "path": str(done.launcher),
        "type": "stdio",
        "allowed_extensions": ["thunderbird@segcard"],
    }


def test_macos_manifest_goes_to_library_mozilla(config: Path, tmp_path: Path) -> None:
    """On macOS the manifest goes to ~/Library/Mozilla/NativeMessagingHosts."""
    done = install.install(config, tmp_path / "data", home=tmp_path, system="darwin")

    assert done.manifest.parent == tmp_path / "Library/Mozilla/NativeMessagingHosts"
    assert done.registry_key is None


def test_windows_places_are_the_data_dir_and_a_registry_key(tmp_path: Path) -> None:
    """On Windows the manifest stays in the data dir, found through HKCU."""
    where = install.locations(tmp_path / "data", tmp_path, "win32")
    text = install.launcher_text(tmp_path / "config.toml", windows=True)

    assert where.manifest == tmp_path / "data" / "segcard.json"
    assert where.launcher.suffix == ".bat"
    assert where.registry_key == r"Software\Mozilla\NativeMessagingHosts\segcard"
    assert text.endswith("native-host %*\r\n")


def test_launcher_runs_the_host_with_this_config(config: Path, tmp_path: Path) -> None:
    """The launcher is private, executable, and starts a working host."""
    done = install.install(config, tmp_path / "data", home=tmp_path, system="linux")
    request = json.dumps({"v": 1, "id": 1, "type": "ping"}).encode()

    result = subprocess.run(
        [str(done.launcher), str(done.manifest), "thunderbird@segcard"],
        input=HEADER.pack(len(request)) + request,
        capture_output=True,
        env=segcard_env(tmp_path),
        timeout=60,
    )

    assert stat.S_IMODE(done.launcher.stat().st_mode) == 0o700
    (length,) = HEADER.unpack(result.stdout[:4])
    reply = json.loads(result.stdout[4 : 4 + length])
    assert reply["code"] == "not_running", result.stderr
    assert result.returncode == 0


def test_xpi_has_the_manifest_at_its_root_and_no_test_entry(
    config: Path, tmp_path: Path
) -> None:
    """The .xpi is a zip with manifest.json first, without tests, the e2e driver,
    its background entry or its send permission."""
    done = install.install(config, tmp_path / "data", home=tmp_path, system="linux")

    with zipfile.ZipFile(done.xpi) as xpi:
        names = xpi.namelist()
        manifest = json.loads(xpi.read("manifest.json"))

    assert names[0] == "manifest.json"
    assert not [n for n in names if n.startswith(("tests/", "e2e/"))]
    assert "package.json" not in names
    assert manifest["background"]["scripts"] == ["background.js"]
    assert "compose.send" not in manifest["permissions"]
    for needed in (
        "background.js",
        "common/native.js",
        "_locales/en/messages.json",
        manifest["message_display_action"]["default_popup"],
        manifest["compose_action"]["default_popup"],
    ):
        assert needed in names


def test_xpi_build_is_reproducible(tmp_path: Path) -> None:
    """The same add-on source gives the same .xpi bytes."""
    first = install.build_xpi(install.ADDON_DIR, tmp_path / "a.xpi").read_bytes()
    second = install.build_xpi(install.ADDON_DIR, tmp_path / "b.xpi").read_bytes()

    assert first == second


def test_addon_id_matches_the_addons_manifest() -> None:
    """The id the host allows is the id in the add-on's manifest."""
    manifest = json.loads((install.ADDON_DIR / "manifest.json").read_text())

    assert manifest["browser_specific_settings"]["gecko"]["id"] == install.ADDON_ID


def test_uninstall_removes_what_install_wrote(config: Path, tmp_path: Path) -> None:
    """--uninstall removes the manifest, the launcher and the .xpi, and only them."""
    done = install.install(config, tmp_path / "data", home=tmp_path, system="linux")
    other = done.manifest.parent / "other.json"
    other.write_text("{}")

    removed = install.uninstall(tmp_path / "data", home=tmp_path, system="linux")
    again = install.uninstall(tmp_path / "data", home=tmp_path, system="linux")

    assert sorted(removed) == sorted(map(str, (done.manifest, done.launcher, done.xpi)))
    assert again == []
    assert other.exists()


def test_the_command_installs_and_uninstalls(config: Path, tmp_path: Path) -> None:
    """segcard install-thunderbird prints where things went; --uninstall undoes it."""
    command = [sys.executable, "-m", "segcard.cli.main", "--config", str(config)]
    env = segcard_env(tmp_path)

    done = subprocess.run(
        [*command, "install-thunderbird"], capture_output=True, text=True, env=env
    )
    manifest = tmp_path / ".mozilla/native-messaging-hosts/segcard.json"
    present = manifest.exists()
    undone = subprocess.run(
        [*command, "install-thunderbird", "--uninstall"],
        capture_output=True,
        text=True,
        env=env,
    )

    assert done.returncode == 0, done.stderr
    assert str(manifest) in done.stdout
    assert "segcard-thunderbird.xpi" in done.stdout
    assert present
    assert undone.returncode == 0
    assert f"removed {manifest}" in undone.stdout
    assert not manifest.exists()


def test_install_without_the_addon_sources_says_so(
    config: Path, tmp_path: Path
) -> None:
    """An install without thunderbird-addon/ fails with what to do."""
    with pytest.raises(ConfigError, match="cannot read the add-on's manifest"):
        install.install(
            config, tmp_path / "data", home=tmp_path, addon_dir=tmp_path / "none"
        )

    assert not os.path.exists(tmp_path / ".mozilla")
