"""The generative ledger: a causal LM's rows carry perplexity (and its change vs the original), greedy-token
agreement with the original, time to first token and decode tokens/s; the ledger shows those columns; the recipe
gates max_ppl_increase and min_tokens_per_s judge them (fast tests from hand-made rows:
tests/report/test_generative_rows.py). The Llama-style model is built and trained here for a few
seconds, so that its perplexity means something (random weights sit at the vocabulary size)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import invoke
from tests.hf_models import llama_folder, sentences, train_briefly

pytestmark = pytest.mark.slow  # a model trained, exported, quantized and measured per token: ~12 s on two busy cores


def _train(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder))
    train_briefly(model, AutoTokenizer.from_pretrained(str(folder)))
    model.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """(folder, text file, the export's CLI result, the int8 quantize's CLI result, the int8 artifact's path)."""
    root = tmp_path_factory.mktemp("genledger")
    folder = llama_folder(root / "model")
    _train(folder)
    text = root / "eval.txt"
    text.write_text("\n".join(sentences(40, seed=5)) + "\n")
    export = invoke("export", str(folder), "--text-data", str(text), "-o", str(root / "m.onnx"), "--budget-s", "0.05")
    quant = invoke("quantize", str(root / "m.onnx"), "--mode", "weight-only", "--bits", "8", "-o",
                   str(root / "q8.onnx"), "--budget-s", "0.05")
    return folder, text, export, quant, root / "q8.onnx"


def _records(path: Path):
    from optkit.backends.opening import open_artifact

    return open_artifact(path).chain()


def test_export_then_int8_shows_perplexity_and_tokens_per_s_rows(lm):
    _, _, export, quant, q8 = lm
    assert export.exit_code == 0, export.output
    assert quant.exit_code == 0, quant.output
    for header in ("perplexity", "Δ ppl orig", "agreement", "TTFT@128 ms", "decode tok/s"):
        assert header in quant.stdout
    assert "accuracy" not in quant.stdout.split("┃ # ┃")[1].splitlines()[0]  # no accuracy columns for an LM
    original, exported, int8 = (r.measured.generation for r in _records(q8))
    assert original is not None and exported is not None and int8 is not None
    assert 1.0 < original.perplexity < 100  # trained: far below the vocabulary size
    assert original.reference_tokens and original.token_agreement == 1.0 and original.ppl_increase == 0.0
    assert abs(exported.perplexity / original.perplexity - 1) < 1e-4 and exported.token_agreement == 1.0
    assert int8.ppl_increase is not None and abs(int8.ppl_increase) < 0.02  # int8 within 2% of the original
    assert int8.token_agreement is not None and int8.token_agreement >= 0.9
    assert int8.reference_tokens is None  # the original's row keeps the reference, no other
    assert [t.prompt_tokens for t in int8.timing] == [128, 512]
    assert all(t.ttft_ms > 0 and t.decode_tokens_per_s > 0 for t in int8.timing)


def test_ledger_rows_json_and_markdown_of_a_causal_lm(lm):
    from optkit.report.ledger import GEN_HEADERS, ledger_markdown
    from optkit.types.ledger import ledger_rows

    rows = ledger_rows(_records(lm[4]))
    assert [r.generation is not None for r in rows] == [True, True, True]
    assert rows[2].decode_speedup_vs_parent is not None and rows[1].decode_speedup_vs_original is not None
    out = rows[2].to_json()
    assert "reference_tokens" not in out["generation"] and out["generation"]["perplexity"] > 1
    json.dumps(out)
    md = ledger_markdown(rows)
    assert md.startswith("| " + " | ".join(GEN_HEADERS) + " |") and "time to first token" in md
    assert "not interleaved" in md  # the caption says the per-token figures are step-time ones


def test_a_failed_generation_gate_exits_3(lm, tmp_path):
    recipe = tmp_path / "lm.yaml"
    recipe.write_text(f"model: {lm[4].with_name('m.onnx')}\noutput_dir: {tmp_path / 'out'}\n"
                      "measure: {budget_s: 0.05}\nsteps:\n  - quantize: {mode: weight-only, bits: 8}\n"
                      "gates:\n  - max_ppl_increase: 2\n  - min_tokens_per_s: 1000000000\n")
    result = invoke("run", str(recipe))
    assert result.exit_code == 3, result.output
    assert "1 of 2 gate(s) failed" in result.stderr and "min_tokens_per_s" in result.output
