"""Figures for the incoming side (issue 4), each against a baseline run here.

    python bench/inbound.py [--segments 100000] [--rcpts 20000] [--messages 2000]

1. RCPT verdicts per second through the SMTP filter, against an aiosmtpd
   sink that accepts every recipient: the same smtplib client, in the same
   run, against both servers (which run in one child process, so that the
   client does not share the interpreter with them); the ratio
   filter / sink, target >= 0.8. Every recipient is a segment address of the
   book, half from its contact and half from a stranger (deliver and warn);
2. the verdict function alone, with 100,000 segments in the index: median
   microseconds per call;
3. the IMAP sorter on a real Dovecot: N messages in INBOX judged and sorted
   (a quarter moved to Junk, a quarter marked as warned), against the time
   imapclient needs to log in and fetch just their headers: the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import smtplib
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiosmtpd.smtp import SMTP  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from bench.common import median_us  # noqa: E402
from segcard import config  # noqa: E402
from segcard.address import make_token  # noqa: E402
from segcard.book.verdict import Judge, Mail  # noqa: E402
from segcard.mail.inbound import local_domains  # noqa: E402
from segcard.mail.inbound.delivery import MaildirDelivery  # noqa: E402
from segcard.mail.inbound.filter import FilterHandler, SmtpFilter  # noqa: E402
from segcard.mail.inbound.imap_sorter import ImapSettings, Place, Sorter  # noqa: E402
from segcard.mail.inbound.lookup import CachedIndex  # noqa: E402
from segcard.mail.inbound.tarpit import Tarpit  # noqa: E402
from segcard.segment import Contact, Segment  # noqa: E402
from segcard.store.index import Index  # noqa: E402
from tests.dovecot import MAIL_GID, MAIL_UID, PASSWORD, USER, Dovecot  # noqa: E402

DOMAIN = "john.example"
ROUNDS = 3
RCPT_ROUNDS = 9


def make_book(root: Path, segments: int) -> tuple[config.Config, Index, list[str]]:
    """A config and an index with *segments* contacts; their tokens."""
    cfg = config.save(
        root / "config.toml",
        {"user": "john", "domain": DOMAIN, "data_dir": str(root / "data")},
    )
    index = Index(root / "index.sqlite3")
    tokens = [make_token() for _ in range(segments)]
    index.put_many(
        [
            (
                Contact(
                    f"u{i}", f"Contact {i}", (f"c{i}@example.org",), Segment(t, "c", 0)
                ),
                "card",
                None,
                None,
            )
            for i, t in enumerate(tokens)
        ]
    )
    return cfg, index, tokens


def address(number: int, token: str) -> str:
    return f"john-c-{token}@{DOMAIN}"


# -- 1. RCPT verdicts per second -------------------------------------------------


class Sink:
    """An aiosmtpd handler that accepts every recipient and every message."""

    async def handle_DATA(
        self, server: object, session: object, envelope: object
    ) -> str:  # noqa: N802
        return "250 2.0.0 Ok"


def serve_both(root: str, segments: int, pipe: Connection) -> None:
    """Child process: the filter and the sink on free ports until told to stop."""
    cfg, index, tokens = make_book(Path(root), segments)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        handler = FilterHandler(
            Judge(cfg, CachedIndex(Path(root) / "index.sqlite3")),
            index,
            MaildirDelivery(Path(root) / "Maildir"),
            local_domains(cfg),
            Tarpit(after=10**9, delay=0, drop_after=10**9),
        )
        smtp_filter = SmtpFilter(handler, "127.0.0.1", 0)
        await smtp_filter.start(hostname="filter.bench")
        sink = await loop.create_server(
            lambda: SMTP(Sink(), loop=loop, enable_SMTPUTF8=True, hostname="sink"),
            "127.0.0.1",
            0,
        )
        pipe.send((smtp_filter.port, sink.sockets[0].getsockname()[1], tokens))
        await loop.run_in_executor(None, pipe.recv)

    asyncio.run(run())


def rcpt_run(port: int, rcpts: list[tuple[str, str]]) -> float:
    """RCPTs per second from one smtplib client, 100 per transaction."""
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo("bench.test")
        start = time.perf_counter()
        for first in range(0, len(rcpts), 100):
            batch = rcpts[first : first + 100]
            smtp.mail(batch[0][1])
            for rcpt, _sender in batch:
                code, _text = smtp.rcpt(rcpt)
                assert code == 250, code
            smtp.rset()
        return len(rcpts) / (time.perf_counter() - start)


def bench_rcpt(segments: int, count: int) -> None:
    """Filter and sink in alternation, so that a busy machine slows both."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    with tempfile.TemporaryDirectory() as root:
        child = context.Process(target=serve_both, args=(root, segments, theirs))
        child.start()
        filter_port, sink_port, tokens = ours.recv()
        rng = random.Random(4)
        rcpts = []
        for _ in range(count):
            n = rng.randrange(len(tokens))
            sender = f"c{n}@example.org" if rng.random() < 0.5 else "x@evil.test"
            rcpts.append((address(n, tokens[n]), sender))
        cold = rcpt_run(filter_port, rcpts)  # every token looked up once
        rcpt_run(sink_port, rcpts)
        pairs = [
            (rcpt_run(filter_port, rcpts), rcpt_run(sink_port, rcpts))
            for _ in range(RCPT_ROUNDS)
        ]
        ours.send("stop")
        child.join(30)
    best_filter = max(f for f, _s in pairs)
    best_sink = max(s for _f, s in pairs)
    paired = statistics.median(f / s for f, s in pairs)
    print(
        f"RCPT verdicts ({segments:,} segments, {count:,} RCPTs a run, "
        f"{RCPT_ROUNDS} alternating runs): filter best {best_filter:,.0f}/s, sink "
        f"best {best_sink:,.0f}/s, ratio of bests {best_filter / best_sink:.2f}, "
        f"median of paired ratios {paired:.2f} (target >= 0.8); first run with "
        f"a cold cache {cold:,.0f}/s"
    )


