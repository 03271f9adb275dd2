"""``launch k8s convert``: one CSV converted by W pods at once (an Indexed Job).

Pod i runs ``trainer-data convert --num_workers W --worker_index i`` (the index from the Job
controller's completion-index annotation, through the downward API) on CPU-only nodes; each
writes its slice's shards and its part record, and the last to finish writes dataset.json
(trainer.data.write.slices). Exit 1 (bad input: a missing image, a bad CSV) fails the Job at once;
any other failure re-runs that index, which rewrites its own unfinished shards.

Built from the training Job that ``k8s.render`` makes (same image, service account, security
context, /tmp), with the cluster variables, ports and GPUs taken out, and a NetworkPolicy
that admits no ingress: the pods serve nothing.
"""

from __future__ import annotations

import copy

from launch.k8s import manifests as k8s
from trainer.common.paths import bucket_problem

RESERVED = ("--pairs", "--output_dir", "--num_workers", "--worker_index")
INDEX_ENV = "JOB_COMPLETION_INDEX"


def check(pairs: str, output_dir: str, args: tuple) -> None:
    for flag, value in (("--pairs", pairs), ("--output_dir", output_dir)):
        if not value.startswith("gs://") or len(value) <= len("gs://"):
            raise k8s.SpecError(f"{flag}={value!r} must be a gs:// path: pods share no disk.")
        if problem := bucket_problem(value, flag):
            raise k8s.SpecError(f"{problem}.")
    for arg in args:
        if arg.split("=", 1)[0] in RESERVED:
            raise k8s.SpecError(
                f"converter flag {arg!r} is set by launch k8s convert: use its own "
                f"{arg.split('=', 1)[0]} option (--workers for the slices)."
            )


def render(docs: list[dict], spec: k8s.JobSpec, pairs: str, output_dir: str) -> list[dict]:
    """The converter's ServiceAccount, Indexed Job and NetworkPolicy from ``k8s.render``'s
    objects for ``spec`` (spec.trainer_args: the converter's own flags)."""
    check(pairs, output_dir, spec.trainer_args)
    by_kind = {d["kind"]: copy.deepcopy(d) for d in docs}
    job, account = by_kind["Job"], by_kind["ServiceAccount"]
    job["metadata"].setdefault("labels", {})["app.kubernetes.io/component"] = "converter"
    pod = job["spec"]["template"]["spec"]
    pod.pop("subdomain", None)
    k8s.place_on_cpu_nodes(pod)
    container = k8s.container_of(job)
    container["command"] = ["trainer-data"]
    container["args"] = [
        "convert",
        f"--pairs={k8s.escape_expansion(pairs)}",
        f"--output_dir={k8s.escape_expansion(output_dir)}",
        f"--num_workers={spec.workers}",
        f"--worker_index=$({INDEX_ENV})",  # expanded by Kubernetes from the variable below
        *(k8s.escape_expansion(a) for a in spec.trainer_args),
    ]
    annotation = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    container["env"] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": INDEX_ENV, "valueFrom": {"fieldRef": {"fieldPath": annotation}}},
    ]
    container.pop("ports", None)
    k8s.set_gpus(container, 0)
    selects = {k8s.JOB_NAME_LABEL: spec.name}
    policy = k8s.ingress_policy(spec.name, spec.namespace, job["metadata"]["labels"], selects, [])
    return [account, job, policy]
