"""Sending WebDAV requests through caldav's DAVClient and reading raw answers.

caldav's DAVClient keeps the session and negotiates auth; answers are read
from the raw HTTP response (caught by a session hook), because DAVResponse
folds CRLF into LF and card text must travel byte-for-byte. Library errors
become segcard's here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from caldav.davclient import DAVClient
from caldav.lib import error as dav_error
from caldav.lib.http_sync import requests as http
from caldav.lib.python_utilities import WireBytes
from lxml import etree

from segcard.carddav import xml
from segcard.errors import AddressBookError, ServerUnreachable

XML_TYPE = "application/xml; charset=utf-8"

# A gateway in front of a server that is down answers for it.
_GATEWAY_DOWN = (502, 503, 504)


@dataclass(frozen=True)
class Reply:
    """The raw HTTP answer to one request."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


def redact(url: str) -> str:
    """The URL without any user:password part, fit for messages and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def strong_etag(etag: str | None) -> str | None:
    if not etag or etag.startswith("W/"):
        return None
    return etag


class Transport:
    """One DAVClient session; requests go one at a time."""

    def __init__(
        self,
        url: str,
        username: str | None,
        password: str | None,
        timeout: float,
    ) -> None:
        self._lock = threading.Lock()
        self._last: Any = None
        self.dav = DAVClient(
            url,
            username=username,
            password=password,
            timeout=timeout,  # type: ignore[arg-type]  # caldav says int, passes on
            enable_rfc6764=False,  # no DNS discovery: talk only to the given host
        )
        self.dav.session.hooks["response"].append(self._keep_response)

    def propfind(self, url: str, props: list[str], depth: int) -> Reply:
        headers = {"Depth": str(depth), "Content-Type": XML_TYPE}
        return self.request("PROPFIND", url, xml.propfind_body(props), headers)

    def report(self, url: str, body: bytes, depth: str | None) -> Reply:
        headers = {"Content-Type": XML_TYPE}
        if depth is not None:
            headers["Depth"] = depth
        return self.request("REPORT", url, body, headers)

    def request(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> Reply:
        """Send one request through DAVClient and return the raw answer."""
        with self._lock:
            self._last = None
            try:
                self.dav.request(url, method, WireBytes(body), headers)  # type: ignore[arg-type]
            except http.exceptions.SSLError as exc:
                # A certificate problem will not pass by waiting: no outbox hint.
                raise AddressBookError(
                    f"TLS with {redact(url)} failed: {exc}",
                    "check the server's certificate and the URL",
                ) from exc
            except (http.exceptions.ConnectionError, http.exceptions.Timeout) as exc:
                raise ServerUnreachable(
                    f"cannot reach the CardDAV server at {redact(url)}: "
                    f"{type(exc).__name__}",
                    "writes wait in the outbox until it is back",
                ) from exc
            except http.exceptions.RequestException as exc:
                raise AddressBookError(
                    f"{method} {redact(url)} failed: {type(exc).__name__}"
                ) from exc
            except (dav_error.DAVError, etree.LxmlError) as exc:
                # The status tells callers what happened (401, 403, 503, bad XML).
                if self._last is None:
                    raise AddressBookError(f"{method} {redact(url)} failed") from exc
            return self._reply()

    def _keep_response(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        """Session hook: remember the last raw response (the final redirect hop)."""
        self._last = response
        return response

    def _reply(self) -> Reply:
        response = self._last
        return Reply(
            status=response.status_code,
            headers=response.headers,
            body=response.content or b"",
            url=str(response.url),
        )

    def last_url(self) -> str:
        return "" if self._last is None else str(self._last.url)


def raise_for(reply: Reply, what: str) -> None:
    raise_for_auth(reply)
    if reply.status in _GATEWAY_DOWN:
        raise ServerUnreachable(
            f"the CardDAV server at {redact(reply.url)} is unavailable "
            f"({reply.status}) for {what}"
        )
    raise AddressBookError(
        f"{redact(reply.url)} refused to {what}: HTTP {reply.status}"
    )


def raise_for_auth(reply: Reply, sync: bool = False) -> None:
    """Raise on 401, and on 403 unless it may be a rejected sync-token."""
    if reply.status == 401:
        raise AddressBookError(
            f"{redact(reply.url)} refused the credentials (HTTP 401)",
            "check the username and password",
        )
    if reply.status == 403 and not sync:
        raise AddressBookError(
            f"{redact(reply.url)} forbids this (HTTP 403)",
            "check that the account may use this address book",
        )
