"""Real Thunderbird for the end-to-end test: install, profile, run, schemas.

The profile is made from files alone: prefs in ``user.js`` (one POP3 account
that never fetches, an identity, the SMTP server), the add-on loaded from its
folder through a proxy file in ``extensions/``, and the SMTP password in
``logins.json``, encrypted with the profile's own key through Thunderbird's
NSS library (its public ``PK11SDR_Encrypt``), as the login manager does.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIB_DIR = Path("/usr/lib/thunderbird")
OMNI = LIB_DIR / "omni.ja"
ADDON_ID = "thunderbird@segcard"


def ensure_installed() -> str | None:
    """Install Debian's thunderbird when missing; the reason when impossible."""
    if shutil.which("thunderbird") and OMNI.exists():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "thunderbird is not installed and cannot be installed here (needs root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "thunderbird"],
        check=True,
        env=env,
        timeout=1800,
    )
    return None


@dataclass
class Account:
    """What the profile's prefs point at."""

    name: str
    email: str
    smtp_port: int
    smtp_user: str
    smtp_password: str
    pop3_port: int  # nothing listens there; the account never fetches


def user_js(account: Account) -> str:
    prefs: dict[str, Any] = {
        # The add-on comes from the profile's extensions dir, unsigned.
        "extensions.autoDisableScopes": 0,
        "extensions.enabledScopes": 15,
        "xpinstall.signatures.required": False,
        "extensions.experiments.enabled": False,
        # No first-run pages, updates, reports or network look-ups.
        "mail.shell.checkDefaultClient": False,
        "mail.rights.version": 1,
        "mailnews.start_page.enabled": False,
        "mail.provider.enabled": False,
        "app.update.enabled": False,
        "app.update.auto": False,
        "datareporting.policy.dataSubmissionEnabled": False,
        "toolkit.telemetry.enabled": False,
        "browser.safebrowsing.update.enabled": False,
        "network.captive-portal-service.enabled": False,
        "network.connectivity-service.enabled": False,
        "mailnews.auto_config_url": "",
        "mail.inline_attachments": False,
        # One POP3 account that never fetches, plus Local Folders.
        "mail.accountmanager.accounts": "account1,account2",
        "mail.accountmanager.defaultaccount": "account1",
        "mail.accountmanager.localfoldersserver": "server2",
        "mail.account.account1.server": "server1",
        "mail.account.account1.identities": "id1",
        "mail.server.server1.type": "pop3",
        "mail.server.server1.hostname": "127.0.0.1",
        "mail.server.server1.port": account.pop3_port,
        "mail.server.server1.userName": account.smtp_user,
        "mail.server.server1.name": "segcard e2e",
        "mail.server.server1.login_at_startup": False,
        "mail.server.server1.check_new_mail": False,
        "mail.server.server1.download_on_biff": False,
        "mail.account.account2.server": "server2",
        "mail.server.server2.type": "none",
        "mail.server.server2.hostname": "Local Folders",
        "mail.server.server2.userName": "nobody",
        "mail.server.server2.name": "Local Folders",
        "mail.identity.id1.fullName": account.name,
        "mail.identity.id1.useremail": account.email,
        "mail.identity.id1.valid": True,
        "mail.identity.id1.smtpServer": "smtp1",
        "mail.identity.id1.compose_html": False,
        # The Sent copy goes to Local Folders, where the test reads it.
        "mail.identity.id1.fcc": True,
        "mail.identity.id1.fcc_folder": "mailbox://nobody@Local%20Folders/Sent",
        "mail.identity.id1.fcc_folder_picker_mode": "1",
        "mail.identity.id1.doBcc": False,
        # The SMTP server: segcard's submission proxy.
        "mail.smtpservers": "smtp1",
        "mail.smtp.defaultserver": "smtp1",
        "mail.smtpserver.smtp1.hostname": "127.0.0.1",
        "mail.smtpserver.smtp1.port": account.smtp_port,
        "mail.smtpserver.smtp1.authMethod": 3,  # plain password
        "mail.smtpserver.smtp1.try_ssl": 0,
        "mail.smtpserver.smtp1.username": account.smtp_user,
        "mail.smtpserver.smtp1.description": "segcard",
    }
    return "".join(
        f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items()
    )


def make_profile(profile: Path, account: Account, addon_dir: Path) -> None:
    """A fresh profile with the prefs, the add-on and the SMTP password."""
    profile.mkdir(parents=True)
    (profile / "user.js").write_text(user_js(account))
    extensions = profile / "extensions"
    extensions.mkdir()
    (extensions / ADDON_ID).write_text(str(addon_dir.resolve()))
    store_login(profile, "smtp://127.0.0.1", account.smtp_user, account.smtp_password)


