"""The SavedModel export's CPU-seconds and size, for two source trees side by side.

Each round, in a fresh process per tree and image size: the tree's model built with fresh
weights (its trainer.run.programs.build_model), then its
trainer.model.export.export_saved_model timed (user + sys CPU of that call alone) and the
folder it wrote measured. Rounds alternate the trees; the table gives medians.

    git worktree add /tmp/before <commit>
    python bench/export.py /tmp/before . [--sizes 16 32] [--rounds 3]

It measures CPU time (not wall time), so a busy neighbour changes it little.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.children import in_rounds, medians, print_markdown, run_child, trees_parser  # noqa: E402

CHILD = r"""
import json, os, resource, sys
sys.path.insert(0, sys.argv[2])
from trainer.common.console import load_tensorflow
load_tensorflow()
from trainer.config import ModelConfig
from trainer.model.export import export_saved_model
from trainer.run.programs import build_model
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
size, out = int(sys.argv[3]), sys.argv[1] + "/export"
config = ModelConfig(image_size=(size, size), channels=3)
model = build_model(config)
start = cpu()
export_saved_model(model, config, out, build_model)
seconds = cpu() - start
written = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
print("RESULT " + json.dumps({"cpu": seconds, "mb": written / 1e6}))
"""


def one_export(tree: str, size: int) -> dict:
    return run_child(CHILD, os.path.abspath(tree), str(size), what=f"the export of {tree}")


def main():
    p = trees_parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32], help="image sides")
    args = p.parse_args()
    cases = [(tree, size) for size in args.sizes for tree in args.trees]
    runs = in_rounds(cases, one_export, args.rounds)
    rows = []
    for (tree, size), found in runs.items():
        m = medians(found)
        rows.append([tree, f"{size}x{size}", f"{m['cpu']:.2f}", f"{m['mb']:.2f}"])
    print_markdown(["tree", "image", "export CPU s (median)", "SavedModel MB"], rows)


if __name__ == "__main__":
    main()
