"""The verdict table of DESIGN.md, row by row, plus the extra rules."""

from dataclasses import replace

import pytest

from segcard import config
from segcard.book.verdict import Action, Judge, Mail, Reason, record
from segcard.segment import Contact, Policy, Segment, State
from segcard.store.index import Index

NOW = 1_800_000_000
DAY = 86400
TOM = "tom@example.org"


@pytest.fixture
def env(tmp_path):
    cfg = config.save(
        tmp_path / "c.toml",
        {
            "user": "john",
            "domain": "john.example",
            "identities": ["john@john.example"],
            "open_identities": ["john@john.example"],
            "data_dir": str(tmp_path),
        },
    )
    index = Index(tmp_path / "i.sqlite3")
    segment = Segment("tamtak234", "tom", NOW - 100 * DAY, state_at=NOW - 100 * DAY)
    index.put(Contact("tom", "Tom", (TOM,), segment), "card")
    yield cfg, index, Judge(cfg, index)
    index.close()


def put(index, segment, uid="tom", emails=(TOM,)):
    index.put(Contact(uid, "Tom", emails, segment), "card")


def addr(token):
    return f"john-tom-{token}@john.example"


def seg(index):
    return index.get("tom").segment


ROWS = [
    # (recipient, sender, expected action, reason)
    ("postmaster@john.example", "x@evil.test", Action.DELIVER, Reason.ROLE),
    ("abuse@john.example", "x@evil.test", Action.DELIVER, Reason.ROLE),
    ("john@john.example", "x@evil.test", Action.DELIVER, Reason.OPEN),
    ("john-bank@john.example", "x@evil.test", Action.JUNK, Reason.NO_TOKEN),
    (addr("zzzzzzzzz"), "x@evil.test", Action.JUNK, Reason.UNKNOWN),
    (addr("tamtak234"), TOM, Action.DELIVER, Reason.KNOWN),
    (addr("tamtak234"), "x@evil.test", Action.WARN, Reason.OUTSIDER),
]


@pytest.mark.parametrize(("rcpt", "sender", "action", "reason"), ROWS)
def test_verdict_table_row(env, rcpt, sender, action, reason):
    """Each row of the verdict table gives its action and reason."""
    _cfg, _index, judge = env

    verdict = judge.judge(Mail(rcpt, sender, sender), NOW)

    assert (verdict.action, verdict.reason) == (action, reason)


def test_label_is_not_trusted(env):
    """A changed label still finds the segment by its token."""
    _cfg, _index, judge = env

    verdict = judge.judge(Mail("john-bank-tamtak234@john.example", TOM, TOM), NOW)

    assert verdict.action is Action.DELIVER and verdict.contact.uid == "tom"


def test_blocked_segment_rejects_even_known_sender(env):
    """A blocked token is rejected, whoever sends."""
    _cfg, index, judge = env
    put(index, seg(index).with_state(State.BLOCKED, NOW))

    verdict = judge.judge(Mail(addr("tamtak234"), TOM, TOM), NOW)

    assert verdict.action is Action.REJECT and verdict.reason is Reason.BLOCKED


def test_blocked_segment_with_junk_policy_junks(env):
    """A segment set to junk quietly junks instead of rejecting."""
    _cfg, index, judge = env
    blocked = seg(index).with_state(State.BLOCKED, NOW)
    put(index, replace(blocked, policy=Policy.JUNK))

    assert judge.judge(Mail(addr("tamtak234"), TOM), NOW).action is Action.JUNK


def test_retired_token_within_grace_delivers_with_note(env):
    """Inside the grace period the old address still delivers, with a note."""
    _cfg, index, judge = env
    put(index, seg(index).rotate("newtak234", NOW - 10 * DAY))

    verdict = judge.judge(Mail(addr("tamtak234"), "x@evil.test"), NOW)

    assert verdict.action is Action.DELIVER and verdict.reason is Reason.GRACE
    assert addr("newtak234") in verdict.note


