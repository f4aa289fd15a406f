"""The configuration: one TOML file, described by one table of options.

Every option has a dotted key (``carddav.url`` lives in ``[carddav]`` as
``url``), a type, a default and a help text. The example config written by
``segcard init`` and the checks on load come from :data:`OPTIONS`; every
problem in a file is reported at once, naming the option.
"""

from __future__ import annotations

import functools
import getpass
import ipaddress
import logging
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from segcard import paths
from segcard.address import Template, TemplateError
from segcard.errors import ConfigError

log = logging.getLogger(__name__)

PLACEHOLDER_DOMAIN = "segcard.invalid"


@dataclass(frozen=True)
class Option:
    """One setting: its dotted key, type, default and help."""

    key: str
    type: type
    default: Any
    help: str
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("user", str, "", "local part of your addresses (john)"),
    Option("domain", str, PLACEHOLDER_DOMAIN, "domain of your segment addresses"),
    Option("identities", list, [], "your real addresses; mail from them is rewritten"),
    Option("open_identities", list, [], "identities that always receive mail"),
    Option("template", str, "{user}-{label}-{token}@{domain}", "address template"),
    Option("role_addresses", list, ["postmaster", "abuse"], "always delivered"),
    Option("grace_days", int, 30, "days a retired token is still delivered"),
    Option("data_dir", str, "", "index, spool and embedded book (default: platform)"),
    Option("carddav.url", str, "", "address book URL; empty: the embedded server"),
    Option("carddav.username", str, "", "CardDAV user name"),
    Option("carddav.password_command", str, "", "command printing the password"),
    Option("carddav.password", str, "", "CardDAV password (prefer the command)", True),
    Option("carddav.sync_interval", int, 300, "seconds between syncs"),
    Option("embedded.port", int, 0, "port of the embedded CardDAV server"),
    Option("submission.listen", str, "", "submission proxy host:port; empty: off"),
    Option("submission.max_size", int, 35_000_000, "largest message accepted"),
    Option("submission.tls_cert", str, "", "certificate for STARTTLS"),
    Option("submission.tls_key", str, "", "key for STARTTLS"),
    Option("submission.refuse_leaks", bool, False, "refuse mail quoting an identity"),
    Option("upstream.url", str, "", "smtp+starttls://, smtps:// or smtp://host:port"),
    Option("upstream.username", str, "", "upstream SMTP user"),
    Option("upstream.password_command", str, "", "command printing the password"),
    Option(
        "upstream.password", str, "", "upstream password (prefer the command)", True
    ),
    Option("upstream.ca_file", str, "", "CA file to trust for the upstream's TLS"),
    Option("upstream.retry_initial", float, 30.0, "seconds before the first retry"),
    Option("upstream.retry_max", float, 3600.0, "longest wait between two retries"),
    Option("upstream.give_up_after", float, 432000.0, "seconds before a bounce"),
    Option("submission.implicit_tls", bool, False, "TLS from the first byte"),
    Option("announce.template", str, "", "announcement text file; empty: built in"),
    Option("announce.interval", float, 30.0, "seconds between two announcements"),
    Option("inbound.smtp_listen", str, "", "SMTP filter host:port; empty: off"),
    Option("inbound.maildir", str, "", "Maildir for accepted mail"),
    Option("inbound.lmtp", str, "", "LMTP next hop host:port"),
    Option("inbound.next_hop", str, "", "SMTP next hop smtp://host:port"),
    Option("inbound.tarpit_after", int, 3, "bad recipients before slowing down"),
    Option("inbound.tarpit_delay", float, 2.0, "seconds added per bad recipient"),
    Option("inbound.tarpit_loopback", bool, False, "slow down loopback clients too"),
    Option("inbound.drop_after", int, 10, "bad recipients before disconnecting"),
    Option("imap.url", str, "", "imaps://host:port of the mailbox to sort; empty: off"),
    Option("imap.username", str, "", "IMAP user"),
    Option("imap.password_command", str, "", "command printing the password"),
    Option("imap.password", str, "", "IMAP password (prefer the command)", True),
    Option("imap.junk_folder", str, "Junk", "folder for junk and rejected mail"),
    Option("imap.poll_interval", int, 60, "seconds between polls without IDLE"),
    Option("pop3.listen", str, "", "POP3 proxy host:port; empty: off"),
    Option("pop3.upstream", str, "", "pop3s://host:port of the real mailbox"),
    Option("pop3.username", str, "", "upstream POP3 user"),
    Option("pop3.password_command", str, "", "command printing the password"),
    Option("pop3.password", str, "", "POP3 password (prefer the command)", True),
    Option("pop3.ca_file", str, "", "CA file to trust for the upstream's TLS"),
    Option("pop3.delete_upstream", bool, False, "delete quarantined mail upstream"),
    Option("pop3.tls_cert", str, "", "certificate for STLS"),
    Option("pop3.tls_key", str, "", "key for STLS"),
)

