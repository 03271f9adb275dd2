"""From SIGTERM to exit 75 with a saved checkpoint: the trainer's time, per setting, side by side.

Each row: a real trainer process on the built-in set, sent SIGTERM 3 s after its training loop
started, timed from the signal to its exit (which comes after the loop in flight and the
save). No log or checkpoint step cuts the loops here (both at the run's end). Settings: the
default loops (auto: 10 steps on CPU), 1,000-step loops, the longest loop (one loop to the
end of a 3,000-step run), and that one under a Spot budget (TRAINER_GRACE_SECONDS=15, which
cuts the loops).

    python bench/grace.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

SETTINGS = {
    "default loops (auto: 10)": ([], {}),
    "--steps_per_loop=1000": (["--steps_per_loop=1000"], {}),
    "one loop to the end (3,000 steps)": (["--steps_per_loop=3000"], {}),
    "one loop to the end + 15 s budget": (
        ["--steps_per_loop=3000"],
        {"TRAINER_GRACE_SECONDS": "15"},
    ),
}


def one(flags: list[str], env: dict, model_dir: str) -> tuple[float, int, str]:
    """(seconds from SIGTERM to exit, exit code, the stop line)."""
    argv = [sys.executable, "-m", "trainer", f"--model_dir={model_dir}", "--noexport",
            "--train_steps=3000", "--checkpoint_every_steps=3000",
            "--log_every_steps=3000", "--eval_every_steps=0", *flags]  # fmt: skip
    proc = subprocess.Popen(
        argv, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
        cwd=os.path.join(os.path.dirname(__file__), ".."),
    )  # fmt: skip
    for line in proc.stderr:
        if "training steps 0..3000" in line:
            break
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, err = proc.communicate()
    took = time.monotonic() - signalled
    stop = re.search(r"stopped by a signal at step \d+", err)
    return took, proc.returncode, stop.group(0) if stop else "(no stop line)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="", help="the settings whose name holds this")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="grace-")
    print(f"cores: {os.cpu_count()}; SIGTERM 3 s into training; {args.rounds} rounds each")
    print(f"{'setting':<40} {'SIGTERM -> exit (s), each round':<34} {'median':>7} exit")
    for k, (name, (flags, env)) in enumerate(SETTINGS.items()):
        if args.only not in name:
            continue
        rows = [one(flags, env, os.path.join(work, f"{k}-{r}")) for r in range(args.rounds)]
        each = " ".join(f"{t:.2f}" for t, _, _ in rows)
        codes = sorted({c for _, c, _ in rows})
        print(f"{name:<40} {each:<34} {np.median([t for t, _, _ in rows]):>7.2f} {codes}")


if __name__ == "__main__":
    main()
