"""segcard: one secret email address per correspondent."""

__version__ = "0.1.0"
