"""The redirect notice: telling a known sender the new address of a segment.

Used where the mail has already arrived (the IMAP sorter), so SMTP's 551 is
no longer possible. It goes only to a sender the verdict found among the
contact's own addresses, never for mail that is itself automatic or from a
list (RFC 3834 section 2), at most once a week per contact and sender, and
through the outgoing spool like any other mail.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from segcard.book.verdict import Action, Mail, Verdict
from segcard.mail.headers import Message
from segcard.mail.spool import NewCopy, Spool
from segcard.store.index import Index

log = logging.getLogger(__name__)

REPEAT_AFTER = 7 * 86400  # seconds before the same sender is told again

TEXT = """\
Hello,

you wrote to {old}, an address of mine that I no longer use.
Please write to me at

    {new}

from now on, and put it in your address book in place of the old one.

(This note was sent automatically, once.)
"""


def is_automatic(message: Message) -> bool:
    """Whether *message* was sent by a program (RFC 3834 2 and 5.1; the
    Precedence field is not standard but still the common marker)."""
    for field in message.get_all("auto-submitted"):
        if field.unfolded.split(b";")[0].strip().lower() != b"no":
            return True
    precedence = b" ".join(f.unfolded.lower() for f in message.get_all("precedence"))
    return any(word in precedence for word in (b"bulk", b"junk", b"list"))


def wanted(verdict: Verdict, mail: Mail, automatic: bool) -> bool:
    """Whether *verdict* on *mail* calls for a notice at all."""
    return (
        verdict.action is Action.REDIRECT
        and bool(verdict.address and verdict.sender and verdict.contact)
        and not automatic
        and not mail.list_id
    )


def compose(verdict: Verdict, mail: Mail) -> tuple[bytes, str]:
    """(the notice, its Message-ID) for a redirect *verdict* on *mail*."""
    assert verdict.address is not None
    message = EmailMessage()
    message["From"] = verdict.address
    message["To"] = verdict.sender
    message["Subject"] = "My email address for you has changed"
    message["Date"] = formatdate(localtime=True)
    message_id = make_msgid(domain=verdict.address.rpartition("@")[2])
    message["Message-ID"] = message_id
    if mail.message_id:
        message["In-Reply-To"] = mail.message_id
        message["References"] = mail.message_id
    # RFC 3834 5: an automatic reply says so, so no auto-responder answers it.
    message["Auto-Submitted"] = "auto-replied"
    message.set_content(TEXT.format(old=mail.recipient, new=verdict.address))
    return message.as_bytes(), message_id


class Notifier:
    """Spools redirect notices, at most one per contact and sender a week."""

    def __init__(self, spool: Spool, index: Index) -> None:
        self.spool = spool
        self.index = index

    def notify(self, verdict: Verdict, mail: Mail, now: int) -> bool:
        """Spool the notice for *verdict* unless one went out lately."""
        assert verdict.contact is not None and verdict.address is not None
        key = f"redirect_notice:{verdict.contact.uid}:{verdict.sender}"
        last = self.index.get_state(key)
        if last is not None and now - int(last) < REPEAT_AFTER:
            log.info("redirect notice for contact %s sent lately", verdict.contact.uid)
            return False
        data, message_id = compose(verdict, mail)
        segment = verdict.contact.segment
        copy = NewCopy(
            sender=verdict.address,
            rcpts=(verdict.sender,),
            data=data,
            uid=verdict.contact.uid,
            token=segment.token if segment else None,
            message_id=message_id.strip("<>"),
        )
        self.spool.accept(data, [copy], peer="segcard redirect notice")
        self.index.set_state(key, str(now))
        log.info("redirect notice to contact %s spooled", verdict.contact.uid)
        return True
