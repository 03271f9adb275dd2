"""The side-car evaluator of a Kubernetes run (``launch k8s render|submit --evaluator``).

One pod running ``trainer --mode=continuous_eval`` on the run's model_dir: it evaluates each
checkpoint the workers write (trainer/run/continuous.py), keeps ``eval/`` and, with
``--best_metric``, ``export_best/``, and ends after the checkpoint of --train_steps. The workers
then train with ``--eval_every_steps=0`` (unless the user set it), so no worker stops training
to evaluate.

Shape, the same under both controllers: a plain Job ``<name>-evaluator`` (one pod, CPU or one
GPU) beside the workers' Job or JobSet, not a replicated job inside the JobSet: a JobSet
restarts every worker when any of its jobs fails, and an evaluator's trouble must not cost
the workers their progress. Its pod serves nothing, so its NetworkPolicy
``<name>-evaluator`` admits no ingress at all; the workers' policy does not admit it either,
since it reads checkpoints from Cloud Storage and never connects to a worker. Same image,
service account, security context and exit-code rules (1 fails at once, 75 is retried) as a
worker. It joins no cluster: it gets none of the TRAINER_* variables, and the trainer never
makes an evaluator multi-worker (trainer/runtime/strategy.py).
"""

from __future__ import annotations

import copy

from launch.k8s import manifests as k8s
from trainer.runtime import cluster as tfconfig

SUFFIX = "-evaluator"
COMPONENT_LABEL = "app.kubernetes.io/component"
CLUSTER_VARS = (tfconfig.JOB_VAR, tfconfig.SERVICE_VAR, tfconfig.COUNT_VAR, tfconfig.PORT_VAR)


def evaluator_name(name: str) -> str:
    return name + SUFFIX


def _flag_given(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def split(docs: list[dict], spec: k8s.JobSpec, gpus: int) -> tuple[list[dict], list[dict]]:
    """(the run's objects with in-loop eval off, the evaluator's Job and NetworkPolicy) from
    the Job controller's rendered objects (k8s.render); ``docs`` is unchanged."""
    if gpus not in (0, 1):
        raise k8s.SpecError(f"--evaluator_gpus={gpus} is invalid: an evaluator uses 0 or 1 GPU.")
    name = evaluator_name(spec.name)
    if len(name) > 63:
        raise k8s.SpecError(
            f"--name={spec.name!r} is too long for an evaluator: {name!r} would pass 63 characters."
        )
    docs = copy.deepcopy(docs)
    job = next(d for d in docs if d["kind"] == "Job")
    worker = k8s.container_of(job)
    if not _flag_given(list(spec.trainer_args), "--eval_every_steps"):
        worker["args"].append("--eval_every_steps=0")  # the evaluator evaluates

    evaluator = copy.deepcopy(job)
    labels = {"app.kubernetes.io/instance": spec.name, COMPONENT_LABEL: "evaluator"}
    evaluator["metadata"]["name"] = name
    evaluator["metadata"].setdefault("labels", {}).update(labels)
    evaluator["spec"]["completionMode"] = "NonIndexed"
    evaluator["spec"]["completions"] = evaluator["spec"]["parallelism"] = 1
    template = evaluator["spec"]["template"]
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    pod = template["spec"]
    pod.pop("subdomain", None)  # no host name to publish: nobody connects to it
    container = k8s.container_of(evaluator)
    container["name"] = "trainer"  # the podFailurePolicy rules name this container
    container.pop("ports", None)
    container["env"] = [e for e in container.get("env", []) if e["name"] not in CLUSTER_VARS]
    args = [a for a in container["args"] if not a.startswith("--strategy=")]
    args = [a for a in args if a != "--eval_every_steps=0"]
    container["args"] = args + ["--mode=continuous_eval"]
    k8s.set_gpus(container, gpus)
    if gpus:
        pod["nodeSelector"] = {k8s.ACCELERATOR_LABEL: spec.accelerator}
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    else:
        pod.pop("nodeSelector", None)
        pod.pop("tolerations", None)

    # it serves nothing: no one may connect
    policy = k8s.ingress_policy(name, spec.namespace, labels, {k8s.JOB_NAME_LABEL: name}, [])
    return docs, [evaluator, policy]
