"""The control API: versioned requests from the add-on and the CLI, over App.

A request is one JSON object ``{"v": 1, "id": ..., "type": ..., ...}``; its
reply is ``{"v": 1, "id": ..., "ok": true, ...}`` or ``{"v": 1, "id": ...,
"ok": false, "error": "a plain sentence", "code": "..."}``. Each type has one
handler that reads only the fields it declares, each checked for its type and
size; nothing sent is ever executed or used as a path. Types:

    ping                                  -> api, version
    status                                -> contacts, outbox, last sync, leaks
    identities                            -> identities, user, domain
    recipients {addresses, references?, from?}
                                          -> one row per address: the address
                                             it will see, or that one is made
    message {from?, delivered_to?, to?, verdict_header?, list_id?}
                                          -> the contact and segment a received
                                             message came in on, and its verdict
    block | unblock | rotate {contact}    -> the contact after the change
    trust {contact, sender}               -> the contact, the trusted sender

``contact`` is always a UID, as an earlier reply gave it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from email.utils import getaddresses
from typing import Any

from segcard import __version__
from segcard.address import normalize_email
from segcard.app import App
from segcard.book.verdict import Judge, Mail, Verdict
from segcard.errors import AmbiguousContact, ContactNotFound, SegcardError
from segcard.mail.plan import Planner
from segcard.segment import Contact

log = logging.getLogger(__name__)

API_VERSION = 1
MAX_ADDRESS = 320  # RFC 5321 section 4.5.3.1: 64 + 1 + 255, with some slack
MAX_RECIPIENTS = 500
MAX_DELIVERY = 50
MAX_REFERENCES = 50
MAX_ID = 100
MSG_ID = re.compile(r"<[!-;=?-~]{1,990}>")  # printable ASCII, no < > or space
SEGMENT_IN_HEADER = re.compile(r"(?:^|;)\s*segment=([^;\s]+)")

Reply = dict[str, Any]


class RequestError(SegcardError):
    """A request the API refuses; *code* names why for the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- reading fields -----------------------------------------------------------


