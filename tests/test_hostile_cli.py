"""Hostile inputs to the command lines themselves (issue 23): a missing command named by its
choices, the launcher's refusals before it starts or prints anything, real processes for what
only a process shows (absl's own flag parsing, the launcher's exit), and each command's --help
listing its own flags."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.inprocess import run_entry
from tests.runs import PY, refused

# --- the launcher --------------------------------------------------------------------------

THIS_FILE = os.path.abspath(__file__)  # a file where the trainer needs a folder
K8S = ["--name", "exp1", "--image", "img:1", "--model_dir", "gs://bucket/runs/exp1"]


def test_a_missing_command_is_named_by_its_choices():
    from trainer.data.__main__ import COMMANDS

    r = run_entry("trainer.data", [])
    refused(r, "the following arguments are required: {synthetic,")
    listed = r.stderr.strip().rsplit(": ", 1)[1]
    assert set(listed.strip("{}").split(",")) == set(COMMANDS)  # the choices, all of them
    refused(run_entry("launch", []), "the following arguments are required: {local,k8s}")
    refused(run_entry("launch", ["k8s"]), "the following arguments are required: {render,")
    refused(run_entry("launch", ["k8s", "nope", "--name", "x"]), "invalid choice: 'nope'")


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ["local", "--workers", "2", "--", "--train_steps=abc"],
            "trainer flags: --train_steps=abc",
        ),
        (["local", "--workers", "0"], "--workers: 0 is not an integer >= 1"),
        (["local", "--", "--seed=-1"], "trainer flags: --seed=-1 is invalid"),
        (["local", "--", "--data_dir=/nonexistent/pairs"], "data_dir /nonexistent/pairs does not"),
        (["local", "--", "--data_dir=/nonexistent/train-*"], "no files match /nonexistent/train-*"),
        (["local", "--", f"--data_dir={THIS_FILE}"], f"data_dir {THIS_FILE} is a file: give"),
        (["local", "--", f"--model_dir={THIS_FILE}/run"], f"model_dir {THIS_FILE}/run cannot be"),
        (["local", "--", f"--export_dir={THIS_FILE}"], f"export_dir {THIS_FILE} is a file"),
        (["k8s", "render", *K8S, "--", "--train_steps=abc"], "trainer flags: --train_steps=abc"),
        (["k8s", "submit", "--dry_run", *K8S, "--", "--nope=1"], "trainer flags: --nope is not"),
        (["k8s", "render", *K8S[:4], "--model_dir", "/local"], "must be a gs:// path"),
        (
            ["k8s", "render", *K8S[:4], "--model_dir", "gs://Runs_1/exp1"],
            "--model_dir gs://Runs_1/exp1: 'Runs_1' is not a Cloud Storage bucket name (3 to 63",
        ),
        (["local", "--", "--data_dir=gs://my data/p"], "'my data' is not a Cloud Storage bucket"),
        (["local", "--", "--export_dir=runs"], "--export_dir=runs holds the --model_dir: an"),
        (["k8s", "render", *K8S, "--", "--model_dir=gs://x/y"], "is set by launch k8s"),
    ],
)
def test_launcher_refuses_before_starting_or_printing(args, says):
    r = run_entry("launch", args)
    refused(r, says)
    assert r.stdout == ""  # no worker started, no manifest printed


def test_real_processes_answer_bad_input_in_one_line(tmp_path):
    # absl's own parsing of the trainer's command line, and the launcher's: one line each,
    # before TensorFlow loads.
    cases = [
        (["-m", "trainer", "--train_steps=abc"], "--train_steps=abc is invalid"),
        (["-m", "trainer", "--batch_size=3"], "--batch_size is not a flag of this command"),
        (
            ["-m", "trainer", "--flagfile=exp1.flags"],
            "--flagfile=exp1.flags cannot be read (No such file or directory): give a file",
        ),
        (["-m", "trainer", "--flagfile=."], "--flagfile=. cannot be read (Is a directory)"),
        (["-m", "trainer", "--model_dir=gs://Runs/x"], "'Runs' is not a Cloud Storage bucket"),
        (["-m", "launch", "local", "--", "--train_steps=0"], "trainer flags: --train_steps=0"),
        (  # launch k8s's one process (tests/test_k8s*.py call its main function in-process)
            ["-m", "launch", "k8s", "render", "--name", "Bad_Name", "--image", "i:1"],
            "--name='Bad_Name' is not a DNS-1123 label",
        ),
        # a plain file check: said before TensorFlow loads and logs its first lines
        (["-m", "trainer", f"--data_dir={THIS_FILE}"], f"data_dir {THIS_FILE} is a file: give"),
    ]
    for args, says in cases:
        r = subprocess.run([PY, *args], capture_output=True, text=True, cwd=tmp_path)
        refused(r, says, nothing_at=[tmp_path / "runs"])
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sys.executable == PY


def test_each_command_lists_its_own_flags_under_help(tmp_path):
    # module, what its --help must say, one of its own flags
    cases = [
        ("trainer", "usage: python -m trainer", "--train_steps"),
        ("trainer.data", "usage: python -m trainer.data", "synthetic"),
        ("trainer.predict", "usage: python -m trainer.predict", "--saved_model"),
        ("trainer.report", "usage: python -m trainer.report", "--output_dir"),
        ("trainer.inspect", "usage: python -m trainer.inspect", "--grid_channels"),
        ("launch", "usage: launch", "k8s"),
        (
            "launch local",
            "usage: launch local",
            "--workers WORKERS     trainer processes (default: 2)",
        ),
        ("launch k8s", "usage: launch k8s", "worker pods (default: 1)"),
        ("trainer.data synthetic", "usage: python -m trainer.data synthetic", "(default: 16384)"),
        ("trainer.data convert", "usage: python -m trainer.data convert", "(default: 0.1)"),
    ]
    for command, says, own in cases:
        r = subprocess.run(
            [PY, "-m", *command.split(), "--help"], capture_output=True, text=True, cwd=tmp_path
        )
        assert r.returncode == 0 and r.stdout.startswith(says), (command, r.stdout[:300], r.stderr)
        assert own in r.stdout and "Traceback" not in r.stderr, command
        words = " ".join(r.stdout.split())  # argparse wraps lines
        assert "(default: None)" not in words and "(default: )" not in words, command
        if command.startswith("launch "):  # where the trainer's flags go, and what they are
            assert "Trainer flags follow --" in words, command
    # The trainer's --help: its own flags (absl's --helpfull adds absl's), none of absl's.
    r = subprocess.run([PY, "-m", "trainer", "-h"], capture_output=True, text=True, cwd=tmp_path)
    entries = re.findall(r"^  (?:-\w,)?--(?:\[no\])?(\w+):", r.stdout, re.M)
    assert {"data_dir", "model_dir", "export", "mode"} <= set(entries), entries
    assert "verbosity" not in entries and len(entries) == len(set(entries)) > 40
    full = subprocess.run([PY, "-m", "trainer", "--helpfull"], capture_output=True, text=True)
    assert (
        full.returncode == 0 and "-v,--verbosity:" in full.stdout and "--train_steps" in full.stdout
    )
    assert list(tmp_path.iterdir()) == []  # asking for help writes nothing
