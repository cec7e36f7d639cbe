"""The ``sgm`` command. Each subcommand lives in its own module under ``sgm_lightning.commands``
and exposes ``register(subparsers)``, which adds its parser and sets ``func``; modules are
imported only when listed here, so ``sgm --help`` stays fast and never imports Lightning."""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand name -> module in sgm_lightning.commands (one line per command)
COMMANDS: dict[str, str] = {
    "lab": "lab",
    "train": "train",
    "export": "export",
    "sample": "sample",
    "fid": "fid",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgm",
        description="Train, sample and evaluate score-based generative models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(f"sgm_lightning.commands.{module}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    from .errors import Interrupted, RunFailed, one_line

    try:
        return int(args.func(args) or 0)
    except (RunFailed, Interrupted) as err:  # the run stopped: say why, with its own exit code
        print(f"sgm {args.command}: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except (ValueError, OSError) as err:  # bad input or a path that cannot be written: one line
        print(f"sgm {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
