"""The package's shape: layers that only point down (import-linter), modules that import alone, no
process-wide side effects (os.chdir)."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import optkit
from tests.conftest import FAST, run_cli

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["types", "backends", "eval", "steps", "engine", "optimize", "report", "serve",
          "cli | optkit.torch_backend"]  # bottom to top


def test_the_layers_contract_holds():
    """pyproject.toml's [tool.importlinter] layers contract: an upward import anywhere breaks it."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_the_contract_names_every_package_in_order():
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("layers = ["):]
    named = [line.strip().strip('",').removeprefix("optkit.") for line in block.splitlines()[1:len(LAYERS) + 1]]
    assert named == LAYERS[::-1]
    packages = sorted(m.name for m in pkgutil.iter_modules(optkit.__path__) if m.ispkg)
    # the top layer: the CLI and the torch.compile backend, side by side (neither imports the other)
    assert packages == sorted([*LAYERS[:-1], "cli", "torch_backend"])  # no package outside the layers


def _import_alone(module: str) -> str | None:
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    return f"{module}: {proc.stderr.strip().splitlines()[-1]}" if proc.returncode else None


@pytest.mark.slow
def test_every_module_imports_alone():
    """No import cycle that only works in one order: each module in a fresh interpreter (two at a time)."""
    modules = [m.name for m in pkgutil.walk_packages(optkit.__path__, "optkit.")]
    with ThreadPoolExecutor(2) as pool:
        bad = [line for line in pool.map(_import_alone, modules) if line]
    assert len(modules) > 50 and bad == [], "\n".join(bad)


def test_no_process_wide_working_directory_changes():
    hits = [f"{p.relative_to(ROOT)}" for p in (ROOT / "optkit").rglob("*.py") if "os.chdir(" in p.read_text()]
    assert hits == []


@pytest.mark.slow
def test_transforms_leave_nothing_in_the_working_directory(tiny_onnx, tmp_path):
    """Every tool gets paths in optkit's scratch folder; none drops a file where the user stands."""
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    out.mkdir()
    runs = [("simplify", str(tiny_onnx), "-o", str(out / "s.onnx")),
            ("fuse", str(tiny_onnx), "-o", str(out / "f.onnx")),
            ("quantize", str(tiny_onnx), "-o", str(out / "q.onnx"), "--mode", "static", "--max-accuracy-drop", "50"),
            ("compile", str(tiny_onnx), "-o", str(out / "ov.xml"), "--target", "openvino-cpu", "--precision", "int8",
             "--max-accuracy-drop", "50"),
            ("debug", str(tiny_onnx), str(out / "q.onnx"), "-o", str(out / "debug.json"))]
    for args in runs:
        proc = run_cli(*args, *([] if args[0] == "debug" else ["--no-measure", *FAST]), cwd=cwd)
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in cwd.iterdir()) == []


def test_two_tiers_run_the_same_suite_and_the_readme_names_both():
    """make test runs everything (as CI does); make check is the fast tier: the same tests less those marked slow.
    A slow marker that pytest did not know would be an error (--strict-markers), so 'not slow' selects for real."""
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = makefile.split("\ntest: install\n", 1)[1].split("\n\n", 1)[0]
    check_recipe = makefile.split("\ncheck: install\n", 1)[1].split("\n\n", 1)[0]
    assert "pytest" in test_recipe and "not slow" not in test_recipe
    assert check_recipe.replace(' -m "not slow"', "") == test_recipe
    assert "slow:" in (ROOT / "pyproject.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make check" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_ruff_finds_nothing():
    """The lint rules in pyproject.toml ([tool.ruff]) hold over the package, its tests and the benchmarks."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "optkit", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_the_type_checker_finds_nothing(tmp_path):
    """mypy over the package ([tool.mypy]): strict where the records flow (types, engine, optimize, report), so a
    result read by a key that does not exist, or a record passed where a dict was, fails here and not in a run."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-1000:]


def _python_files() -> list[Path]:
    return sorted((ROOT / "optkit").rglob("*.py"))


def test_no_module_over_400_lines_and_no_function_over_80():
    """A module owns one idea and a function does one thing: past these sizes both stopped doing so here before."""
    import ast

    long_modules, long_functions = [], []
    for path in _python_files():
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        if text.count("\n") > 400:
            long_modules.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{name}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long_modules == [] and long_functions == [], "\n".join(long_modules + long_functions)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The optkit modules ``path`` imports anywhere in its text (lazy imports inside functions too)."""
    import ast

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found - {module}


def test_no_import_circle_inside_a_package():
    """Modules of one package that import each other (at any depth, lazily or not) are one idea cut in two or a
    record in the wrong place: each package's import graph is acyclic."""
    import graphlib

    files = {_module_name(p): p for p in _python_files()}
    graph = {m: _imports_of(p, m, set(files)) for m, p in files.items()}
    circles = []
    for package in {m.rpartition(".")[0] for m in files}:
        inside = {m: {d for d in deps if d.rpartition(".")[0] == package} for m, deps in graph.items()
                  if m.rpartition(".")[0] == package}
        try:
            graphlib.TopologicalSorter(inside).prepare()
        except graphlib.CycleError as err:
            circles.append(" -> ".join(err.args[1]))
    assert circles == [], "\n".join(circles)
