"""Peak RSS and idle CPU of ``segcard serve`` on a book of N contacts.

    python bench/serve_idle.py [--contacts 10000] [--idle 60]

Seeds the embedded address book with N cards (written into its git store),
starts ``segcard serve``, waits for the first sync to finish, then reads the
process's peak RSS (VmHWM) and its CPU time over an idle minute. The
baseline is a bare Python interpreter that imports segcard's dependencies.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fake_card  # noqa: E402
from segcard.app import read_credentials  # noqa: E402
from segcard.carddav.embedded import EmbeddedServer  # noqa: E402
from segcard.cli.commands import write_config  # noqa: E402
from segcard.store.index import Index  # noqa: E402


def seed(book_root: Path, user: str, password: str, count: int) -> None:
    server = EmbeddedServer(book_root, user, password)
    server.start()
    server.stop()
    book = book_root / "user" / "contacts" / "addressbook"
    rng = random.Random(11)
    for number in range(count):
        (book / f"c{number}.vcf").write_text(fake_card(rng, number), newline="")
    git = ["git", "-C", str(book), "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run([*git, "add", "-A"], check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", "seed"], check=True, capture_output=True)


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def baseline_rss() -> int:
    code = (
        "import vobject, caldav, aiosmtpd, aiohttp, xandikos.web, sqlite3;"
        "import time; time.sleep(0.5);"
        "print(open('/proc/self/status').read())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = write_config(
            tmp / "config.toml",
            {"user": "john", "domain": "john.example", "data_dir": str(tmp / "data")},
        )
        user, password = read_credentials(config.data.embedded_credentials)
        seed(config.data.embedded_book, user, password, args.contacts)

        env = {**os.environ, "SEGCARD_CONFIG": str(config.path)}
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "segcard.cli.main", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            index = Index(config.data.index)
            while index.count() < args.contacts:
                if proc.poll() is not None:
                    raise SystemExit("segcard serve exited")
                time.sleep(0.5)
            synced = time.perf_counter() - start
            time.sleep(3)
            cpu_before = cpu_seconds(proc.pid)
            time.sleep(args.idle)
            idle_cpu = cpu_seconds(proc.pid) - cpu_before
            peak = proc_status(proc.pid, "VmHWM")
            now = proc_status(proc.pid, "VmRSS")
        finally:
            proc.terminate()
            proc.wait(30)
        base = baseline_rss()
        print(f"segcard serve, {args.contacts} contacts: first sync done in "
              f"{synced:.1f} s; peak RSS {peak / 1024:.0f} MB (target <= 100), "
              f"RSS when idle {now / 1024:.0f} MB; bare interpreter with the same "
              f"imports {base / 1024:.0f} MB, ratio {peak / base:.1f}")
        print(f"idle CPU over {args.idle:.0f} s: {idle_cpu:.2f} s "
              f"({100 * idle_cpu / args.idle:.2f} % of one core)")


if __name__ == "__main__":
    main()
