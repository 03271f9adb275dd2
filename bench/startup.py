"""CPU-seconds of one short trainer process, for two source trees side by side.

A trainer process spends most of a short run starting: importing TensorFlow, building the
model, tracing the compiled loop and the eval step. This bench runs the same 8-step training
(built-in synthetic set, one eval, no export) from each tree in turn, ``--rounds`` times
alternating, in fresh processes, and prints the CPU time (user + sys) each took: the import
alone (through the tree's own ``trainer.common.console.load_tensorflow`` where it has one, as
its CLIs import it), and the whole process.

    git worktree add /tmp/before <commit>
    python bench/startup.py /tmp/before .       # each tree's trainer package is imported
    python bench/startup.py . --variants optimizer=adam optimizer=sgd

``--variants`` adds trainer flags (written without their dashes, several in one quoted
variant: "optimizer=adam grad_accum_steps=4"): each tree runs each variant in turn, every
round.

It measures CPU time (not wall time), so a busy neighbour changes it little.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.children import in_rounds, medians, print_markdown, run_child, trees_parser  # noqa: E402

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[2])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
start = cpu()
try:  # the tree's own way in (trainer.common.console), where it has one
    from trainer.common.console import load_tensorflow
    load_tensorflow()
except ImportError:
    pass
import tensorflow, keras
imported = cpu() - start
sys.argv = ["trainer", "--train_steps=8", f"--model_dir={sys.argv[1]}/m", "--noexport",
            "--log_every_steps=4", *sys.argv[3:]]
from trainer.__main__ import run
try:
    run()
except SystemExit as e:
    assert not e.code, e.code
print("RESULT " + json.dumps({"import": imported, "total": cpu() - start}))
"""


def one_run(tree: str, flags: str = "") -> dict:
    extra = [f"--{flag}" for flag in flags.split()]
    return run_child(CHILD, os.path.abspath(tree), *extra, what=f"the trainer of {tree}")


def main():
    p = trees_parser(__doc__)
    p.add_argument("--variants", nargs="+", default=[""], help="extra trainer flags without dashes")
    args = p.parse_args()
    cases = [(tree, flags) for tree in args.trees for flags in args.variants]
    runs = in_rounds(cases, one_run, args.rounds)
    rows = []
    for (tree, flags), found in runs.items():
        m = medians(found)
        after = m["total"] - m["import"]
        rows.append([tree, flags, f"{m['import']:.2f}", f"{m['total']:.2f}", f"{after:.2f}"])
    header = ["tree", "flags", "import CPU s (median)", "process CPU s (median)", "after import"]
    print_markdown(header, rows)


if __name__ == "__main__":
    main()
