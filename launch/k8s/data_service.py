"""The tf.data service of a Kubernetes run (``launch k8s render|submit --data_workers N``).

Objects, beside the workers' Job or JobSet (the same under both controllers):
- ``<name>-data-dispatcher``: a Deployment of one pod (strategy Recreate: two dispatchers never
  share the journal) running ``trainer-data dispatcher`` with its journal in
  ``<model_dir>/data_service`` on Cloud Storage, so a restarted dispatcher resumes its jobs
  (fault-tolerant mode); ``<name>-data``, a Service in front of it (port 5050);
- ``<name>-data-worker``: a Deployment of N pods on CPU-only nodes (no GPU requested; nodes
  labelled with an accelerator are excluded) running ``trainer-data data_worker``; each
  announces its pod IP to the dispatcher (the downward API's status.podIP);
- two NetworkPolicies: the dispatcher admits the trainers and the data workers (which register
  and heartbeat) on 5050; the data workers admit the trainers only, on 5051. No one else.
The trainers get ``--data_service_address=grpc://<name>-data:5050``; the evaluator keeps
reading its eval data itself.

Deployments do not finish: they run until ``launch k8s delete`` removes them with the rest.
"""

from __future__ import annotations

import copy

from launch.k8s import manifests as k8s
from trainer.data.service.servers import DEFAULT_DISPATCHER_PORT, DEFAULT_WORKER_PORT

COMPONENT = "app.kubernetes.io/component"
INSTANCE = "app.kubernetes.io/instance"
SERVICE_FLAG = "--data_service_address"


def names(name: str) -> dict:
    """The objects' names: dispatcher, service, worker."""
    return {
        "dispatcher": f"{name}-data-dispatcher",
        "service": f"{name}-data",
        "worker": f"{name}-data-worker",
    }


def address(name: str) -> str:
    return f"grpc://{names(name)['service']}:{DEFAULT_DISPATCHER_PORT}"


def _labels(name: str, component: str) -> dict:
    return {INSTANCE: name, COMPONENT: component}


def _pod(job: dict, labels: dict, args: list[str], cpu: str, mem: str):
    """A pod template from the workers' (same image, account, security, /tmp) without GPUs,
    ports or cluster variables."""
    pod = copy.deepcopy(job["spec"]["template"]["spec"])
    pod.pop("subdomain", None)
    pod["restartPolicy"] = "Always"  # a Deployment's pods restart in place
    pod["terminationGracePeriodSeconds"] = 30
    k8s.place_on_cpu_nodes(pod)  # keep decoding off the accelerator nodes
    (container,) = pod["containers"]
    container["name"] = labels[COMPONENT]
    container["command"] = ["trainer-data"]
    container["args"] = args
    container["env"] = [{"name": "HOME", "value": "/tmp"}]
    container.pop("ports", None)
    container["resources"] = {
        "requests": {"cpu": cpu, "memory": mem},
        "limits": {"memory": mem},
    }
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] == "tmp"]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] == "tmp"]
    return {"metadata": {"labels": dict(labels)}, "spec": pod}, container


def _deployment(name: str, namespace: str, labels: dict, replicas: int, template: dict, **kw):
    meta = {"name": name, "labels": dict(labels)}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": template,
            **kw,
        },
    }


def _policy(name: str, namespace: str, target: dict, sources: list[dict], port: int) -> dict:
    rule = {
        "from": [{"podSelector": {"matchLabels": s}} for s in sources],
        "ports": [{"protocol": "TCP", "port": port}],
    }
    return k8s.ingress_policy(name, namespace, {INSTANCE: target[INSTANCE]}, target, [rule])


