"""Command line: the only place that configures logging and turns errors into exit codes.

Exit codes: 0 success; 1 some files failed (decode or tag write; see the summary); 2 bad configuration or
usage; 3 model problem; 4 database problem; 5 database in use by another process; 130 interrupted; 141 the
reader of the output closed it (`| head`), ended quietly.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from tagger import __version__
from tagger.cli import (
    analyze,
    batch,
    config,
    eval,
    lookup,
    mpd,
    reference,
    scan,
    serve,
    set,
    show,
    train,
    undo,
    watch,
)
from tagger.cli.exits import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED
from tagger.cli.options import common
from tagger.errors import ConfigError, TaggerError

# every command module registers its parser(s); this order is the order of `tagger --help`
COMMANDS = (scan, analyze, show, lookup, watch, serve, mpd, train, batch, set, eval, config, undo, reference)


class _JournalFormatter(logging.Formatter):
    """Under systemd (JOURNAL_STREAM set) prefix each line with its syslog priority, <3> to <7>,
    which journald turns into the entry's level; elsewhere plain 'LEVEL name: message'."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")
        self.journal = bool(os.environ.get("JOURNAL_STREAM"))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.journal:
            prio = self.PRIORITY.get(record.levelno, 6)
            return "\n".join(f"<{prio}>{line}" for line in text.splitlines())
        return f"{record.levelname} {text}"


def _setup_logging(verbose: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JournalFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("faiss").setLevel(logging.WARNING)  # it reports every CPU build it tries at INFO
    return handler


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tagger", description="Tag a music library with ONNX music taggers.",
                                epilog="Exit codes: 0 ok, 1 some files failed, 2 configuration/usage, 3 model, "
                                       "4 database, 5 database in use, 130 interrupted.")
    p.add_argument("--version", action="version", version=f"tagger {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parsers(sub, common)
    p.set_defaults(whole_parser=build_parser)  # for the commands that describe the others (completion, man)
    return p


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # print undecodable file names as the bytes they are
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = _setup_logging(getattr(args, "verbose", False))
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return code
    except BrokenPipeError:  # `tagger show --json | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(f"tagger: configuration error: {exc}", file=sys.stderr)
        return exc.exit_code
    except TaggerError as exc:
        print(f"tagger: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tagger: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        logging.getLogger().removeHandler(handler)



if __name__ == "__main__":
    sys.exit(main())
