"""``launch k8s``: placeholder until the Kubernetes commands land."""


def add_parser(sub) -> None:
    sub.add_parser("k8s", help="Kubernetes jobs (render, submit, status, logs, delete)")


def main(args, trainer_args) -> int:
    import sys

    sys.stderr.write("error: launch k8s is not available yet.\n")
    return 1
