"""The sub-commands of ``segcard`` and their arguments."""

from __future__ import annotations

import argparse
from typing import Any


def _global_options() -> argparse.ArgumentParser:
    """--config and -v, also accepted after the command (segcard serve -v)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS,
        help="more detail; -vv for the wire",
    )  # fmt: skip
    return common


COMMON = _global_options()


def _cmd(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text, parents=[COMMON]
    )
    return parser


def add_commands(subparsers: Any) -> None:
    init = _cmd(subparsers, "init", "write the config and create the data dir")
    init.add_argument("--user", required=True, help="local part (john)")
    init.add_argument("--domain", required=True, help="your domain (john.example)")
    init.add_argument(
        "--identity", action="append", default=[], help="a real address (repeatable)"
    )
    init.add_argument(
        "--closed-identities",
        action="store_true",
        help="treat mail to your real addresses as junk (default: deliver it)",
    )
    init.add_argument("--template", help="address template")
    init.add_argument("--carddav", help="address book URL (default: embedded)")
    init.add_argument("--carddav-user")
    init.add_argument("--carddav-password-command")
    init.add_argument("--submission", help="submission proxy host:port")
    init.add_argument("--upstream", help="smtp+starttls://, smtps:// or smtp:// URL")
    init.add_argument("--upstream-user")
    init.add_argument("--upstream-password-command")
    init.add_argument("--inbound-smtp", help="SMTP filter host:port")
    init.add_argument("--maildir", help="Maildir for accepted mail")
    init.add_argument("--lmtp", help="LMTP next hop host:port")
    init.add_argument("--next-hop", help="SMTP next hop smtp://host:port")
    init.add_argument("--imap", help="imaps://host:port of the mailbox to sort")
    init.add_argument("--imap-user")
    init.add_argument("--imap-password-command")
    init.add_argument("--junk-folder")
    init.add_argument("--pop3", help="POP3 proxy host:port for the mail client")
    init.add_argument("--pop3-upstream", help="pop3s://host:port of the mailbox")
    init.add_argument("--pop3-user")
    init.add_argument("--pop3-password-command")
    init.add_argument("--data-dir", help="data dir (default: platform data dir)")
    init.add_argument("--force", action="store_true", help="overwrite a config")

    add = _cmd(subparsers, "add", "create a contact with its own address")
    add.add_argument("name")
    add.add_argument("--email", action="append", default=[], help="repeatable")
    add.add_argument("--rotate-every", help="rotate on a schedule: 3d, 12h, 2w")
    add.add_argument("--publish", help="file to write the current address to")

    listing = _cmd(subparsers, "list", "list contacts and their addresses")
    listing.add_argument("--all", action="store_true", help="also those without one")

    for name, help_text in (
        ("show", "show one contact in full"),
        ("address", "print the address to give a contact"),
        ("rotate", "give a contact a new address; the old one is retired"),
        ("block", "refuse mail on a contact's address"),
        ("unblock", "accept mail on a contact's address again"),
    ):
        cmd = _cmd(subparsers, name, help_text)
        cmd.add_argument("contact", help="name, email, UID or segment address")

    remove = _cmd(subparsers, "remove", "delete a contact and its addresses")
    remove.add_argument("contact")
    remove.add_argument("--yes", action="store_true", help="do not ask")

    trust = _cmd(subparsers, "trust", "accept a sender on a contact's address")
    trust.add_argument("contact")
    trust.add_argument("sender")

    imp = _cmd(subparsers, "import", "import an exported address book (.vcf)")
    imp.add_argument("file")
    imp.add_argument(
        "--no-segments", action="store_true", help="import without new addresses"
    )

    sync = _cmd(subparsers, "sync", "sync with the address book now")
    sync.add_argument("--full", action="store_true", help="rebuild the index")

    status = _cmd(subparsers, "status", "what runs and where")
    status.add_argument("--json", action="store_true")

    _cmd(subparsers, "leaks", "who leaked which address")
    _cmd(subparsers, "serve", "run the daemon")

    service = _cmd(subparsers, "install-service", "run serve as a user service")
    service.add_argument("--uninstall", action="store_true", help="remove it")

    queue = _cmd(subparsers, "queue", "list, retry or drop spooled outgoing copies")
    queue.add_argument("--all", action="store_true", help="also sent and dropped")
    queue.add_argument("--retry", metavar="ID", help="try a copy now (or 'all')")
    queue.add_argument("--drop", metavar="ID", type=int, help="never send a copy")

    _cmd(subparsers, "check", "does the upstream accept segment addresses as sender?")

    quarantine = _cmd(subparsers, "quarantine", "mail the POP3 proxy held back")
    quarantine.add_argument(
        "--release", metavar="ID", help="show it in the next POP3 session"
    )

    announce = _cmd(subparsers, "announce", "tell contacts the address that is theirs")
    announce.add_argument(
        "contact", nargs="*", help="only these (default: all not yet told)"
    )
    announce.add_argument(
        "--dry-run", action="store_true", help="print what would go to whom"
    )

    host = _cmd(
        subparsers, "native-host", "link to the Thunderbird add-on (it starts this)"
    )
    host.add_argument("browser_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    thunderbird = _cmd(
        subparsers, "install-thunderbird", "register the add-on's link and build it"
    )
    thunderbird.add_argument(
        "--uninstall", action="store_true", help="remove what it wrote"
    )
