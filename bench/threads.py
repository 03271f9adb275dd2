"""TensorFlow's thread pools on a small CPU host: the trainer CLI with each pool setting.

Each variant is a separate `python -m trainer` process (as a user runs it), the variants take
turns for several rounds, and the figure is the steady-state rate between two progress lines
(start-up, tracing, eval and export excluded) plus the process's user and system CPU time.
`--hog N` starts N busy loops pinned to each core for the whole run: a stand-in for a slow or
shared host (a noisy neighbour takes part of every core, as on the slow CI hosts).

python bench/threads.py [--rounds 3] [--steps 150] [--batch 64] [--hog 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench.harness import dataset_dir, median, print_table, steady_rate, write_json  # noqa: E402

# (label, trainer flags); intra 2 / inter 2 is TensorFlow's own default on 2 cores.
VARIANTS = {
    "intra 2, inter 2 (TF default)": ("--intra_op_threads=2", "--inter_op_threads=2"),
    "intra 1, inter 2 (auto)": ("--intra_op_threads=1", "--inter_op_threads=2"),
    "intra 2, inter 1": ("--intra_op_threads=2", "--inter_op_threads=1"),
    "intra 1, inter 1": ("--intra_op_threads=1", "--inter_op_threads=1"),
}


def start_hogs(per_core: int) -> list[subprocess.Popen]:
    hogs = []
    for core in sorted(os.sched_getaffinity(0)):
        for _ in range(per_core):
            code = f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass"
            hogs.append(subprocess.Popen([sys.executable, "-c", code]))
    return hogs


def run_trainer(data: str, flags: tuple, steps: int, batch: int, warmup: int) -> dict:
    model_dir = tempfile.mkdtemp(prefix="threads-")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            f"--data_dir={data}",
            f"--model_dir={model_dir}",
            f"--train_steps={steps}",
            f"--global_batch_size={batch}",
            f"--log_every_steps={warmup}",
            "--eval_every_steps=1000000",
            "--checkpoint_every_steps=1000000",
            *flags,
        ],
        capture_output=True,
        text=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(model_dir, ignore_errors=True)
    if r.returncode != 0:
        raise SystemExit(f"trainer failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return dict(
        rate=steady_rate(r.stderr, batch, warmup, steps),
        user=after.ru_utime - before.ru_utime,
        sys=after.ru_stime - before.ru_stime,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=50, help="steps before the timed span")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--hog", type=int, default=0, help="busy loops per core during the runs")
    p.add_argument("--out", default="bench/out/threads.json")
    args = p.parse_args()
    data = dataset_dir(args.size, "png", 8192)
    runs = {name: [] for name in VARIANTS}
    hogs = start_hogs(args.hog)
    try:
        for rnd in range(args.rounds):
            for name, flags in VARIANTS.items():
                out = run_trainer(data, flags, args.steps, args.batch, args.warmup)
                runs[name].append(out)
                print(f"round {rnd}: {name}: {out['rate']:.0f} pairs/s", file=sys.stderr)
    finally:
        for h in hogs:
            h.kill()
    base = next(iter(VARIANTS))
    rows = []
    for name, rs in runs.items():
        rates = [r["rate"] for r in rs]
        ratio = median([r["rate"] / b["rate"] for r, b in zip(rs, runs[base])])
        spread = (max(rates) - min(rates)) / 2 / median(rates)
        cpu = [r["user"] + r["sys"] for r in rs]
        rows.append(
            [
                name,
                f"{median(rates):,.0f}",
                f"{ratio:.2f}",
                f"{median([r['user'] for r in rs]):.1f}",
                f"{median([r['sys'] for r in rs]):.1f}",
                f"{median([r['sys'] / c for r, c in zip(rs, cpu)]):.0%}",
                f"±{spread:.0%}",
            ]
        )
    print_table(
        f"Trainer CLI, {args.size}x{args.size} batch {args.batch}, steps "
        f"{args.warmup}..{args.steps}, {args.rounds} rounds, {args.hog} busy loop(s) per core",
        ["pools", "pairs/s", "/ TF default", "user s", "sys s", "sys share", "noise"],
        rows,
    )
    write_json(args.out, dict(args=vars(args), runs=runs))


if __name__ == "__main__":
    main()
