"""``launch k8s render|submit|status|logs|delete|convert``: the launcher's Kubernetes commands.

render and ``--dry_run`` print the manifests; submit looks the name up first (an existing job
is refused with its state, or replaced with ``--replace``), runs the Cloud Storage preflight
(unless ``--skip_preflight``) and pipes the manifests to ``kubectl apply -f -``; status, logs and
delete run kubectl with ``--context`` and ``--namespace``. Every kubectl call is an argument
list, never a shell line.
"""

from __future__ import annotations

import json
import subprocess
import sys

from launch.k8s import kubectl
from launch.k8s import manifests as k8s
from trainer import flags as trainer_flags
from trainer.common.cli import DefaultsShown
from trainer.common.errors import UsageError, first_line

ACTIONS = ("render", "submit", "status", "logs", "delete", "convert")


def add_parser(sub, epilog: str = "") -> None:
    p = sub.add_parser(
        "k8s",
        help="Kubernetes jobs (" + ", ".join(ACTIONS) + ")",
        description="Render, submit, follow and delete the trainer's Kubernetes jobs (kubectl "
        "with --context and --namespace); submit checks Cloud Storage first.",
        epilog=epilog,
        formatter_class=DefaultsShown,
    )
    # the choices as the metavar: a missing action is then named by what it may be
    p.add_argument("action", choices=ACTIONS, metavar="{" + ",".join(ACTIONS) + "}")
    p.add_argument("--name", required=True, help="job name (a DNS-1123 label)")
    p.add_argument("--image", default="", help="container image (render, submit)")
    p.add_argument("--workers", type=int, default=1, help="worker pods")
    p.add_argument("--gpus_per_worker", type=int, default=1, help="GPUs each worker pod asks for")
    p.add_argument("--model_dir", default="", help="gs://bucket/path (render, submit)")
    p.add_argument("--data_dir", default="", help="gs:// dataset folder or pattern")
    p.add_argument("--namespace", default="", help="kubectl --namespace (empty: the context's)")
    p.add_argument("--context", default="", help="kubectl --context (empty: the current one)")
    p.add_argument(
        "--accelerator",
        default="nvidia-tesla-t4",
        help="value of the node label cloud.google.com/gke-accelerator",
    )
    p.add_argument(
        "--service_account",
        default="inception-trainer",
        help="Kubernetes service account bound by Workload Identity",
    )
    p.add_argument("--k8s_dir", default="", help="the repository's k8s/ folder")
    _add_run_options(p)
    _add_scheduling_options(p)


def _add_scheduling_options(p) -> None:
    """Kueue, Spot and the run's lifetime (launch/k8s/scheduling.py)."""
    p.add_argument("--queue", default="", help="render/submit: the Kueue LocalQueue to admit it")
    p.add_argument("--priority", default="", help="--queue: a Kueue WorkloadPriorityClass")
    p.add_argument(
        "--spot", action="store_true", help="run the pods on GKE Spot nodes (15 s grace)"
    )
    p.add_argument(
        "--grace_seconds",
        type=int,
        default=0,
        help="terminationGracePeriodSeconds (0: 15 with --spot, else 300); the trainer is told",
    )
    p.add_argument(
        "--ttl_seconds", type=int, default=-1, help="delete the finished Job after (-1: keep it)"
    )
    p.add_argument(
        "--deadline_seconds", type=int, default=0, help="activeDeadlineSeconds (0: none)"
    )


def _scheduling(args):
    from launch.k8s import scheduling

    chosen = scheduling.Scheduling(
        queue=args.queue,
        priority=args.priority,
        spot=args.spot,
        grace_seconds=args.grace_seconds,
        ttl_seconds=args.ttl_seconds,
        deadline_seconds=args.deadline_seconds,
    )
    scheduling.check(chosen)
    return chosen


def _add_run_options(p) -> None:
    """What a submitted run is made of: controller, restarts, evaluator, data service."""
    p.add_argument("--dry_run", action="store_true", help="submit: print, apply nothing")
    p.add_argument("--skip_preflight", action="store_true", help="submit: no GCS checks")
    p.add_argument(
        "--controller",
        choices=sorted(k8s.CONTROLLERS),
        default="job",
        help="job: an Indexed Job (no add-on needed); jobset: a JobSet (kubernetes-sigs/jobset "
        "installed), which restarts the whole group at once when a worker fails",
    )
    p.add_argument(
        "--max_restarts",
        type=int,
        default=10,
        help="--controller jobset: group restarts before the run fails",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="submit: delete an existing job of this name (waiting until its pods are gone) "
        "and submit anew",
    )
    p.add_argument(
        "--evaluator",
        action="store_true",
        help="render/submit: add a side-car evaluator pod (trainer --mode=continuous_eval); "
        "the workers then skip in-loop eval",
    )
    p.add_argument("--evaluator_gpus", type=int, default=0, help="--evaluator: 0 (CPU) or 1 GPU")
    p.add_argument(
        "--data_workers",
        type=int,
        default=0,
        help="render/submit: add a tf.data service (dispatcher + N CPU data workers) that "
        "decodes for the trainers",
    )
    p.add_argument("--data_worker_cpu", default="4", help="--data_workers: CPU request each")
    p.add_argument("--pairs", default="", help="convert: gs:// CSV of image pairs")
    p.add_argument("--output_dir", default="", help="convert: gs:// dataset folder to write")
    p.add_argument("--follow", action="store_true", help="logs: stream")