def text_field(
    request: dict[str, Any], name: str, limit: int, default: str = ""
) -> str:
    """An optional string field of at most *limit* characters, no control ones."""
    value = request.get(name, default)
    if not isinstance(value, str) or len(value) > limit:
        raise RequestError("bad_request", f"{name} must be text of at most {limit}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise RequestError("bad_request", f"{name} must not hold control characters")
    return value


def address_field(request: dict[str, Any], name: str, required: bool = False) -> str:
    """An address ("Name <a@b>" or "a@b") as a bare lower-case address."""
    if name not in request and not required:
        return ""
    return parse_address(text_field(request, name, MAX_ADDRESS), name)


def parse_address(value: str, name: str) -> str:
    found = getaddresses([value])
    address = normalize_email(found[0][1]) if len(found) == 1 else ""
    if "@" not in address:
        raise RequestError("bad_request", f"{name} must be one email address")
    return address


def list_field(request: dict[str, Any], name: str, limit: int) -> list[str]:
    """An optional list of at most *limit* strings."""
    value = request.get(name, [])
    if not isinstance(value, list) or len(value) > limit:
        raise RequestError("bad_request", f"{name} must be a list of at most {limit}")
    if not all(isinstance(item, str) and len(item) <= MAX_ADDRESS for item in value):
        raise RequestError("bad_request", f"every item of {name} must be short text")
    return value


def addresses_field(request: dict[str, Any], name: str, limit: int) -> list[str]:
    items = list_field(request, name, limit)
    return list(dict.fromkeys(parse_address(item, name) for item in items))


def uid_field(request: dict[str, Any]) -> str:
    uid = text_field(request, "contact", 200)
    if not uid:
        raise RequestError("bad_request", "contact must name a contact by its UID")
    return uid


# -- the API ------------------------------------------------------------------


class ControlApi:
    """Answers control requests for one App; one request at a time."""

    def __init__(
        self,
        app: App,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.book = app.book
        self.index = app.index
        self.config = app.config
        self.on_change = on_change or (lambda: None)
        self.clock = clock
        self._lock = threading.Lock()
        self.handlers: dict[str, Callable[[dict[str, Any]], Reply]] = {
            "ping": self.ping,
            "status": self.status,
            "identities": self.identities,
            "recipients": self.recipients,
            "message": self.message,
            "block": self.block,
            "unblock": self.unblock,
            "rotate": self.rotate,
            "trust": self.trust,
        }

    def handle(self, request: object) -> Reply:
        """The reply to one decoded request; never raises."""
        request_id = _request_id(request)
        try:
            body = self._dispatch(request)
        except RequestError as exc:
            return error_reply(request_id, exc.code, str(exc))
        except ContactNotFound:
            return error_reply(request_id, "not_found", CONTACT_GONE)
        except AmbiguousContact as exc:
            return error_reply(request_id, "ambiguous", str(exc))
        except SegcardError as exc:
            hint = f": {exc.hint}" if exc.hint else ""
            return error_reply(request_id, "refused", f"{exc}{hint}")
        except Exception:  # noqa: BLE001 - a reply must go back in any case
            log.exception("control request %r failed", _type_of(request))
            return error_reply(request_id, "internal", INTERNAL)
        return {"v": API_VERSION, "id": request_id, "ok": True, **body}

    def _dispatch(self, request: object) -> Reply:
        if not isinstance(request, dict):
            raise RequestError("bad_request", "a request must be a JSON object")
        if request.get("v") != API_VERSION:
            raise RequestError(
                "bad_version",
                f"this segcard speaks version {API_VERSION} of the control API: "
                "update the add-on or segcard so that they match",
            )
        kind = request.get("type")
        handler = self.handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise RequestError("unknown_type", f"unknown request type {_shown(kind)}")
        log.debug("control request %s", kind)
        with self._lock:
            return handler(request)

    # -- reading --------------------------------------------------------------

    def ping(self, request: dict[str, Any]) -> Reply:
        return {"api": API_VERSION, "version": __version__}

    def status(self, request: dict[str, Any]) -> Reply:
        last = self.index.get_state("last_sync")
        return {
            "daemon": "running" if self.app.daemon_running() else "not running",
            "contacts": self.index.count(),
            "outbox": len(self.index.outbox()),
            "last_sync": int(last) if last else None,
            "last_sync_result": self.index.get_state("last_sync_result"),
            "leaks": len(self.index.leaks()),
            "domain": self.config["domain"],
        }

    def identities(self, request: dict[str, Any]) -> Reply:
        return {
            "identities": self.config.identities,
            "user": self.config["user"],
            "domain": self.config["domain"],
        }

    def recipients(self, request: dict[str, Any]) -> Reply:
        addresses = addresses_field(request, "addresses", MAX_RECIPIENTS)
        references = list_field(request, "references", MAX_REFERENCES)
        if not all(MSG_ID.fullmatch(ref) for ref in references):
            raise RequestError("bad_request", "references must be <message-id>s")
        sender = address_field(request, "from")
        planner = Planner(self.book)
        raw = _reply_stub(references)
        rows = [self._recipient(planner, raw, address) for address in addresses]
        return {
            "recipients": rows,
            "identities": self.config.identities,
            "from_kind": self._from_kind(sender),
        }

    def message(self, request: dict[str, Any]) -> Reply:
        sender = address_field(request, "from")
        delivered = addresses_field(request, "delivered_to", MAX_DELIVERY)
        to = addresses_field(request, "to", MAX_RECIPIENTS)
        header = text_field(request, "verdict_header", 2000)
        list_id = text_field(request, "list_id", 500)
        candidates = [*delivered, *_header_segment(header), *to]
        address = self._segment_address(candidates)
        if address is None:
            return self._not_on_segment(candidates, sender)
        mail = Mail(recipient=address, header_from=sender, list_id=list_id)
        verdict = Judge(self.config, self.index).judge(mail, int(self.clock()))
        return self._verdict_reply(verdict, address)

    # -- changing -------------------------------------------------------------

    def block(self, request: dict[str, Any]) -> Reply:
        return self._change(request, self.book.block)

    def unblock(self, request: dict[str, Any]) -> Reply:
        return self._change(request, self.book.unblock)

    def rotate(self, request: dict[str, Any]) -> Reply:
        return self._change(request, self.book.rotate)

    def trust(self, request: dict[str, Any]) -> Reply:
        sender = address_field(request, "sender", required=True)
        contact = self.book.trust(self._contact(request), sender)
        self.on_change()
        return {"contact": self.contact_view(contact), "trusted": sender}

    def _change(self, request: dict[str, Any], action: Callable[..., Contact]) -> Reply:
        contact = action(self._contact(request))
        self.on_change()
        return {"contact": self.contact_view(contact)}

    def _contact(self, request: dict[str, Any]) -> Contact:
        contact = self.index.get(uid_field(request))
        if contact is None:
            raise ContactNotFound("no such contact")
        return contact

    # -- views ----------------------------------------------------------------

    def contact_view(self, contact: Contact) -> Reply:
        """A contact as the add-on shows it; no tokens but the current address."""
        segment = contact.segment
        return {
            "uid": contact.uid,
            "name": contact.name,
            "emails": list(contact.emails[:20]),
            "address": self.book.address_of(segment) if segment else None,
            "state": segment.state.value if segment else None,
            "kind": segment.kind.value if segment else None,
        }

    def _recipient(self, planner: Planner, raw: bytes, address: str) -> Reply:
        """What *address* will see: its segment, or that one will be made."""
        if self.book.is_own(address):
            return {"address": address, "kind": "own", "contact": None, "from": None}
        found = planner.targets(raw, [address], create=False)
        if found is not None and found[0]:
            target = found[0][0]
            contact = self.index.get(target.uid)
            view = self.contact_view(contact) if contact else None
            return {
                "address": address,
                "kind": "segment",
                "contact": view,
                "from": target.address,
            }
        known = self.index.by_email(address)
        kind = "new_segment" if known else "new_contact"
        view = self.contact_view(known[0]) if known else None
        return {"address": address, "kind": kind, "contact": view, "from": None}

    def _from_kind(self, sender: str) -> str:
        if not sender:
            return ""
        if sender in self.config.identities:
            return "identity"
        return "segment" if self.book.is_own(sender) else "other"

    def _segment_address(self, candidates: list[str]) -> str | None:
        """The first candidate with a token of ours, else the first with any."""
        template = self.config.template
        tokens = [(a, template.parse(a)) for a in candidates]
        for address, token in tokens:
            if token and self.index.token_owner(token):
                return address
        return next((address for address, token in tokens if token), None)

    def _not_on_segment(self, candidates: list[str], sender: str) -> Reply:
        identities = set(self.config.identities)
        return {
            "found": False,
            "to_identity": any(a in identities for a in candidates),
            "contact": None,
            "came_in_on": None,
            "verdict": {"action": "junk", "reason": "no token"},
            "note": "",
            "sender": sender,
        }

    def _verdict_reply(self, verdict: Verdict, address: str) -> Reply:
        contact = verdict.contact
        return {
            "found": contact is not None,
            "to_identity": False,
            "contact": self.contact_view(contact) if contact else None,
            "came_in_on": address,
            "verdict": {"action": verdict.action.value, "reason": verdict.reason.value},
            "note": verdict.note,
            "sender": verdict.sender,
        }


CONTACT_GONE = (
    "That contact no longer exists in the address book: reopen the message "
    "or the compose window to see the current state."
)
INTERNAL = "segcard failed on this request: see the log of segcard serve."


def error_reply(request_id: object, code: str, error: str) -> Reply:
    return {
        "v": API_VERSION,
        "id": request_id,
        "ok": False,
        "code": code,
        "error": error,
    }


def _request_id(request: object) -> object:
    """The request's id when it is a short string or an int, else None."""
    value = request.get("id") if isinstance(request, dict) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) <= MAX_ID):
        return value
    return None


def _type_of(request: object) -> str:
    kind = request.get("type") if isinstance(request, dict) else None
    return kind if isinstance(kind, str) else "?"


def _shown(value: object) -> str:
    """A request's type, cut short and made printable for an error sentence."""
    text = value if isinstance(value, str) else type(value).__name__
    return repr(text[:40])


def _reply_stub(references: list[str]) -> bytes:
    """Headers only, for the planner to find the segment a reply stays on."""
    return (
        f"References: {' '.join(references)}\r\n\r\n".encode()
        if references
        else b"\r\n"
    )


def _header_segment(header: str) -> list[str]:
    found = SEGMENT_IN_HEADER.search(header)
    return [found.group(1).lower()] if found and "@" in found.group(1) else []