_BY_KEY = {o.key: o for o in OPTIONS}


@functools.lru_cache(maxsize=8)
def _template(pattern: str) -> Template:
    """One Template (and its compiled parser) per pattern, made once."""
    return Template(pattern)


@dataclass
class Config:
    """The loaded settings, with helpers for the derived values."""

    values: dict[str, Any]
    path: Path

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def template(self) -> Template:
        return _template(self["template"])

    @property
    def data(self) -> paths.DataPaths:
        root = self["data_dir"]
        data_dir = Path(root).expanduser() if root else paths.default_data_dir()
        runtime = data_dir / "run" if root else paths.default_runtime_dir()
        return paths.DataPaths(data_dir, runtime)

    @property
    def identities(self) -> list[str]:
        return [i.lower() for i in self["identities"]]

    @property
    def is_placeholder(self) -> bool:
        return self["domain"] == PLACEHOLDER_DOMAIN

    def address(self, label: str, token: str) -> str:
        """The segment address for *label* and *token*."""
        return self.template.build(self["user"], label, token, self["domain"])

    def secret(self, section: str) -> str:
        """The password of *section*, from its command or the file."""
        command = self[f"{section}.password_command"]
        if command:
            return run_password_command(command, f"{section}.password_command")
        return str(self[f"{section}.password"])

    def public_view(self) -> dict[str, Any]:
        """The effective settings with every secret blanked, for logs."""
        out = {}
        for key, value in self.values.items():
            secret = _BY_KEY[key].secret if key in _BY_KEY else False
            out[key] = "***" if secret and value else value
        return out


def run_password_command(command: str, option: str) -> str:
    """Run a password command and return the first line it prints."""
    try:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=30
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{option}: could not run the command: {exc}") from exc
    if done.returncode != 0:
        raise ConfigError(f"{option}: the command failed (exit {done.returncode})")
    return done.stdout.splitlines()[0] if done.stdout else ""


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_type(option: Option, value: Any) -> str | None:
    if option.type is float and isinstance(value, int | float):
        return None
    if option.type is int and isinstance(value, bool):
        return f"{option.key}: expected a whole number, got {value!r}"
    if option.type is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return None
        return f"{option.key}: expected a list of strings"
    if not isinstance(value, option.type):
        return f"{option.key}: expected {option.type.__name__}, got {value!r}"
    return None


URL_SCHEMES = {
    "carddav.url": ("http", "https"),
    "upstream.url": ("smtp", "smtp+starttls", "smtps"),
    "inbound.next_hop": ("smtp",),
    "imap.url": ("imap", "imaps"),
    "pop3.upstream": ("pop3", "pop3s"),
}
MINIMUM = {"grace_days": 0, "carddav.sync_interval": 10, "imap.poll_interval": 5}


def _check_values(values: dict[str, Any]) -> list[str]:
    """Problems with the values themselves, each naming its option."""
    problems = []
    try:
        Template(values["template"])
    except TemplateError as exc:
        problems.append(f"template: {exc}")
    problems += _check_names(values)
    problems += _check_addresses(values)
    problems += _check_network(values)
    for key, least in MINIMUM.items():
        if key in values and values[key] < least:
            problems.append(f"{key}: must be at least {least}")
    data_dir = values["data_dir"]
    if data_dir and not Path(data_dir).expanduser().is_absolute():
        problems.append(f"data_dir: {data_dir!r} must be an absolute path")
    return problems


