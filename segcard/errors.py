"""The errors segcard raises, all below one root.

    SegcardError
    ├── ConfigError            the config file or a command-line setting is wrong
    ├── ContactError           a contact named by the user cannot be resolved
    │   ├── ContactNotFound
    │   └── AmbiguousContact   (carries the candidates)
    ├── AddressBookError       the CardDAV server or a card misbehaved
    │   ├── ServerUnreachable  (writes wait in the outbox)
    │   ├── WriteConflict      412 on a conditional write
    │   └── CardParseError     a card from which not even the UID can be read
    ├── RelayError             the upstream SMTP server refused or failed
    └── ProtocolError          a peer broke the protocol (SMTP, IMAP, POP3, control)

Errors from libraries (caldav, vobject, niquests, smtplib) become one of these
at the boundary where they are caught, chained with ``from``.
"""

from __future__ import annotations


class SegcardError(Exception):
    """Root of every error segcard reports to the user."""

    hint: str = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint


class ConfigError(SegcardError):
    """The configuration is missing, unreadable or holds bad values."""


class ContactError(SegcardError):
    """A contact named on the command line or by a peer cannot be resolved."""


class ContactNotFound(ContactError):
    """No contact matches the given name, address, UID or segment address."""


class AmbiguousContact(ContactError):
    """Several contacts match; the caller must say which."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message, "name it by email address or UID instead")
        self.candidates = candidates


class AddressBookError(SegcardError):
    """The CardDAV server or a card could not be handled."""


class ServerUnreachable(AddressBookError):
    """The CardDAV server could not be reached; local work goes on."""


class WriteConflict(AddressBookError):
    """A conditional write failed with 412 because the card changed."""


class CardParseError(AddressBookError):
    """A card from which not even its UID and name can be read."""


class RelayError(SegcardError):
    """The upstream submission server refused a message or failed."""

    def __init__(self, message: str, code: int = 0, permanent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent


class ProtocolError(SegcardError):
    """A peer sent something the protocol does not allow."""
