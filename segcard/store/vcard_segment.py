"""segcard's own lines in a vCard: a Segment to lines and back.

Machine data sits in ungrouped ``X-SEGMAIL-*`` properties whose values use
only ``[A-Za-z0-9._@+:=-]``, so no escaping question ever arises; the segment
address is copied into a grouped, labelled ``segcard1.URL`` for phones.
Times are UTC ``YYYYMMDDTHHMMSSZ``; the Segment holds epoch seconds.
"""

from __future__ import annotations

import calendar
import logging
import re
import time
from collections.abc import Iterable
from typing import TypeVar

from segcard.address import make_label
from segcard.segment import Kind, Policy, Retired, Segment, State
from segcard.store.vcard_text import ContentLine, unescape_text

logger = logging.getLogger(__name__)

PREFIX = "X-SEGMAIL-"
URL_GROUP = "segcard1"
URL_LABEL = "segcard address"
_SAFE_RE = re.compile(r"[A-Za-z0-9._@+:=-]+")
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_E = TypeVar("_E", Kind, Policy, State)


def format_time(epoch: int) -> str:
    """Write epoch seconds as UTC ``YYYYMMDDTHHMMSSZ``."""
    return time.strftime(_TIME_FORMAT, time.gmtime(epoch))


def parse_time(value: str) -> int | None:
    """Read UTC ``YYYYMMDDTHHMMSSZ`` (or bare epoch seconds); None if neither."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        return calendar.timegm(time.strptime(value, _TIME_FORMAT))
    except ValueError:
        return None


def is_safe(value: str) -> bool:
    """Tell whether *value* may be written in an X-SEGMAIL line as it is."""
    return _SAFE_RE.fullmatch(value) is not None


def render(segment: Segment, address: str | None, uid: str | None = None) -> list[str]:
    """The unfolded owned lines for *segment*, always in the same order."""
    if not is_safe(segment.token):
        raise ValueError("a token must use only [A-Za-z0-9._@+:=-]")
    lines = [
        f"{PREFIX}TOKEN:{segment.token}",
        f"{PREFIX}CREATED:{format_time(segment.created_at)}",
        *_optional("LABEL", [segment.label], uid),
        f"{PREFIX}KIND:{segment.kind.value}",
        f"{PREFIX}STATE:{segment.state.value}@{format_time(segment.state_at)}",
        *_optional("RETIRED", [_retired(r) for r in segment.retired], uid),
    ]
    if segment.rotate_every:
        lines.append(f"{PREFIX}ROTATE:{int(segment.rotate_every)}")
    if segment.policy is not Policy.REJECT:
        lines.append(f"{PREFIX}POLICY:{segment.policy.value}")
    lines += _optional("ALLOW", [a.lower() for a in segment.allowed], uid)
    lines += _optional("LIST", list(segment.list_ids), uid)
    if segment.announced_at is not None:
        lines.append(f"{PREFIX}ANNOUNCED:{format_time(segment.announced_at)}")
    if segment.publish is not None:
        lines += _optional("PUBLISH", [segment.publish], uid)
    return lines + _readable(address, uid)


def _retired(retired: Retired) -> str:
    return f"{retired.token}@{format_time(retired.retired_at)}"


def _optional(key: str, values: list[str], uid: str | None) -> list[str]:
    """One line per safe value; unsafe ones are left out with a warning."""
    lines = []
    for value in values:
        if is_safe(value):
            lines.append(f"{PREFIX}{key}:{value}")
        else:
            logger.warning(
                "contact %s: %s%s value %r has characters outside "
                "[A-Za-z0-9._@+:=-]; not written",
                uid,
                PREFIX,
                key,
                value,
            )
    return lines


def _readable(address: str | None, uid: str | None) -> list[str]:
    """The segment address as a labelled URL that phone contact apps show."""
    if not address:
        return []
    if not is_safe(address):
        logger.warning("contact %s: segment address not URL-safe; not shown", uid)
        return []
    return [
        f"{URL_GROUP}.URL:mailto:{address}",
        f"{URL_GROUP}.X-ABLabel:{URL_LABEL}",
    ]


def mailto_has_token(value: str, tokens: Iterable[str]) -> bool:
    """Tell whether a URL value is ``mailto:`` an address holding a token."""
    url = unescape_text(value).strip().lower()
    if not url.startswith("mailto:"):
        return False
    return any(t and t.lower() in url[len("mailto:") :] for t in tokens)


def owned_values(lines: Iterable[ContentLine]) -> dict[str, list[str]]:
    """The values of the X-SEGMAIL lines among *lines*, by key, in card order."""
    values: dict[str, list[str]] = {}
    for line in lines:
        if line.name.startswith(PREFIX):
            value = unescape_text(line.value).strip()
            values.setdefault(line.name[len(PREFIX) :], []).append(value)
    return values


def card_tokens(values: dict[str, list[str]]) -> list[str]:
    """Every token named in a card's X-SEGMAIL lines, current ones first."""
    tokens = [v.lower() for v in values.get("TOKEN", []) if v]
    retired = [v.partition("@")[0].lower() for v in values.get("RETIRED", [])]
    return list(dict.fromkeys(t for t in (*tokens, *retired) if t))


