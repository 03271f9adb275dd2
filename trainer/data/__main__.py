"""The data tools' command line: ``python -m trainer.data COMMAND`` (synthetic, convert, finalize,
verify, dispatcher, data_worker).

Thin: parses arguments, calls the module that does the work, turns user errors into one
sentence and exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from trainer.common.cli import DefaultsShown
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
    # the choices as the metavar: a missing command is then named by what it may be
    names = "{synthetic,convert,finalize,verify,dispatcher,data_worker}"
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar=names)

    def command(name: str, about: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=about, description=about, formatter_class=DefaultsShown)

    _synthetic_arguments(command("synthetic", "write the built-in learnable pair set"))
    _convert_arguments(command("convert", "CSV of image_a_path,image_b_path,label to TFRecords"))
    fin = command("finalize", "write dataset.json from every worker's part")
    fin.add_argument("output_dir", help="the dataset folder the workers converted into")
    ver = command("verify", "read every record; report counts and the first bad one")
    ver.add_argument("data_dir", help="a dataset folder or file pattern (local or gs://)")
    _service_arguments(
        command("dispatcher", "serve a tf.data service dispatcher until SIGTERM"),
        command("data_worker", "serve a tf.data service worker until SIGTERM"),
    )
    return parser


def _synthetic_arguments(syn) -> None:
    syn.add_argument("--output_dir", required=True, help="the dataset folder (local or gs://)")
    syn.add_argument("--num_train", type=int, default=16384, help="training pairs")
    syn.add_argument("--num_eval", type=int, default=1024, help="eval pairs")
    syn.add_argument("--image_size", type=int, default=32, help="SIZE x SIZE pixels")
    syn.add_argument(
        "--encoding", choices=("raw", "png", "jpeg"), default="raw", help="how images are stored"
    )
    syn.add_argument("--num_shards", type=int, default=4, help="files per split")
    syn.add_argument("--gzip", action="store_true", help="GZIP-compressed files")
    syn.add_argument("--seed", type=int, default=0, help="the pairs' random seed")


def _convert_arguments(conv) -> None:
    conv.add_argument("--pairs", required=True, help="CSV of training pairs (or all pairs)")
    conv.add_argument("--output_dir", required=True, help="the dataset folder (local or gs://)")
    conv.add_argument("--eval_pairs", help="CSV of eval pairs (else --eval_fraction of --pairs)")
    conv.add_argument("--eval_fraction", type=float, default=0.1, help="pairs held out for eval")
    conv.add_argument("--num_shards", type=int, default=4, help="files per split")
    conv.add_argument(
        "--encoding",
        choices=("keep", "raw", "png", "jpeg"),
        default="keep",
        help="how images are stored (keep: the files' own bytes)",
    )
    conv.add_argument("--image_size", type=int, help="resize to SIZE x SIZE (re-encodes)")
    conv.add_argument("--gzip", action="store_true", help="GZIP-compressed files")
    conv.add_argument("--seed", type=int, default=0, help="seed of the train/eval split")
    conv.add_argument("--num_workers", type=int, default=1, help="machines converting together")
    conv.add_argument("--worker_index", type=int, default=0, help="this machine's slice")
    conv.add_argument("--parallelism", type=int, default=0, help="threads (0: every core)")


def _service_arguments(disp, work) -> None:
    disp.add_argument(
        "--port", type=int, default=servers.DEFAULT_DISPATCHER_PORT, help="port to serve on"
    )
    disp.add_argument("--work_dir", default="", help="journal folder (local or gs://)")
    disp.add_argument("--worker_timeout_ms", type=int, default=0, help="0: TensorFlow's")
    work.add_argument("--dispatcher_address", required=True, help="HOST:PORT or grpc://...")
    work.add_argument(
        "--port", type=int, default=servers.DEFAULT_WORKER_PORT, help="port to serve on"
    )
    work.add_argument("--worker_address", default="", help="HOST:PORT trainers dial")


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
    from trainer.runtime import storage

    args = _parser().parse_args(argv)
    console.plain_log_lines()
    storage.bound_tool_retries()
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
