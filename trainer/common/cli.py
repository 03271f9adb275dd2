"""Each tool's command line on its own absl FlagValues, so a tool defines only its flags and
several tools (and the trainer) can be called in one process, as the tests do.

``parse`` reads argv into a tool's FlagValues (UsageError for a bad or unknown flag);
``run_tool`` is the console entry: absl's app.run around it (absl's own flags such as
--verbosity keep working), ``--help`` listing the tool's flags, exit status from main.
``DefaultsShown`` is the argparse help format of the commands that use argparse.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable

from absl import app, flags

from trainer.common import console
from trainer.common.errors import EXIT_USAGE, UsageError
from trainer.common.guard import guarded

HELP = ("--help", "-h", "--helpshort", "--helpfull", "-?")


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """argparse help with each option's default after its help, where it says something (not
    for required options, switches that are off, or options without a default or with an
    empty one)."""

    def _get_help_string(self, action):
        default = action.default
        if (
            action.required
            or default is None
            or default is False
            or default in ("", argparse.SUPPRESS)
        ):
            return action.help
        return super()._get_help_string(action)


_FLAG_VALUE = re.compile(r"^flag --(\w+)=(.*?): (.*)$", re.S)


def flag_sentence(error: flags.Error) -> str:
    """absl's flag error as the sentence a person reads (no "invalid literal for int()")."""
    text = str(error).strip()
    if m := _FLAG_VALUE.match(text):
        name, value, why = m.groups()
        if "invalid literal for int()" in why:
            why = "it must be a whole number"
        elif "could not convert string to float" in why:
            why = "it must be a number"
        return f"--{name}={value} is invalid: {why.rstrip('.')}"
    if m := re.match(r"Unknown command line flag '([^']+)'", text):
        return f"--{m.group(1)} is not a flag of this command: see --helpshort"
    if m := re.search(r"Unable to open flagfile: \[Errno \d+\] (.+): '(.*)'$", text):
        why, path = m.groups()  # absl's "ERROR:: Unable to open flagfile: [Errno 2] ..."
        return f"--flagfile={path} cannot be read ({why}): give a file of flags, one per line"
    return text.rstrip(".")


def parse(fv: flags.FlagValues, argv: list[str]) -> list[str]:
    """argv (program name first) into ``fv``, from its defaults; returns the program name
    and the positional arguments."""
    fv.unparse_flags()
    try:
        rest = fv(list(argv), known_only=True)
    except flags.Error as e:
        raise UsageError(f"{flag_sentence(e)}.") from None
    unknown = [a for a in rest[1:] if a.startswith("-") and a not in ("-", "--")]
    if unknown:
        name = unknown[0].lstrip("-").split("=", 1)[0]
        raise UsageError(f"--{name} is not a flag of this command: see --help.")
    return [a for a in rest if a != "--"]


def call(main: Callable[[list[str]], int], fv: flags.FlagValues, argv: list[str]) -> int:
    """``main`` on argv parsed into ``fv``; a bad flag is one sentence and exit 1."""
    console.plain_log_lines()
    try:
        rest = parse(fv, argv)
    except UsageError as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_USAGE
    program = _program(argv)
    from trainer.runtime import storage  # no TensorFlow: its retry variables, set before it

    storage.bound_tool_retries()
    console.load_tensorflow()  # after the flags: a bad one is answered without loading it
    return guarded(main, rest, program=program)


def _program(argv: list[str]) -> str:
    """The tool's name for its messages: ``trainer.predict`` under ``python -m`` (argv[0] is
    then the file, predict.py), else the script's name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith("trainer."):
        return spec.name
    return os.path.basename(argv[0]) if argv else "tool"


def run_tool(main: Callable[[list[str]], int], fv: flags.FlagValues, usage: str) -> None:
    """Console entry point: exits with ``main``'s status."""
    if any(a in HELP for a in sys.argv[1:]):
        print(f"{usage}\n\n{fv.get_help()}")
        sys.exit(0)

    def absl_main(argv):
        return call(main, fv, argv)

    def own_flags_only(argv):
        # absl's own flags (--verbosity, --logtostderr) are parsed by absl; the rest by main.
        flags.FLAGS(argv[:1])
        return argv

    app.run(absl_main, flags_parser=own_flags_only)