def parse(values: dict[str, list[str]], name: str, uid: str | None) -> Segment | None:
    """Build the Segment from a card's X-SEGMAIL values; None without a token."""
    tokens = [v.lower() for v in values.get("TOKEN", []) if v]
    if not tokens:
        return None
    state, state_at = _state(_first(values, "STATE"), uid)
    return Segment(
        token=tokens[0],
        label=_first(values, "LABEL") or make_label(name),
        created_at=_time(_first(values, "CREATED"), uid) or 0,
        state=state,
        state_at=state_at,
        kind=_enum(Kind, _first(values, "KIND"), Kind.CONTACT, uid),
        retired=_retired_list(values, tokens, uid),
        rotate_every=_seconds(_first(values, "ROTATE")),
        policy=_enum(Policy, _first(values, "POLICY"), Policy.REJECT, uid),
        allowed=_unique(v.lower() for v in values.get("ALLOW", [])),
        list_ids=_unique(values.get("LIST", [])),
        announced_at=_time(_first(values, "ANNOUNCED"), uid),
        publish=_first(values, "PUBLISH") or None,
    )


def _first(values: dict[str, list[str]], key: str) -> str:
    found = [v for v in values.get(key, []) if v]
    return found[0] if found else ""


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _time(value: str, uid: str | None) -> int | None:
    if not value:
        return None
    parsed = parse_time(value)
    if parsed is None:
        logger.warning("contact %s: unreadable time %r in X-SEGMAIL", uid, value)
    return parsed


def _seconds(value: str) -> int | None:
    return int(value) if value.isdigit() and int(value) > 0 else None


def _state(value: str, uid: str | None) -> tuple[State, int]:
    word, _, at = value.partition("@")
    state = _enum(State, word, State.ACTIVE, uid) if word else State.ACTIVE
    return state, _time(at, uid) or 0


def _enum(enum: type[_E], value: str, default: _E, uid: str | None) -> _E:
    if not value:
        return default
    try:
        return enum(value.lower())
    except ValueError:
        logger.warning("contact %s: unknown value %r in X-SEGMAIL", uid, value)
        return default


def _retired_list(
    values: dict[str, list[str]], tokens: list[str], uid: str | None
) -> tuple[Retired, ...]:
    """Retired tokens in card order, each once; extra TOKEN lines count too.

    Two devices editing one card can leave two TOKEN lines: the first is
    current and the others are kept as retired, so no token is ever lost.
    """
    seen: dict[str, Retired] = {}
    for value in values.get("RETIRED", []):
        token, _, at = value.partition("@")
        token = token.lower()
        if token and token != tokens[0] and token not in seen:
            seen[token] = Retired(token, _time(at, uid) or 0)
    for token in tokens[1:]:
        if token != tokens[0] and token not in seen:
            logger.warning("contact %s: several X-SEGMAIL-TOKEN lines", uid)
            seen[token] = Retired(token, 0)
    return tuple(seen.values())
