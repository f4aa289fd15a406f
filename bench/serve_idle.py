"""Peak RSS and CPU of ``segcard serve`` on a book of N contacts (issues 2, 7).

    python bench/serve_idle.py [--contacts 10000] [--idle 60] [--messages 200]

Seeds the embedded address book with N cards (written into its git store),
starts ``segcard serve`` with the submission proxy (an aiosmtpd sink as
upstream) and the SMTP filter (to a Maildir), and waits for the first sync.
Then it runs the end-to-end scenario at scale: M messages through the proxy
to seeded contacts and new addresses, and M replies into the filter (from
the right sender, from strangers, to unknown tokens). It reports the peak
RSS (VmHWM) and CPU time of the process after the first sync and after the
scenario, and its CPU time over an idle minute. The baseline is a bare
Python interpreter that imports segcard's dependencies.
"""

from __future__ import annotations

import argparse
import os
import random
import smtplib
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
from segcard.config import save  # noqa: E402
from segcard.store.index import Index  # noqa: E402
from tests.mail.smtp_sink import Sink, free_port  # noqa: E402


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


def scenario(tmp: Path, submission: int, inbound: int, sink: Sink, count: int) -> float:
    """Mail out through the proxy and replies into the filter; seconds taken."""
    user, password = (tmp / "data" / "submission-credentials").read_text().split()[:2]
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", submission, timeout=120) as client:
        client.login(user, password)
        for n in range(count):
            rcpt = f"anna.{n}@example.org" if n % 2 else f"new{n}@example.net"
            body = (
                f"From: John <john@john.example>\r\nTo: <{rcpt}>\r\n"
                f"Subject: test {n}\r\nMessage-ID: <m{n}@john.example>\r\n\r\n"
                + "Hello, this is a test message.\r\n"
                * 40
            )
            client.sendmail("john@john.example", [rcpt], body.encode())
    sink.wait_for(count, 300)
    addresses = [r.mail_from for r in sink.received]
    with smtplib.SMTP("127.0.0.1", inbound, timeout=120) as client:
        for n in range(count):
            rcpt = addresses[n % len(addresses)]
            if n % 3 == 2:
                rcpt = "john-x-zzzzzzzzz@john.example"
            client.mail("someone@example.org" if n % 3 else "x@evil.example")
            code, _ = client.rcpt(rcpt)
            if code == 250:
                client.data(b"Subject: reply\r\n\r\nThanks\r\n")
            else:
                client.rset()
    return time.perf_counter() - start


def restart_peak(env: dict[str, str], index: Index, contacts: int) -> int:
    """Peak RSS (kB) of serve started again on a synced index, left idle.

    This is the daemon a user lives with: the first full listing of the
    address book happened once, in an earlier run.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "segcard.cli.main", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        before = index.get_state("last_sync")
        deadline = time.time() + 120
        while index.get_state("last_sync") == before and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(10)
        assert index.count() >= contacts
        return proc_status(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = write_config(
            tmp / "config.toml",
            {"user": "john", "domain": "john.example", "data_dir": str(tmp / "data")},
        )
        user, password = read_credentials(config.data.embedded_credentials)
        seed(config.data.embedded_book, user, password, args.contacts)

        sink = Sink().start()
        submission, inbound = free_port(), free_port()
        flat = {
            "user": "john",
            "domain": "john.example",
            "identities": ["john@john.example"],
            "data_dir": str(tmp / "data"),
            "embedded.port": config["embedded.port"],
            "submission.listen": f"127.0.0.1:{submission}",
            "upstream.url": sink.url,
            "inbound.smtp_listen": f"127.0.0.1:{inbound}",
            "inbound.maildir": str(tmp / "Maildir"),
            "inbound.tarpit_after": 1000000,
        }
        save(config.path, flat)
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
            sync_peak = proc_status(proc.pid, "VmHWM")
            sync_cpu = cpu_seconds(proc.pid)
            took = scenario(tmp, submission, inbound, sink, args.messages)
            scenario_peak = proc_status(proc.pid, "VmHWM")
            # Let the daemon finish what the scenario left: new contacts to
            # push to the address book, copies to relay.
            while index.outbox():
                time.sleep(0.5)
            scenario_cpu = cpu_seconds(proc.pid) - sync_cpu
            time.sleep(5)
            cpu_before = cpu_seconds(proc.pid)
            time.sleep(args.idle)
            idle_cpu = cpu_seconds(proc.pid) - cpu_before
            peak = proc_status(proc.pid, "VmHWM")
            now = proc_status(proc.pid, "VmRSS")
        finally:
            proc.terminate()
            proc.wait(30)
        try:
            restarted = restart_peak(env, index, args.contacts)
        finally:
            sink.stop()
        base = baseline_rss()
        print(
            f"segcard serve, {args.contacts} contacts: first sync done in "
            f"{synced:.1f} s using {sync_cpu:.1f} s CPU; peak RSS after it "
            f"{sync_peak / 1024:.0f} MB (target <= 100)"
        )
        print(
            f"scenario ({args.messages} messages out, {args.messages} replies in): "
            f"{took:.1f} s, {scenario_cpu:.1f} s CPU, peak RSS "
            f"{scenario_peak / 1024:.0f} MB; RSS when idle {now / 1024:.0f} MB"
        )
        print(
            f"bare interpreter with the same imports: {base / 1024:.0f} MB; "
            f"peak ratio {peak / base:.1f}"
        )
        print(
            f"serve restarted on its synced index ({args.contacts} contacts), "
            f"idle: peak RSS {restarted / 1024:.0f} MB (target <= 100)"
        )
        print(
            f"idle CPU over {args.idle:.0f} s: {idle_cpu:.2f} s "
            f"({100 * idle_cpu / args.idle:.2f} % of one core)"
        )


if __name__ == "__main__":
    main()
