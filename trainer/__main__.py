"""``python -m trainer`` / ``trainer``: parse flags, build the Config, run. No logic here."""

import sys

from absl import app, flags


def _main(argv):
    from trainer import EXIT_USAGE, config

    if len(argv) > 1:
        sys.stderr.write(f"error: unexpected arguments {argv[1:]}: flags look like --name=value.\n")
        return EXIT_USAGE
    if flags.FLAGS.storage_timeout_seconds > 0:  # else from_flags refuses it
        # TensorFlow's gs:// client reads these once, when it loads: before from_flags,
        # whose activation check is the first import of TensorFlow.
        from trainer.runtime import storage

        storage.apply_retry_env(flags.FLAGS.storage_timeout_seconds)
    try:
        cfg = config.from_flags()
    except config.ConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_USAGE
    from trainer.run.main import train_and_evaluate  # loads TensorFlow: only for valid flags

    return train_and_evaluate(cfg)


def run():
    """Console-script entry point."""
    import trainer.config  # noqa: F401  (defines the flags before absl parses argv)

    try:
        app.run(_main)
    except flags.Error as e:  # pragma: no cover - absl prints its own message
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)


if __name__ == "__main__":
    run()