def test_retired_token_after_grace_redirects_known_sender(env):
    """After the grace period a known sender is told the new address."""
    _cfg, index, judge = env
    put(index, seg(index).rotate("newtak234", NOW - 40 * DAY))

    verdict = judge.judge(Mail(addr("tamtak234"), TOM, TOM), NOW)

    assert verdict.action is Action.REDIRECT
    assert verdict.address == addr("newtak234")


def test_retired_token_after_grace_rejects_stranger(env):
    """After the grace period anyone else gets a plain rejection."""
    _cfg, index, judge = env
    put(index, seg(index).rotate("newtak234", NOW - 40 * DAY))

    verdict = judge.judge(Mail(addr("tamtak234"), "x@evil.test", "x@evil.test"), NOW)

    assert verdict.action is Action.REJECT


def test_forged_header_from_alone_is_not_a_stranger(env):
    """A known address in the header From counts as known (envelope may differ)."""
    _cfg, _index, judge = env

    verdict = judge.judge(Mail(addr("tamtak234"), "bounce@lists.test", TOM), NOW)

    assert verdict.action is Action.DELIVER


def test_trusted_sender_is_known(env):
    """A sender added with 'trust' is delivered, not warned."""
    _cfg, index, judge = env
    put(index, replace(seg(index), allowed=("ann@example.net",)))

    verdict = judge.judge(Mail(addr("tamtak234"), "ann@example.net"), NOW)

    assert verdict.action is Action.DELIVER


def test_mailing_list_judged_by_list_id(env):
    """A List-Id the segment carries delivers whoever posted."""
    _cfg, index, judge = env
    put(index, replace(seg(index), list_ids=("dev.lists.example.org",)))
    mail = Mail(
        addr("tamtak234"),
        "poster@else.test",
        "poster@else.test",
        list_id="Dev list <dev.lists.example.org>",
    )

    assert judge.judge(mail, NOW).reason is Reason.LIST


def test_co_recipient_in_thread_is_no_leak(env):
    """A sender in a thread shared with the contact is delivered, no evidence."""
    _cfg, index, judge = env
    index.record_message("<abc@john-tom.john.example>", "tom", "x", "ann@e.net", "out")
    mail = Mail(addr("tamtak234"), "ann@e.net", references=("<abc@other.example>",))

    verdict = judge.judge(mail, NOW)
    record(index, verdict, mail, NOW)

    assert verdict.reason is Reason.CORECIPIENT and not verdict.evidence
    assert index.leaks() == []


def test_warn_records_leak_evidence(env):
    """Mail from outsiders is counted per segment and sender domain."""
    _cfg, index, judge = env
    mail = Mail(addr("tamtak234"), "spam@evil.test", message_id="<m1@evil.test>")

    for _ in range(2):
        record(index, judge.judge(mail, NOW), mail, NOW)

    [leak] = index.leaks()
    assert (leak.uid, leak.sender_domain, leak.count) == ("tom", "evil.test", 2)


def test_delivered_message_id_is_recorded(env):
    """Accepted mail's Message-ID keeps its segment for replies."""
    _cfg, index, judge = env
    mail = Mail(addr("tamtak234"), TOM, message_id="<m2@example.org>")

    record(index, judge.judge(mail, NOW), mail, NOW)

    assert index.message("<m2@example.org>")[:2] == ("tom", "tamtak234")


def test_removed_contact_token_rejects(env):
    """A token whose contact was deleted is rejected, not taken as unknown."""
    _cfg, index, judge = env
    index.remove("tom")

    verdict = judge.judge(Mail(addr("tamtak234"), TOM), NOW)

    assert verdict.action is Action.REJECT


def test_header_is_ascii_single_line(env):
    """X-Segcard-Verdict is one ASCII line naming verdict, reason and segment."""
    _cfg, index, judge = env
    put(index, seg(index))

    header = judge.judge(Mail(addr("tamtak234"), "x@e.test"), NOW).header()

    assert header.startswith("warn; ") and addr("tamtak234") in header
    assert header.isascii() and "\n" not in header
