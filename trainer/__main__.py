"""``python -m trainer`` / ``trainer``: trains the dual-input Inception pair classifier, then
evaluates and exports it (its flags: ``--help``). The entry point only: flags -> Config ->
the local path checks that need no TensorFlow -> train_and_evaluate; no logic here.
"""

from __future__ import annotations

import sys

from absl import app, flags


def main(argv) -> int:
    """The trainer for parsed flags (``argv``: what absl left over); the exit status. Under
    the one guard (trainer.common.guard): no traceback reaches the user."""
    from trainer.common.guard import guarded

    return guarded(_main, argv, program="trainer")


def _main(argv) -> int:
    from trainer import flags as trainer_flags
    from trainer.common.errors import EXIT_USAGE
    from trainer.config import ConfigError

    if len(argv) > 1:
        sys.stderr.write(f"error: unexpected arguments {argv[1:]}: flags look like --name=value.\n")
        return EXIT_USAGE
    try:
        config = trainer_flags.config_from_flags()
    except ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_USAGE
    from trainer.data import check_local_data
    from trainer.runtime import storage

    # What a plain file check refuses, said before TensorFlow loads (seconds, and its lines).
    check_local_data(config.data.data_dir)
    storage.check_local_outputs(config.train.model_dir, config.written_export_path)
    # TensorFlow's gs:// client reads its retry variables once, when it loads: set them first.

    storage.apply_retry_env(config.runtime.storage_timeout_seconds)
    from trainer.common import console

    console.plain_log_lines()
    console.load_tensorflow()
    from trainer.run.main import train_and_evaluate  # loads TensorFlow: only for valid flags

    return train_and_evaluate(config)


def run_in_process(argv: list[str]) -> int:
    """``trainer ARGV`` in this process (tests): parses the flags afresh, runs, returns the
    exit status. A bad flag is one sentence and 1, as on the command line."""
    import trainer.flags  # noqa: F401  (defines the flags)

    fv = flags.FLAGS
    verbosity = fv["verbosity"].value  # this process's logging stays as it is
    fv.unparse_flags()
    from trainer.common.cli import flag_sentence

    try:
        rest = fv(["trainer", *argv])
    except flags.Error as e:
        sys.stderr.write(f"error: {flag_sentence(e)}.\n")
        return 1
    if not fv["verbosity"].present:
        fv.verbosity = verbosity
    return main(rest)


def _parse(argv: list[str]) -> list[str]:
    """absl's flag parsing with a bad flag as one sentence and exit 1 (absl's own message is
    a "FATAL" line and a second line on --helpshort)."""
    from trainer.common.cli import flag_sentence

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.stderr.write(f"error: {flag_sentence(e)}.\n")
        sys.exit(1)


USAGE = """usage: python -m trainer [--flag=value ...]

Trains on --data_dir (empty: the built-in synthetic pairs) into --model_dir, resuming from its
newest checkpoint by itself, evaluates, and exports a SavedModel to <model_dir>/export.
--mode=export|evaluate|continuous_eval for the other modes. Its flags below; --helpfull adds
absl's own (--verbosity and the like)."""


def help_text(full: bool = False) -> str:
    """What ``--help`` prints: the usage, then the trainer's own flags (absl's --help lists a
    main module's flags, and the trainer's live in trainer.flags, so it would list none);
    ``--helpfull`` adds absl's."""
    import trainer.flags

    listed = flags.FLAGS.get_help() if full else flags.FLAGS.module_help(trainer.flags)
    return f"{USAGE}\n{listed}"


def run():
    """Console-script entry point."""
    import trainer.flags  # noqa: F401  (defines the flags before absl parses argv)
    from trainer.common.cli import HELP

    if any(a in HELP for a in sys.argv[1:]):  # exit 0 (absl's own help exits 1)
        print(help_text(full="--helpfull" in sys.argv[1:]))
        sys.exit(0)
    app.run(main, flags_parser=_parse)


if __name__ == "__main__":
    run()
