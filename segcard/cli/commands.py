"""What each ``segcard`` sub-command does."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from segcard import config as configuration
from segcard import paths
from segcard.app import App, write_config
from segcard.book.importer import import_cards
from segcard.cli.output import ProgressBar, table, when
from segcard.errors import ConfigError, SegcardError
from segcard.segment import Contact

DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def run(args: argparse.Namespace) -> int | None:
    handler = COMMANDS[args.command]
    return handler(args)


def config_path(args: argparse.Namespace) -> Path:
    return paths.config_file(args.config)


def open_app(args: argparse.Namespace) -> App:
    return App.open(config_path(args))


def parse_duration(text: str) -> int:
    """Seconds in a duration such as 3d, 12h, 2w or 90m."""
    found = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text.lower())
    if not found or int(found.group(1)) == 0:
        raise ConfigError(f"{text!r} is not a duration", "use e.g. 90m, 12h, 3d or 2w")
    return int(found.group(1)) * DURATION_UNITS[found.group(2)]


# -- init -------------------------------------------------------------------

INIT_OPTIONS = {
    "template": "template",
    "carddav": "carddav.url",
    "carddav_user": "carddav.username",
    "carddav_password_command": "carddav.password_command",
    "submission": "submission.listen",
    "upstream": "upstream.url",
    "upstream_user": "upstream.username",
    "upstream_password_command": "upstream.password_command",
    "inbound_smtp": "inbound.smtp_listen",
    "maildir": "inbound.maildir",
    "lmtp": "inbound.lmtp",
    "next_hop": "inbound.next_hop",
    "imap": "imap.url",
    "imap_user": "imap.username",
    "imap_password_command": "imap.password_command",
    "junk_folder": "imap.junk_folder",
    "data_dir": "data_dir",
    "pop3": "pop3.listen",
    "pop3_upstream": "pop3.upstream",
    "pop3_user": "pop3.username",
    "pop3_password_command": "pop3.password_command",
}


def cmd_init(args: argparse.Namespace) -> int:
    path = config_path(args)
    if path.exists() and not args.force:
        raise ConfigError(f"{path} exists already", "pass --force to overwrite it")
    flat: dict[str, Any] = {
        "user": args.user.lower(),
        "domain": args.domain.lower(),
        "identities": [i.lower() for i in args.identity],
    }
    if not args.closed_identities:
        # Mail to the user's real address keeps arriving as before; only
        # segment addresses are judged. --closed-identities junks it instead.
        flat["open_identities"] = flat["identities"]
    for arg, key in INIT_OPTIONS.items():
        value = getattr(args, arg)
        if value:
            flat[key] = value
    old_port = configuration.explicit_values(path).get("embedded.port")
    if isinstance(old_port, int) and old_port and "carddav.url" not in flat:
        # Keep the embedded book's URL: subscribed clients know it.
        flat["embedded.port"] = old_port
    write_config(path, flat)
    print(f"wrote {path}")
    return 0


# -- contacts ---------------------------------------------------------------


def after_change(app: App) -> None:
    """Send a change to the address book now, or say when it will go."""
    if app.daemon_running():
        print("(the running segcard serve will sync it)", file=sys.stderr)
        return
    report = app.sync()
    if report.offline:
        print(
            "(saved locally; the address book is unreachable, "
            "it will be updated at the next sync)",
            file=sys.stderr,
        )


def cmd_add(args: argparse.Namespace) -> int:
    app = open_app(args)
    rotate = parse_duration(args.rotate_every) if args.rotate_every else None
    publish = str(Path(args.publish).expanduser().resolve()) if args.publish else None
    contact = app.book.add(args.name, args.email, rotate_every=rotate, publish=publish)
    print(app.book.address(contact))
    after_change(app)
    return 0


def _state(contact: Contact) -> str:
    return contact.segment.state.value if contact.segment else "-"


def cmd_list(args: argparse.Namespace) -> int:
    app = open_app(args)
    rows = []
    for contact in app.index.contacts():
        if contact.segment is None and not args.all:
            continue
        address = app.book.address(contact) if contact.segment else "-"
        rotated = (
            when(contact.segment.rotated_at)
            if contact.segment and contact.segment.retired
            else "never"
        )
        rows.append([contact.name or "(no name)", address, _state(contact), rotated])
    if not rows:
        print("no contacts yet; add one with: segcard add NAME")
        return 0
    print(table(["contact", "address", "state", "last rotated"], rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    app = open_app(args)
    contact = app.book.find(args.contact)
    print(f"contact:  {contact.name}")
    print(f"uid:      {contact.uid}")
    print(f"emails:   {', '.join(contact.emails) or '-'}")
    segment = contact.segment
    if segment is None:
        print("address:  none (give it one with: segcard add ... --email ...)")
        return 0
    print(f"address:  {app.book.address(contact)}")
    print(f"state:    {segment.state.value} since {when(segment.state_at)}")
    print(f"kind:     {segment.kind.value}")
    print(f"created:  {when(segment.created_at)}")
    if segment.rotate_every:
        print(f"rotates:  every {segment.rotate_every // 3600} h")
    for retired in segment.retired:
        old = app.config.address(segment.label, retired.token)
        print(f"retired:  {old} on {when(retired.retired_at)}")
    for sender in segment.allowed:
        print(f"trusted:  {sender}")
    return 0


def cmd_address(args: argparse.Namespace) -> int:
    app = open_app(args)
    contact = app.book.find(args.contact)
    if contact.segment is None:
        contact = app.book.ensure_segment(contact)
        print(app.book.address(contact))
        after_change(app)
        return 0
    print(app.book.address(contact))
    return 0


def via_daemon(app: App, request: dict[str, Any]) -> dict[str, Any] | None:
    """Send a change to the running daemon's control API; None if none runs.

    The daemon then makes the change and syncs it at once, the same way the
    Thunderbird add-on's requests are handled.
    """
    from segcard.control.client import ControlClient, NotRunning

    if not app.daemon_running():
        return None
    try:
        with ControlClient(app.paths.control_socket) as client:
            reply = client.request({"v": 1, "id": "cli", **request})
    except NotRunning:
        return None
    if not reply.get("ok"):
        raise SegcardError(str(reply.get("error", "segcard serve refused the change")))
    return reply


def _change(args: argparse.Namespace, action: str) -> int:
    app = open_app(args)
    contact = app.book.find(args.contact)
    reply = via_daemon(app, {"type": action, "contact": contact.uid})
    if reply is not None:
        view = reply["contact"]
        print(f"{view['name']}: {view['address']} ({view['state']})")
        return 0
    updated = getattr(app.book, action)(contact)
    print(f"{updated.name}: {app.book.address(updated)} ({_state(updated)})")
    after_change(app)
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    return _change(args, "rotate")


def cmd_block(args: argparse.Namespace) -> int:
    return _change(args, "block")


def cmd_unblock(args: argparse.Namespace) -> int:
    return _change(args, "unblock")


def cmd_trust(args: argparse.Namespace) -> int:
    app = open_app(args)
    contact = app.book.find(args.contact)
    request = {"type": "trust", "contact": contact.uid, "sender": args.sender}
    if via_daemon(app, request) is None:
        app.book.trust(contact, args.sender)
        after_change(app)
    print(f"{contact.name} now accepts mail from {args.sender}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    app = open_app(args)
    contact = app.book.find(args.contact)
    if not args.yes:
        if not sys.stdin.isatty():
            raise SegcardError("not removing without confirmation", "pass --yes")
        answer = input(f"Remove {contact.name} and its addresses for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    app.book.remove(contact)
    print(f"removed {contact.name}")
    after_change(app)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    app = open_app(args)
    data = read_input(args.file)
    if b"BEGIN:VCARD" not in data.upper():
        raise SegcardError(
            f"{args.file} holds no vCard (no BEGIN:VCARD line)",
            "export the address book as .vcf (vCard) and import that file",
        )
    report = import_cards(
        app.book, data, ProgressBar("importing"), segments=not args.no_segments
    )
    print(f"imported {len(report.added)}, already there {len(report.existing)}")
    for problem in report.unreadable:
        print(f"  not imported (unreadable): {problem}", file=sys.stderr)
    after_change(app)
    return 1 if report.unreadable and not report.added else 0


def read_input(name: str) -> bytes:
    """The bytes of file *name*, or of standard input for '-'."""
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).expanduser().read_bytes()
    except OSError as exc:
        raise SegcardError(f"cannot read {name}: {exc.strerror}") from exc


def cmd_sync(args: argparse.Namespace) -> int:
    app = open_app(args)
    report = app.sync(full=args.full)
    print(f"sync: {report.summary()}")
    for href in report.unreadable:
        print(f"  unreadable card left alone: {href}", file=sys.stderr)
    return 1 if report.offline else 0


def cmd_leaks(args: argparse.Namespace) -> int:
    app = open_app(args)
    leaks = app.index.leaks()
    if not leaks:
        print("no leaks seen")
        return 0
    rows = []
    for leak in leaks:
        contact = app.index.get(leak.uid)
        name = contact.name if contact else leak.uid
        rows.append(
            [
                name,
                leak.sender_domain,
                str(leak.count),
                when(leak.first_seen),
                when(leak.last_seen),
            ]
        )
    print(table(["contact", "sender domain", "count", "first", "last"], rows))
    print("\nRotate a leaked address with: segcard rotate CONTACT")
    return 0


# -- outgoing mail ----------------------------------------------------------


def cmd_queue(args: argparse.Namespace) -> int:
    from segcard.mail.spool import Spool, State

    app = open_app(args)
    spool = Spool(app.paths.spool)
    try:
        if args.retry:
            if args.retry != "all" and not args.retry.isdigit():
                raise ConfigError(f"--retry {args.retry}: give a copy id or 'all'")
            which = None if args.retry == "all" else int(args.retry)
            print(f"{spool.retry(which)} copies will be tried at once")
        if args.drop is not None:
            dropped = spool.drop(args.drop)
            print(f"copy {args.drop} " + ("dropped" if dropped else "is not queued"))
        states = None if args.all else [State.QUEUED, State.FAILED]
        copies = spool.copies(states)
    finally:
        spool.close()
    if not copies:
        print("no copies waiting or bounced")
        return 0
    rows = [
        [
            str(c.id),
            c.state.value,
            str(c.attempts),
            when(int(c.next_try)) if c.state == State.QUEUED else "-",
            c.sender,
            ", ".join(c.rcpts),
            c.last_error or "",
        ]
        for c in copies
    ]
    print(table(["id", "state", "tries", "next try", "from", "to", "last error"], rows))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from segcard.mail.check import check

    result = check(open_app(args))
    for line in result.lines:
        print(line)
    return 0 if result.ok else 1


def cmd_announce(args: argparse.Namespace) -> int:
    from segcard.mail.announce import announce, compose, due_contacts, load_template
    from segcard.mail.spool import Spool

    app = open_app(args)
    contacts = due_contacts(app)
    if args.contact:
        wanted = {app.book.find(c).uid for c in args.contact}
        contacts = [c for c in contacts if c.uid in wanted]
    if not contacts:
        print("nobody to announce to: every contact with an address was told")
        return 0
    if args.dry_run:
        template = load_template(app)
        items = [compose(app, contact, template) for contact in contacts]
        for item in items:
            print(f"{item.to}: from {item.address}")
        print("\nthe first one in full:\n")
        print(items[0].data.decode("utf-8", "replace"))
        return 0
    spool = Spool(app.paths.spool)
    try:
        done = announce(app, contacts, spool)
    finally:
        spool.close()
    interval = app.config["announce.interval"]
    print(f"{len(done)} announcements spooled, one every {interval:g} s")
    if not app.daemon_running():
        print("(they go out when 'segcard serve' runs)", file=sys.stderr)
    after_change(app)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from segcard.cli.status import show_status

    return show_status(open_app(args), args.json)


def cmd_install_service(args: argparse.Namespace) -> int:
    from segcard.control import service_unit

    if args.uninstall:
        done = service_unit.uninstall()
        print(f"{done.path}: {done.next_step}")
        return 0
    app = open_app(args)
    done = service_unit.install(app.config.path.resolve(), app.paths.root)
    print(f"wrote {done.path}")
    print(f"start it with: {done.next_step}")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from segcard.mail.pop3.quarantine import Quarantine

    quarantine = Quarantine(open_app(args).paths.quarantine)
    if args.release:
        entry = quarantine.release(args.release)
        print(f"released {entry.id}: it comes with the next POP3 login")
        return 0
    entries = quarantine.entries()
    if not entries:
        print("the quarantine is empty")
        return 0
    rows = [
        [e.id, when(int(e.received)), e.sender, e.subject, e.verdict.split(";")[0]]
        for e in entries
    ]
    print(table(["id", "received", "from", "subject", "verdict"], rows))
    print("\nRelease one for the next POP3 login: segcard quarantine --release ID")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from segcard.daemon import serve

    return serve(config_path(args), args.verbose)


# -- Thunderbird ------------------------------------------------------------


def cmd_native_host(args: argparse.Namespace) -> int:
    from segcard.control.native_host import main as host_main

    return host_main(config_path(args))


def cmd_install_thunderbird(args: argparse.Namespace) -> int:
    from segcard.control import install

    path = config_path(args).resolve()
    data_dir = configuration.load(path).data.root
    if args.uninstall:
        removed = install.uninstall(data_dir)
        print("\n".join(f"removed {p}" for p in removed) or "nothing to remove")
        return 0
    done = install.install(path, data_dir)
    print(f"host manifest: {done.manifest}")
    if done.registry_key:
        print(f"registry key:  HKEY_CURRENT_USER\\{done.registry_key}")
    print(f"host launcher: {done.launcher}")
    print(f"add-on:        {done.xpi}")
    print(
        "\nIn Thunderbird: Add-ons and Themes, gear menu, Install Add-on From File,"
        " and choose the add-on above. 'segcard serve' must run for it to work."
    )
    return 0


COMMANDS = {
    "init": cmd_init,
    "add": cmd_add,
    "list": cmd_list,
    "show": cmd_show,
    "address": cmd_address,
    "rotate": cmd_rotate,
    "block": cmd_block,
    "unblock": cmd_unblock,
    "trust": cmd_trust,
    "remove": cmd_remove,
    "import": cmd_import,
    "sync": cmd_sync,
    "status": cmd_status,
    "leaks": cmd_leaks,
    "serve": cmd_serve,
    "install-service": cmd_install_service,
    "queue": cmd_queue,
    "check": cmd_check,
    "announce": cmd_announce,
    "native-host": cmd_native_host,
    "install-thunderbird": cmd_install_thunderbird,
    "quarantine": cmd_quarantine,
}
