"""Reading, training and checkpointing on gs:// against local disk (loopback figures).

Runs TensorFlow's own GCS client against fake-gcs-server inside the tests' private network
namespace (tests/gcs_sandbox.py), so the figures measure the client's own cost (requests,
TLS, copies) over loopback: no network latency or bandwidth limit. On real Cloud Storage each
request also waits ~10-50 ms for its first byte, which reading many files at once hides.

In one process per setting of TensorFlow's GCS read variables (read once at import), side
by side, several rounds, medians of per-round ratios:
  (a) the input pipeline alone, pairs/s, gs:// vs local, at interleave widths (files read
      at once) 1, 8, 16 and TFRecord read buffers of 256 KiB (TF's default), 1 MiB (the
      reader's), 8 MiB;
  (b) the trainer's compiled step fed from gs:// vs local, pairs/s;
  (c) seconds per checkpoint save (the 32x32 model with its Adam slots), gs:// vs local.

    python bench/gcs.py [--rounds 5] [--out bench/out/gcs.json]
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

CASES = [(32, "png", 8192), (128, "jpeg", 2048)]
WIDTHS = (1, 8, 16)
BUFFERS = {"256KiB": 256 << 10, "1MiB": 1 << 20, "8MiB": 8 << 20}
# TensorFlow's GCS read settings tried (each in its own process: read once at import).
ENVS = {
    "defaults": {},
    "block cache 16 MiB x 8": {
        "GCS_READ_CACHE_BLOCK_SIZE_MB": "16",
        "GCS_READ_CACHE_MAX_SIZE_MB": "128",
    },
}


def _inner(args):
    """Inside the namespace: the measurements, printed as one JSON line."""
    spec = json.loads(args.inner)
    out = {"pipeline": _pipeline_rates(spec["cases"], args), "train": {}, "save": {}}
    if spec["train"]:
        out["train"], out["save"] = _train_and_save(spec, args)
    print("RESULT " + json.dumps(out))


def _pipeline_rates(cases: dict, args) -> dict:
    """(a): the input pipeline's pairs/s from gs:// and local disk, per width and buffer."""
    import numpy as np
    import tensorflow as tf

    from bench.harness import pipeline_rate
    from trainer.config import DataConfig
    from trainer.data.read import pipeline
    from trainer.data.read.source import open_source

    out, batch, default_records = {}, 64, pipeline._plain_records
    for case, paths in cases.items():
        for width in WIDTHS:
            for buf_name, buf in BUFFERS.items():
                pipeline._plain_records = lambda c, b=buf: (
                    lambda p: tf.data.TFRecordDataset(p, compression_type=c, buffer_size=b)
                )
                rates = {k: [] for k in paths}
                for _ in range(args.rounds):
                    for where, path in paths.items():
                        ds, _ = pipeline.train_dataset(
                            open_source(path), DataConfig(cycle_length=width), batch_size=batch
                        )
                        rates[where].append(pipeline_rate(ds, batch, args.batches))
                out[f"{case} width {width} buffer {buf_name}"] = {
                    "local": float(np.median(rates["local"])),
                    "gs": float(np.median(rates["gs"])),
                    "ratio": float(np.median(np.array(rates["gs"]) / np.array(rates["local"]))),
                }
        pipeline._plain_records = default_records
    return out


