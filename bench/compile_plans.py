"""What XLA compiles of a training step (trainer.runtime.strategy.compile_plan), side by side:
``none``, ``forward_backward`` (today's split: forward/backward in XLA, update outside) and
``whole_step`` (forward, backward and optimizer update in one XLA cluster; what the trainer
picks for one GPU replica). One process, one model per plan, in-memory batches, the plans
taking turns for several rounds; ratios are medians of per-round ratios.

On this project's CPU hosts it shows what XLA costs there (the trainer leaves it off on CPU);
bench/gpu.sh runs it on a GPU machine that has TensorFlow.

    python bench/compile_plans.py [--batch 64] [--size 32] [--steps 20] [--rounds 3]
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
    model_config,
    print_table,
    write_json,
)
from trainer.run import steps as steps_lib  # noqa: E402
from trainer.runtime.strategy import COMPILE_PLANS, compile_plan  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="steps per plan and round")
    p.add_argument("--steps_per_loop", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", default="float32")
    p.add_argument("--out", default="bench/out/compile_plans.json")
    args = p.parse_args()
    gpus = len(tf.config.list_physical_devices("GPU"))
    strategy = _strategy()
    runs = {plan: _loop_and_input(strategy, plan, args) for plan in COMPILE_PLANS}
    stop, n = tf.constant(0.0), tf.constant(args.steps_per_loop)

    def rate(plan: str) -> float:
        loop, it = runs[plan]
        start = time.perf_counter()
        for _ in range(max(1, args.steps // args.steps_per_loop)):
            loop(it, n, stop).sums.loss.numpy()
        steps = max(1, args.steps // args.steps_per_loop) * args.steps_per_loop
        return steps * args.batch / (time.perf_counter() - start)

    for plan in COMPILE_PLANS:
        rate(plan)  # trace, compile, warm up
    samples = {plan: [] for plan in COMPILE_PLANS}
    for _ in range(args.rounds):
        for plan in COMPILE_PLANS:
            samples[plan].append(rate(plan))
    s = {k: np.array(v) for k, v in samples.items()}
    med = {k: float(np.median(v)) for k, v in s.items()}
    whole_vs_split = float(np.median(s["whole_step"] / s["forward_backward"]))
    whole_vs_none = float(np.median(s["whole_step"] / s["none"]))
    chosen = compile_plan(True, gpus, strategy.num_replicas_in_sync)
    print_table(
        f"compile plans, {args.size}x{args.size} {args.precision}, batch {args.batch}, "
        f"{gpus} GPUs (--jit_compile=true picks {chosen!r} here), pairs/s, {args.rounds} rounds",
        ["none", "forward_backward", "whole_step", "whole/forward_backward", "whole/none"],
        [
            [
                *(f"{med[p]:,.0f}" for p in COMPILE_PLANS),
                f"{whole_vs_split:.3f}",
                f"{whole_vs_none:.3f}",
            ]
        ],  # fmt: skip
    )
    write_json(args.out, {"args": vars(args), "gpus": gpus, "samples": samples})


def _loop_and_input(strategy, plan: str, args):
    """A fresh model's compiled train loop under ``plan`` and an iterator over in-memory pairs."""
    model, optimizer = build_model_and_optimizer(
        strategy, model_config(args.size, args.precision), 1e-3
    )
    loop = steps_lib.make_train_loop(
        strategy=strategy,
        model=model,
        optimizer=optimizer,
        global_batch=args.batch,
        plan=plan,
        loss_scale=args.precision == "mixed_float16",
    )
    ds = in_memory_dataset(args.size, args.batch)
    return loop, iter(strategy.experimental_distribute_dataset(ds))


if __name__ == "__main__":
    main()
