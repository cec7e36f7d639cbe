"""The ``sgm`` command. Each subcommand lives in its own module under ``sgm_lightning.commands``
and exposes ``register(subparsers)``, which adds its parser and sets ``func``; modules are
imported only when listed here, so ``sgm --help`` stays fast and never imports Lightning.

Options and ``key=value`` overrides mix in any order (``sgm train trainer.max_steps=1 --config
toy_2d logging.logger=none``), as with ``parse_intermixed_args``: argparse stops filling a
``nargs="*"`` positional at the first option, so the overrides after it arrive as leftovers and
are appended, in order, to ``overrides`` for the subcommands that take them.
"""

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


def package_version() -> str:
    """The installed distribution's version (``importlib.metadata``), else the package's own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sgm-lightning")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgm",
        description="Train, sample and evaluate score-based generative models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(f"sgm_lightning.commands.{module}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, sys.argv[1:] if argv is None else list(argv))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    from .errors import Interrupted, RunFailed, one_line
    from .training.run import quiet_lightning

    quiet_lightning()  # every command that starts a Trainer (train, sample): no advertisement
    try:
        return int(args.func(args) or 0)
    except (RunFailed, Interrupted) as err:  # the run stopped: say why, with its own exit code
        print(f"sgm {args.command}: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except (ValueError, OSError) as err:  # bad input or a path that cannot be written: one line
        print(f"sgm {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args`` with ``key=value`` overrides allowed anywhere after the subcommand."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = _subparser(parser, getattr(args, "command", None)) or parser
        if isinstance(getattr(args, "overrides", None), list) and all("=" in a and not a.startswith("-")
                                                                    for a in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            sub.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser | None:
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if command in getattr(action, "choices", {}):
            return action.choices[command]
    return None


if __name__ == "__main__":
    sys.exit(main())
