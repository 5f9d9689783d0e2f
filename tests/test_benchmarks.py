"""Every benchmark script compiles and prints the machine its figures were measured on (CPU model, SIMD flags)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SCRIPTS = sorted(p for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
                 if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_compiles_and_prints_its_machine(script):
    tree = ast.parse(script.read_text(), filename=str(script))
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "print_machine" in calls, f"{script.name} must print the CPU model and SIMD flags (print_machine())"
