"""The generative ledger from hand-made records (fast): a causal LM's rows show perplexity, its change, agreement,
TTFT and decode tokens/s instead of accuracy; SLOWER judges decode tokens/s; the gates max_ppl_increase and
min_tokens_per_s pass and fail; a fixed model's rows and JSON are what they were."""
from __future__ import annotations

import pytest

from optkit.engine.gates import Gate, evaluate
from optkit.report.ledger import GEN_HEADERS, HEADERS, ledger_markdown, render_ledger
from optkit.types.generative import GenerationMetrics, GenerationTiming
from optkit.types.ledger import ledger_rows
from optkit.types.records import Latency, Metrics, StepRecord


def _timing(tps: float) -> list[GenerationTiming]:
    return [GenerationTiming(prompt_tokens=n, new_tokens=32, threads=1, ttft_ms=n / 64, ttft_p90_ms=n / 60,
                             decode_tokens_per_s=tps, decode_ms_per_token=1e3 / tps, runs=3) for n in (128, 512)]


def _rec(step: str, fmt: str, ppl: float | None, tps: float, agreement: float = 1.0) -> StepRecord:
    metrics = Metrics(latency=[Latency(batch_size=1, threads=1, p50_ms=2.0, p90_ms=2.1, p99_ms=2.2, throughput=500)])
    if ppl is not None:
        metrics.generation = GenerationMetrics(perplexity=ppl, tokens=400, prompts=3, new_tokens=16,
                                               token_agreement=agreement, ppl_increase=ppl / 10.0 - 1,
                                               timing=_timing(tps), reference_tokens=[[5, 6]] if step == "original"
                                               else None)
    return StepRecord(step=step, artifact=f"/x/{step}", format=fmt, sha256=step, size_bytes=1000, metrics=metrics)


def _chain(q_ppl: float = 10.1, q_tps: float = 300.0):
    return [_rec("original", "torch", 10.0, 100.0), _rec("export", "onnx", 10.0, 200.0),
            _rec("quantize", "onnx", q_ppl, q_tps, agreement=0.9)]


def test_rows_and_markdown_show_per_token_columns():
    rows = ledger_rows(_chain())
    assert rows[2].decode_speedup_vs_parent == pytest.approx(1.5)
    assert rows[2].decode_speedup_vs_original == pytest.approx(3.0) and not rows[2].slower
    md = ledger_markdown(rows)
    assert md.splitlines()[0] == "| " + " | ".join(GEN_HEADERS) + " |"
    line = md.splitlines()[4]
    assert "| 10.100 | +1.00% | 90.00% | 2.0 | 8.0 | 300.0 | 1.50x | 3.00x |" in line
    assert "accuracy" not in md.splitlines()[0] and "not interleaved" in md
    out = rows[0].to_json()
    assert out["generation"]["perplexity"] == 10.0 and "reference_tokens" not in out["generation"]
    assert out["decode_speedup_vs_original"] == 1.0


def test_rich_table_has_the_generative_columns():
    from rich.console import Console

    console = Console(record=True, width=250)
    render_ledger(console, ledger_rows(_chain()))
    text = console.export_text()
    assert "decode tok/s" in text and "TTFT@512 ms" in text and "time to first token" in text


def test_slower_flag_on_decode_tokens_per_s():
    rows = ledger_rows(_chain(q_tps=150.0))  # prefill p50 the same: only decode tokens/s says it is slower
    assert rows[2].slower and "decode tokens/s" in rows[2].notes[-1]
    assert "0.75x SLOWER" in ledger_markdown(rows)


def test_generation_gates_pass_and_fail():
    rows = ledger_rows(_chain())
    ok = evaluate([Gate(max_ppl_increase=2), Gate(min_tokens_per_s=250)], rows)
    assert [g.passed for g in ok] == [True, True], [g.text for g in ok]
    assert ok[0].measured == pytest.approx(1.0) and "+1.00%" in ok[0].text and "vs original" in ok[0].text
    assert "300.00 tokens/s" in ok[1].text
    bad = evaluate([Gate(max_ppl_increase=5), Gate(min_tokens_per_s=400)], ledger_rows(_chain(q_ppl=11.0)))
    assert [g.passed for g in bad] == [False, False] and bad[0].measured == pytest.approx(10.0)
    on_export = evaluate([Gate(max_ppl_increase=0.5, step="export")], rows)[0]
    assert on_export.passed and on_export.step == "export"


def test_a_generation_gate_on_a_fixed_model_cannot_judge_and_fails():
    rows = ledger_rows([_rec("original", "torch", None, 0), _rec("quantize", "onnx", None, 0)])
    for gate in (Gate(max_ppl_increase=5), Gate(min_tokens_per_s=1)):
        verdict = evaluate([gate], rows)[0]
        assert not verdict.passed and verdict.measured is None and "cannot judge" in verdict.text


def test_fixed_model_rows_are_unchanged():
    rows = ledger_rows([_rec("original", "torch", None, 0), _rec("quantize", "onnx", None, 0)])
    out = rows[1].to_json()
    assert not {"generation", "decode_speedup_vs_parent", "decode_speedup_vs_original"} & set(out)
    assert ledger_markdown(rows).splitlines()[0] == "| " + " | ".join(HEADERS) + " |"
    assert Metrics(latency=rows[1].latency_all).to_json().keys() == {"latency"}  # no generation key in sidecars
