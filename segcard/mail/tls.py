"""TLS: for segcard's own listeners, and the URLs of the servers it logs in to."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from segcard.config import Config, is_loopback, parse_hostport
from segcard.errors import ConfigError


def server_context(config: Config, section: str, listen: str) -> ssl.SSLContext | None:
    """The listener's TLS context from ``<section>.tls_cert`` and ``tls_key``.

    A listener off loopback without a certificate is refused: passwords
    would cross the network in clear.
    """
    cert, key = config[f"{section}.tls_cert"], config[f"{section}.tls_key"]
    if listen and not cert and not is_loopback(parse_hostport(listen)[0]):
        raise ConfigError(
            f"{section}.listen {listen} is not a loopback address and no TLS "
            "is configured",
            f"set {section}.tls_cert and {section}.tls_key, or listen on 127.0.0.1",
        )
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{section} TLS certificate: {exc}") from exc
    return context


@dataclass(frozen=True)
class Endpoint:
    """A mail server segcard logs in to, and how the connection is secured."""

    host: str
    port: int
    tls: str  # "ssl" (implicit TLS), "starttls", or "none" (loopback only)


def client_endpoint(
    option: str, text: str, scheme: str, ports: tuple[int, int]
) -> Endpoint:
    """Read ``<scheme>s://host[:port]`` (TLS) or ``<scheme>://`` (STARTTLS,
    plain only on loopback); *ports* are the defaults for TLS and for not."""
    url = urlsplit(text)
    if url.scheme not in (scheme, scheme + "s") or not url.hostname:
        raise ConfigError(
            f"{option}: {text!r} is no {scheme}s:// or {scheme}:// URL",
            f"e.g. {scheme}s://{scheme}.provider.example:{ports[0]}",
        )
    implicit = url.scheme == scheme + "s"
    plain_ok = is_loopback(url.hostname)
    tls = "ssl" if implicit else ("none" if plain_ok else "starttls")
    port = url.port or (ports[0] if implicit else ports[1])
    return Endpoint(url.hostname, port, tls)
