"""``segcard status``: what runs, where it listens, and how it went."""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from segcard.app import EMBEDDED_USER, App
from segcard.cli.output import when

DAY = 86400


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def daemon_info(app: App) -> dict[str, Any]:
    running = app.daemon_running()
    info: dict[str, Any] = {"running": running}
    if running:
        with contextlib.suppress(OSError, ValueError):
            info["pid"] = int(app.paths.lock.read_text().strip())
    listeners = app.index.get_state("listeners")
    if running and listeners:
        info["listeners"] = json.loads(listeners)
    return info


def book_info(app: App) -> dict[str, Any]:
    info: dict[str, Any] = {
        "url": app.book_url,
        "embedded": app.embedded,
        "contacts": app.index.count(),
        "outbox": len(app.index.outbox()),
        "last_sync": _int(app.index.get_state("last_sync")),
        "last_sync_result": app.index.get_state("last_sync_result"),
        "unreadable_cards": [h for h, _e, _r in app.index.unreadable()],
        "refused_writes": [f"{u}: {r}" for u, r in app.index.refused()],
    }
    if app.embedded:
        info["user"] = EMBEDDED_USER
        info["password_file"] = str(app.paths.embedded_credentials)
    return info


def leak_info(app: App) -> dict[str, Any]:
    leaks = app.index.leaks()
    recent = [leak for leak in leaks if leak.last_seen >= time.time() - DAY]
    worst = []
    for leak in leaks[:5]:
        contact = app.index.get(leak.uid)
        worst.append(
            {
                "contact": contact.name if contact else leak.uid,
                "sender_domain": leak.sender_domain,
                "count": leak.count,
                "last_seen": leak.last_seen,
            }
        )
    return {
        "segments": len({leak.uid for leak in leaks}),
        "warnings_last_day": sum(1 for _ in recent),
        "worst": worst,
    }


def status_data(app: App) -> dict[str, Any]:
    """Everything ``segcard status`` shows, as data (``--json`` prints it)."""
    config = app.config
    data: dict[str, Any] = {
        "config": str(config.path),
        "daemon": daemon_info(app),
        "address_book": book_info(app),
        "leaks": leak_info(app),
    }
    if config["submission.listen"]:
        data["submission"] = {
            "listen": config["submission.listen"],
            "user": _first_line(app.paths.submission_credentials),
            "password_file": str(app.paths.submission_credentials),
        }
    data["outgoing"] = outgoing_status(app)
    inbound = {
        "smtp_filter": config["inbound.smtp_listen"] or None,
        "imap_sorter": config["imap.url"] or None,
        "pop3_proxy": _pop3(app),
    }
    if any(inbound.values()):
        data["inbound"] = inbound
    return data


def _pop3(app: App) -> str | None:
    from segcard.mail.pop3.service import credentials_path

    listen = app.config["pop3.listen"]
    if not listen:
        return None
    return f"{listen} (password in {credentials_path(app.paths)})"


def _first_line(path: os.PathLike[str]) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip()
    except OSError:
        return "?"


def show_status(app: App, as_json: bool) -> int:
    data = status_data(app)
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    for line in render(data):
        print(line)
    if app.config.is_placeholder:
        print(
            "\nThe domain is a placeholder: set yours with "
            "'segcard init --user NAME --domain DOMAIN --identity ADDRESS --force'."
        )
    return 0


def render(data: dict[str, Any]) -> list[str]:
    """The status as lines for a terminal."""
    lines = [f"config        {data['config']}"]
    daemon = data["daemon"]
    if daemon["running"]:
        lines.append(f"daemon        running (pid {daemon.get('pid', '?')})")
        for name, where in daemon.get("listeners", {}).items():
            lines.append(f"  {name + ':':<16}{where}")
    else:
        lines.append("daemon        not running (start it with: segcard serve)")
    lines += _render_book(data["address_book"])
    if "submission" in data:
        sub = data["submission"]
        lines.append(
            f"submission    {sub['listen']} (user {sub['user']}, "
            f"password in {sub['password_file']})"
        )
    out = data["outgoing"]
    lines.append(f"upstream      {out['upstream']}")
    lines.append(f"spool         {out['spool']}")
    if out.get("leak_warnings"):
        lines.append(f"leak warnings {out['leak_warnings']} outgoing")
        if out.get("last_leak_warning"):
            lines.append(f"  last        {out['last_leak_warning']}")
    if "inbound" in data:
        for name, where in data["inbound"].items():
            if where:
                lines.append(f"{name.replace('_', ' '):<14}{where}")
    lines += _render_leaks(data["leaks"])
    return lines


def _render_book(book: dict[str, Any]) -> list[str]:
    kind = "embedded" if book["embedded"] else "CardDAV"
    lines = [f"address book  {book['url']} ({kind})"]
    if book.get("user"):
        lines.append(
            f"  subscribe   user {book['user']}, password in {book['password_file']}"
        )
    lines.append(
        f"  contacts    {book['contacts']}, {book['outbox']} change(s) waiting to sync"
    )
    if book["last_sync"]:
        lines.append(
            f"  last sync   {when(book['last_sync'])}: {book['last_sync_result']}"
        )
    else:
        lines.append("  last sync   never")
    for href in book["unreadable_cards"]:
        lines.append(f"  unreadable  {href} (left alone)")
    for refused in book["refused_writes"]:
        lines.append(f"  refused     {refused}")
    return lines


def _render_leaks(leaks: dict[str, Any]) -> list[str]:
    if not leaks["segments"]:
        return ["leaks         none seen"]
    lines = [
        f"leaks         {leaks['segments']} address(es) used by outsiders, "
        f"{leaks['warnings_last_day']} in the last day (details: segcard leaks)"
    ]
    for leak in leaks["worst"]:
        lines.append(
            f"  {leak['contact']:<12}{leak['count']} from {leak['sender_domain']}, "
            f"last {when(leak['last_seen'])}"
        )
    return lines


def outgoing_status(app: App) -> dict[str, Any]:
    """The spool, bounces and leak warnings, for ``segcard status``."""
    from segcard.mail.spool import Spool, State

    spool = Spool(app.paths.spool)
    try:
        counts = spool.counts()
        warnings = spool.warnings(1)
        data: dict[str, Any] = {
            "upstream": app.config["upstream.url"]
            or f"none: copies go to {app.paths.outbox_maildir}",
            "spool": f"{counts[State.QUEUED]} waiting, {counts[State.FAILED]} bounced",
            "notices": str(app.paths.notices_maildir),
            "leak_warnings": spool.warning_count(),
        }
        if warnings:
            data["last_leak_warning"] = (
                f"{when(int(warnings[0].at))} Message-ID {warnings[0].message_id}: "
                + "; ".join(warnings[0].places)
            )
        return data
    finally:
        spool.close()
