"""Delivery into a Maildir, durably: the message is on disk before we say so.

A message is written into ``tmp/``, flushed and fsynced, then renamed into
``new/``, and the directory is fsynced so that the rename itself survives a
crash (the Maildir convention of D. J. Bernstein, with the fsyncs that
modern file systems need). Sub-folders use the Maildir++ layout
(``.Folder`` inside the top folder).
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

SUBDIRS = ("tmp", "new", "cur")

_counter = itertools.count()


def ensure(maildir: Path, folder: str | None = None) -> Path:
    """Create the Maildir (and *folder* in it) if missing; return its path."""
    target = maildir / f".{folder}" if folder else maildir
    for sub in SUBDIRS:
        (target / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder:
        (target / "maildirfolder").touch(mode=0o600, exist_ok=True)
    return target


def deliver(maildir: Path, data: bytes, folder: str | None = None) -> Path:
    """Write *data* as a new message; return its path once it is on disk."""
    target = ensure(maildir, folder)
    name = unique_name()
    tmp = target / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    final = target / "new" / name
    os.rename(tmp, final)
    fsync_dir(final.parent)
    return final


def unique_name() -> str:
    """A file name no other delivery uses: time, pid, a counter, the host."""
    now = time.time()
    seconds, micro = int(now), int((now % 1) * 1_000_000)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{seconds}.M{micro}P{os.getpid()}Q{next(_counter)}.{host}"


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in *path* durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
