"""Fixtures for the incoming side: a book with one contact per verdict row,
and an asyncio loop in a thread for servers that blocking clients talk to."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from segcard import config
from segcard.book.verdict import Judge
from segcard.config import Config
from segcard.segment import Contact, Policy, Segment, State
from segcard.store.index import Index, now

T = TypeVar("T")
DAY = 86400
DOMAIN = "john.example"
TOM = "tom@example.org"
ANN = "ann@example.net"
STRANGER = "spam@evil.test"


def addr(label: str, token: str) -> str:
    return f"john-{label}-{token}@{DOMAIN}"


@dataclass
class Book:
    """A config and index holding one contact per interesting verdict."""

    config: Config
    index: Index
    judge: Judge
    tom: str  # current token, known sender TOM
    blocked: str  # blocked, policy reject
    quiet: str  # blocked, policy junk
    moved: str  # retired 40 days ago; the new address is moved_to
    moved_to: str
    grace: str  # retired 5 days ago
    unknown: str  # a token no segment ever had


def _segment(token: str, label: str, at: int) -> Segment:
    return Segment(token, label, at, state_at=at)


def make_book(root: Path, **extra: Any) -> Book:
    """A config under *root* and an index with the contacts of :class:`Book`."""
    cfg = config.save(
        root / "config.toml",
        {
            "user": "john",
            "domain": DOMAIN,
            "identities": [f"john@{DOMAIN}"],
            "data_dir": str(root / "data"),
            **extra,
        },
    )
    index = Index(root / "index.sqlite3")
    t = now()
    tom = _segment("tmtk23456", "tom", t - 100 * DAY)
    bad = _segment("bkbk23456", "bad", t - 100 * DAY).with_state(State.BLOCKED, t)
    shop = replace(
        _segment("shsh23456", "shop", t - 100 * DAY).with_state(State.BLOCKED, t),
        policy=Policy.JUNK,
    )
    ann = _segment("anan23456", "ann", t - 100 * DAY).rotate("annw23456", t - 40 * DAY)
    bob = _segment("bbbb23456", "bob", t - 100 * DAY).rotate("bbnw23456", t - 5 * DAY)
    index.put(Contact("tom", "Tom Example", (TOM,), tom), "card")
    index.put(Contact("bad", "Bad Co", ("x@bad.test",), bad), "card")
    index.put(Contact("shop", "Shop", ("x@shop.test",), shop), "card")
    index.put(Contact("ann", "Ann", (ANN,), ann), "card")
    index.put(Contact("bob", "Bob", ("bob@example.com",), bob), "card")
    return Book(
        config=cfg,
        index=index,
        judge=Judge(cfg, index),
        tom=addr("tom", "tmtk23456"),
        blocked=addr("bad", "bkbk23456"),
        quiet=addr("shop", "shsh23456"),
        moved=addr("ann", "anan23456"),
        moved_to=addr("ann", "annw23456"),
        grace=addr("bob", "bbbb23456"),
        unknown=addr("tom", "zzzz23456"),
    )


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    made = make_book(tmp_path)
    yield made
    made.index.close()


class LoopThread:
    """An asyncio loop running in a thread; run() waits for a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    running = LoopThread()
    yield running
    running.stop()
