"""The test suite's CPU-seconds and wall time, two source trees side by side (issue 22's target).

Each round runs, one after another, the README's pytest command in the BEFORE tree and in the
AFTER tree; with ``--scope`` also the AFTER tree's suite without the tests that later issues
added (bench/suite_later_tests.txt, deselected through bench/deselect.py), which is the suite
the target was set on. CPU-seconds are user + sys of the pytest process and every process it
waited for (as ``/usr/bin/time`` counts them); each tree runs with its own ``.venv``.

    git clone -q . /tmp/before && git -C /tmp/before checkout -q c78bf40
    (cd /tmp/before && python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]')
    python bench/suite.py /tmp/before . --rounds 2 --scope

The host drifts by 10-20% in an hour here, so each AFTER figure is read against the BEFORE
run of its own round, never against another hour's.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.children import print_markdown, trees_parser  # noqa: E402

LATER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "suite_later_tests.txt")
COMMAND = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_suite(tree: str, scope: bool) -> dict:
    """One run of the suite in ``tree``: its CPU-seconds, wall seconds and pytest's last line."""
    tree = os.path.abspath(tree)
    python = os.path.join(tree, ".venv", "bin", "python")
    if not os.path.exists(python):
        sys.exit(f"{tree} has no .venv: make one there first (see this script's docstring).")
    env = dict(os.environ)
    extra = []
    if scope:
        env["SUITE_DESELECT"] = LATER
        # xdist's workers import the plugin too: the tree's root on their path.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
        extra = ["-p", "bench.deselect"]
    cpu, wall = _children_cpu(), time.monotonic()
    r = subprocess.run(
        [python, *COMMAND, *extra], cwd=tree, env=env, capture_output=True, text=True
    )
    cpu, wall = _children_cpu() - cpu, time.monotonic() - wall
    last = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
    return {"cpu": cpu, "wall": wall, "said": last.strip("= ")}


def main():
    p = trees_parser(__doc__)
    p.add_argument("--scope", action="store_true", help="also AFTER without later issues' tests")
    args = p.parse_args()
    if len(args.trees) != 2:
        sys.exit("give two trees: BEFORE and AFTER.")
    before, after = args.trees
    runs = [("before", before, False), ("after", after, False)]
    if args.scope:
        runs.append(("after, same tests", after, True))
    rows = []
    for i in range(args.rounds):
        found = {}
        for name, tree, scope in runs:
            found[name] = run_suite(tree, scope)
            print(f"round {i + 1}: {name}: {found[name]}", file=sys.stderr)
        for name, _, _ in runs:
            f = found[name]
            ratio = f["cpu"] / found["before"]["cpu"]
            rows.append(
                [str(i + 1), name, f["said"], f"{f['cpu']:.1f}", f"{f['wall']:.0f}", f"{ratio:.3f}"]
            )
    header = ["round", "suite", "pytest said", "CPU-seconds", "wall s", "/ before"]
    print_markdown(header, rows)


if __name__ == "__main__":
    main()
