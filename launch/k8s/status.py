"""``launch k8s status --name N``: one screen on how far a run got.

From the cluster (kubectl JSON): the run's state and each worker's pod phase and restarts.
From its model_dir on Cloud Storage (google-cloud-storage; the model_dir is read from the
run's own container arguments): the newest checkpoint's step and time, and the last eval
(``<model_dir>/eval/last.json``, written by the trainer's chief). Pure functions turn the
JSON into lines; only ``gather`` talks to kubectl and Cloud Storage.
"""

from __future__ import annotations

import datetime
import json

from launch.k8s import kubectl
from trainer.common.errors import first_line

INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


def model_dir_of(run: dict) -> str | None:
    """The --model_dir the run's containers were given (a Job or a JobSet object)."""
    spec = run.get("spec") or {}
    if run.get("kind") == "JobSet":
        spec = spec["replicatedJobs"][0]["template"]["spec"]
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    for arg in containers[0].get("args", []):
        if arg.startswith("--model_dir="):
            return arg[len("--model_dir=") :].replace("$$", "$")  # undo escape_expansion
    return None


def worker_count(run: dict) -> int:
    """How many workers a Job or JobSet object runs."""
    spec = run.get("spec") or {}
    if run.get("kind") == "JobSet":
        spec = spec["replicatedJobs"][0]["template"]["spec"]
    return spec.get("completions") or 1


def replace_line(run: dict, name: str, workers: int, model_dir: str) -> str:
    """What ``submit --replace`` does to the run it replaces, in one line."""
    before, old_dir = worker_count(run), model_dir_of(run)
    if old_dir is None:
        return (
            f"replacing {name}, whose arguments name no --model_dir: the new run writes to "
            f"{model_dir}."
        )
    if old_dir != model_dir:
        return (
            f"replacing {name}: the new run writes to {model_dir}; the replaced run's "
            f"{old_dir} is left as it is."
        )
    size = f"{workers} worker{'s' * (workers != 1)}"
    size += f" (it had {before})" if before != workers else ""
    return (
        f"replacing {name}: the new run goes on in {model_dir} on {size}, from its newest "
        "checkpoint's step, optimizer and pairs seen (README: Changing the size of a run)."
    )


def workers(pods: dict, count: int) -> list[str]:
    """One line per worker index: the newest pod's phase and how often the worker restarted
    (earlier pods of that index, plus container restarts)."""
    by_index: dict[int, list] = {}
    for pod in pods.get("items", []):
        labels = pod["metadata"].get("labels", {})
        if INDEX_LABEL in labels:
            by_index.setdefault(int(labels[INDEX_LABEL]), []).append(pod)
    lines = []
    for i in range(count):
        mine = sorted(by_index.get(i, []), key=lambda p: p["metadata"].get("creationTimestamp", ""))
        if not mine:
            lines.append(f"  worker {i}: no pod")
            continue
        newest = mine[-1]
        restarts = (
            len(mine)
            - 1
            + sum(
                c.get("restartCount", 0)
                for p in mine
                for c in (p.get("status") or {}).get("containerStatuses", [])
            )
        )
        phase = (newest.get("status") or {}).get("phase", "Unknown")
        lines.append(
            f"  worker {i}: {phase:<9} restarts {restarts}  pod {newest['metadata']['name']}"
        )
    return lines


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "time unknown"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _figures(metrics: dict) -> str:
    """accuracy, auc and loss to 4 places; "n/a" for one the eval could not give (an AUC of
    an eval split with one class is stored as null)."""
    shown = []
    for key in ("accuracy", "auc", "loss"):
        value = metrics.get(key)
        shown.append(f"{key} {value:.4f}" if isinstance(value, int | float) else f"{key} n/a")
    return " ".join(shown)


def screen(name: str, controller: str, run: dict, pods: dict, storage: dict, logs: str) -> str:
    """The whole status screen as text. ``storage``: {"model_dir", "checkpoint": (step, time)
    or None, "eval": dict or None, "best": dict or None, "error": str or None}."""
    lines = [f"{controller} {name}: {kubectl.job_state(run)}", "workers:"]
    lines += workers(pods, worker_count(run))
    lines.append(f"model_dir: {storage.get('model_dir') or 'unknown'}")
    if storage.get("error"):
        lines.append(f"  Cloud Storage: {storage['error']}")
    else:
        ckpt = storage.get("checkpoint")
        lines.append(
            f"  latest checkpoint: step {ckpt[0]} at {_when(ckpt[1])}" if ckpt else
            "  latest checkpoint: none yet"
        )  # fmt: skip
        ev = storage.get("eval")
        if ev:
            lines.append(
                f"  last eval: step {ev['step']} {_figures(ev)} at {_when(ev.get('time'))}"
            )
        else:
            lines.append("  last eval: none yet")
        best = storage.get("best")
        if best:
            m = best["metrics"]
            lines.append(
                f"  best model: step {best['step']} by {best['metric']} ({_figures(m)}) in "
                "export_best/"
            )
    lines.append(f"logs: {logs}")
    return "\n".join(lines) + "\n"


def read_storage(client, model_dir: str) -> dict:
    """Newest checkpoint (step, time), the last eval and the best model's record
    (trainer/run/best.py) from ``model_dir`` (gs://)."""
    from google.api_core import exceptions as gexc

    from launch.preflight import checkpoint_step, split_gs

    out = {"model_dir": model_dir, "checkpoint": None, "eval": None, "best": None, "error": None}
    try:
        bucket_name, prefix = split_gs(model_dir)
        bucket = client.bucket(bucket_name)
        try:
            state = bucket.blob(f"{prefix}/checkpoints/checkpoint".lstrip("/")).download_as_text()
        except gexc.NotFound:
            state = ""
        step = checkpoint_step(state)
        if step is not None:
            index = bucket.get_blob(f"{prefix}/checkpoints/ckpt-{step}.index".lstrip("/"))
            out["checkpoint"] = (step, index.updated.timestamp() if index is not None else None)
        for key, path in (("eval", "eval/last.json"), ("best", "export_best/best.json")):
            try:
                text = bucket.blob(f"{prefix}/{path}".lstrip("/")).download_as_text()
                out[key] = json.loads(text)
            except gexc.NotFound:
                pass
    except Exception as e:  # the screen still shows the cluster's part
        out["error"] = f"cannot read it ({type(e).__name__}: {first_line(e)})"
    return out
