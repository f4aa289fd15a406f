"""Bench: the submission proxy against sending straight to the upstream.

Run from the repository root: ``python bench/submission.py [--messages 500]``.

Three figures, in one run, on loopback:

1. throughput: N corpus messages (one recipient each) sent by one smtplib
   client straight to an aiosmtpd sink, and the same client sending them
   through a real ``segcard serve`` (proxy, spool with fsync, relay) to the
   same sink; the proxy run ends when the sink has every copy. The ratio is
   proxy throughput over direct throughput (target >= 0.5);
2. the client-visible latency of DATA -> 250 in both runs (median, p99);
3. one message to 10 recipients on 10 segments: from the start of the
   client's transaction to the last copy accepted by the sink (10 contacts
   known already, and 10 recipients never seen before).

The corpus is found like the tests find it (SEGCARD_CORPUS, else
../shared/corpus); messages are cycled until N are sent.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segcard.app import App, port_open, read_credentials  # noqa: E402
from segcard.mail.rewrite import header_from  # noqa: E402
from tests.corpus import mail_files  # noqa: E402
from tests.mail.smtp_sink import HOST, Sink, free_port, make_app  # noqa: E402

RECIPIENTS = 50  # distinct recipients the N messages cycle through
START_SECONDS = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    corpus = [p.read_bytes() for p in mail_files()]
    if not corpus:
        print("no corpus found: set SEGCARD_CORPUS", file=sys.stderr)
        return 1
    messages = [corpus[i % len(corpus)] for i in range(args.messages)]
    identities = usable_identities(corpus)
    with tempfile.TemporaryDirectory() as tmp, Sink(long_lines=True) as sink:
        report(run_all(Path(tmp), sink, messages, identities), len(messages), corpus)
    return 0


def usable_identities(corpus: list[bytes]) -> list[str]:
    """Every corpus From as an identity, but those the config refuses (a
    domain without a dot, such as k.hoerst@invalid): messages from those
    are relayed as they are."""
    senders = sorted({header_from(raw)[1] for raw in corpus})
    usable = [s for s in senders if "." in s.rpartition("@")[2]]
    if len(usable) < len(senders):
        left_out = ", ".join(sorted(set(senders) - set(usable)))
        print(f"identities: {len(usable)} of {len(senders)} (not {left_out})")
    return usable


def run_all(
    tmp: Path, sink: Sink, messages: list[bytes], identities: list[str]
) -> dict[str, object]:
    """Every measurement, with the daemon started once."""
    direct_time, direct_latency = send_all(HOST, sink.port, None, messages)
    sink.received.clear()
    port = free_port()
    app = make_app(
        tmp,
        identities=identities,
        **{"submission.listen": f"{HOST}:{port}", "upstream.url": sink.url},
    )
    credentials = read_credentials(app.paths.submission_credentials)
    daemon = start_serve(tmp, port)
    try:
        warm_up(app, sink, port, credentials, messages)
        started = time.perf_counter()
        _, proxy_latency = send_all(HOST, port, credentials, messages)
        sink.wait_for(len(messages), seconds=600)
        proxy_time = time.perf_counter() - started
        fan_out = fan_out_times(app, sink, port, credentials, identities[0])
    finally:
        daemon.terminate()
        daemon.wait(30)
        app.close()
    return {
        "direct_time": direct_time,
        "proxy_time": proxy_time,
        "direct_latency": direct_latency,
        "proxy_latency": proxy_latency,
        **fan_out,
    }


def warm_up(
    app: App, sink: Sink, port: int, credentials: tuple[str, str], messages: list[bytes]
) -> None:
    """Make the recipients known contacts and let the daemon sync them, so
    that the timed run measures the steady state."""
    send_all(HOST, port, credentials, messages[:RECIPIENTS])
    sink.wait_for(RECIPIENTS, seconds=120)
    deadline = time.monotonic() + 120
    while app.index.outbox() and time.monotonic() < deadline:
        time.sleep(0.1)
    sink.received.clear()


def send_all(
    host: str, port: int, credentials: tuple[str, str] | None, messages: list[bytes]
) -> tuple[float, list[float]]:
    """Send every message on one connection; (total seconds, DATA->250 each)."""
    latencies = []
    started = time.perf_counter()
    with smtplib.SMTP(host, port, timeout=120) as client:
        if credentials:
            client.login(*credentials)
        client.ehlo_or_helo_if_needed()
        for number, raw in enumerate(messages):
            sender = header_from(raw)[1]
            check(client.mail(sender))
            check(client.rcpt(f"r{number % RECIPIENTS}@bench-rcpt.example"))
            before = time.perf_counter()
            check(client.data(raw))
            latencies.append(time.perf_counter() - before)
    return time.perf_counter() - started, latencies


def fan_out_times(
    app: App, sink: Sink, port: int, credentials: tuple[str, str], identity: str
) -> dict[str, float]:
    """Time to the last of 10 copies, for known and for new recipients."""
    known = [f"r{i}@bench-rcpt.example" for i in range(10)]
    fresh = [f"new{i}@bench-fresh.example" for i in range(10)]
    return {
        "fan_out_known": fan_out(sink, port, credentials, identity, known),
        "fan_out_new": fan_out(sink, port, credentials, identity, fresh),
    }


def fan_out(
    sink: Sink, port: int, credentials: tuple[str, str], identity: str, rcpts: list[str]
) -> float:
    """Seconds from MAIL FROM to the sink accepting the 10th copy."""
    raw = (
        f"From: Bench <{identity}>\r\nTo: " + ", ".join(rcpts) + "\r\n"
        "Subject: ten segments\r\nMessage-ID: <fan-"
        f"{time.time_ns()}@bench.example>\r\n\r\nhello\r\n"
    ).encode()
    before = len(sink.received)
    with smtplib.SMTP(HOST, port, timeout=120) as client:
        client.login(*credentials)
        started = time.perf_counter()
        client.sendmail(identity, rcpts, raw)
        got = sink.wait_for(before + 10, seconds=120)
        elapsed = time.perf_counter() - started
    senders = {g.mail_from for g in got[before:]}
    assert len(senders) == 10, f"expected 10 segments, got {len(senders)}"
    return elapsed


def start_serve(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    """A real ``segcard serve`` on the bench config, once it listens."""
    log = (tmp / "serve.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "segcard.cli.main", "--config"]
        + [str(tmp / "config.toml"), "serve"],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + START_SECONDS
    while not port_open(HOST, port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((tmp / "serve.log").read_text()[-3000:])
        time.sleep(0.05)
    return process


def check(reply: tuple[int, bytes]) -> None:
    if not 200 <= reply[0] < 300:
        raise RuntimeError(f"refused: {reply[0]} {reply[1]!r}")


def report(figures: dict[str, object], count: int, corpus: list[bytes]) -> None:
    direct_time = float(figures["direct_time"])  # type: ignore[arg-type]
    proxy_time = float(figures["proxy_time"])  # type: ignore[arg-type]
    sizes = sorted(len(m) for m in corpus)
    median = sizes[len(sizes) // 2]
    print(f"messages: {count}, corpus of {len(corpus)} (median {median} B)")
    print(f"direct:  {direct_time:7.2f} s  {count / direct_time:7.1f} msg/s")
    rate = count / proxy_time
    print(f"proxy:   {proxy_time:7.2f} s  {rate:7.1f} msg/s (until the sink has all)")
    print(
        f"throughput ratio proxy/direct: {direct_time / proxy_time:.2f} (target >= 0.5)"
    )
    for name in ("direct", "proxy"):
        values = sorted(figures[f"{name}_latency"])  # type: ignore[call-overload]
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(
            f"DATA->250 {name:6}: median {statistics.median(values) * 1000:6.2f} ms, "
            f"p99 {p99 * 1000:6.2f} ms"
        )
    print(
        f"10 recipients on 10 segments, to the last copy: "
        f"{float(figures['fan_out_known']) * 1000:.0f} ms (known contacts), "  # type: ignore[arg-type]
        f"{float(figures['fan_out_new']) * 1000:.0f} ms (10 new contacts)"  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    sys.exit(main())