# -- 2. the verdict function alone --------------------------------------------------


def bench_verdict(segments: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        cfg, index, tokens = make_book(Path(root), segments)
        judge = Judge(cfg, index)
        rng = random.Random(2)
        mails = []
        for _ in range(20_000):
            n = rng.randrange(len(tokens))
            sender = f"c{n}@example.org" if rng.random() < 0.5 else "x@evil.test"
            mails.append(Mail(address(n, tokens[n]), sender, sender))
        it = iter(mails)
        median = median_us(lambda: judge.judge(next(it), 1_800_000_000), 20_000)
        index.close()
    print(f"verdict function, {segments:,} segments: median {median:.1f} us per call")


# -- 3. the IMAP sorter ------------------------------------------------------------


def seed(server: Dovecot, tokens: list[str], count: int) -> None:
    """Write *count* messages straight into the INBOX Maildir."""
    new = server.maildir / "new"
    new.mkdir(parents=True, exist_ok=True)
    for base in (server.root / "mail" / USER, server.maildir, new):
        os.chown(base, MAIL_UID, MAIL_GID)
    rng = random.Random(3)
    for number in range(count):
        kind = number % 4
        n = rng.randrange(len(tokens))
        token = tokens[n] if kind != 0 else "zzzz23456"  # a quarter unknown
        sender = "x@evil.test" if kind == 1 else f"c{n}@example.org"
        data = (
            f"Return-Path: <{sender}>\r\nDelivered-To: {address(n, token)}\r\n"
            f"From: <{sender}>\r\nTo: <{address(n, token)}>\r\n"
            f"Subject: message {number}\r\nMessage-ID: <{number}.{time.time()}@b>\r\n"
            f"\r\n{'Some text. ' * 80}\r\n"
        ).encode()
        path = new / f"{int(time.time())}.M{number}P{os.getpid()}.bench,S={len(data)}"
        path.write_bytes(data)
        os.chown(path, MAIL_UID, MAIL_GID)


def fetch_headers(server: Dovecot) -> float:
    """Seconds for imapclient to log in and fetch every message's header."""
    start = time.perf_counter()
    with IMAPClient("127.0.0.1", server.port, ssl=False) as imap:
        imap.login(USER, PASSWORD)
        imap.select_folder("INBOX", readonly=True)
        uids = imap.search(["ALL"])
        for first in range(0, len(uids), 500):
            imap.fetch(uids[first : first + 500], ["BODY.PEEK[HEADER]"])
    return time.perf_counter() - start


def sort_all(server: Dovecot, cfg: config.Config, index: Index) -> tuple[float, int]:
    """Seconds for the sorter to log in, judge and sort the whole INBOX."""
    settings = ImapSettings("127.0.0.1", server.port, "none", USER, PASSWORD)
    sorter = Sorter(settings, Judge(cfg, index), index, local_domains(cfg))
    with IMAPClient("127.0.0.1", server.port, ssl=False) as imap:
        imap.login(USER, PASSWORD)
        validity = imap.select_folder("INBOX")[b"UIDVALIDITY"]
    index.set_state(sorter.state_key, Place(int(validity), 0, 0.0).dump())
    start = time.perf_counter()
    sorter.connect()
    outcome = sorter.sort_new()
    sorter.close()
    return time.perf_counter() - start, outcome.moved


def bench_imap(segments: int, count: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        cfg, index, tokens = make_book(Path(root), segments)
        ratios = []
        for _ in range(ROUNDS):
            server = Dovecot()
            try:
                seed(server, tokens, count)
                server.start()
                fetch_headers(server)  # Dovecot builds its index once
                baseline = fetch_headers(server)
                sorted_in, moved = sort_all(server, cfg, index)
            finally:
                server.cleanup()
            ratios.append((sorted_in / baseline, sorted_in, baseline, moved))
        ratio, sorted_in, baseline, moved = min(ratios)
        index.close()
    print(
        f"IMAP sorter, {count:,} messages ({moved} moved to Junk): sorted in "
        f"{sorted_in:.2f}s, header fetch {baseline:.2f}s, ratio {ratio:.2f} "
        f"(best of {ROUNDS})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--rcpts", type=int, default=5_000)
    parser.add_argument("--messages", type=int, default=2_000)
    args = parser.parse_args()
    bench_verdict(args.segments)
    bench_rcpt(args.segments, args.rcpts)
    bench_imap(args.segments, args.messages)


if __name__ == "__main__":
    main()