def _check(spec: k8s.JobSpec, workers: int) -> None:
    if workers < 1:
        raise k8s.SpecError(f"--data_workers={workers} is invalid: it must be >= 1.")
    if any(a == SERVICE_FLAG or a.startswith(SERVICE_FLAG + "=") for a in spec.trainer_args):
        raise k8s.SpecError(
            "--data_workers renders its own tf.data service: drop --data_service_address from "
            "the trainer flags."
        )
    dispatcher = names(spec.name)["dispatcher"]
    if len(dispatcher) > 63:
        raise k8s.SpecError(
            f"--name={spec.name!r} is too long for the data service: {dispatcher!r} would "
            "pass 63 characters."
        )


def _dispatcher(job: dict, spec: k8s.JobSpec) -> tuple[dict, dict]:
    """(the dispatcher Deployment, its Service), the journal in <model_dir>/data_service."""
    n, ns = names(spec.name), spec.namespace
    labels = _labels(spec.name, "data-dispatcher")
    journal = spec.model_dir.rstrip("/") + "/data_service"
    template, container = _pod(
        job,
        labels,
        ["dispatcher", f"--port={DEFAULT_DISPATCHER_PORT}", f"--work_dir={journal}"],
        "1",
        "2Gi",
    )
    container["ports"] = [{"name": "dispatcher", "containerPort": DEFAULT_DISPATCHER_PORT}]
    container["readinessProbe"] = {"tcpSocket": {"port": DEFAULT_DISPATCHER_PORT}}
    dispatcher = _deployment(
        n["dispatcher"], ns, labels, 1, template, strategy={"type": "Recreate"}
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": n["service"], "labels": dict(labels)},
        "spec": {
            "selector": dict(labels),
            "ports": [{"name": "dispatcher", "port": DEFAULT_DISPATCHER_PORT}],
        },
    }
    if ns:
        service["metadata"]["namespace"] = ns
    return dispatcher, service


def _workers(job: dict, spec: k8s.JobSpec, workers: int, cpu: str, memory: str) -> dict:
    """The data-worker Deployment: N pods, each announcing its pod IP to the dispatcher."""
    n = names(spec.name)
    labels = _labels(spec.name, "data-worker")
    template, container = _pod(
        job,
        labels,
        [
            "data_worker",
            f"--dispatcher_address={n['service']}:{DEFAULT_DISPATCHER_PORT}",
            f"--port={DEFAULT_WORKER_PORT}",
            f"--worker_address=$(POD_IP):{DEFAULT_WORKER_PORT}",  # expanded by Kubernetes
        ],
        cpu,
        memory,
    )
    container["env"].append(
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    )
    container["ports"] = [{"name": "data", "containerPort": DEFAULT_WORKER_PORT}]
    return _deployment(n["worker"], spec.namespace, labels, workers, template)


def add(
    docs: list[dict],
    spec: k8s.JobSpec,
    workers: int,
    trainer_selector: dict,
    worker_cpu: str = "4",
    worker_memory: str = "8Gi",
) -> tuple[list[dict], list[dict]]:
    """(the run's objects with the trainers pointed at the service, the service's objects).

    ``trainer_selector``: the labels that select the run's trainer pods (they differ between
    the Job and JobSet controllers)."""
    _check(spec, workers)
    docs = copy.deepcopy(docs)
    job = next(d for d in docs if d["kind"] == "Job")
    k8s.container_of(job)["args"].append(f"{SERVICE_FLAG}={address(spec.name)}")
    dispatcher, service = _dispatcher(job, spec)
    worker = _workers(job, spec, workers, worker_cpu, worker_memory)
    n, ns = names(spec.name), spec.namespace
    disp_labels = _labels(spec.name, "data-dispatcher")
    work_labels = _labels(spec.name, "data-worker")
    policies = [
        _policy(
            n["dispatcher"],
            ns,
            disp_labels,
            [trainer_selector, work_labels],
            DEFAULT_DISPATCHER_PORT,
        ),
        _policy(n["worker"], ns, work_labels, [trainer_selector], DEFAULT_WORKER_PORT),
    ]
    return docs, [dispatcher, service, worker, *policies]
