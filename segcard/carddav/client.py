"""A CardDAV client that moves card text and etags: discovery, sync, writes.

Requests go through :mod:`segcard.carddav.transport` (caldav's DAVClient);
this module knows what to ask a CardDAV server and how to read its answers.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urljoin, urlsplit

from segcard.carddav import xml
from segcard.carddav.transport import (
    Reply,
    Transport,
    raise_for,
    raise_for_auth,
    redact,
    strong_etag,
)
from segcard.errors import AddressBookError, WriteConflict

log = logging.getLogger(__name__)

VCARD_TYPE = "text/vcard; charset=utf-8"
WELL_KNOWN = "/.well-known/carddav"

# RFC 6578 section 3.2: a server may answer a token it no longer knows with
# any of these, naming DAV:valid-sync-token in the body.
_TOKEN_REJECTIONS = (403, 409, 412)
# A gateway in front of a server that is down answers for it.
_GATEWAY_DOWN = (502, 503, 504)
# Guards against a server that keeps answering 507 (truncated) forever.
_MAX_SYNC_PAGES = 1000


@dataclass(frozen=True)
class Item:
    """One card on the server: its href as the server wrote it, etag and text."""

    href: str
    etag: str | None
    data: str | None = None


@dataclass(frozen=True)
class Changes:
    """What changed since a sync-token.

    When `full` is True, `changed` lists every card on the server and anything
    not in it is gone.
    """

    sync_token: str | None
    changed: list[Item]
    deleted: list[str]
    full: bool


def same_href(a: str, b: str) -> bool:
    """Whether two hrefs name the same resource (path only, percent-decoded)."""
    return _href_key(a) == _href_key(b)


def _href_key(href: str) -> str:
    return unquote(urlsplit(href).path).rstrip("/")


_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,120}")


def _hashed_name(uid: str) -> str:
    return "segcard-" + hashlib.sha256(uid.encode()).hexdigest()[:32]


class CardDAVClient:
    """Synchronous client for one CardDAV address book collection."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.collection: str | None = None
        self._sync_supported = True
        self._transport = Transport(url, username, password, timeout)

    # -- discovery ---------------------------------------------------------

    def discover(self) -> str:
        """Find the address book collection; sets and returns self.collection.

        The URL itself if it is an address book; else the first address book
        in the home set of the current user principal, found from the URL or
        from /.well-known/carddav (RFC 6764 section 5).
        """
        props = [xml.RESOURCETYPE, xml.CURRENT_USER_PRINCIPAL, xml.ADDRESSBOOK_HOME_SET]
        entry = self._propfind_self(self.url, props)
        if entry is not None and entry.has_type(xml.ADDRESSBOOK):
            return self._set_collection(entry.href)

        home = self._home_from(entry)
        if home is None:
            home = self._home_from(self._propfind_well_known(props))
        if home is None:
            raise AddressBookError(
                f"no CardDAV address book found at {redact(self.url)}",
                "give the URL of the address book collection itself",
            )
        return self._set_collection(self._first_address_book(home))

    def _set_collection(self, url: str) -> str:
        self.collection = url if url.endswith("/") else url + "/"
        log.debug("address book collection: %s", redact(self.collection))
        return self.collection

    def _home_from(self, entry: xml.Entry | None) -> str | None:
        """The addressbook-home-set reached from a PROPFIND answer, if any."""
        if entry is None:
            return None
        homes = entry.hrefs(xml.ADDRESSBOOK_HOME_SET)
        if homes:
            return urljoin(entry.href, homes[0])

        principals = entry.hrefs(xml.CURRENT_USER_PRINCIPAL)
        if not principals:
            return None
        principal = self._propfind_self(
            urljoin(entry.href, principals[0]), [xml.ADDRESSBOOK_HOME_SET]
        )
        if principal is None:
            return None
        homes = principal.hrefs(xml.ADDRESSBOOK_HOME_SET)
        return urljoin(principal.href, homes[0]) if homes else None

    def _propfind_well_known(self, props: list[str]) -> xml.Entry | None:
        """PROPFIND /.well-known/carddav, following its redirect as PROPFIND."""
        url = urljoin(self.url, WELL_KNOWN)
        entry = self._propfind_self(url, props)
        if entry is not None or self._transport.last_url() in ("", url):
            return entry
        # HTTP clients follow a 301/302 with GET; ask the target again.
        return self._propfind_self(self._transport.last_url(), props)

    def _first_address_book(self, home: str) -> str:
        reply = self._transport.propfind(home, [xml.RESOURCETYPE], depth=1)
        for entry in self._multistatus(reply, "list the address book home").entries:
            if entry.has_type(xml.ADDRESSBOOK) and not same_href(entry.href, home):
                return urljoin(home, entry.href)
        raise AddressBookError(
            f"the address book home {redact(home)} holds no address book",
            "create an address book on the server, or give its URL",
        )

    def _propfind_self(self, url: str, props: list[str]) -> xml.Entry | None:
        """Depth-0 PROPFIND; None when the URL is no WebDAV resource we may read.

        A 403 is no error here: discovery goes on to the next place to look.
        """
        reply = self._transport.propfind(url, props, depth=0)
        if reply.status != 207:
            if reply.status == 401 or reply.status >= 500:
                raise_for(reply, "answer PROPFIND")
            log.debug("PROPFIND %s answered %d", redact(url), reply.status)
            return None
        entries = self._multistatus(reply, "PROPFIND").entries
        if not entries:
            return None
        entry = entries[0]
        # Resolve the href against the URL that answered, for relative hrefs.
        return xml.Entry(urljoin(reply.url, entry.href), entry.status, entry.props)

    # -- reading -----------------------------------------------------------

    def changes(self, sync_token: str | None) -> Changes:
        """What changed since `sync_token` (RFC 6578 sync-collection).

        Falls back to a full listing (full=True) when the token is rejected or
        the server has no sync-collection.
        """
        if sync_token and self._sync_supported:
            reply = self._sync_report(sync_token)
            if reply.status == 207:
                return self._sync_changes(reply, full=False)
            raise_for_auth(reply, sync=True)
            if not 400 <= reply.status < 500:
                raise_for(reply, "sync-collection")
            log.warning(
                "sync-token rejected by %s (%d%s); listing everything",
                redact(self._require_collection()),
                reply.status,
                ", valid-sync-token" if self._token_rejected(reply) else "",
            )
        return self._full_changes()

    def list_etags(self) -> dict[str, str]:
        """The href and etag of every card in the collection (PROPFIND Depth 1)."""
        return {item.href: item.etag for item in self._listing() if item.etag}

    def multiget(self, hrefs: Sequence[str], batch: int = 200) -> list[Item]:
        """Card text and etag of each href (addressbook-multiget); 404s left out."""
        items: list[Item] = []
        for start in range(0, len(hrefs), batch):
            items.extend(self._multiget_batch(hrefs[start : start + batch]))
        return items

    def _full_changes(self) -> Changes:
        if self._sync_supported:
            reply = self._sync_report("")
            if reply.status == 207:
                return self._sync_changes(reply, full=True)
            raise_for_auth(reply, sync=True)
            if not (400 <= reply.status < 500 or reply.status == 501):
                raise_for(reply, "sync-collection")
            log.info(
                "%s has no sync-collection (%d); using etag listings",
                redact(self._require_collection()),
                reply.status,
            )
            self._sync_supported = False
        return Changes(None, self._listing(), [], full=True)

    def _sync_report(self, sync_token: str) -> Reply:
        body = xml.sync_collection_body(sync_token)
        return self._transport.report(self._require_collection(), body, depth="0")

    def _sync_changes(self, reply: Reply, full: bool) -> Changes:
        """Collect the answer, asking again while the server truncates (507)."""
        changed: dict[str, Item] = {}
        deleted: dict[str, str] = {}
        for _page in range(_MAX_SYNC_PAGES):
            page = self._multistatus(reply, "sync-collection")
            truncated = self._merge_sync_page(page, changed, deleted)
            if not truncated or not page.sync_token:
                return Changes(
                    page.sync_token, list(changed.values()), [*deleted.values()], full
                )
            reply = self._sync_report(page.sync_token)
            if reply.status != 207:
                raise_for(reply, "sync-collection (next page)")
        raise AddressBookError(
            f"{redact(self._require_collection())} truncated its sync answer "
            f"{_MAX_SYNC_PAGES} times"
        )

    def _merge_sync_page(
        self, page: xml.Multistatus, changed: dict[str, Item], deleted: dict[str, str]
    ) -> bool:
        """Add one page's entries; True when the server truncated it (507)."""
        truncated = False
        for entry in page.entries:
            key = _href_key(entry.href)
            if same_href(entry.href, self._require_collection()):
                truncated = truncated or entry.status == 507
            elif entry.status == 404:
                changed.pop(key, None)
                deleted[key] = entry.href
            elif not entry.has_type(xml.COLLECTION):
                deleted.pop(key, None)
                changed[key] = Item(entry.href, entry.text(xml.GETETAG))
        return truncated

    def _listing(self) -> list[Item]:
        collection = self._require_collection()
        reply = self._transport.propfind(
            collection, [xml.RESOURCETYPE, xml.GETETAG], depth=1
        )
        items = []
        for entry in self._multistatus(reply, "list the address book").entries:
            if same_href(entry.href, collection) or entry.has_type(xml.COLLECTION):
                continue
            if entry.status is None or entry.status < 300:
                items.append(Item(entry.href, entry.text(xml.GETETAG)))
        return items

    def _multiget_batch(self, hrefs: Sequence[str]) -> list[Item]:
        body = xml.multiget_body(hrefs)
        reply = self._transport.report(self._require_collection(), body, depth=None)
        items = []
        for entry in self._multistatus(reply, "addressbook-multiget").entries:
            data = entry.text(xml.ADDRESS_DATA)
            if entry.status == 404 or data is None:
                log.debug("multiget: %s not found", entry.href)
                continue
            items.append(Item(entry.href, entry.text(xml.GETETAG), data))
        return items

    # -- writing -----------------------------------------------------------

    def create(self, href: str, data: str) -> tuple[str, str | None]:
        """PUT a new card (If-None-Match: *); returns its href and strong etag.

        The href follows the Location header when the server moved the card;
        the etag is None unless the server gave a strong one.
        """
        headers = {"If-None-Match": "*", "Content-Type": VCARD_TYPE}
        reply = self._transport.request(
            "PUT", self._abs(href), data.encode("utf-8"), headers
        )
        self._raise_if_card_refused(reply, href)
        if reply.status == 412:
            raise WriteConflict(f"{self._display(href)} already exists")
        self._expect(reply, "create the card", 200, 201, 204)

        location = reply.headers.get("Location")
        if location:
            href = urlsplit(location).path
        return href, strong_etag(reply.headers.get("ETag"))

    def update(self, href: str, data: str, etag: str) -> str | None:
        """PUT a changed card with If-Match: etag; returns the new strong etag."""
        headers = {"If-Match": etag, "Content-Type": VCARD_TYPE}
        reply = self._transport.request(
            "PUT", self._abs(href), data.encode("utf-8"), headers
        )
        self._raise_if_card_refused(reply, href)
        if reply.status in (404, 412):
            raise WriteConflict(f"{self._display(href)} changed on the server")
        self._expect(reply, "update the card", 200, 201, 204)
        return strong_etag(reply.headers.get("ETag"))

    def delete(self, href: str, etag: str | None) -> None:
        """DELETE a card, with If-Match when an etag is given; gone already is fine."""
        headers = {"If-Match": etag} if etag else {}
        reply = self._transport.request("DELETE", self._abs(href), b"", headers)
        if reply.status == 412:
            raise WriteConflict(f"{self._display(href)} changed on the server")
        if reply.status == 404:
            log.debug("delete: %s was already gone", href)
            return
        self._expect(reply, "delete the card", 200, 202, 204)

    def _raise_if_card_refused(self, reply: Reply, href: str) -> None:
        """Raise when a PUT failed a CardDAV precondition, not the If-* header.

        Xandikos answers an unparsable card with 412 and
        CARDDAV:valid-address-data (RFC 6352 section 6.3.2.1), which is no
        conflict: retrying after a re-read would fail the same way.
        """
        if reply.status < 400:
            return
        refused = sorted(
            tag.rpartition("}")[2]
            for tag in xml.error_conditions(reply.body)
            if tag.startswith(f"{{{xml.CARDDAV}}}")
        )
        if refused:
            raise AddressBookError(
                f"{self._display(href)}: the server refused the card "
                f"(HTTP {reply.status}, {', '.join(refused)})",
                "the server cannot store this card as it is",
            )

    def href_for(self, uid: str) -> str:
        """The href for a new card with this UID: collection path + name + .vcf.

        The name is the UID when it is plain letters, digits, '.', '_' and
        '-', else a hash of it: Xandikos lists a member named
        ``urn:uuid:...`` unescaped, which then reads as a URI of its own.
        Makes no request (it may run on an event loop): call discover() first.
        """
        if self.collection is None:
            raise RuntimeError("href_for() needs discover() first")
        path = urlsplit(self.collection).path
        name = uid if _PLAIN_NAME.fullmatch(uid) else _hashed_name(uid)
        return path + quote(name, safe="") + ".vcf"

    # -- requests ----------------------------------------------------------

    # -- answers -----------------------------------------------------------

    def _multistatus(self, reply: Reply, what: str) -> xml.Multistatus:
        self._expect(reply, what, 207)
        try:
            return xml.parse_multistatus(reply.body)
        except xml.XMLError as exc:
            raise AddressBookError(
                f"{redact(reply.url)} answered {what} with bad XML: {exc}"
            ) from exc

    def _expect(self, reply: Reply, what: str, *statuses: int) -> None:
        if reply.status not in statuses:
            raise_for(reply, what)

    def _token_rejected(self, reply: Reply) -> bool:
        if reply.status not in _TOKEN_REJECTIONS:
            return False
        return xml.VALID_SYNC_TOKEN in xml.error_conditions(reply.body)

    def _require_collection(self) -> str:
        if self.collection is None:
            self.discover()
        assert self.collection is not None
        return self.collection

    def _abs(self, href: str) -> str:
        return urljoin(self._require_collection(), href)

    def _display(self, href: str) -> str:
        return redact(self._abs(href))
