"""``segcard announce``: tell existing contacts the address that is theirs.

One message per contact, from that contact's segment address to its first
email address, made from a template the user can edit (``announce.template``;
header lines, an empty line, then the text; ``{name}``, ``{first_name}`` and
``{address}`` are filled in). The messages go through the spool like any
other mail, spaced ``announce.interval`` seconds apart by their first try, so
the relay sends them slowly even when it is told to retry. Each contact is
marked in its vCard once its message is spooled, so running the command
again announces only to contacts not yet told.

Announced are contacts the user already had (kind "contact", or "manual"
with an email address): automatic contacts learnt the address from the
mail that made them, and rotating addresses are published, not sent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from pathlib import Path

from segcard.app import App
from segcard.errors import ConfigError
from segcard.mail.spool import NewCopy, Spool
from segcard.segment import Contact, Kind, State

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = """\
Subject: My email address for you

Hello {first_name},

I now give each of my contacts an email address of their own. Yours is:

    {address}

Please write to me at this address from now on, and put it in your
address book in place of my old one. Thank you!
"""

ANNOUNCED_KINDS = frozenset({Kind.CONTACT, Kind.MANUAL})


@dataclass(frozen=True)
class Announcement:
    """One message to one contact."""

    contact: Contact
    address: str  # the contact's segment address: From and envelope sender
    to: str
    data: bytes
    message_id: str


def load_template(app: App) -> str:
    """The template text: the configured file, else the built-in one."""
    path = app.config["announce.template"]
    if not path:
        return DEFAULT_TEMPLATE
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"announce.template: cannot read {path}: {exc}") from exc


def due_contacts(app: App) -> list[Contact]:
    """Contacts that have not been told their address yet."""
    found = []
    for contact in app.index.contacts():
        segment = contact.segment
        if segment is None or not contact.emails:
            continue
        if segment.kind not in ANNOUNCED_KINDS or segment.state != State.ACTIVE:
            continue
        if segment.announced_at is None:
            found.append(contact)
    return found


def compose(app: App, contact: Contact, template: str) -> Announcement:
    """The announcement for *contact* from *template*."""
    assert contact.segment is not None
    address = app.book.address_of(contact.segment)
    values = {
        "name": contact.name or contact.emails[0],
        "first_name": (contact.name or "").split(" ")[0] or contact.emails[0],
        "address": address,
    }
    headers, body = _split_template(_fill(template, values))
    if "subject" not in headers:
        raise ConfigError("announce.template: the template needs a Subject: line")
    message = EmailMessage()
    display = parseaddr(headers.get("from", ""))[0]
    message["From"] = formataddr((display, address)) if display else address
    message["To"] = formataddr((contact.name, contact.emails[0]))
    message["Subject"] = headers["subject"]
    message["Date"] = formatdate(localtime=True)
    message_id = make_msgid(domain=address.rpartition("@")[2])
    message["Message-ID"] = message_id
    message.set_content(body)
    return Announcement(
        contact, address, contact.emails[0], message.as_bytes(), message_id.strip("<>")
    )


def announce(
    app: App, contacts: list[Contact], spool: Spool, start: float | None = None
) -> list[Announcement]:
    """Spool an announcement for each of *contacts*, rate-limited, and mark
    each contact as announced."""
    template = load_template(app)
    interval = float(app.config["announce.interval"])
    start = time.time() if start is None else start
    sent = []
    for number, contact in enumerate(contacts):
        item = compose(app, contact, template)
        _spool(spool, item, start + number * interval)
        app.book.mark_announced(contact)
        assert contact.segment is not None
        app.index.record_message(
            item.message_id, contact.uid, contact.segment.token, item.to, "out"
        )
        log.info("announcement to contact %s spooled", contact.uid)
        sent.append(item)
    return sent


def _spool(spool: Spool, item: Announcement, not_before: float) -> None:
    assert item.contact.segment is not None
    copy = NewCopy(
        sender=item.address,
        rcpts=(item.to,),
        data=item.data,
        uid=item.contact.uid,
        token=item.contact.segment.token,
        message_id=item.message_id,
        not_before=not_before,
    )
    spool.accept(item.data, [copy], peer="segcard announce")


def _fill(template: str, values: dict[str, str]) -> str:
    """*template* with its known placeholders replaced; other braces stay."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _split_template(text: str) -> tuple[dict[str, str], str]:
    """(header name lower-cased to value, body) of a template."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.splitlines():
        name, colon, value = line.partition(":")
        if not colon:
            raise ConfigError(
                f"announce.template: {line!r} is not a header line",
                "start with lines like 'Subject: ...', then an empty line",
            )
        headers[name.strip().lower()] = value.strip()
    return headers, body
