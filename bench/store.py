"""Figures for the segment store (issue 2), each against a baseline run here.

    python bench/store.py [--contacts 5000] [--segments 100000]

1. initial sync of a seeded Xandikos book vs one bare PROPFIND + multiget;
2. incremental sync after one changed card: requests, and time vs one empty
   sync-collection REPORT;
3. token lookup in an index of N segments: median microseconds.
"""

from __future__ import annotations

import argparse
import http.client
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import best_of, fake_card, median_us  # noqa: E402
from segcard.address import make_token  # noqa: E402
from segcard.app import App  # noqa: E402
from segcard.cli.commands import write_config  # noqa: E402
from segcard.segment import Contact, Segment  # noqa: E402
from segcard.store.index import Index  # noqa: E402
from tests.servers import XandikosServer  # noqa: E402

PROPFIND = (
    b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/>'
    b"</d:prop></d:propfind>"
)


def seed(server: XandikosServer, count: int) -> None:
    """Write *count* cards into the book's git repo and commit them at once."""
    server.start()
    server.stop()
    book = server.root / "user" / "contacts" / "addressbook"
    rng = random.Random(7)
    for number in range(count):
        (book / f"c{number}.vcf").write_text(fake_card(rng, number), newline="")
    git = ["git", "-C", str(book), "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run([*git, "add", "-A"], check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", "seed"], check=True, capture_output=True)
    server.start()


def request(url: str, method: str, body: bytes, depth: str) -> bytes:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    headers = {"Depth": depth, "Content-Type": "application/xml; charset=utf-8"}
    conn.request(method, parts.path, body, headers)
    data = conn.getresponse().read()
    conn.close()
    return data


def floor(url: str) -> None:
    """The least any client must do: list etags, then fetch every card once."""
    listing = request(url, "PROPFIND", PROPFIND, "1").decode()
    path = urlsplit(url).path
    hrefs = [h for h in _hrefs(listing) if h.rstrip("/") != path.rstrip("/")]
    body = (
        '<?xml version="1.0"?><c:addressbook-multiget xmlns:d="DAV:" '
        'xmlns:c="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/>'
        "<c:address-data/></d:prop>"
        + "".join(f"<d:href>{h}</d:href>" for h in hrefs)
        + "</c:addressbook-multiget>"
    )
    request(url, "REPORT", body.encode(), "1")


def _hrefs(xml_text: str) -> list[str]:
    import re

    return re.findall(r"<(?:\w+:)?href>([^<]+)</(?:\w+:)?href>", xml_text)


def empty_sync_report(url: str, token: str) -> None:
    body = (
        '<?xml version="1.0"?><d:sync-collection xmlns:d="DAV:">'
        f"<d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level>"
        "<d:prop><d:getetag/></d:prop></d:sync-collection>"
    )
    request(url, "REPORT", body.encode(), "0")


def new_app(tmp: Path, url: str, name: str) -> App:
    config = write_config(
        tmp / f"{name}.toml",
        {
            "user": "john",
            "domain": "john.example",
            "carddav.url": url,
            "data_dir": str(tmp / name),
        },
    )
    return App(config)


def count_requests(app: App) -> list[int]:
    counter = [0]
    session = app.syncer().client._transport.dav.session  # type: ignore[attr-defined]
    session.hooks["response"].append(
        lambda r, *a, **k: counter.__setitem__(0, counter[0] + 1)
    )
    return counter


def bench_sync(contacts: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = XandikosServer(tmp / "x")
        seed(server, contacts)
        try:
            floor(server.url)  # warm the server's caches for both sides
            floor_s = best_of(lambda: floor(server.url), 3)
            runs = []
            for attempt in range(3):
                app = new_app(tmp, server.url, f"initial{attempt}")
                start = time.perf_counter()
                report = app.run_sync()
                runs.append(time.perf_counter() - start)
                assert report.fetched == contacts, report
                if attempt < 2:
                    app.close()
            ours = min(runs)
            print(
                f"initial sync of {contacts} cards: segcard {ours:.2f} s, "
                f"floor {floor_s:.2f} s, ratio {ours / floor_s:.2f} (target <= 1.5)"
            )

            counter = count_requests(app)
            client = app.syncer().client
            href = next(iter(client.list_etags()))
            [item] = client.multiget([href])
            client.update(href, item.data.replace("FN:", "FN:X"), item.etag)
            counter[0] = 0
            start = time.perf_counter()
            report = app.run_sync()
            inc = time.perf_counter() - start
            token = app.index.get_state("sync_token") or ""
            base = best_of(lambda: empty_sync_report(server.url, token), 5)
            print(
                f"incremental sync after one change: {counter[0]} requests "
                f"(target <= 3), {inc * 1000:.1f} ms vs empty REPORT "
                f"{base * 1000:.1f} ms, ratio {inc / base:.1f}"
            )
            app.close()
        finally:
            server.stop()


def bench_lookup(segments: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        index = Index(Path(tmp_name) / "i.sqlite3")
        tokens = [make_token() for _ in range(segments)]
        rows = [
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
        index.put_many(rows)
        rng = random.Random(1)
        sample = [rng.choice(tokens) for _ in range(20000)]
        it = iter(sample)
        owner = median_us(lambda: index.token_owner(next(it)), 10000)
        it2 = iter(sample)
        full = median_us(lambda: index.by_token(next(it2)), 10000)
        base = median_us(lambda: None, 10000)
        print(
            f"token lookup, {segments} segments: token->UID median {owner:.1f} us, "
            f"token->contact {full:.1f} us (empty call {base:.2f} us; target <= 20)"
        )
        index.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--segments", type=int, default=100_000)
    args = parser.parse_args()
    bench_lookup(args.segments)
    bench_sync(args.contacts)


if __name__ == "__main__":
    main()
