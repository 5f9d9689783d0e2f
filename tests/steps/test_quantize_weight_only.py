"""quantize --mode weight-only on a causal-LM export with past key/values: int8 and int4 MatMulNBits, judged by
greedy tokens and logits against the fp32 export. The Llama-style model is built here and trained for a few
seconds on the generated sentences, so its greedy continuations are confident enough to mean something."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.hf_models import llama_folder, sentences, train_briefly


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """(fp32 export artifact, evaluation prompts as token rows)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optkit.backends import onnx_io
    from optkit.steps._causal_export import export_causal_lm

    root = tmp_path_factory.mktemp("wo")
    folder = llama_folder(root / "model")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    train_briefly(model, tokenizer)
    export_causal_lm(model, root / "fp32.onnx")
    prompts = [tokenizer(f"<s>{t}").input_ids[:4] for t in sentences(3, seed=9)]
    return onnx_io.produced_artifact(root / "fp32.onnx", "export", "text-generation"), prompts


def _ctx(tmp_path: Path, prompts: list[list[int]], name: str):
    from optkit.eval.data import EvalData
    from optkit.eval.measure import MeasureSettings
    from optkit.steps.base import StepContext
    from optkit.types.ui import UI

    width = max(map(len, prompts))
    ids = np.full((len(prompts), width), 2, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)], mask[row, :len(prompt)] = prompt, 1
    return StepContext(ui=UI(quiet=True), data=EvalData(inputs={"input_ids": ids, "attention_mask": mask}, labels=None),
                       settings=MeasureSettings(), out_tmp=tmp_path / name, out_final=tmp_path / f"final-{name}")


def _quantize(lm, tmp_path, name: str, **options):
    from optkit.steps.quantize import QuantizeStep
    from optkit.steps.quantize.config import QuantizeConfig

    config = QuantizeConfig(mode="weight-only", **options)
    return QuantizeStep().run(_ctx(tmp_path, lm[1], name), lm[0], config)


def _ops(path: Path) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_int8_keeps_greedy_tokens_and_logits(lm, tmp_path):
    from optkit.backends.generative import greedy
    from optkit.backends.onnx_causal import OrtCausalLM
    from optkit.steps.quantize import QuantizeStep

    result = _quantize(lm, tmp_path, "int8.onnx", bits=8, group_size=32)
    details = result.details
    assert details.check.ok and details.generation.same_continuations == 3
    assert details.generation.token_agreement == 1.0 and details.generation.logits_cosine > 0.999
    ops = _ops(result.artifact.path)
    assert ops.count("MatMulNBits") == details.nodes["quantized"] == details.nodes["quantizable"] == 15
    assert ops.count("MatMul") == 4  # attention's two per layer: no constant weight
    import onnx

    node = next(n for n in onnx.load(str(result.artifact.path)).graph.node if n.op_type == "MatMulNBits")
    attrs = {a.name: a.i for a in node.attribute}
    assert (attrs["bits"], attrs["block_size"], attrs["accuracy_level"]) == (8, 32, 4)  # int8 compute by default
    with OrtCausalLM(lm[0]) as fp32, OrtCausalLM(result.artifact) as int8:
        ids = np.array([lm[1][0]])
        np.testing.assert_allclose(int8.start(ids), fp32.start(ids), atol=0.05)
        assert greedy(int8, ids, 12) == greedy(fp32, ids, 12)
    assert "weight-only int8 (group 32, asymmetric, int8 compute), 15/15" in QuantizeStep.describe(details)
    assert QuantizeStep.Details.model_validate(details.to_json()) == details


def test_int4_runs_and_is_smaller(lm, tmp_path):
    from optkit.backends.generative import greedy
    from optkit.backends.onnx_causal import OrtCausalLM

    int4 = _quantize(lm, tmp_path, "int4.onnx", bits=4, group_size=32, symmetric=True)
    int8 = _quantize(lm, tmp_path, "int8.onnx", bits=8, group_size=32)
    sizes = [a.path.stat().st_size for a in (lm[0], int8.artifact, int4.artifact)]
    assert sizes[0] > sizes[1] > sizes[2]
    assert int4.details.check.ok and int4.details.generation.logits_cosine > 0.99
    assert int4.details.symmetric and int4.details.lm_head == "int4"
    with OrtCausalLM(int4.artifact) as model:
        assert len(greedy(model, np.array([lm[1][1]]), 8)) == 8


def test_lm_head_and_embedding_choices(lm, tmp_path):
    import onnx

    from optkit.steps.quantize.weight_only import lm_head_node

    kept = _quantize(lm, tmp_path, "head.onnx", bits=4, lm_head=False, embedding=True)
    assert kept.details.lm_head == "float" and kept.details.embedding == "int4"
    model = onnx.load(str(kept.artifact.path))
    head = lm_head_node(model)
    assert head is not None and next(n for n in model.graph.node if n.name == head).op_type == "MatMul"
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulNBits") == 14 and ops.count("GatherBlockQuantized") == 1


def test_bad_weight_only_options_exit_2(lm, tmp_path):
    from optkit.steps.quantize.config import QuantizeConfig
    from optkit.steps.quantize.weight_only import check_weight_only
    from optkit.types.errors import UsageError

    with pytest.raises(UsageError, match="4 bits only") as err:
        check_weight_only(QuantizeConfig(mode="weight-only", bits=8, embedding=True))
    assert err.value.exit_code == 2
    with pytest.raises(UsageError, match="matches no node"):
        _quantize(lm, tmp_path, "x.onnx", exclude=["NoSuchOp"])
    with pytest.raises(ValueError, match="16, 32, 64, 128 or 256"):
        QuantizeConfig(mode="weight-only", group_size=48)


def test_cli_refuses_bits_other_than_4_or_8(lm, tmp_path):
    from tests.conftest import invoke

    result = invoke("quantize", str(lm[0].path), "-o", str(tmp_path / "q.onnx"), "--mode", "weight-only",
                    "--bits", "3")
    assert result.exit_code == 2 and "--bits" in result.output and "4 or 8" in result.output, result.output
    assert "Traceback" not in result.output


def test_a_broken_product_fails_the_step(lm, tmp_path):
    from optkit.types.errors import StepError

    with pytest.raises(StepError, match="weight-only int4") as err:
        _quantize(lm, tmp_path, "strict.onnx", bits=4, group_size=256, min_cosine=0.99999)
    assert err.value.exit_code == 1
