"""Kubernetes manifests as data: kustomize renders k8s/, then the run's values are set on the
parsed objects. User text (names, image, trainer flags) only ever becomes a string value of a
dict that the YAML emitter quotes, never part of the YAML text, so it cannot add a document.

Pure functions except ``kustomize`` (runs ``kubectl kustomize``, offline); the kubectl commands
that apply, read and delete them are launch/k8s/kubectl.py's. No TensorFlow.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import subprocess
from pathlib import Path

import yaml

from trainer.common.paths import bucket_problem
from trainer.runtime import cluster as tfconfig

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
KINDS = ["Job", "NetworkPolicy", "Service", "ServiceAccount"]  # what an overlay renders
# controller -> (its resource, the label on every pod of a run named N: value N)
CONTROLLERS = {
    "job": ("job", JOB_NAME_LABEL),
    "jobset": ("jobset", "jobset.sigs.k8s.io/jobset-name"),
}
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GPU_PRESENT = "nvidia.com/gpu.present"  # the NVIDIA GPU operator's node label
RESERVED_FLAGS = ("--model_dir", "--data_dir", "--strategy")
PORT = tfconfig.DEFAULT_PORT


class SpecError(ValueError):
    """A value that cannot go into a manifest; one sentence naming it."""


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """What one training run on the cluster needs."""

    name: str
    image: str
    workers: int
    gpus_per_worker: int
    model_dir: str
    data_dir: str = ""
    namespace: str = ""
    accelerator: str = "nvidia-tesla-t4"
    trainer_args: tuple = ()
    service_account: str = "inception-trainer"


def check_spec(spec: JobSpec) -> None:
    """Raises SpecError for anything Kubernetes or the trainer would reject later."""
    if not DNS1123_LABEL.match(spec.name) or len(spec.name) > 63:
        raise SpecError(
            f"--name={spec.name!r} is not a DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)."
        )
    longest_pod = f"{spec.name}-{spec.workers - 1}"
    if len(longest_pod) > 63:
        raise SpecError(
            f"--name={spec.name!r} is too long: pod host name {longest_pod!r} "
            "would pass 63 characters."
        )
    if spec.namespace and (not DNS1123_LABEL.match(spec.namespace) or len(spec.namespace) > 63):
        raise SpecError(f"--namespace={spec.namespace!r} is not a DNS-1123 label.")
    if not DNS1123_LABEL.match(spec.service_account):
        raise SpecError(f"--service_account={spec.service_account!r} is not a DNS-1123 label.")
    if not spec.image or any(c.isspace() for c in spec.image):
        raise SpecError(f"--image={spec.image!r} is not an image reference.")
    if spec.workers < 1:
        raise SpecError(f"--workers={spec.workers} must be at least 1.")
    if spec.gpus_per_worker < 0:
        raise SpecError(f"--gpus_per_worker={spec.gpus_per_worker} must be 0 or more.")
    if not spec.model_dir.startswith("gs://") or len(spec.model_dir) <= len("gs://"):
        raise SpecError(f"--model_dir={spec.model_dir!r} must be a gs:// path: pods share no disk.")
    if spec.data_dir and not spec.data_dir.startswith("gs://"):
        raise SpecError(
            f"--data_dir={spec.data_dir!r} must be a gs:// path (or empty for the "
            "built-in synthetic set)."
        )
    for role, path in (("--model_dir", spec.model_dir), ("--data_dir", spec.data_dir)):
        if problem := bucket_problem(path, role):
            raise SpecError(f"{problem}.")
    if not LABEL_VALUE.match(spec.accelerator) or len(spec.accelerator) > 63:
        raise SpecError(f"--accelerator={spec.accelerator!r} is not a Kubernetes label value.")
    for arg in spec.trainer_args:
        if arg.split("=", 1)[0] in RESERVED_FLAGS:
            raise SpecError(
                f"trainer flag {arg!r} is set by launch k8s: use launch's own "
                f"{arg.split('=', 1)[0]} option."
            )


def overlay_for(workers: int, gpus_per_worker: int) -> str:
    """debug (1 pod, <=1 GPU), single-node (1 pod, N GPUs) or multi-worker (N pods)."""
    if workers > 1:
        return "multi-worker"
    return "single-node" if gpus_per_worker > 1 else "debug"


def strategy_for(workers: int, gpus_per_worker: int) -> str:
    if workers > 1:
        return "multi_worker"
    return "mirrored" if gpus_per_worker > 1 else "auto"


def default_k8s_dir() -> Path:
    """k8s/ beside the packages (a source checkout or an editable install)."""
    env = os.environ.get("LAUNCH_K8S_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "k8s"


def kustomize(k8s_dir: Path, overlay: str) -> list[dict]:
    """The overlay rendered by ``kubectl kustomize`` (offline), as parsed objects."""
    path = Path(k8s_dir) / "overlays" / overlay
    if not path.is_dir():
        raise SpecError(f"overlay {path} does not exist: pass --k8s_dir (the repository's k8s/).")
    try:
        out = subprocess.run(
            ["kubectl", "kustomize", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    except FileNotFoundError:
        raise SpecError("kubectl is not on PATH: install it to render or submit jobs.") from None
    except subprocess.CalledProcessError as e:
        raise SpecError(f"kubectl kustomize {path} failed: {e.stderr.strip()}") from None
    return [d for d in yaml.safe_load_all(out) if d]


def container_of(job: dict) -> dict:
    """The trainer container of a Job object."""
    return job["spec"]["template"]["spec"]["containers"][0]


def _set_env(container: dict, values: dict) -> None:
    env = [e for e in container.get("env", []) if e["name"] not in values]
    env += [{"name": k, "value": str(v)} for k, v in values.items()]
    container["env"] = env


def set_gpus(container: dict, gpus: int) -> None:
    """GPU requests and limits of a container (none when ``gpus`` is 0)."""
    for part in ("requests", "limits"):
        section = container.setdefault("resources", {}).setdefault(part, {})
        if gpus:
            section["nvidia.com/gpu"] = str(gpus)
        else:
            section.pop("nvidia.com/gpu", None)


def place_on_cpu_nodes(pod: dict) -> None:
    """A pod spec that needs no GPU: no accelerator selector or toleration, and nodes labelled
    with an accelerator (GKE's label, or the NVIDIA GPU operator's) excluded, so CPU work
    (decoding, converting) does not take a GPU node's place."""
    for key in ("nodeSelector", "tolerations"):
        pod.pop(key, None)
    absent = [{"key": k, "operator": "DoesNotExist"} for k in (ACCELERATOR_LABEL, GPU_PRESENT)]
    pod["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": absent}]
            }
        }
    }


