"""The ``segcard`` command: argument parsing and the one error translator."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from segcard import __version__
from segcard.cli import commands, parser_setup
from segcard.errors import AmbiguousContact, SegcardError

log = logging.getLogger("segcard")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segcard",
        description="One secret email address per correspondent.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--config", help="config file (default: platform config dir)")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more detail; -vv for wire"
    )
    parser_setup.add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def setup_logging(verbose: int, serve: bool = False) -> None:
    """-v shows what happens, -vv the wire; serve logs its lifecycle anyway."""
    level = logging.WARNING - 10 * (verbose + serve)
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if verbose < 2:
        for noisy in (
            "caldav", "niquests", "urllib3", "aiohttp", "xandikos", "dulwich",
            "aiosmtpd", "mail.log", "imapclient",
        ):  # fmt: skip
            logging.getLogger(noisy).setLevel(logging.WARNING)


def report_error(exc: SegcardError) -> None:
    """Turn an error into what happened and what to do, on stderr."""
    print(f"segcard: {exc}", file=sys.stderr)
    if isinstance(exc, AmbiguousContact):
        for candidate in exc.candidates:
            print(f"  {candidate}", file=sys.stderr)
    if exc.hint:
        print(f"  ({exc.hint})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    setup_logging(args.verbose, serve=args.command == "serve")
    try:
        return int(commands.run(args) or 0)
    except SegcardError as exc:
        if args.verbose:
            log.exception("details")
        report_error(exc)
        return 1
    except KeyboardInterrupt:
        print("segcard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (segcard list | head): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if args.verbose:
            raise
        print(f"segcard: unexpected error: {exc!r}", file=sys.stderr)
        print("  (run again with -v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
