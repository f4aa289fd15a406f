"""Where the shared corpus of real vCards and messages lives, for the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    """The corpus dir: $SEGCARD_CORPUS, else ``<repo>/../shared/corpus``.

    When it is absent the calling test is skipped, or failed when CI=true.
    """
    configured = os.environ.get("SEGCARD_CORPUS")
    path = Path(configured) if configured else REPO.parent / "shared" / "corpus"
    if path.is_dir():
        return path
    reason = f"corpus not found at {path}: set SEGCARD_CORPUS to its folder"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)
