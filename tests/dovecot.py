"""A private Dovecot (Debian's 2.3) for the IMAP and POP3 tests.

Facts it is built on (see TEST-SERVERS.md): Dovecot runs from its own config
file with every path inside one temp dir; it will not let root own mail, so
mail runs as Debian's ``mail`` user (uid 8) and the Maildir belongs to it;
its auth process runs as ``dovecot`` and needs o+x on the temp dir; port 0
means "listener off", so free ports are picked here and checked after the
start; unix socket paths must stay under 107 bytes, so base_dir is short;
the auth penalty is switched off so that one failed login does not slow
every later test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.requires import unavailable

MAIL_UID = 8  # Debian's "mail" user
MAIL_GID = 8
USER = "john"
PASSWORD = "secret-password"
START_TIMEOUT = 20.0

# Dovecot 2.3's own list after login; imap_capability replaces it whole.
CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY "
    "THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL "
    "CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 "
    "CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS "
    "BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ "
    "NOTIFY"
)

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
instance_name = segcard-test-{port}
login_greeting = segcard-test-{port} ready
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
first_valid_uid = {uid}
mail_location = maildir:{root}/mail/%u/Maildir
mail_privileged_group = mail
{capability}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def available() -> bool:
    return shutil.which("dovecot") is not None or Path("/usr/sbin/dovecot").exists()


def require_dovecot() -> None:
    """Skip the test when Dovecot is not installed, fail it when CI=true."""
    if available():
        return
    unavailable("dovecot not installed: apt-get install dovecot-imapd dovecot-pop3d")


class Dovecot:
    """One private Dovecot with one user (USER / PASSWORD) and Maildir storage."""

    def __init__(self, hide: tuple[str, ...] = ()) -> None:
        # Short and outside pytest's 0700 tmp dirs: see the module docstring.
        self.root = Path(tempfile.mkdtemp(prefix="dc", dir="/tmp"))
        os.chmod(self.root, 0o711)
        self.port = free_port()
        self.pop3_port = free_port()
        self.hide = hide
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / USER / "Maildir"

    def _write_config(self) -> None:
        shown = [c for c in CAPABILITIES.split() if c not in self.hide]
        capability = f"imap_capability = {' '.join(shown)}" if self.hide else ""
        self.config_path.write_text(
            CONFIG.format(
                root=self.root,
                port=self.port,
                pop3_port=self.pop3_port,
                uid=MAIL_UID,
                gid=MAIL_GID,
                capability=capability,
            )
        )
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir(exist_ok=True)
        os.chown(self.root / "mail", MAIL_UID, MAIL_GID)

    def start(self) -> None:
        """Start Dovecot in the foreground and wait until IMAP answers."""
        self.process = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "stderr.log").open("ab"),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self._errors()}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not answer on {self.port}: {self._errors()}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                greeting = s.makefile("rb").readline(4096)
        except OSError:
            return False
        # Our own greeting: no other server took the port before we did.
        return f"segcard-test-{self.port} ready".encode() in greeting

    def _errors(self) -> str:
        logs = [self.root / "stderr.log", self.root / "dovecot.log"]
        text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
        return text[-2000:]

    def stop(self) -> None:
        """Stop the Dovecot we started (by its pid) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
