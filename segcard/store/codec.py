"""Segments to and from the JSON kept in the index."""

from __future__ import annotations

import json
from typing import Any

from segcard.segment import Kind, Policy, Retired, Segment, State


def segment_to_json(segment: Segment | None) -> str | None:
    """Encode a segment for the index (None stays None)."""
    if segment is None:
        return None
    doc: dict[str, Any] = {
        "token": segment.token,
        "label": segment.label,
        "created_at": segment.created_at,
        "state": segment.state.value,
        "state_at": segment.state_at,
        "kind": segment.kind.value,
        "retired": [[r.token, r.retired_at] for r in segment.retired],
        "rotate_every": segment.rotate_every,
        "policy": segment.policy.value,
        "allowed": list(segment.allowed),
        "list_ids": list(segment.list_ids),
        "announced_at": segment.announced_at,
        "publish": segment.publish,
    }
    return json.dumps(doc, separators=(",", ":"))


def segment_from_json(text: str | None) -> Segment | None:
    """Decode a segment stored by :func:`segment_to_json`."""
    if not text:
        return None
    doc = json.loads(text)
    return Segment(
        token=doc["token"],
        label=doc["label"],
        created_at=doc["created_at"],
        state=State(doc["state"]),
        state_at=doc["state_at"],
        kind=Kind(doc["kind"]),
        retired=tuple(Retired(t, at) for t, at in doc["retired"]),
        rotate_every=doc.get("rotate_every"),
        policy=Policy(doc.get("policy", "reject")),
        allowed=tuple(doc.get("allowed", ())),
        list_ids=tuple(doc.get("list_ids", ())),
        announced_at=doc.get("announced_at"),
        publish=doc.get("publish"),
    )
