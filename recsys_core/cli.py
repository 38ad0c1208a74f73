"""The `recsys` command: one entry point, subcommands contributed by the packages that own them.

`recsys_assets` (generate, materialize, benchmark) and `serving` (serve) each register their
subcommands as `recsys.commands` entry points in pyproject.toml. This dispatcher imports only
the command that was asked for, so neither side imports the other and `recsys serve` never
loads Dagster (nor `recsys materialize` the web stack).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

ENTRY_POINT_GROUP = "recsys.commands"
DESCRIPTION = "Place and people recommendations: build the world and the model, benchmark it, serve it."
USAGE_ERROR = 2


class CommandError(Exception):
    """A user mistake a command reports as one line on stderr (exit 2), never a traceback."""


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, how it declares its arguments, and what it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    # Errors that mean "bad input or a failed run" for this command: printed as `recsys NAME: error: ...`.
    user_errors: tuple[type[Exception], ...] = (CommandError, ValueError, FileNotFoundError, RuntimeError)


def registered_commands() -> dict[str, EntryPoint]:
    """The installed subcommands by name (not imported yet)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load(entry: EntryPoint) -> Command:
    command = entry.load()
    if not isinstance(command, Command):
        raise TypeError(f"entry point {entry.value} is a {type(command).__name__}, not a recsys Command")
    return command


def _requested(argv: Sequence[str], names: set[str]) -> str | None:
    """The subcommand named on the command line (the first argument that is not an option)."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in names else None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    available = registered_commands()
    if not available:
        print("recsys: no commands are installed (run `make install`)", file=sys.stderr)
        return USAGE_ERROR
    wanted = _requested(args_list, set(available))
    # Only the asked-for command is imported; help and usage errors list every command.
    commands = {name: _load(available[name]) for name in ([wanted] if wanted else sorted(available))}
    parser = argparse.ArgumentParser(prog="recsys", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(sorted(available)) + "}")
    for name, command in commands.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    args = parser.parse_args(args_list)
    args.is_process = argv is None  # run as the `recsys` command: the process is the run
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = commands[args.command]
    try:
        command.run(args)
    except command.user_errors as exc:
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return 0


if __name__ == "__main__":
    # Run as `python -m recsys_core.cli`, this file is `__main__`, whose Command class is not the one
    # the subcommands import: dispatch through the importable module instead.
    from recsys_core.cli import main as dispatch

    sys.exit(dispatch())
