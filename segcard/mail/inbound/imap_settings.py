"""Where the IMAP sorter's mailbox is, and where the sorter stands in it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from segcard.config import Config
from segcard.mail.tls import client_endpoint


@dataclass(frozen=True)
class ImapSettings:
    """Where the mailbox is and how to sort it."""

    host: str
    port: int
    tls: str  # "ssl" (imaps://), "starttls", or "none" (loopback only)
    username: str
    password: str = field(repr=False)
    junk_folder: str = "Junk"
    mailbox: str = "INBOX"
    poll_interval: float = 60.0

    @classmethod
    def from_config(cls, config: Config) -> ImapSettings:
        """Settings from ``imap.*``; imaps:// is TLS, imap:// is STARTTLS
        except on loopback, where it may be plain."""
        end = client_endpoint("imap.url", config["imap.url"], "imap", (993, 143))
        return cls(
            host=end.host,
            port=end.port,
            tls=end.tls,
            username=config["imap.username"],
            password=config.secret("imap"),
            junk_folder=config["imap.junk_folder"],
            poll_interval=float(config["imap.poll_interval"]),
        )


@dataclass
class Place:
    """Where the sorter stands in the mailbox."""

    uidvalidity: int
    last_uid: int
    since: float  # when the sorter first watched this mailbox
    rescan: bool = False  # after a UIDVALIDITY change: skip older mail

    def dump(self) -> str:
        return json.dumps(
            {"uidvalidity": self.uidvalidity, "last_uid": self.last_uid}
            | {"since": self.since, "rescan": self.rescan}
        )

    @classmethod
    def load(cls, text: str | None) -> Place | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(data["uidvalidity"], data["last_uid"], data["since"], data["rescan"])
