"""What every command prints when a person made a mistake: one line on stderr, exit 2.

    from smartcity.runtime.cli import ArgumentParser, cli

    @cli("smartcity-edge")
    def main(argv: list[str] | None = None) -> int:
        a = ArgumentParser(prog="smartcity-edge").parse_args(argv)   # bad flag: one line, exit 2
        s = load(Settings, a.config, ...)        # SettingsError: one line, exit 2
        ...

Two kinds of mistake, one form, `PROG: WHAT` on a single line and exit status 2, no traceback:

- a settings error (`runtime.settings.SettingsError`): its message names the key, what was
  expected and where the value came from (`device_id: expected a string, got 5 (from file
  edge.toml)`, `settings file /etc/x.toml does not exist`, an environment variable's name);
- a usage error: a bad flag or argument (`ArgumentParser.error`, which argparse calls: the one line
  instead of argparse's usage block), or `UsageError` raised by the command itself (a file named
  on the command line that cannot be read, ...).

A usage error from the parser exits through SystemExit(2), as argparse does; the others make the
decorated main *return* 2 (so `sys.exit(main())` and a test's `main([...]) == 2` both work).
Everything else is a bug or an outage and propagates with its traceback.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, NoReturn, TypeVar

from .settings import SettingsError

F = TypeVar("F", bound=Callable[..., int])
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake on the command line that the person fixes (e.g. an unreadable input file)."""


def one_line(error: BaseException | str) -> str:
    """The message on one line (a multi-line message would read as several errors)."""
    return "; ".join(part.strip() for part in str(error).splitlines() if part.strip()) \
        or type(error).__name__


def report(prog: str, error: BaseException | str) -> int:
    """Print `prog: message` on one line on stderr; return the exit status for it (2)."""
    print(f"{prog}: {one_line(error)}", file=sys.stderr, flush=True)
    return EXIT_USAGE


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (`PROG: argument --port: invalid int value: 'x' (--help
    for usage)`), exit 2. Sub-parsers made with add_subparsers() are of this class too."""

    def error(self, message: str) -> NoReturn:
        report(self.prog, f"{message} (--help for usage)")
        raise SystemExit(EXIT_USAGE)


def cli(prog: str) -> Callable[[F], F]:
    """Decorate a command's main(): a SettingsError or UsageError becomes one line and exit 2."""
    def wrap(main: F) -> F:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except (SettingsError, UsageError) as e:
                return report(prog, e)
        return run  # type: ignore[return-value]
    return wrap
