"""The engine's measuring and timing on the fake backend: fast, and free of torch and ONNX Runtime."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from optkit.eval.data import EvalData
from optkit.eval.measure import MeasureSettings, measure, measure_side_by_side
from tests.fakes import fake_backend  # noqa: F401 (fixture)

DATA = EvalData({"x": np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)}, None)
QUICK = MeasureSettings(batch_sizes=(1,), budget_s=0.2)


def test_side_by_side_timing_sees_a_known_ratio(fake_backend, tmp_path):
    fast, slow = fake_backend(tmp_path, "fast", cost_us=300), fake_backend(tmp_path, "slow", cost_us=900)
    lat_fast, lat_slow = measure_side_by_side([fast, slow], DATA, QUICK)
    ratio = lat_slow[0].p50_ms / lat_fast[0].p50_ms
    assert 2.4 < ratio < 3.6  # 900 vs 300 us, interleaved


def test_measure_reports_the_metric_against_the_reference(fake_backend, tmp_path):
    from optkit.eval.task_metric import resolve_metric

    settings = MeasureSettings(batch_sizes=(1,), budget_s=0.05, metric=resolve_metric("max_abs", tmp_path))
    ref = measure(fake_backend(tmp_path, "ref"), DATA, settings, self_reference=True)
    off = measure(fake_backend(tmp_path, "off", scale=1.5), DATA, settings, reference=ref.outputs)
    assert ref.accuracy.value == 0.0 and ref.accuracy.metric == "max_abs"
    expected = float(np.abs(DATA.inputs["x"] * 0.5).max())
    assert abs(off.accuracy.value - expected) < 1e-5 and off.accuracy.higher_is_better is False


def test_the_ledger_timing_pass_uses_known_artifacts(fake_backend, tmp_path):
    from optkit.engine.timing import time_ledger
    from optkit.types.records import StepRecord
    from optkit.types.ui import UI

    arts = [fake_backend(tmp_path, f"a{i}", cost_us=c) for i, c in enumerate((800, 400, 200))]
    arts = [art.with_(record=StepRecord(step=f"s{i}", sha256=art.digest(), artifact=str(art.path), format="fake",
                                        size_bytes=art.size_bytes())) for i, art in enumerate(arts)]
    final = arts[-1].with_(lineage=[a.record for a in arts[:-1]])
    latency = time_ledger(final, {a.record.sha256: a for a in arts}, DATA, QUICK, UI(quiet=True))
    p50 = [lat[0].p50_ms for lat in latency]
    assert p50[0] > p50[1] > p50[2] and 1.5 < p50[0] / p50[1] < 2.6


def test_the_fake_backend_needs_no_heavy_runtime(tmp_path):
    """A whole recipe (steps, profile, cache keys, ledger timing pass, gates, reports) through ``optkit run``."""
    root = Path(__file__).resolve().parents[2]
    code = f"""
import sys
sys.path.insert(0, {str(root)!r})
from pathlib import Path
from tests import fakes
fakes.register()
project = fakes.FakeProject(Path({str(tmp_path)!r}))
fakes.write_fake(project.model, cost_us=50.0)
fakes.fake_data(project.data)
project.recipe("[fake_export, {{fake: {{cost: 0.5}}}}, profile]", gates="[{{max_accuracy_drop: 1.0}}]")
result, report = project.run()
print(result.exit_code, report["status"], [m for m in ('torch', 'onnxruntime', 'openvino', 'onnx') if m in sys.modules])
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "0 passed []", proc.stdout + proc.stderr[-3000:]
