"""The domain operations and the verdict, over the store; no protocols here."""

from segcard.book.operations import Book

__all__ = ["Book"]
