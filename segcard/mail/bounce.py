"""The bounce notice: tells the user that a copy was refused for good."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from segcard.mail.headers import decode_text, decode_words, split_message
from segcard.mail.spool import Copy

NOTICE_FROM = "segcard <mailer-daemon@localhost>"


def bounce_notice(
    data: bytes, copy: Copy, rcpts: tuple[str, ...], error: str, to: str = ""
) -> bytes:
    """The notice telling the user that a copy was refused for good."""
    subject = _subject(data)
    notice = EmailMessage()
    notice["From"] = NOTICE_FROM
    notice["To"] = to or "segcard user <postmaster@localhost>"
    notice["Subject"] = f"Undelivered: {subject}" if subject else "Undelivered mail"
    notice["Date"] = formatdate(localtime=True)
    notice["Message-ID"] = make_msgid(domain="segcard.localhost")
    notice["Auto-Submitted"] = "auto-generated"
    notice.set_content(_bounce_text(copy, rcpts, error, subject))
    header = data[: len(data) - len(split_message(data).body)]
    notice.add_attachment(
        header, maintype="text", subtype="rfc822-headers", filename="headers.txt"
    )
    return notice.as_bytes()


def _bounce_text(copy: Copy, rcpts: tuple[str, ...], error: str, subject: str) -> str:
    lines = [
        "segcard could not deliver your message, and will not try again.",
        "",
        f"Subject:     {subject or '(none)'}",
        f"Message-ID:  {copy.message_id or '(none)'}",
        f"Sent as:     {copy.sender}",
        "Recipients:  " + ", ".join(rcpts),
        "",
        f"Reason: {error}",
    ]
    if "sender" in error.lower() or " 553 " in f" {error} ":
        lines += [
            "",
            "If the upstream refuses segment addresses as sender, run",
            "'segcard check' to see whether it accepts them at all.",
        ]
    lines += ["", "The header of the copy that was refused is attached."]
    return "\n".join(lines) + "\n"


def _subject(data: bytes) -> str:
    for field in split_message(data).get_all("subject"):
        return decode_words(decode_text(field.unfolded))
    return ""
