"""The ``upcycle-se`` command line.

Each sub-command lives in its own module of this package and exposes two functions:

- ``add_arguments(parser: argparse.ArgumentParser) -> None``
- ``run(args: argparse.Namespace) -> int`` (the exit code)

and a module docstring whose first line is the sub-command's help. Add a new one to ``SUBCOMMANDS``.
Errors that a user can act on are raised as :class:`upcycle_se.errors.UserError` and printed as one line.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# sub-command name -> module under upcycle_se.cli
SUBCOMMANDS = {
    "build-corpus": "build_corpus",
    "demo": "demo",
    "evaluate": "evaluate",
    "enhance": "enhance",
    "export": "export",
    "import-reference": "import_reference",
    "adapt": "adapt",
}


def _available():
    """Yields (name, module) for every sub-command whose module exists."""
    for name, mod in SUBCOMMANDS.items():
        try:
            yield name, importlib.import_module(f"upcycle_se.cli.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"upcycle_se.cli.{mod}":
                raise


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per available sub-command."""
    parser = argparse.ArgumentParser(prog="upcycle-se", description="Up-Cycle-SENet speech enhancement.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available():
        doc = (module.__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(name, help=doc, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``upcycle-se`` console script."""
    from upcycle_se.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"upcycle-se {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"upcycle-se {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
