"""CI's entry point (.ci/run): the README's test command, verbatim, and a failure of any of
its steps ends CI with that step's status before anything else runs."""

import os
import pathlib
import re
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    """The command in the README's first bash block after "**Test**"."""
    text = (ROOT / "README.md").read_text()
    after = text.split("**Test**", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", after, re.S).group(1).strip()


def test_ci_runs_the_readmes_test_command():
    command = _readme_test_command()
    assert "pytest" in command and "ruff check" in command
    lines = (ROOT / ".ci/run").read_text().splitlines()
    assert any(line.startswith(command) for line in lines), command


def test_a_failed_step_of_the_test_command_fails_ci_at_once(tmp_path):
    """.ci/run copied beside a PATH whose python3 fails its first step (the venv) with 3 and
    whose python3.13 logs each call: CI exits 3 and never reaches the fast tests on 3.13."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci/run", tmp_path / ".ci/run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "py313.log"
    for name, body in (("python3", "exit 3"), ("python3.13", f'echo "$@" >> {log}')):
        stub = bin_dir / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(
        ["bash", str(tmp_path / ".ci/run")], env=env, capture_output=True, text=True
    )
    assert r.returncode == 3, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert not log.exists(), log.read_text()
