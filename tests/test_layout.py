"""The package's shape, read from its source (no imports run): no import cycles, the launcher
and the flag parser apart from TensorFlow, each module saying what it is for, and short
functions (at most 60 lines) in the package, bench/ and tests/.
"""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "launch")


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: pathlib.Path) -> set[str]:
    """The package modules ``path`` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in MODULES}


def test_no_import_cycles():
    graph = {m: _imports(p) - {m} for m, p in MODULES.items()}
    cycles, state, stack = [], {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, cycles
    assert "trainer.run.modes" in graph["trainer.run.main"]  # the graph is really read


def test_the_launcher_shares_only_pure_rules_with_the_trainer():
    allowed = (
        "trainer.common",
        "trainer.runtime.cluster",
        "trainer.runtime.storage",  # the local path checks (TensorFlow only inside functions)
        "trainer.data.service.servers",
        "trainer.flags",  # the trainer's own flag parser and checks (no TensorFlow)
    )
    for module, path in MODULES.items():
        if module.startswith("launch"):
            reached = [m for m in _imports(path) if m.startswith("trainer")]
            # trainer.data itself (not its subpackages): DataError and the file checks
            # that need no TensorFlow
            reached = [m for m in reached if m != "trainer.data"]
            assert all(m.startswith(allowed) for m in reached), (module, reached)


def test_flags_and_launcher_load_no_tensorflow():
    code = (
        "import sys; import trainer.flags, trainer.config, launch.__main__, launch.k8s.cli, "
        "launch.local.workers, trainer.run.controller, trainer.run.actions; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'absl') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["['absl']"]  # absl's flags only: neither TensorFlow nor Keras


def test_every_module_says_what_it_is_for_and_functions_stay_short():
    long = []
    scripts = {
        p.relative_to(ROOT).as_posix(): p
        for d in ("bench", "tests")
        for p in (ROOT / d).glob("*.py")
    }
    assert "tests/test_layout.py" in scripts and "bench/harness.py" in scripts
    for module, path in {**MODULES, **scripts}.items():
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{module} has no docstring"
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{module}.{node.name}: {length} lines")
    assert not long, long