def store_login(profile: Path, origin: str, user: str, password: str) -> None:
    """Write logins.json with one login, encrypted by the profile's key."""
    encrypted = subprocess.run(
        [sys.executable, __file__, "encrypt", str(profile), user, password],
        env={**os.environ, "LD_LIBRARY_PATH": str(LIB_DIR)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    at = int(time.time() * 1000)
    login = {
        "id": 1,
        "hostname": origin,
        "httpRealm": origin,
        "formSubmitURL": None,
        "usernameField": "",
        "passwordField": "",
        "encryptedUsername": encrypted[0],
        "encryptedPassword": encrypted[1],
        "guid": "{" + str(uuid.uuid4()) + "}",
        "encType": 1,
        "timeCreated": at,
        "timeLastUsed": at,
        "timePasswordChanged": at,
        "timesUsed": 1,
    }
    data = {"nextId": 2, "logins": [login], "version": 3}
    (profile / "logins.json").write_text(json.dumps(data))


class _SecItem(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint),
        ("data", ctypes.c_void_p),
        ("len", ctypes.c_uint),
    ]


def _encrypt(profile: str, values: list[str]) -> list[str]:
    """Run in a child process: NSS must not live in the test process."""
    nss = ctypes.CDLL(str(LIB_DIR / "libnss3.so"))
    nss.NSS_InitReadWrite.argtypes = [ctypes.c_char_p]
    if nss.NSS_InitReadWrite(b"sql:" + profile.encode()) != 0:
        raise SystemExit("NSS_InitReadWrite failed")
    nss.PK11_GetInternalKeySlot.restype = ctypes.c_void_p
    slot = nss.PK11_GetInternalKeySlot()
    nss.PK11_NeedUserInit.argtypes = [ctypes.c_void_p]
    nss.PK11_InitPin.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    if nss.PK11_NeedUserInit(slot):
        nss.PK11_InitPin(slot, None, b"")  # no primary password, as in a new profile
    nss.PK11SDR_Encrypt.argtypes = [ctypes.POINTER(_SecItem)] * 3 + [ctypes.c_void_p]
    out = []
    for value in values:
        raw = value.encode()
        buffer = ctypes.create_string_buffer(raw)
        data = _SecItem(0, ctypes.cast(buffer, ctypes.c_void_p), len(raw))
        result = _SecItem(0, None, 0)
        if nss.PK11SDR_Encrypt(
            ctypes.byref(_SecItem()), ctypes.byref(data), ctypes.byref(result), None
        ):
            raise SystemExit("PK11SDR_Encrypt failed")
        out.append(base64.b64encode(ctypes.string_at(result.data, result.len)).decode())
    nss.NSS_Shutdown()
    return out


def sent_folder(profile: Path) -> Path:
    """The mbox file of the Sent folder in Local Folders."""
    return profile / "Mail" / "Local Folders" / "Sent"


def start(profile: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Thunderbird, headless, on *profile*; stop it by its pid."""
    env = {**env, "MOZ_HEADLESS": "1", "MOZ_CRASHREPORTER_DISABLE": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            ["thunderbird", "--headless", "--no-remote", "--profile", str(profile)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- the API schemas the installed Thunderbird carries --------------------------


def schemas() -> dict[str, dict[str, Any]]:
    """Namespace -> {"functions": {name: schema}, "events": {name: schema}}."""
    found: dict[str, dict[str, Any]] = {}
    with zipfile.ZipFile(OMNI) as omni:
        for name in omni.namelist():
            if "/schemas/" not in name or not name.endswith(".json"):
                continue
            for namespace in _load_schema(omni.read(name).decode()):
                _merge(found, namespace)
    return found


def _load_schema(text: str) -> list[dict[str, Any]]:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)
    try:
        loaded = json.loads(text)
    except ValueError:
        return []
    return loaded if isinstance(loaded, list) else []


def _merge(found: dict[str, dict[str, Any]], namespace: dict[str, Any]) -> None:
    name = namespace.get("namespace")
    if not name:
        return
    entry = found.setdefault(name, {"functions": {}, "events": {}})
    for kind in ("functions", "events"):
        for item in namespace.get(kind, []):
            entry[kind].setdefault(item["name"], item)


if __name__ == "__main__" and sys.argv[1:2] == ["encrypt"]:
    print("\n".join(_encrypt(sys.argv[2], sys.argv[3:])))
