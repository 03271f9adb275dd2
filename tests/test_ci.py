"""CI's entry point (.ci/run): the README's test command, verbatim, and a failure of any of
its steps (or of the install on the newest Python) ends CI with that step's status before
anything else runs."""

import os
import pathlib
import re
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
# `python3 -m venv .venv` that makes a venv whose pip, ruff and python all succeed
GOOD_PYTHON = """mkdir -p .venv/bin
for tool in pip ruff python; do printf '#!/bin/sh\\nexit 0\\n' > .venv/bin/$tool; done
chmod +x .venv/bin/*"""


def _readme_test_command() -> str:
    """The command in the README's first bash block after "**Test**"."""
    text = (ROOT / "README.md").read_text()
    after = text.split("**Test**", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", after, re.S).group(1).strip()


def _ci_with(tmp_path, python3: str, python313: str) -> subprocess.CompletedProcess:
    """.ci/run copied into tmp_path, run with python3 and python3.13 first on PATH as the
    given shell scripts (each call of python3.13 also logged in py313.log)."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci/run", tmp_path / ".ci/run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "py313.log"
    for name, body in (("python3", python3), ("python3.13", f'echo "$@" >> {log}\n{python313}')):
        stub = bin_dir / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(tmp_path / ".ci/run")], env=env, capture_output=True, text=True
    )


def test_ci_runs_the_readmes_test_command():
    command = _readme_test_command()
    assert "pytest" in command and "ruff check" in command
    lines = (ROOT / ".ci/run").read_text().splitlines()
    assert any(line.startswith(command) for line in lines), command


def test_a_failed_step_of_the_test_command_fails_ci_at_once(tmp_path):
    """The first step (the venv) fails with 3: CI exits 3 and never reaches Python 3.13 (set -e
    alone would go on: it does not act on the inner commands of an && list)."""
    r = _ci_with(tmp_path, python3="exit 3", python313="exit 0")
    assert r.returncode == 3, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert not (tmp_path / "py313.log").exists()


def test_a_failed_install_on_the_newest_python_fails_ci_with_its_status(tmp_path):
    """The whole suite passes (stubs), then the venv on Python 3.13 fails with 4: CI exits 4,
    not with the status of a fast-test run that has no venv to run in."""
    r = _ci_with(tmp_path, python3=GOOD_PYTHON, python313='[ "$1" = -m ] && exit 4; exit 0')
    assert r.returncode == 4, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "-m venv .venv-newest" in (tmp_path / "py313.log").read_text()
