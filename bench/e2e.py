"""The comparison a user makes: the trainer CLI beside plain Keras ``fit``, as separate
processes taking turns (round 1: every variant, round 2: every variant, ...).

Steady state only: the CLI's pairs/s between its progress lines at steps 50 and 250 (absl's
timestamps), so start-up, tracing, eval and export are left out; ``fit`` (same model, batch
and optimizer, numpy arrays in memory, a fresh process) is timed between the ends of the same
steps by a callback. The CLI reads a synthetic 32x32 raw-encoded TFRecord set, as a user's
run would; ``fit`` needs no input pipeline at all.

    python bench/e2e.py [--rounds 3] [--batch 64] [--variant NAME=FLAGS ...]

Variants default to the CLI as shipped and a few candidate settings; each ratio is the median
of the per-round ratios to ``fit``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

FIRST, LAST = 50, 250
LINE = re.compile(r"^I\d{4} (\d\d):(\d\d):(\d\d\.\d+) .* step (\d+)/\d+ loss")
DEFAULT_VARIANTS = {
    "cli": "",
    "cli intra2": "--intra_op_threads=2",
    "cli loop10": "--steps_per_loop=10",
}


def _seconds(h, m, s) -> float:
    return int(h) * 3600 + int(m) * 60 + float(s)


def cli_rate(data: str, batch: int, flags: str) -> float:
    """Pairs/s of a trainer process between its step-50 and step-250 progress lines."""
    with tempfile.TemporaryDirectory() as model_dir:
        r = subprocess.run(
            [sys.executable, "-m", "trainer", f"--data_dir={data}", f"--model_dir={model_dir}",
             f"--global_batch_size={batch}", f"--train_steps={LAST}", f"--log_every_steps={FIRST}",
             "--eval_every_steps=0", "--checkpoint_every_steps=100000", *flags.split()],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    times = {}
    for line in r.stderr.splitlines():
        m = LINE.match(line)
        if m:
            times[int(m.group(4))] = _seconds(*m.groups()[:3])
    return (LAST - FIRST) * batch / (times[LAST] - times[FIRST])


def fit_child(batch: int) -> None:
    """In a fresh process: Keras fit, timed between the ends of steps FIRST and LAST."""
    import keras
    import numpy as np

    from trainer.model import builders as model_lib

    model = model_lib.create_dual_input_network((32, 32), 3, 0.0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    n = batch * LAST
    x1, x2 = (rng.random((n, 32, 32, 3), dtype=np.float32) for _ in range(2))
    y = rng.integers(0, 2, n).astype(np.float32)
    marks = {}

    class Marks(keras.callbacks.Callback):
        def on_train_batch_end(self, index, logs=None):
            if index + 1 in (FIRST, LAST):
                marks[index + 1] = time.perf_counter()

    model.fit([x1, x2], y, batch_size=batch, epochs=1, verbose=0, shuffle=False,
              callbacks=[Marks()])  # fmt: skip
    print(json.dumps({"rate": (LAST - FIRST) * batch / (marks[LAST] - marks[FIRST])}))


def fit_rate(batch: int) -> float:
    r = subprocess.run(
        [sys.executable, __file__, "--fit_child", "--batch", str(batch)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])["rate"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--variant", action="append", default=[], help="NAME=TRAINER FLAGS")
    p.add_argument("--out", default="bench/out/e2e.json")
    p.add_argument("--fit_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.fit_child:
        return fit_child(args.batch)
    from bench.harness import dataset_dir, print_table, write_json

    variants = dict(v.split("=", 1) for v in args.variant) or DEFAULT_VARIANTS
    data = dataset_dir(32, "raw", 8192)
    samples = {name: [] for name in [*variants, "fit"]}
    for r in range(args.rounds):
        for name, flags in variants.items():
            samples[name].append(cli_rate(data, args.batch, flags))
        samples["fit"].append(fit_rate(args.batch))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in samples.items()))
    import numpy as np

    rows, ratios = [], {}
    for name in variants:
        per_round = np.array(samples[name]) / np.array(samples["fit"])
        ratios[name] = float(np.median(per_round))
        rows.append([name, variants[name] or "(as shipped)",
                     " ".join(f"{v:.0f}" for v in samples[name]),
                     " ".join(f"{v:.2f}" for v in per_round), f"{ratios[name]:.3f}"])  # fmt: skip
    rows.append(["fit", "Keras fit on numpy", " ".join(f"{v:.0f}" for v in samples["fit"]), "", ""])
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print_table(
        f"steady-state pairs/s, steps {FIRST}..{LAST}, batch {args.batch}, 32x32 float32, "
        f"separate processes, {args.rounds} interleaved rounds ({when})",
        ["variant", "flags", "pairs/s per round", "/ fit per round", "median ratio"],
        rows,
    )
    write_json(args.out, {"batch": args.batch, "samples": samples, "ratios": ratios})


if __name__ == "__main__":
    main()