def _check_names(values: dict[str, Any]) -> list[str]:
    problems = []
    if not values["user"]:
        problems.append("user: not set (the local part of your addresses)")
    elif not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", values["user"]):
        problems.append("user: use lower-case letters, digits, '.', '_' or '-'")
    if not re.fullmatch(r"[a-z0-9.-]+\.[a-z0-9-]+", values["domain"].lower()):
        problems.append(f"domain: {values['domain']!r} is not a domain name")
    return problems


def _check_addresses(values: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("identities", "open_identities"):
        for address in values[key]:
            if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", address):
                problems.append(f"{key}: {address!r} is not an email address")
    if values["submission.listen"] and not values["identities"]:
        problems.append(
            "identities: none set while submission.listen is on, so mail from "
            "your real address would go out unchanged (segcard init --identity)"
        )
    return problems


def _check_network(values: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("submission.listen", "inbound.smtp_listen", "pop3.listen"):
        if values.get(key):
            try:
                parse_hostport(values[key])
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
    if not 0 <= values["embedded.port"] < 65536:
        problems.append("embedded.port: must be a port number (1 to 65535)")
    for key, schemes in URL_SCHEMES.items():
        url = values.get(key)
        if url and url.partition("://")[0].lower() not in schemes:
            wanted = ", ".join(f"{s}://" for s in schemes)
            problems.append(f"{key}: {url!r} must start with {wanted}")
    return problems


def validate(flat: dict[str, Any]) -> dict[str, Any]:
    """Check a flat mapping against OPTIONS; return it with defaults filled."""
    problems = [f"{k}: unknown option" for k in flat if k not in _BY_KEY]
    values = {o.key: o.default for o in OPTIONS}
    for key, value in flat.items():
        if key in _BY_KEY:
            problem = _check_type(_BY_KEY[key], value)
            if problem:
                problems.append(problem)
            else:
                values[key] = value
    if not problems:
        problems = _check_values(values)
    if problems:
        raise ConfigError("bad config:\n  " + "\n  ".join(problems))
    return values


def load(path: Path) -> Config:
    """Read and check the config file at *path*."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"no config at {path}", "run 'segcard init' first") from exc
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return Config(validate(_flatten(doc)), path)


def default_values() -> dict[str, Any]:
    """Settings for a machine with no config: login name, placeholder domain."""
    user = re.sub(r"[^a-z0-9._-]", "", getpass.getuser().lower()) or "me"
    return {"user": user, "domain": PLACEHOLDER_DOMAIN}


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in flat.items():
        *sections, name = key.split(".")
        node = doc
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return doc


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"x": value}).strip()[4:]


def save(path: Path, flat: dict[str, Any]) -> Config:
    """Check *flat* and write it as the config file, with help as comments."""
    values = validate(flat)
    lines = ["# segcard configuration; every option with its help:"]
    for option in OPTIONS:
        if option.key not in flat:
            default = _toml_value(option.default)
            lines.append(f"#   {option.key} = {default}  ({option.help})")
    body = tomli_w.dumps(_nest({k: v for k, v in flat.items()}))
    paths.write_private(path, "\n".join(lines) + "\n\n" + body)
    return Config(values, path)


def explicit_values(path: Path) -> dict[str, Any]:
    """The options written in the file (not the defaults), flat."""
    try:
        return _flatten(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def set_option(path: Path, key: str, value: Any) -> Config:
    """Change one option in the config file, keeping the others as set."""
    flat = explicit_values(path)
    flat[key] = value
    return save(path, flat)


def parse_hostport(text: str) -> tuple[str, int]:
    """Split 'host:port' and check the port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """Tell whether *host* is a loopback address or 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def env_flag(name: str) -> bool:
    """True when the environment variable *name* is set to a true value."""
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
