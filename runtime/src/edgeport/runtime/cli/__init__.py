"""The ``edgeport`` command. Subcommands come from the ``edgeport.commands`` entry-point group.

Each entry point names a ``register(subparsers)`` function that adds one subcommand and sets
``handler`` (a function of the parsed arguments returning an exit code) as its default. The
runtime registers predict, inspect, check and bench; edgeport-train and edgeport-export add
theirs, so a device with only the runtime shows only what it can run. A command may have
modes (``edgeport bench cold-start MODEL``): :meth:`CommandParser.add_mode`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from edgeport.runtime import __version__
from edgeport.runtime.errors import EdgeportError
from edgeport.runtime.io import storage_error
from edgeport.runtime.plugins import COMMAND_GROUP

log = logging.getLogger("edgeport")


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose command may have modes: ``edgeport bench MODEL`` runs the
    command itself, ``edgeport bench cold-start MODEL`` its ``cold-start`` mode, a parser of its
    own with its own flags and handler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._modes: dict[str, tuple[CommandParser, str]] = {}

    def add_mode(self, name: str, *, help: str, **kwargs: Any) -> CommandParser:
        """A new mode ``name`` (its one-line ``help`` is listed in the command's help)."""
        mode = CommandParser(prog=f"{self.prog} {name}", **kwargs)
        self._modes[name] = (mode, help)
        return mode

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        if words and words[0] in self._modes:
            return self._modes[words[0]][0].parse_known_args(words[1:], namespace)
        return super().parse_known_args(words, namespace)

    def format_help(self) -> str:
        text = super().format_help()
        if not self._modes:
            return text
        width = max(len(name) for name in self._modes) + 2
        lines = [f"modes ({self.prog} MODE --help):"]
        lines += [f"  {name:<{width}}{help}" for name, (_, help) in self._modes.items()]
        return text + "\n" + "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="edgeport",
        description="From PyTorch to a device, for any model: train, export, check, run, tune, "
        "benchmark and serve it (a bundle, an ONNX file or a TensorRT engine).",
    )
    parser.add_argument("--version", action="version", version=f"edgeport {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    unavailable = []
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:
            unavailable.append(f"{ep.name} ({exc})")
            continue
        register(subparsers)
    if unavailable:
        parser.epilog = "unavailable (broken install): " + ", ".join(unavailable)
    return parser


def _show_warning(
    message: Warning | str, category: type[Warning], *_: object, **__: object
) -> None:
    """Warnings (edgeport's NonFiniteOutputWarning, ...) as one ``warning:`` line each."""
    print(f"warning: {message}", file=sys.stderr)


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    if not verbose:
        warnings.showwarning = _show_warning
    if not verbose:
        for noisy in ("onnxscript", "onnx_ir", "torch", "matplotlib", "PIL"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for commands re-run
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.handler(args) or 0)
    except EdgeportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `edgeport inspect BUNDLE | head`
        sys.stderr.close()
        return 141
    except OSError as exc:  # a fault of the machine no command turned into a StorageError
        log.debug("unexpected OSError", exc_info=True)
        path = os.fsdecode(exc.filename) if exc.filename is not None else "a file"
        print(f"error: {storage_error(exc, path, 'use')}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
