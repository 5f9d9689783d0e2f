from __future__ import annotations

import pytest
from pydantic import ValidationError

from optkit.engine.gates import Gate, evaluate
from optkit.types.ledger import LedgerRow


def _lat(p50, batch):
    return {"p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "throughput": batch / p50, "batch_size": batch, "threads": 1}


def _row(index, step, acc=None, p50=None, size=1_000_000, drift=None, batch=1):
    """A ledger row as report.json holds it (``LedgerRow.to_json``), read back."""
    return LedgerRow.model_validate({
        "index": index, "step": step, "artifact": f"/x/{step}.onnx", "format": "onnx", "size_bytes": size,
        "sha256": step, "accuracy": {"metric": "top1", "value": acc} if acc is not None else None,
        "latency": _lat(p50, batch) if p50 else None,
        "latency_all": [_lat(p50, batch), _lat(6 * p50, 8)] if p50 else [],
        "fidelity": {"max_abs_diff": drift, "mean_abs_diff": drift, "cosine": 1.0, "min_cosine": 1.0}
        if drift is not None else None})


ROWS = [_row(0, "original", 0.99, 8.0, 2_600_000, 0.0), _row(1, "export", 0.99, 4.0, 2_600_000, 1e-5),
        _row(2, "quantize", 0.985, 2.0, 700_000, 0.3)]


@pytest.mark.parametrize("gate,passed,text", [
    ({"max_accuracy_drop": 0.5}, True, "max_accuracy_drop 0.5 on quantize vs original: measured 0.50 pt, limit 0.5 pt"),
    ({"max_accuracy_drop": 0.4}, False, "measured 0.50 pt"),
    ({"min_speedup": 4}, True, "measured 4.00x, limit 4x"),
    ({"min_speedup": 2.5, "baseline": "export"}, False, "vs export: measured 2.00x"),
    ({"max_latency_ms": 10, "batch_size": 8}, False, "at batch 8 on quantize: measured 12.00 ms"),
    ({"max_size_mb": 1}, True, "measured 0.70 MB"),
    ({"max_drift": 1e-4, "step": "export"}, True, "on export: measured 1e-05"),
    ({"max_drift": 0.1}, False, "measured 0.3"),
])
def test_gates_judge_the_ledger(gate, passed, text):
    (result,) = evaluate([Gate(**gate)], ROWS)
    assert result.passed is passed and text in result.text, result.text


def test_a_gate_that_cannot_be_judged_fails():
    rows = [_row(0, "original", None, 8.0), _row(1, "export", None, 4.0)]
    (result,) = evaluate([Gate(max_accuracy_drop=1.0)], rows)
    assert not result.passed and "cannot judge" in result.text
    (result,) = evaluate([Gate(max_latency_ms=5, batch_size=32)], rows)
    assert not result.passed and "batch 32 was not measured" in result.text


@pytest.mark.parametrize("raw", [{}, {"min_speedup": 2, "max_size_mb": 1}, {"min_speedup": 0}, {"max_drift": 1, "x": 1}])
def test_a_gate_sets_exactly_one_valid_limit(raw):
    with pytest.raises(ValidationError):
        Gate(**raw)
