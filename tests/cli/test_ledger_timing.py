"""The ledger's latency columns come from one interleaved pass at the end of the run, so its speedups
hold on a busy machine: they agree with `optkit compare` on the same files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _on_core(core: int):
    return lambda: os.sched_setaffinity(0, {core})


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs two CPUs")
def test_ledger_speedup_agrees_with_compare_while_another_process_hogs_a_core(tmp_path):
    out = tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {ROOT / 'sample_models' / 'digits_cnn'}\noutput_dir: {out}\n"
                      "measure: {batch_sizes: [1], threads: 1, budget_s: 1}\n"
                      "steps:\n  - export\n  - quantize: {mode: static}\n")
    env = {k: v for k, v in os.environ.items() if k != "OPTKIT_DEBUG"}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=_on_core(1))
    try:
        run = subprocess.run([sys.executable, "-m", "optkit", "run", str(recipe), "--json"], env=env,
                             capture_output=True, text=True, timeout=600, preexec_fn=_on_core(0))
        assert run.returncode == 0, run.stderr
        rows = json.loads(run.stdout)["steps"]
        assert [r["timing"] for r in rows] == ["interleaved"] * 3
        ledger = rows[2]["speedup_vs_parent"]
        compared = []
        for _ in range(2):  # two compares: on a shared VM, compare itself moves a few percent from run to run
            cmp = subprocess.run([sys.executable, "-m", "optkit", "compare", str(out / "00_export.onnx"),
                                  str(out / "01_quantize.onnx"), "--budget-s", "1", "--json"], env=env,
                                 capture_output=True, text=True, timeout=600, preexec_fn=_on_core(0))
            assert cmp.returncode == 0, cmp.stderr
            compared.append(json.loads(cmp.stdout)["artifacts"][1]["speedup_vs_first"][0])
    finally:
        hog.kill()
        hog.wait()
    # step-time ledgers were off by 2-3x on a loaded machine; one interleaved pass agrees with compare, within
    # what compare itself moves between runs here (seen: 2.98x and 4.15x a minute apart on a shared 2-core VM)
    assert 0.85 * min(compared) <= ledger <= 1.15 * max(compared), f"ledger {ledger:.2f}x vs compare {compared}"
    # the sidecar keeps what was measured when the step ran, and says so in the report's rows
    sidecar = json.loads((out / "01_quantize.onnx.optkit.json").read_text())
    assert sidecar["record"]["metrics"]["latency"][0]["p50_ms"] != rows[2]["latency"]["p50_ms"]


def test_a_torch_original_weighs_its_tensors_not_its_python_file(tiny, tmp_path):
    import importlib.util

    from tests.conftest import FAST, invoke

    result = invoke("export", f"{tiny['model_py']}:build", "--eval-data", str(tiny["eval"]), "-o",
                    str(tmp_path / "m.onnx"), "--json", *FAST)  # a factory without weights: random init
    assert result.exit_code == 0, result.output
    spec = importlib.util.spec_from_file_location("tiny_size_check", tiny["model_py"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = sum(t.numel() * t.element_size() for t in module.build().state_dict().values())
    original = json.loads(result.stdout)["steps"][0]
    assert original["size_bytes"] == expected != tiny["model_py"].stat().st_size