def _train_and_save(spec: dict, args) -> tuple[dict, dict]:
    """(b) the trainer's step fed from each, and (c) seconds per checkpoint save on each."""
    import numpy as np
    import tensorflow as tf

    from bench.harness import model_config, paired_ratio, trainer_rates
    from trainer.config import DataConfig
    from trainer.data.read import pipeline
    from trainer.data.read.source import open_source
    from trainer.run.programs import build_model_and_optimizer

    size = 32
    datasets = {
        k: pipeline.train_dataset(open_source(p), DataConfig(), batch_size=64)[0]
        for k, p in spec["cases"][f"{size} png"].items()
    }
    rates = trainer_rates(datasets, size, 64, "float32", False, 25, rounds=args.rounds)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    model, optimizer = build_model_and_optimizer(strategy, model_config(size, "float32"), 1e-3)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    managers = {
        k: tf.train.CheckpointManager(ckpt, d, max_to_keep=2)
        for k, d in spec["checkpoints"].items()
    }
    seconds = {k: [] for k in managers}
    for _ in range(args.rounds):
        for k, m in managers.items():
            start = time.perf_counter()
            m.save()
            seconds[k].append(time.perf_counter() - start)
    save = {k: float(np.median(v)) for k, v in seconds.items()}
    save["bytes"] = sum(
        tf.io.gfile.stat(f).length
        for f in tf.io.gfile.glob(managers["local"].latest_checkpoint + "*")
    )
    return {**rates, "ratio": paired_ratio("gs", "local")}, save


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=40, help="timed batches of 64 per round")
    p.add_argument("--out", default=os.path.join(ROOT, "bench/out/gcs.json"))
    p.add_argument("--inner", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        return _inner(args)

    from bench.harness import write_json

    sandbox = _sandbox_class()()
    local_root = tempfile.mkdtemp(prefix="bench-gcs-")
    try:
        sandbox.client.create_bucket("data")
        sandbox.client.create_bucket("models")
        cases = _write_sets(sandbox, local_root)
        results = {
            env_name: _measure_in_namespace(
                sandbox=sandbox,
                name=env_name,
                env=env,
                spec={
                    "cases": cases,
                    "train": i == 0,
                    "checkpoints": {"local": f"{local_root}/ckpt", "gs": "gs://models/ckpt"},
                },
                args=args,
            )
            for i, (env_name, env) in enumerate(ENVS.items())
        }
    finally:
        sandbox.close()
        subprocess.run(["rm", "-rf", local_root])
    _print_results(results)
    write_json(args.out, results)


def _sandbox_class():
    """The storage namespace of the tests (tests/gcs_sandbox.py), loaded by its path, so bench
    depends on that one file, not on the tests package (which imports no bench)."""
    spec = importlib.util.spec_from_file_location(
        "gcs_sandbox", os.path.join(ROOT, "tests", "gcs_sandbox.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Sandbox


def _write_sets(sandbox, local_root: str) -> dict:
    """Each case's synthetic set, written locally and to gs://data: {case: {where: path}}."""
    cases = {}
    for size, encoding, n in CASES:
        paths = {"local": f"{local_root}/{size}-{encoding}", "gs": f"gs://data/{size}-{encoding}"}
        for path in paths.values():
            r = sandbox.run(
                [sys.executable, "-m", "trainer.data", "synthetic", "--output_dir", path,
                 "--num_train", str(n), "--num_eval", "0", "--image_size", str(size),
                 "--encoding", encoding, "--num_shards", "8"]
            )  # fmt: skip
            if r.returncode:
                sys.exit(r.stderr[-2000:])
        cases[f"{size} {encoding}"] = paths
    return cases


def _measure_in_namespace(*, sandbox, name: str, env: dict, spec: dict, args) -> dict:
    """This script's _inner in a process of its own in the namespace, under ``env``."""
    print(f"measuring with GCS settings: {name} ...", flush=True)
    r = sandbox.run(
        [sys.executable, os.path.abspath(__file__), "--rounds", str(args.rounds),
         "--batches", str(args.batches), "--inner", json.dumps(spec)],
        env={**env, "PYTHONPATH": ROOT}, cwd=ROOT,
    )  # fmt: skip
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode or not line:
        sys.exit(r.stderr[-3000:])
    return json.loads(line[0][len("RESULT ") :])


def _print_results(results: dict) -> None:
    from bench.harness import print_table

    rows = []
    for env_name, res in results.items():
        for key, v in res["pipeline"].items():
            rows.append([env_name, key, f"{v['local']:.0f}", f"{v['gs']:.0f}", f"{v['ratio']:.2f}"])
    print_table(
        "(a) input pipeline alone, pairs/s (loopback; medians; gs/local: median per-round ratio)",
        ["GCS settings", "case", "local", "gs://", "gs/local"],
        rows,
    )
    t, s = results["defaults"]["train"], results["defaults"]["save"]
    print_table(
        "(b) trainer step fed from each, 32x32 PNG, batch 64, pairs/s",
        ["local", "gs://", "gs/local (paired)"],
        [[f"{t['local']:.0f}", f"{t['gs']:.0f}", f"{t['ratio']:.3f}"]],
    )
    print_table(
        f"(c) checkpoint save, 32x32 model + Adam slots ({s['bytes'] / 1e6:.1f} MB), seconds",
        ["local", "gs://", "gs/local"],
        [[f"{s['local']:.3f}", f"{s['gs']:.3f}", f"{s['gs'] / s['local']:.1f}"]],
    )


if __name__ == "__main__":
    main()
