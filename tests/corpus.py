"""Where the shared corpus of real vCards and messages lives, for the tests."""

from __future__ import annotations

import os
from pathlib import Path

from tests.requires import unavailable

REPO = Path(__file__).resolve().parents[1]


def locate() -> Path:
    """$SEGCARD_CORPUS, else ``<repo>/../shared/corpus`` (it may not exist)."""
    configured = os.environ.get("SEGCARD_CORPUS")
    return Path(configured) if configured else REPO.parent / "shared" / "corpus"


def corpus_dir() -> Path:
    """The corpus dir; the calling test is skipped (failed when CI=true)
    when it is absent."""
    path = locate()
    if not path.is_dir():
        unavailable(f"corpus not found at {path}: set SEGCARD_CORPUS to its folder")
    return path


def require_corpus() -> None:
    """Skip (or, with CI=true, fail) the calling test without the corpus."""
    corpus_dir()


def mail_files() -> list[Path]:
    """Every .eml of corpus/mail, sorted; empty when the corpus is absent."""
    return sorted((locate() / "mail").glob("*.eml"))
