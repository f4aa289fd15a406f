"""Where the shared corpus of real messages is (a private copy for tests/mail:
tests/corpus.py did not exist when these tests were written)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def corpus_dir() -> Path:
    """The corpus dir from SEGCARD_CORPUS, else <repo>/../shared/corpus."""
    return Path(os.environ.get("SEGCARD_CORPUS") or REPO.parent / "shared" / "corpus")


def mail_files() -> list[Path]:
    """Every .eml of corpus/mail, sorted; empty when the corpus is absent."""
    return sorted((corpus_dir() / "mail").glob("*.eml"))


def require_corpus() -> None:
    """Skip the test when the corpus is absent, or fail it when CI=true."""
    if (corpus_dir() / "mail").is_dir():
        return
    reason = f"corpus not found at {corpus_dir()}: set SEGCARD_CORPUS"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)
