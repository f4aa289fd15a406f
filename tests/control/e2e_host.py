"""The test-only native host "segcard_e2e": relays the add-on's driver to pytest.

Thunderbird starts it; it connects to the Unix socket named by
SEGCARD_E2E_SOCKET (the test listens there) and copies frames from
Thunderbird to lines for the test, and lines from the test to frames.
Standard library only: Thunderbird runs it as a plain script.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading

HEADER = struct.Struct("=I")


def to_test(sock: socket.socket) -> None:
    """Thunderbird's frames become lines for the test."""
    stdin = sys.stdin.buffer
    while True:
        header = stdin.read(HEADER.size)
        if len(header) < HEADER.size:
            break
        (length,) = HEADER.unpack(header)
        sock.sendall(stdin.read(length).replace(b"\n", b" ") + b"\n")
    sock.close()
    os._exit(0)


def to_thunderbird(sock: socket.socket) -> None:
    """The test's lines become frames for Thunderbird."""
    stdout = sys.stdout.buffer
    for line in sock.makefile("rb"):
        stdout.write(HEADER.pack(len(line.strip())) + line.strip())
        stdout.flush()
    os._exit(0)


def main() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["SEGCARD_E2E_SOCKET"])
    threading.Thread(target=to_thunderbird, args=(sock,), daemon=True).start()
    to_test(sock)


if __name__ == "__main__":
    main()
