"""Merging two views of a segment keeps every token and the latest state."""

from segcard.segment import Retired, Segment, State, merge


def seg(token="aaaaaaaaa", created=100, **kw):
    return Segment(token=token, label="tom", created_at=created, **kw)


def test_merge_with_nothing_keeps_the_one_view():
    """A segment merged with None is itself."""
    s = seg()
    assert merge(s, None) == s
    assert merge(None, s) == s


def test_merge_keeps_tokens_of_both_sides():
    """Rotations done on two sides leave every token known."""
    base = seg()
    local = base.rotate("bbbbbbbbb", 200)
    remote = base.rotate("ccccccccc", 300)

    merged = merge(local, remote)

    assert merged.token == "ccccccccc"
    assert set(merged.tokens) == {"aaaaaaaaa", "bbbbbbbbb", "ccccccccc"}


def test_merge_restores_lost_retired_tokens():
    """A card that lost its retired lines gets them back."""
    local = seg().rotate("bbbbbbbbb", 200)
    remote = Segment("bbbbbbbbb", "tom", 100)

    merged = merge(local, remote)

    assert merged.retired == (Retired("aaaaaaaaa", 200),)


def test_latest_state_change_wins():
    """Block on one side after unblock on the other: the later one wins."""
    local = seg().with_state(State.BLOCKED, 500)
    remote = seg().with_state(State.ACTIVE, 400)

    assert merge(local, remote).state == State.BLOCKED
    assert merge(remote, local).state == State.BLOCKED


def test_rotating_segment_falls_due():
    """A rotating segment is due once its period has passed since rotation."""
    s = seg(rotate_every=60)

    assert not s.due(159)
    assert s.due(160)
    assert not s.rotate("bbbbbbbbb", 160).due(200)
