"""WebDAV and CardDAV XML: request bodies and multistatus answers.

Bodies follow RFC 4918 (PROPFIND), RFC 6352 section 8.7 (addressbook-multiget)
and RFC 6578 section 3.2 (sync-collection).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lxml import etree

DAV = "DAV:"
CARDDAV = "urn:ietf:params:xml:ns:carddav"

GETETAG = f"{{{DAV}}}getetag"
RESOURCETYPE = f"{{{DAV}}}resourcetype"
COLLECTION = f"{{{DAV}}}collection"
CURRENT_USER_PRINCIPAL = f"{{{DAV}}}current-user-principal"
SYNC_TOKEN = f"{{{DAV}}}sync-token"
VALID_SYNC_TOKEN = f"{{{DAV}}}valid-sync-token"
ADDRESSBOOK = f"{{{CARDDAV}}}addressbook"
ADDRESSBOOK_HOME_SET = f"{{{CARDDAV}}}addressbook-home-set"
ADDRESS_DATA = f"{{{CARDDAV}}}address-data"

_NSMAP = {"D": DAV, "C": CARDDAV}

# Markup that must pass unchanged, and CDATA whose content becomes text.
_MARKUP = re.compile(
    rb"<!\[CDATA\[(?P<cdata>.*?)\]\]>"
    rb"|<!--.*?-->"
    rb"|<(?:[^>\"']|\"[^\"]*\"|'[^']*')*>",
    re.DOTALL,
)

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


@dataclass(frozen=True)
class Entry:
    """One DAV:response of a multistatus: its href, status and found properties."""

    href: str
    status: int | None
    props: dict[str, etree._Element] = field(default_factory=dict)

    def text(self, tag: str) -> str | None:
        """The text of a found property, or None when it is absent."""
        element = self.props.get(tag)
        if element is None:
            return None
        return element.text or ""

    def has_type(self, tag: str) -> bool:
        """Whether DAV:resourcetype holds the element `tag`."""
        resourcetype = self.props.get(RESOURCETYPE)
        return resourcetype is not None and resourcetype.find(tag) is not None

    def hrefs(self, tag: str) -> list[str]:
        """The DAV:href values inside a found property (principal, home set)."""
        element = self.props.get(tag)
        if element is None:
            return []
        return [h.text.strip() for h in element.iter(f"{{{DAV}}}href") if h.text]


@dataclass(frozen=True)
class Multistatus:
    """A parsed 207 answer."""

    entries: list[Entry]
    sync_token: str | None


class XMLError(ValueError):
    """A body that is not the XML the request called for."""


def propfind_body(props: Iterable[str]) -> bytes:
    """A PROPFIND body asking for the given properties (Clark notation)."""
    root = etree.Element(f"{{{DAV}}}propfind", nsmap=_NSMAP)
    prop = etree.SubElement(root, f"{{{DAV}}}prop")
    for tag in props:
        etree.SubElement(prop, tag)
    return _serialize(root)


def multiget_body(hrefs: Sequence[str]) -> bytes:
    """An addressbook-multiget body for the getetag and card of each href."""
    root = etree.Element(f"{{{CARDDAV}}}addressbook-multiget", nsmap=_NSMAP)
    prop = etree.SubElement(root, f"{{{DAV}}}prop")
    etree.SubElement(prop, GETETAG)
    etree.SubElement(prop, ADDRESS_DATA)
    for href in hrefs:
        etree.SubElement(root, f"{{{DAV}}}href").text = href
    return _serialize(root)


def sync_collection_body(sync_token: str | None) -> bytes:
    """A sync-collection body (level 1, getetag); an empty token asks for all."""
    root = etree.Element(f"{{{DAV}}}sync-collection", nsmap=_NSMAP)
    etree.SubElement(root, SYNC_TOKEN).text = sync_token or None
    etree.SubElement(root, f"{{{DAV}}}sync-level").text = "1"
    prop = etree.SubElement(root, f"{{{DAV}}}prop")
    etree.SubElement(prop, GETETAG)
    return _serialize(root)


def parse_multistatus(body: bytes) -> Multistatus:
    """Parse a DAV:multistatus, keeping carriage returns in text (vCard CRLF)."""
    root = _parse(body)
    if root.tag != f"{{{DAV}}}multistatus":
        raise XMLError(f"expected DAV:multistatus, got {root.tag}")

    entries = [_entry(r) for r in root.iterchildren(f"{{{DAV}}}response")]
    token = root.find(SYNC_TOKEN)
    sync_token = token.text.strip() if token is not None and token.text else None
    return Multistatus(entries, sync_token)


def error_conditions(body: bytes) -> set[str]:
    """The precondition elements of a DAV:error body; empty when it is none."""
    try:
        root = _parse(body)
    except XMLError:
        return set()
    if root.tag != f"{{{DAV}}}error":
        return set()
    return {child.tag for child in root if isinstance(child.tag, str)}


def _entry(response: etree._Element) -> Entry:
    href = response.findtext(f"{{{DAV}}}href", default="").strip()
    status = _status_code(response.findtext(f"{{{DAV}}}status"))

    props: dict[str, etree._Element] = {}
    for propstat in response.iterchildren(f"{{{DAV}}}propstat"):
        code = _status_code(propstat.findtext(f"{{{DAV}}}status"))
        if code is None or not 200 <= code < 300:
            continue
        for prop in propstat.iterchildren(f"{{{DAV}}}prop"):
            props.update(
                (child.tag, child) for child in prop if isinstance(child.tag, str)
            )
    return Entry(href, status, props)


def _status_code(status_line: str | None) -> int | None:
    """The code of an HTTP status line such as 'HTTP/1.1 404 Not Found'."""
    if not status_line:
        return None
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])


def _parse(body: bytes) -> etree._Element:
    if not body.strip():
        raise XMLError("empty body")
    try:
        return etree.fromstring(_keep_carriage_returns(body), parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise XMLError(f"malformed XML: {exc}") from exc


def _keep_carriage_returns(body: bytes) -> bytes:
    """Escape CR in text and CDATA, which XML parsing would fold into LF.

    XML 1.0 section 2.11 turns every CRLF into LF, but card text must come back
    byte-for-byte, and servers write the card's CRLF into address-data raw.
    """
    if b"\r" not in body:
        return body

    pieces: list[bytes] = []
    position = 0
    for match in _MARKUP.finditer(body):
        pieces.append(body[position : match.start()].replace(b"\r", b"&#13;"))
        cdata = match.group("cdata")
        pieces.append(match.group() if cdata is None else _escape_text(cdata))
        position = match.end()
    pieces.append(body[position:].replace(b"\r", b"&#13;"))
    return b"".join(pieces)


def _escape_text(text: bytes) -> bytes:
    text = text.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")
    return text.replace(b"\r", b"&#13;")


def _serialize(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))
