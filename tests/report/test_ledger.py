"""Ledger rows: latency from the run's interleaved pass when given, step-time otherwise; slower int8 flagged."""
from __future__ import annotations

from optkit.report.ledger import ledger_markdown
from optkit.types.ledger import ledger_rows
from optkit.types.records import Latency, StepRecord


def _rec(step: str, p50: float) -> StepRecord:
    return StepRecord.model_validate({
        "step": step, "artifact": f"/x/{step}.onnx", "format": "onnx", "size_bytes": 10, "sha256": step,
        "metrics": {"latency": [{"p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "throughput": 1 / p50,
                                 "batch_size": 1, "threads": 1}]}})


def _lat(p50: float) -> list[Latency]:
    return [Latency(p50_ms=p50, p90_ms=p50, p99_ms=p50, throughput=1 / p50, batch_size=1, threads=1)]


def test_interleaved_latency_replaces_step_time_figures():
    chain = [_rec("original", 9.0), _rec("export", 1.0), _rec("quantize", 0.1)]  # taken minutes apart: 90x
    rows = ledger_rows(chain, [_lat(3.0), _lat(2.0), _lat(1.0)])
    assert [r.timing for r in rows] == ["interleaved"] * 3
    assert rows[2].speedup_vs_original == 3.0 and rows[2].speedup_vs_parent == 2.0
    assert "one interleaved round-robin pass over all 3 rows" in ledger_markdown(rows)
    assert chain[2].metrics.latency[0].p50_ms == 0.1  # the records themselves are untouched
    step_time = ledger_rows(chain)
    assert [r.timing for r in step_time] == ["step time"] * 3
    assert "as measured when each step ran" in ledger_markdown(step_time)


def test_a_quantized_model_slower_than_its_input_is_flagged():
    rows = ledger_rows([_rec("original", 1.0), _rec("fuse", 1.0), _rec("quantize", 1.0)],
                       [_lat(1.0), _lat(1.0), _lat(1.9)])
    assert rows[2].slower and any("SLOWER than its input: 0.53x" in n for n in rows[2].notes)
    assert "SLOWER" in ledger_markdown(rows)
    assert not rows[1].slower and "slower" not in rows[1].to_json() and rows[2].to_json()["slower"] is True  # fuse is not a speed step: no flag
    partly = ledger_rows([_rec("original", 1.0), _rec("quantize", 0.5)], [None, _lat(0.5)])
    assert partly[0].timing == "step time" and "except rows 0" in ledger_markdown(partly)
