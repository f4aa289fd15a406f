"""The inbound modes as ``segcard serve`` starts them from the config."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from segcard import config
from segcard.app import App, free_port
from segcard.errors import ConfigError
from segcard.mail.inbound.imap_settings import ImapSettings
from segcard.mail.inbound.service import InboundService
from segcard.segment import Contact, Segment
from segcard.store.index import now
from tests.mail.inbound.conftest import STRANGER, LoopThread


def make_app(tmp_path: Path, settings: dict[str, object]) -> App:
    """An App on a config with *settings* (dotted keys) in a temp dir."""
    base = {"user": "john", "domain": "john.example"}
    values = {**base, "data_dir": str(tmp_path / "data"), **settings}
    return App(config.save(tmp_path / "config.toml", values))


@pytest.mark.parametrize(
    ("url", "tls", "port"),
    [
        ("imaps://imap.example.net", "ssl", 993),
        ("imaps://imap.example.net:1993", "ssl", 1993),
        ("imap://imap.example.net", "starttls", 143),
        ("imap://127.0.0.1:1143", "none", 1143),
    ],
)
def test_imap_url_picks_tls_and_port(
    tmp_path: Path, url: str, tls: str, port: int
) -> None:
    """imaps:// is TLS, imap:// is STARTTLS, and plain only on loopback."""
    app = make_app(tmp_path, {"imap.url": url, "imap.username": "john"})

    settings = ImapSettings.from_config(app.config)

    assert (settings.tls, settings.port) == (tls, port)
    app.close()


def test_imap_url_of_another_scheme_is_a_config_error(tmp_path: Path) -> None:
    """Anything but imap:// or imaps:// is refused when the config loads."""
    with pytest.raises(ConfigError, match="imap.url"):
        make_app(tmp_path, {"imap.url": "https://imap.example.net"})


def test_filter_without_a_destination_is_a_config_error(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    """A filter with nowhere to deliver does not start."""
    app = make_app(tmp_path, {"inbound.smtp_listen": f"127.0.0.1:{free_port()}"})
    service = InboundService(app)

    with pytest.raises(ConfigError, match="nowhere to deliver"):
        loop_thread.run(service.start())
    loop_thread.run(service.stop())
    app.close()


def test_service_runs_the_filter_from_the_config(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    """With smtp_listen and maildir set, mail to a contact's address lands in
    the Maildir, judged by the app's index."""
    port = free_port()
    maildir = tmp_path / "Maildir"
    app = make_app(
        tmp_path,
        {"inbound.smtp_listen": f"127.0.0.1:{port}", "inbound.maildir": str(maildir)},
    )
    app.index.put(Contact("tom", "Tom", (), Segment("tmtk23456", "tom", now())), "")
    service = InboundService(app)
    loop_thread.run(service.start())

    try:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.sendmail(
                STRANGER,
                ["john-tom-tmtk23456@john.example"],
                b"Subject: x\r\n\r\nhi\r\n",
            )
    finally:
        loop_thread.run(service.stop())
        app.close()

    [path] = (maildir / "new").iterdir()
    assert path.read_bytes().startswith(b"X-Segcard-Verdict: warn;")