def _spec(args, trainer_args) -> k8s.JobSpec:
    return k8s.JobSpec(
        name=args.name,
        image=args.image,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        model_dir=args.model_dir,
        data_dir=args.data_dir,
        namespace=args.namespace,
        accelerator=args.accelerator,
        trainer_args=tuple(trainer_args),
        service_account=args.service_account,
    )


def _convert_docs(args, converter_args) -> list[dict]:
    from launch.k8s import convert as k8s_convert

    k8s_convert.check(args.pairs, args.output_dir, tuple(converter_args))
    spec = k8s.JobSpec(
        name=args.name,
        image=args.image,
        workers=args.workers,
        gpus_per_worker=0,
        model_dir=args.output_dir,
        namespace=args.namespace,
        trainer_args=tuple(converter_args),
        service_account=args.service_account,
    )
    k8s.check_spec(spec)
    k8s_dir = args.k8s_dir or k8s.default_k8s_dir()
    docs = k8s.render(spec, k8s.kustomize(k8s_dir, k8s.overlay_for(spec.workers, 0)))
    return k8s_convert.render(docs, spec, args.pairs, args.output_dir)


def _manifests(args, trainer_args) -> str:
    """The run's objects as YAML, with the cluster's scheduling (Kueue, Spot) set last."""
    from launch.k8s import scheduling

    chosen = _scheduling(args)  # before kubectl runs at all
    if args.action == "convert":
        return k8s.to_yaml(scheduling.apply(_convert_docs(args, trainer_args), chosen))
    return k8s.to_yaml(scheduling.apply(_run_docs(args, trainer_args), chosen))


def _run_docs(args, trainer_args) -> list[dict]:
    spec = _spec(args, trainer_args)
    k8s.check_spec(spec)  # before running kubectl at all
    trainer_flags.check_args(k8s.trainer_argv(spec))  # the trainer's own parser and checks
    k8s_dir = args.k8s_dir or k8s.default_k8s_dir()
    docs = k8s.render(
        spec, k8s.kustomize(k8s_dir, k8s.overlay_for(spec.workers, spec.gpus_per_worker))
    )
    side = []
    if args.evaluator:
        from launch.k8s import evaluator

        docs, side = evaluator.split(docs, spec, args.evaluator_gpus)
    if args.data_workers:
        from launch.k8s import data_service as k8s_data

        label = k8s.CONTROLLERS[args.controller][1]
        docs, data = k8s_data.add(
            docs, spec, args.data_workers, {label: spec.name}, args.data_worker_cpu
        )
        side += data
    if args.controller == "jobset":
        from launch.k8s import jobset

        docs = jobset.to_jobset(docs, spec.name, args.max_restarts)
    return docs + side


def _preflight(args) -> None:
    from launch import preflight

    report = preflight.run_preflight(
        model_dir=args.model_dir, data_dir=args.data_dir, workers=args.workers
    )
    for line in report.messages:
        print(f"preflight: {line}")
    for line in report.warnings:
        sys.stderr.write(f"warning: {line}\n")


class KubectlError(Exception):
    """kubectl failed; the message is the API server's, reduced to one line."""


