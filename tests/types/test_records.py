"""Typed records read the sidecars the previous optkit wrote, and write the same JSON back.

The fixture is the sidecar of ``recipes/digits_cnn_cpu.yaml``'s quantize step as optkit 74f9a62 (dict records)
wrote it, paths made neutral: original -> export -> simplify -> fuse -> quantize."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from optkit.steps.base import step_class
from optkit.types.sidecar import SIDECAR_VERSION, check_sidecar as _check_sidecar
from optkit.types.records import Check, Metrics, StepRecord

OLD = json.loads((Path(__file__).parent / "data" / "sidecar_v1_74f9a62.json").read_text())
ROWS = [*OLD["lineage"], OLD["record"]]


def test_the_fixture_is_a_version_1_sidecar_of_the_whole_chain():
    assert OLD["optkit_sidecar"] == SIDECAR_VERSION == 1
    assert [r["step"] for r in ROWS] == ["original", "export", "simplify", "fuse", "quantize"]


@pytest.mark.parametrize("row", ROWS, ids=[r["step"] for r in ROWS])
def test_a_record_reads_typed_and_writes_back_the_same_json(row):
    rec = StepRecord.model_validate(row)
    assert rec.to_json() == row  # nothing added, dropped or renamed: the previous version reads it too
    assert rec.measured.latency_at(1).p50_ms == row["metrics"]["latency"][0]["p50_ms"]
    assert rec.measured.fidelity.cosine == row["metrics"]["fidelity"]["cosine"]


@pytest.mark.parametrize("row", ROWS[1:], ids=[r["step"] for r in ROWS[1:]])
def test_each_steps_details_read_back_typed_and_describe_the_same_summary(row):
    step = step_class(row["step"])
    details = step.Details.model_validate(row["details"])
    assert details.to_json() == row["details"]
    assert step.describe(details) == row["summary"]


def test_the_quantize_check_is_a_typed_check():
    details = step_class("quantize").Details.model_validate(OLD["record"]["details"])
    assert isinstance(details.check, Check) and details.check.ok and details.check.judged_metric
    assert details.check.metric == "top1" and details.check.drop is not None


def test_the_sidecar_is_read_into_records():
    sidecar = _check_sidecar(OLD)
    assert isinstance(sidecar.record, StepRecord) and sidecar.record.parent.sha256 == OLD["lineage"][-1]["sha256"]
    assert all(isinstance(r, StepRecord) for r in sidecar.lineage)


def test_a_later_versions_extra_keys_are_kept():
    row = {**ROWS[1], "energy_j": 1.5, "metrics": {**ROWS[1]["metrics"], "p999_ms": 3.0}}
    assert StepRecord.model_validate(row).to_json() == row


def test_an_unmeasured_record_has_empty_metrics():
    row = {k: v for k, v in ROWS[1].items() if k != "metrics"}
    rec = StepRecord.model_validate(row)
    assert rec.metrics is None and rec.measured == Metrics() and rec.measured.latency_at() is None
    assert "metrics" not in rec.to_json()


def test_a_record_with_a_wrongly_typed_key_is_refused():
    with pytest.raises(ValueError, match="size_bytes"):
        _check_sidecar({**OLD, "record": {**OLD["record"], "size_bytes": "big"}})
