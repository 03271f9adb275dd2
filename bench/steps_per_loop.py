"""Steps per host round trip: the trainer's compiled loop at --steps_per_loop 1, 10 and 100
beside Keras ``fit`` with ``steps_per_execution`` 1 and 100, on the same model (32x32,
float32, one process, in-memory batches), at batch 2, 8 and 64.

Every variant takes its turn in every round; a ratio is the median over rounds of the ratio
within each round (the same machine conditions). The trainer's variants share one model and
one compiled loop (the step count is a tensor: one trace) and read the metrics back after
every loop, as the trainer does.

    python bench/steps_per_loop.py [--rounds 3] [--out bench/out/steps_per_loop.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.harness import (  # noqa: E402
    _strategy,
    build_model_and_optimizer,
    in_memory_dataset,
    keras_fit_runner,
    model_config,
    print_table,
    write_json,
)
from trainer.run import steps as steps_lib  # noqa: E402

LOOPS = (1, 10, 100)
STEPS = {2: 400, 8: 300, 64: 100}  # per variant and round: a few seconds each here


def measure(batch: int, rounds: int) -> dict:
    steps = STEPS[batch]
    strategy = _strategy()
    model, optimizer = build_model_and_optimizer(strategy, model_config(32, "float32"), 1e-3)
    loop = steps_lib.make_train_loop(
        strategy=strategy,
        model=model,
        optimizer=optimizer,
        global_batch=batch,
        plan="none",
        loss_scale=False,
    )
    it = iter(strategy.experimental_distribute_dataset(in_memory_dataset(32, batch)))
    stop = tf.constant(0.0)

    def run_loops(n: int) -> float:
        start = time.perf_counter()
        for _ in range(steps // n):
            out = loop(it, tf.constant(n), stop)
            out.sums.loss.numpy(), out.steps.numpy()  # the host reads the metrics once per loop
        return steps * batch / (time.perf_counter() - start)

    for n in LOOPS:  # warm-up: the trace, tf.data buffers, thread pools
        run_loops(n)
    fits = {f"fit spe {k}": keras_fit_runner(32, batch, "float32", steps, k) for k in (1, 100)}
    samples = {**{f"loop {n}": [] for n in LOOPS}, **{k: [] for k in fits}}
    for _ in range(rounds):
        for n in LOOPS:
            samples[f"loop {n}"].append(run_loops(n))
        for name, fit in fits.items():
            samples[name].append(fit())
    return {k: np.array(v) for k, v in samples.items()}


def ratio(samples: dict, a: str, b: str) -> float:
    return float(np.median(samples[a] / samples[b]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="bench/out/steps_per_loop.json")
    args = p.parse_args()
    rows, results = [], []
    for batch in STEPS:
        s = measure(batch, args.rounds)
        med = {k: float(np.median(v)) for k, v in s.items()}
        # host overhead per step: the time a step-per-loop run spends beyond a 100-step loop
        overhead_ms = 1000 * batch * (1 / med["loop 1"] - 1 / med["loop 100"])
        result = dict(
            batch=batch,
            pairs_per_s=med,
            loop100_over_loop1=ratio(s, "loop 100", "loop 1"),
            loop10_over_loop1=ratio(s, "loop 10", "loop 1"),
            loop1_over_fit1=ratio(s, "loop 1", "fit spe 1"),
            loop100_over_fit100=ratio(s, "loop 100", "fit spe 100"),
            host_overhead_ms_per_step=overhead_ms,
            rounds={k: v.tolist() for k, v in s.items()},
        )
        results.append(result)
        rows.append(
            [
                batch,
                *(f"{med[f'loop {n}']:,.0f}" for n in LOOPS),
                f"{med['fit spe 1']:,.0f}",
                f"{med['fit spe 100']:,.0f}",
                f"{result['loop100_over_loop1']:.3f}",
                f"{result['loop1_over_fit1']:.3f}",
                f"{result['loop100_over_fit100']:.3f}",
                f"{overhead_ms:.2f}",
            ]
        )
    print_table(
        f"pairs/s, 32x32 float32, one process, {args.rounds} rounds (medians; ratios: median "
        "of per-round ratios)",
        [
            "batch",
            *(f"loop {n}" for n in LOOPS),
            "fit spe 1",
            "fit spe 100",
            "loop100/loop1",
            "loop1/fit1",
            "loop100/fit100",
            "host ms/step",
        ],
        rows,
    )
    write_json(args.out, {"rounds": args.rounds, "results": results})


if __name__ == "__main__":
    main()
