"""``launch local|k8s ...``: parse arguments, hand them to launch.local or launch.k8s.

Trainer flags follow ``--`` and are passed through untouched.
"""

from __future__ import annotations

import argparse
import sys

from trainer.common.cli import DefaultsShown
from trainer.common.errors import EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one sentence, exit 1 (DESIGN.md), not argparse's exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Launcher arguments before ``--``, trainer flags after it."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _int_at_least(minimum: int):
    """An argparse type: an integer >= minimum, else one clear sentence."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is not an integer >= {minimum}")
        return value

    return parse


TRAINER_FLAGS_FOLLOW = (
    "Trainer flags follow --, passed to every worker as they are (python -m trainer --help "
    "lists them), e.g. launch {}"
)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="launch", description="Start trainer processes locally or on Kubernetes.")
    sub = p.add_subparsers(
        dest="target", required=True, parser_class=_Parser, metavar="{local,k8s}"
    )
    local = sub.add_parser(
        "local",
        help="N trainer processes on loopback (MultiWorkerMirrored)",
        description="N trainer processes on loopback, supervised like the Kubernetes Job: a "
        "worker that dies or exits 75 restarts the group from the latest checkpoint.",
        epilog=TRAINER_FLAGS_FOLLOW.format(
            "local --workers 2 -- --train_steps=200 --model_dir=runs/x"
        ),
        formatter_class=DefaultsShown,
    )
    local.add_argument("--workers", type=_int_at_least(1), default=2, help="trainer processes")
    local.add_argument(
        "--devices_per_worker",
        type=_int_at_least(0),
        default=0,
        help="split each worker's CPU into K logical devices (K replicas)",
    )
    local.add_argument(
        "--max_restarts",
        type=_int_at_least(0),
        default=3,
        help="group restarts before the run fails",
    )
    local.add_argument(
        "--data_workers",
        type=_int_at_least(0),
        default=0,
        help="run a tf.data service (dispatcher + N data workers) that decodes for the trainers",
    )
    local.add_argument(
        "--grace_seconds",
        type=float,
        default=60.0,
        help="how long stopped workers get to save before SIGKILL",
    )
    local.add_argument(
        "--skip_preflight",
        action="store_true",
        help="start without checking the run's gs:// buckets and data first",
    )
    from launch.k8s import cli as k8s_cli

    k8s_cli.add_parser(
        sub,
        epilog=TRAINER_FLAGS_FOLLOW.format(
            "k8s submit --name exp1 --image IMG --model_dir gs://BUCKET/exp1 -- --train_steps=2000"
        ),
    )
    return p


def main(argv=None) -> int:
    """The launcher's exit status for ``argv`` (sys.argv's by default), under the one guard
    (trainer.common.guard)."""
    from trainer.common.guard import guarded

    return guarded(_main, list(sys.argv[1:] if argv is None else argv), program="launch")


def _main(argv: list[str]) -> int:
    own, trainer_args = _split(argv)
    args = parser().parse_args(own)
    if args.target == "local":
        from launch.local.workers import run

        return run(local_config(args, trainer_args))
    from launch.k8s import cli as k8s_cli

    return k8s_cli.main(args, trainer_args)


def local_config(args: argparse.Namespace, trainer_args: list[str]):
    """``launch local``'s parsed options -> the launch.local.workers.LocalConfig they ask for."""
    from launch.local.workers import LocalConfig

    return LocalConfig(
        workers=args.workers,
        devices_per_worker=args.devices_per_worker,
        max_restarts=args.max_restarts,
        grace_seconds=args.grace_seconds,
        trainer_args=tuple(trainer_args),
        data_workers=args.data_workers,
        skip_preflight=args.skip_preflight,
    )


def run():
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
