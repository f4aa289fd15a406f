"""Shared pytest fixtures; the logic behind them lives in tests/servers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_runner import Segcard
from tests.corpus import corpus_dir
from tests.servers import FLAVOURS, CardDAVServer, make_server


@pytest.fixture(params=FLAVOURS)
def carddav_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[CardDAVServer]:
    """A started CardDAV server of each flavour, stopped afterwards."""
    server = make_server(request.param, tmp_path / request.param)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def corpus() -> Path:
    """The shared corpus dir; skips when absent, fails when CI=true."""
    return corpus_dir()


@pytest.fixture
def segcard(tmp_path: Path) -> Segcard:
    """A segcard with no config yet."""
    return Segcard(tmp_path)


@pytest.fixture
def john(segcard: Segcard) -> Segcard:
    """A segcard set up for john@john.example on the embedded address book."""
    result = segcard(
        "init",
        "--user",
        "john",
        "--domain",
        "john.example",
        "--identity",
        "john@john.example",
        "--data-dir",
        str(segcard.home / "data"),
    )
    assert result.code == 0, result.err
    return segcard
