"""Helpers of the Kubernetes tests, in one home: a spec rendered as `launch k8s` renders it,
the official schemas (kubernetes-validate --strict) and JobSet's CRD schema, the labels a pod
of an Indexed Job carries and whether a selector picks them, Kubernetes' expansion of container
args, `launch` run in this process, and what the named kubectl stub (tests/stubs/kubectl: no API
server can run here) was asked. The stub's fixture, ``stub_kubectl``, is in tests/conftest.py."""

import os
import pathlib
import subprocess
import sys

import pytest
import yaml

from launch.k8s import jobset
from launch.k8s import manifests as k8s
from tests.inprocess import run_entry

ROOT = pathlib.Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
KUBE_VERSION = "1.33.0"
PY = sys.executable
STUBS = pathlib.Path(__file__).parent / "stubs"
HOSTILE_ARGS = (
    '--export_dir=it\'s "quoted"',
    "--export_dir=two\nlines",
    "--export_dir=$(rm -rf /) and $(HOME) and $$",
    "--export_dir=x\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: stolen",
    "--export_dir=  spaces  ",
)


def validate(path):
    """kubernetes-validate --strict on a file of manifests; its report (one line per object)."""
    r = subprocess.run(
        [
            os.path.join(os.path.dirname(PY), "kubernetes-validate"),
            "--strict",
            "-k",
            KUBE_VERSION,
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


# JobSet's CRD: data read where it lies (not copied into the project): ../shared/crds beside
# the checkout, or shared/crds inside it.
_NAME = "shared/crds/jobset.x-k8s.io_jobsets.yaml"
CRD = next(
    (p / _NAME for p in pathlib.Path(__file__).resolve().parents[1:3] if (p / _NAME).exists()),
    pathlib.Path(__file__).resolve().parents[2] / _NAME,
)


def _schema():
    """JobSet's v1alpha2 OpenAPI schema, from its CRD; the test skips, in one line, where
    the CRD is not beside the checkout."""
    if not CRD.exists():  # data outside the project: say so, in one line
        pytest.skip(f"JobSet's CRD schema is not at {CRD}: the JobSet is not validated here.")
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha2"]
    return version["schema"]["openAPIV3Schema"]


def validate_jobset(doc):
    """A JobSet object against JobSet's own CRD schema (raises jsonschema's error)."""
    import jsonschema

    jsonschema.validate(doc, _schema(), cls=jsonschema.Draft7Validator)


def spec(**kw):
    """A JobSpec of 3 workers with 2 GPUs each; keywords replace its fields."""
    base = dict(
        name="exp1",
        image="gcr.io/p/trainer:1",
        workers=3,
        gpus_per_worker=2,
        model_dir="gs://bkt/runs/exp1",
        data_dir="gs://bkt/data",
        namespace="ml",
        accelerator="nvidia-h100-80gb",
        trainer_args=("--train_steps=100",),
    )
    base.update(kw)
    return k8s.JobSpec(**base)


def rendered(s):
    """The spec's objects, as `launch k8s render` makes them (kustomize, then the spec)."""
    return k8s.render(s, k8s.kustomize(K8S, k8s.overlay_for(s.workers, s.gpus_per_worker)))


def rendered_jobset(s, max_restarts=5):
    """The spec's objects with its Job made a JobSet (`--controller jobset`)."""
    return jobset.to_jobset(rendered(s), s.name, max_restarts)


def pod_labels(job: dict, index: int) -> dict:
    """The labels a pod of this Indexed Job carries: its template's plus those the Job
    controller adds (Kubernetes >= 1.27)."""
    name = job["metadata"]["name"]
    return {
        **job["spec"]["template"].get("metadata", {}).get("labels", {}),
        "batch.kubernetes.io/job-name": name,
        "job-name": name,
        "batch.kubernetes.io/controller-uid": "0f0e",
        "controller-uid": "0f0e",
        "batch.kubernetes.io/job-completion-index": str(index),
    }


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels only) picks a pod with these labels."""
    assert set(selector) == {"matchLabels"}, selector  # no expressions to evaluate here
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def render_with_evaluator(*extra, controller="job"):
    """`launch k8s render --evaluator` for 2 workers with 1 GPU each; the parsed objects."""
    r = launch(
        "k8s", "render", "--evaluator", "--controller", controller, "--name", "exp1",
        "--image", "gcr.io/p/t:1", "--workers", "2", "--model_dir", "gs://bkt/r",
        "--data_dir", "gs://bkt/d", "--namespace", "ml", *extra,
    )  # fmt: skip
    return r, [d for d in yaml.safe_load_all(r.stdout) if d] if r.returncode == 0 else []


def k8s_expand(arg: str, env: dict) -> str:
    """Kubernetes' container-args expansion: $(VAR) of a defined variable expands, $$ is $."""
    out, i = [], 0
    while i < len(arg):
        if arg.startswith("$$", i):
            out.append("$")
            i += 2
        elif arg.startswith("$(", i) and ")" in arg[i:]:
            name = arg[i + 2 : arg.index(")", i)]
            out.append(env.get(name, arg[i : arg.index(")", i) + 1]))
            i = arg.index(")", i) + 1
        else:
            out.append(arg[i])
            i += 1
    return "".join(out)


DELETE_FLAGS = ["--ignore-not-found", "--cascade=foreground"]
# the run's objects, and its evaluator's: always named (--ignore-not-found), harmless if absent
DELETED = ["job/exp1", "service/exp1", "networkpolicy/exp1"]
DELETED += ["job/exp1-evaluator", "networkpolicy/exp1-evaluator"]
DELETED += ["deployment/exp1-data-dispatcher", "deployment/exp1-data-worker", "service/exp1-data"]
DELETED += ["networkpolicy/exp1-data-dispatcher", "networkpolicy/exp1-data-worker"]


def applied(calls):
    """The stub's `kubectl apply` calls."""
    return [c for c in calls if "apply" in c["argv"]]


def launch(*args, env=None):
    """``launch args`` through its main function in this process (its process is not the
    subject here: tests/test_hostile.py and test_group_faults.py run the CLI as one); ``env``,
    when given, is the whole environment, as a subprocess's."""
    return run_entry("launch", [str(a) for a in args], env=env)
