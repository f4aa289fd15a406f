"""TLS for segcard's own listeners: the submission proxy and the POP3 proxy."""

from __future__ import annotations

import ssl

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
