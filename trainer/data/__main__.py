"""The data tools' command line: ``python -m trainer.data COMMAND`` (synthetic, convert, finalize,
verify, dispatcher, data_worker).

Thin: parses arguments, calls the module that does the work, turns user errors into one
sentence and exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from trainer.common.errors import EXIT_USAGE
from trainer.common.paths import join
from trainer.data import DataError
from trainer.data.service import servers
from trainer.runtime.storage import StorageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one sentence and exit 1 (DESIGN.md), not argparse's exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m trainer.data", description="Data tools of the trainer.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    syn = sub.add_parser("synthetic", help="write the built-in learnable pair set")
    syn.add_argument("--output_dir", required=True)
    syn.add_argument("--num_train", type=int, default=16384)
    syn.add_argument("--num_eval", type=int, default=1024)
    syn.add_argument("--image_size", type=int, default=32)
    syn.add_argument("--encoding", choices=("raw", "png", "jpeg"), default="raw")
    syn.add_argument("--num_shards", type=int, default=4)
    syn.add_argument("--gzip", action="store_true")
    syn.add_argument("--seed", type=int, default=0)

    conv = sub.add_parser("convert", help="CSV of image_a_path,image_b_path,label to TFRecords")
    conv.add_argument("--pairs", required=True, help="CSV of training pairs (or all pairs)")
    conv.add_argument("--output_dir", required=True)
    conv.add_argument("--eval_pairs", help="CSV of eval pairs (else --eval_fraction of --pairs)")
    conv.add_argument("--eval_fraction", type=float, default=0.1)
    conv.add_argument("--num_shards", type=int, default=4)
    conv.add_argument("--encoding", choices=("keep", "raw", "png", "jpeg"), default="keep")
    conv.add_argument("--image_size", type=int, help="resize to SIZE x SIZE (re-encodes)")
    conv.add_argument("--gzip", action="store_true")
    conv.add_argument("--seed", type=int, default=0, help="seed of the train/eval split")
    conv.add_argument("--num_workers", type=int, default=1, help="machines converting together")
    conv.add_argument("--worker_index", type=int, default=0, help="this machine's slice")
    conv.add_argument("--parallelism", type=int, default=0, help="threads (0: every core)")

    fin = sub.add_parser("finalize", help="write dataset.json from every worker's part")
    fin.add_argument("output_dir")

    disp = sub.add_parser("dispatcher", help="serve a tf.data service dispatcher until SIGTERM")
    disp.add_argument("--port", type=int, default=servers.DEFAULT_DISPATCHER_PORT)
    disp.add_argument("--work_dir", default="", help="journal folder (local or gs://)")
    disp.add_argument("--worker_timeout_ms", type=int, default=0, help="0: TensorFlow's")

    work = sub.add_parser("data_worker", help="serve a tf.data service worker until SIGTERM")
    work.add_argument("--dispatcher_address", required=True, help="HOST:PORT or grpc://...")
    work.add_argument("--port", type=int, default=servers.DEFAULT_WORKER_PORT)
    work.add_argument("--worker_address", default="", help="HOST:PORT trainers dial")

    ver = sub.add_parser("verify", help="read every record; report counts and the first bad one")
    ver.add_argument("data_dir")
    return parser


def _pairs(info) -> str:
    """A dataset's (or a part's) pairs in words: "40 training and 8 eval pairs (png)"."""
    train, held_out = info.counts.get("train", 0), info.counts.get("eval", 0)
    return f"{train:,} training and {held_out:,} eval pairs ({info.encoding})"


def _part_status(output_dir: str, index: int, count: int) -> str:
    import tensorflow as tf

    from trainer.data import schema

    if tf.io.gfile.exists(join(output_dir, schema.METADATA_FILE)):
        return f"worker {index} of {count}: every part is there; dataset.json written."
    return (
        f"worker {index} of {count}: part written; the last worker to finish writes "
        f"dataset.json (or run: python -m trainer.data finalize {output_dir})."
    )


def main(argv=None) -> int:
    """The data tools' exit status for ``argv`` (sys.argv's by default), under the one guard."""
    from trainer.common.guard import guarded

    return guarded(_main, argv, program="trainer-data")


def _synthetic(args) -> int:
    from trainer.data.write.synthetic import write_synthetic

    info = write_synthetic(
        args.output_dir,
        num_train=args.num_train,
        num_eval=args.num_eval,
        image_size=args.image_size,
        encoding=args.encoding,
        num_shards=args.num_shards,
        gzip=args.gzip,
        seed=args.seed,
    )
    print(f"wrote {_pairs(info)} to {args.output_dir}")
    return 0


def _convert(args) -> int:
    from trainer.data.write.convert import convert

    info = convert(
        args.pairs,
        args.output_dir,
        eval_pairs=args.eval_pairs,
        eval_fraction=args.eval_fraction,
        num_shards=args.num_shards,
        encoding=args.encoding,
        image_size=args.image_size,
        gzip=args.gzip,
        seed=args.seed,
        num_workers=args.num_workers,
        worker_index=args.worker_index,
        parallelism=args.parallelism,
    )
    print(f"wrote {_pairs(info)} to {args.output_dir}")
    if args.num_workers > 1:
        print(_part_status(args.output_dir, args.worker_index, args.num_workers))
    return 0


def _finalize(args) -> int:
    from trainer.data.write.slices import finalize

    info = finalize(args.output_dir)
    print(f"finalized {args.output_dir}: {_pairs(info)}")
    return 0


def _verify(args) -> int:
    from trainer.data.read.verify import verify_folder

    return verify_folder(args.data_dir, sys.stdout)


COMMANDS = {
    "synthetic": _synthetic,
    "convert": _convert,
    "finalize": _finalize,
    "dispatcher": servers.main,
    "data_worker": servers.main,
    "verify": _verify,
}


def _main(argv) -> int:
    from trainer.common import console

    args = _parser().parse_args(argv)
    console.plain_log_lines()
    console.load_tensorflow()  # every command needs it; a bad argument is answered first
    try:
        return COMMANDS[args.command](args)
    except (DataError, StorageError, ValueError, FileExistsError, FileNotFoundError) as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_USAGE


def run():
    """Console-script entry point (``trainer-data``)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
