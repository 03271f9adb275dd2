"""glibc's malloc thresholds during training: as TensorFlow pins them (128 KiB, every larger
tensor a fresh mmap) against as trainer.runtime.memory unpins them (32 MiB / 64 MiB).

Each variant is a separate `python -m trainer` process on the same synthetic set; the variants
take turns for several rounds. "pinned" is the trainer with its unpinning call made a no-op
(nothing else differs). Per process: the steady rate between two progress lines, user and
system CPU, minor page faults and peak resident memory (os.wait4's rusage of that child).

python bench/malloc.py [--rounds 2] [--steps 200] [--batch 64] [--size 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench.harness import dataset_dir, median, print_table, steady_rate  # noqa: E402

RUN = "import runpy, sys; sys.argv = ['trainer', *sys.argv[1:]]; "
VARIANTS = {
    "unpinned (now)": RUN + "runpy.run_module('trainer', run_name='__main__')",
    "pinned (TensorFlow's call)": RUN
    + "import trainer.runtime.memory as m; m.unpin_malloc_thresholds = lambda: False; "
    + "runpy.run_module('trainer', run_name='__main__')",
}


def run_trainer(code: str, args) -> dict:
    model_dir = tempfile.mkdtemp(prefix="malloc-")
    flags = [
        f"--data_dir={dataset_dir(args.size, 'png', 8192)}",
        f"--model_dir={model_dir}",
        f"--train_steps={args.steps}",
        f"--global_batch_size={args.batch}",
        f"--log_every_steps={args.warmup}",
        "--eval_every_steps=0",
        "--noexport",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    shutil.rmtree(model_dir, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"trainer failed ({proc.returncode}):\n{err[-2000:]}")
    return dict(
        rate=steady_rate(err, args.batch, args.warmup, args.steps),
        user=usage.ru_utime,
        sys=usage.ru_stime,
        faults=usage.ru_minflt,
        rss=usage.ru_maxrss / 1024,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=50, help="steps before the timed span")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=16)
    args = p.parse_args()
    runs = {name: [] for name in VARIANTS}
    for rnd in range(args.rounds):
        for name, code in VARIANTS.items():
            runs[name].append(run_trainer(code, args))
            print(f"round {rnd}: {name}: {runs[name][-1]['rate']:.0f} pairs/s", file=sys.stderr)
    base = runs["pinned (TensorFlow's call)"]
    rows = [
        [
            name,
            " ".join(f"{r['rate']:.0f}" for r in rs),
            f"{median([r['rate'] / b['rate'] for r, b in zip(rs, base)]):.2f}",
            f"{median([r['user'] for r in rs]):.1f}",
            f"{median([r['sys'] for r in rs]):.1f}",
            f"{median([r['faults'] for r in rs]) / 1e6:.2f}",
            f"{median([r['rss'] for r in rs]):.0f}",
        ]
        for name, rs in runs.items()
    ]
    print_table(
        f"Trainer CLI, {args.size}x{args.size} batch {args.batch}, steps {args.warmup}.."
        f"{args.steps}, {args.rounds} rounds",
        ["malloc", "pairs/s (rounds)", "/ pinned", "user s", "sys s", "faults (M)", "peak MB"],
        rows,
    )


if __name__ == "__main__":
    main()
