"""The trainer's input work with and without the tf.data service, side by side.

For 128 px and 32 px JPEG pairs (the built-in synthetic set): the training stream exactly as
the trainer builds it - ``trainer.data.read.pipeline.train_dataset`` in the process (service
off), or
``trainer.data.service.client.train_stream`` fed by 1 or 2 data workers that ``launch local
--data_workers`` would start (real processes on loopback) - consumed batch after batch by this
process, which stands for the trainer process. The model step is left out on purpose: on this
CPU-only host it costs 100x the decode and would hide it, while on a GPU node it runs on the
GPU. Figures per round: pairs/s, this process's CPU per pair, the data workers' CPU per pair.

    python bench/data_service.py [--batches 150] [--rounds 2] [--sizes 128,32]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch.local.data_service import LocalService  # noqa: E402
from trainer.config import DataConfig  # noqa: E402
from trainer.data.read import pipeline  # noqa: E402
from trainer.data.read.source import open_source  # noqa: E402
from trainer.data.service import client as service  # noqa: E402
from trainer.data.write.synthetic import write_synthetic  # noqa: E402

BATCH = 64
TICKS = os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def proc_cpu(pid: int) -> float:
    """CPU seconds of another process (utime + stime from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def consume(ds, batches: int, workers=()) -> tuple[float, float, float]:
    """(pairs/s, this process's CPU us/pair, data workers' CPU us/pair) over ``batches``."""
    it = iter(ds)
    for _ in range(10):  # warm-up: tracing, connections, buffers
        next(it)
    wall, cpu = time.perf_counter(), own_cpu()
    theirs = sum(proc_cpu(p) for p in workers)
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - wall, own_cpu() - cpu
    theirs = sum(proc_cpu(p) for p in workers) - theirs
    pairs = batches * BATCH
    return pairs / wall, cpu / pairs * 1e6, theirs / pairs * 1e6


def measure(data: str, mode: int, batches: int, round_: int):
    source = open_source(data)
    config = DataConfig(seed=round_)
    if mode == 0:
        ds, _ = pipeline.train_dataset(source, config, batch_size=BATCH)
        return consume(ds, batches)
    svc = LocalService(mode, out=io.StringIO())
    svc.start()
    try:
        name = f"bench-{mode}-{round_}-{time.monotonic_ns()}"
        ds = service.train_stream(
            source,
            config,
            batch_size=BATCH,
            address=svc.address,
            name=name,
            examples_seen=0,
            start_step=0,
        )
        pids = [p.pid for n, p in svc.procs.items() if n.startswith("data worker")]
        return consume(ds, batches, pids)
    finally:
        svc.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=150)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sizes", default="128,32")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench-service-")
    print(f"cores: {os.cpu_count()}; batch {BATCH}; {args.batches} batches per measurement")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        data = os.path.join(work, f"jpeg{size}")
        write_synthetic(
            data, num_train=4096, num_eval=64, image_size=size, encoding="jpeg", num_shards=16
        )
        results = {0: [], 1: [], 2: []}
        for r in range(args.rounds):
            for mode in (0, 1, 2):  # interleaved: host drift hits every mode alike
                results[mode].append(measure(data, mode, args.batches, r))
        for mode, label in ((0, "service off"), (1, "1 data worker"), (2, "2 data workers")):
            med = np.median(np.array(results[mode]), axis=0)
            rows.append((size, label, med, results[mode]))
    print(
        f"{'px':>4} {'input':>15} {'pairs/s':>9} {'trainer CPU us/pair':>20} "
        f"{'data workers CPU us/pair':>25}  (median of rounds; each round: pairs/s)"
    )
    for size, label, med, each in rows:
        rounds = " ".join(f"{x[0]:,.0f}" for x in each)
        figures = f"{med[0]:>9,.0f} {med[1]:>20,.0f} {med[2]:>25,.0f}"
        print(f"{size:>4} {label:>15} {figures}  [{rounds}]")
    for size in sorted({r[0] for r in rows}, reverse=True):
        off = next(r[2] for r in rows if r[0] == size and r[1] == "service off")
        on = next(r[2] for r in rows if r[0] == size and r[1] == "2 data workers")
        print(
            f"{size} px: trainer CPU per pair with the service / without: {on[1] / off[1]:.2f}; "
            f"decode CPU per pair on the data workers: {on[2]:,.0f} us "
            f"= {1e6 / on[2]:,.0f} pairs/s per busy core"
        )


if __name__ == "__main__":
    main()