def ingress_policy(name: str, namespace: str, labels: dict, selects: dict, ingress: list) -> dict:
    """A NetworkPolicy on the pods matching ``selects`` that admits only ``ingress`` (an empty
    list: no one)."""
    meta = {"name": name, "labels": dict(labels)}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": dict(selects)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def render(spec: JobSpec, docs: list[dict]) -> list[dict]:
    """Sets the run's values on the kustomized objects (a new list; ``docs`` is unchanged)."""
    check_spec(spec)
    docs = copy.deepcopy(docs)
    kinds = [d.get("kind") for d in docs]
    if sorted(kinds) != KINDS:
        raise SpecError(f"the overlay must hold one each of {', '.join(KINDS)}, not {kinds}.")
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if spec.namespace:
            meta["namespace"] = spec.namespace
        if doc["kind"] != "ServiceAccount":
            meta["name"] = spec.name
            meta.setdefault("labels", {})["app.kubernetes.io/instance"] = spec.name
        else:
            meta["name"] = spec.service_account
        if doc["kind"] == "Service":
            doc["spec"]["selector"] = {JOB_NAME_LABEL: spec.name}
        if doc["kind"] == "NetworkPolicy":
            _render_policy(doc, spec)
        if doc["kind"] == "Job":
            _render_job(doc, spec)
    return docs


def _render_policy(policy: dict, spec: JobSpec) -> None:
    """Ingress to the worker port from this job's pods only; egress left open."""
    own = {"matchLabels": {JOB_NAME_LABEL: spec.name}}
    policy["spec"] = {
        "podSelector": own,
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": own}], "ports": [{"protocol": "TCP", "port": PORT}]}],
    }


def trainer_argv(spec: JobSpec) -> list[str]:
    """The trainer's flags in the worker pods: the launcher's own, then the user's."""
    args = [
        f"--strategy={strategy_for(spec.workers, spec.gpus_per_worker)}",
        f"--model_dir={spec.model_dir}",
    ]
    if spec.data_dir:
        args.append(f"--data_dir={spec.data_dir}")
    return args + list(spec.trainer_args)


def _render_job(job: dict, spec: JobSpec) -> None:
    job["spec"]["completions"] = job["spec"]["parallelism"] = spec.workers
    pod = job["spec"]["template"]["spec"]
    pod["subdomain"] = spec.name  # pods resolve as <name>-<i>.<name>
    pod["serviceAccountName"] = spec.service_account
    job["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})[
        "app.kubernetes.io/instance"
    ] = spec.name
    if spec.gpus_per_worker:
        pod["nodeSelector"] = {ACCELERATOR_LABEL: spec.accelerator}
    else:
        pod.pop("nodeSelector", None)
        pod.pop("tolerations", None)
    container = container_of(job)
    container["image"] = spec.image
    container["args"] = [escape_expansion(a) for a in trainer_argv(spec)]
    _set_env(
        container,
        {
            tfconfig.JOB_VAR: spec.name,
            tfconfig.SERVICE_VAR: spec.name,
            tfconfig.COUNT_VAR: spec.workers,
            tfconfig.PORT_VAR: PORT,
        },
    )
    set_gpus(container, spec.gpus_per_worker)


def escape_expansion(arg: str) -> str:
    """Kubernetes expands $(VAR) in container args and turns $$ into $: doubling every $ makes
    the container receive ``arg`` exactly as given."""
    return arg.replace("$", "$$")


def to_yaml(docs: list[dict]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