def _kubectl(argv: list[str], stdin: str | None = None, capture: bool = False):
    """Runs kubectl; raises KubectlError with its reduced message when it fails. Returns its
    standard output when ``capture``, else 0 (its output went to the terminal)."""
    r = subprocess.run(
        argv, input=stdin, text=True, stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    if r.returncode:
        verb = next(a for a in argv[1:] if not a.startswith("--"))
        said = kubectl.api_error(r.stderr) or f"exit {r.returncode}"
        raise KubectlError(f"kubectl {verb}: {said}")
    if not capture:
        sys.stderr.write(r.stderr)
    return r.stdout if capture else 0


def _existing_job(args) -> dict | None:
    out = _kubectl(
        kubectl.lookup_argv(args.name, args.context, args.namespace, args.controller), capture=True
    )
    return json.loads(out) if out.strip() else None


def _exists_sentence(args, job: dict) -> str:
    where = f" in namespace {args.namespace}" if args.namespace else ""
    controller = " --controller jobset" if args.controller == "jobset" else ""
    flags = "".join(
        f" --{k} {v}" for k, v in (("context", args.context), ("namespace", args.namespace)) if v
    )
    state = kubectl.job_state(job)
    return (
        f"{args.controller} {args.name} already exists{where} ({state}): delete it with "
        f"`launch k8s delete --name {args.name}{controller}{flags}` or submit with --replace; "
        "nothing was applied."
    )


def _delete_and_wait(args, existing: dict) -> None:
    from launch.k8s import status

    print(status.replace_line(existing, args.name, args.workers, args.model_dir))
    print(f"replacing job {args.name}: deleting it and waiting until its pods are gone")
    for argv in kubectl.commands(
        "delete", args.name, args.context, args.namespace, controller=args.controller
    ):
        _kubectl(argv)
    _kubectl(kubectl.wait_pods_gone_argv(args.name, args.context, args.namespace, args.controller))


def _status(args) -> str:
    from launch import preflight
    from launch.k8s import status

    run = _existing_job(args)
    if run is None:
        where = f" in namespace {args.namespace}" if args.namespace else ""
        raise k8s.SpecError(f"{args.controller} {args.name} does not exist{where}.")
    label = k8s.CONTROLLERS[args.controller][1]
    pods = json.loads(
        _kubectl(
            kubectl.argv(
                args.context,
                args.namespace,
                "get",
                "pods",
                "-l",
                f"{label}={args.name}",
                "-o",
                "json",
            ),
            capture=True,
        )
        or "{}"
    )
    model_dir = status.model_dir_of(run)
    if model_dir:
        try:
            storage = status.read_storage(preflight.make_client(), model_dir)
        except preflight.PreflightError as e:  # no credentials: the cluster's part still shows
            storage = {"model_dir": model_dir, "error": str(e)}
    else:
        storage = {"model_dir": None, "error": "the run's arguments name no --model_dir"}
    flags = "".join(
        f" --{k} {v}"
        for k, v in (
            ("controller", args.controller if args.controller != "job" else ""),
            ("context", args.context),
            ("namespace", args.namespace),
        )
        if v
    )
    logs = f"launch k8s logs --name {args.name}{flags} --follow"
    return status.screen(args.name, args.controller, run, pods, storage, logs) + _kueue(args, run)


def _kueue(args, run) -> str:
    """Kueue's line for a queued run (its Workload's state), or nothing."""
    from launch.k8s import kueue

    if not kueue.queue_of(run):
        return ""
    try:
        argv = kubectl.argv(args.context, args.namespace, "get", "workloads", "-o", "json")
        found = kueue.line(run, json.loads(_kubectl(argv, capture=True) or "{}"))
    except (KubectlError, ValueError) as e:
        found = kueue.line(run, None, first_line(e, 160))
    return found + "\n"


def main(args, trainer_args) -> int:
    from launch.preflight import PreflightError

    try:
        if args.action in ("render", "submit", "convert"):
            manifests = _manifests(args, trainer_args)
            if args.action == "render" or args.dry_run:
                sys.stdout.write(manifests)
                return 0
            existing = _existing_job(args)
            if existing is not None and not args.replace:
                raise k8s.SpecError(_exists_sentence(args, existing))
            if not args.skip_preflight and args.action == "submit":
                _preflight(args)  # convert: the converter checks its CSV and images itself
            if existing is not None:
                _delete_and_wait(args, existing)
            return _kubectl(
                kubectl.argv(args.context, args.namespace, "apply", "-f", "-"), manifests
            )
        if trainer_args:
            raise k8s.SpecError(f"{args.action} takes no trainer flags (got {trainer_args}).")
        if not k8s.DNS1123_LABEL.match(args.name):
            raise k8s.SpecError(f"--name={args.name!r} is not a DNS-1123 label.")
        if args.action == "status":
            sys.stdout.write(_status(args))
            return 0
        for argv in kubectl.commands(
            args.action, args.name, args.context, args.namespace, args.follow, args.controller
        ):
            _kubectl(argv)  # its output to the terminal as it comes; a failure in one sentence
        return 0
    except (k8s.SpecError, PreflightError, KubectlError, UsageError) as e:
        sys.stderr.write(f"error: {str(e).rstrip('.')}.\n")
        return 1
    except FileNotFoundError:
        sys.stderr.write("error: kubectl is not on PATH.\n")
        return 1
