"""kubectl as the launcher speaks it: the argument lists (no shell) of apply, get, logs, delete
and wait for a run's objects, a Job's or JobSet's state in words, and kubectl's error output
reduced to one readable sentence. Pure functions (launch/k8s/cli.py runs the commands). No
TensorFlow.
"""

from __future__ import annotations

import re

from launch.k8s.manifests import CONTROLLERS


def argv(context: str, namespace: str, *args: str) -> list[str]:
    """``kubectl [--context C] [--namespace NS] ARGS`` as an argument list (no shell)."""
    words = ["kubectl"]
    if context:
        words.append(f"--context={context}")
    if namespace:
        words.append(f"--namespace={namespace}")
    return words + list(args)


def commands(
    action: str,
    name: str,
    context: str = "",
    namespace: str = "",
    follow: bool = False,
    controller: str = "job",
) -> list[list[str]]:
    """The kubectl invocations behind logs and delete (status: launch/k8s/status.py)."""
    resource, label = CONTROLLERS[controller]
    selector = f"{label}={name}"
    if action == "logs":
        extra = ["--follow", "--max-log-requests=64"] if follow else []
        return [argv(context, namespace, "logs", "-l", selector, "--prefix", "--tail=-1", *extra)]
    if action == "delete":
        return [
            argv(
                context,
                namespace,
                "delete",
                f"{resource}/{name}",
                *([f"service/{name}"] if controller == "job" else []),  # JobSet owns its own
                f"networkpolicy/{name}",
                # the side-car evaluator, if the run has one (launch/k8s/evaluator.py)
                f"job/{name}-evaluator",
                f"networkpolicy/{name}-evaluator",
                # the tf.data service, if the run has one (launch/k8s/data_service.py)
                f"deployment/{name}-data-dispatcher",
                f"deployment/{name}-data-worker",
                f"service/{name}-data",
                f"networkpolicy/{name}-data-dispatcher",
                f"networkpolicy/{name}-data-worker",
                "--ignore-not-found",
                "--cascade=foreground",
            )
        ]
    raise ValueError(f"unknown action {action!r}")


# ---- resubmits: what exists under a name, and API errors a person can read ------------------


def lookup_argv(name: str, context="", namespace="", controller="job") -> list[str]:
    """``kubectl get job|jobset NAME -o json``; prints nothing when there is none."""
    resource = CONTROLLERS[controller][0]
    return argv(context, namespace, "get", resource, name, "-o", "json", "--ignore-not-found")


def wait_pods_gone_argv(name: str, context="", namespace="", controller="job") -> list[str]:
    """Blocks until no pod of the run is left (a replaced run's workers hold the same names)."""
    label = CONTROLLERS[controller][1]
    return argv(
        context, namespace, "wait", "--for=delete", "pod", "-l", f"{label}={name}",
        "--timeout=600s",
    )  # fmt: skip


def job_state(job: dict) -> str:
    """A Job object's state in words: running / succeeded / failed at index i / pending."""
    status = job.get("status") or {}
    workers = (job.get("spec") or {}).get("completions", 1)
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") in ("Complete", "Completed"):  # a Job's, a JobSet's
            return "succeeded"
        if cond.get("type") == "Failed":
            message = cond.get("message") or cond.get("reason") or ""
            # "... for pod NS/<job>-<index>-<5 chars> failed with exit code 1 matching FailJob
            # rule at index 0": the worker is in the pod's name ("rule at index" is the rule's).
            index = re.search(r"\bpod [a-z0-9-]+/[a-z0-9-]+-(\d+)-[a-z0-9]{5}\b", message)
            where = f" at index {index.group(1)}" if index else ""
            reason = f" ({cond.get('reason')})" if cond.get("reason") else ""
            return f"failed{where}{reason}"
    if status.get("active"):
        return f"running ({status['active']} of {workers} workers active)"
    return "pending"


_GO_STRUCT = re.compile(r"\b[a-z]+\.[A-Z]\w*\{")
# klog's lines ("E1202 05:30:15.871708 7784 memcache.go:265] ..."): client-go's retries
_KLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\] ", re.M)
# kubectl's own words when it reaches no API server (not "dial tcp" alone: a webhook the
# server could not call says that too, and the server did answer then)
_UNREACHABLE = re.compile(
    r"The connection to the server \S+ was refused|Unable to connect to the server"
    r"|no configuration has been provided"
)


def api_error(text: str) -> str:
    """kubectl's error output reduced to its message: Go struct dumps (``core.PodTemplateSpec{
    ...}``, kilobytes long for "field is immutable") become ``(...)``; client-go's log lines
    go where kubectl says more after them; one line. A cluster out of reach says so and
    where to look."""
    said = [line for line in text.splitlines() if line.strip() and not _KLOG.match(line)]
    if said:
        text = "\n".join(said)
    out, i = [], 0
    while (m := _GO_STRUCT.search(text, i)) is not None:
        out.append(text[i : m.start()] + "(...)")
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    lines = [line.strip() for line in "".join(out).splitlines() if line.strip()]
    message = " ".join(lines)
    message = message if len(message) <= 400 else message[:399] + "…"
    if _UNREACHABLE.search(message):
        return (
            f"the cluster's API server is out of reach ({message.rstrip('.?')}): check which "
            "cluster kubectl talks to (kubectl config current-context; --context, KUBECONFIG)."
        )
    return message
