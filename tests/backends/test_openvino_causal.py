"""A Llama-style causal LM as an OpenVINO IR with a stateful KV cache (openvino-genai's interface), run one token at a
time by OVCausalLM: transformers' own greedy tokens in fp32; NNCF int8/int4 weight compression of the IR."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.hf_models import llama_folder

pytest.importorskip("openvino")
pytest.importorskip("transformers")

PROMPTS = ["the cat runs", "a dog likes the report and", "my friend"]


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    """The folder, its transformers model and tokenized prompts, the stateful ov.Model and its fp32 IR on disk."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import openvino as ov

    from optkit.backends.openvino_llm_compile import export_ir

    root = tmp_path_factory.mktemp("ovlm")
    folder = llama_folder(root / "llama")
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    prompts = [tok(p, return_tensors="np")["input_ids"] for p in PROMPTS]
    facts = export_ir(model, root / "fp32.xml")
    return SimpleNamespace(folder=folder, model=model, prompts=prompts, xml=root / "fp32.xml", facts=facts,
                           ov_model=ov.Core().read_model(str(root / "fp32.xml")), root=root)


def _save(ov_model, xml: Path) -> Path:
    import openvino as ov

    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    return xml


def _lm(xml: Path):
    from optkit.backends.openvino import open_ir
    from optkit.backends.openvino_causal import OVCausalLM

    return OVCausalLM(open_ir(xml))


def test_ir_has_genai_interface_and_kv_cache_as_state(llm):
    import openvino as ov

    from optkit.backends.openvino import open_ir

    art = open_ir(llm.xml)
    assert [t.name for t in art.inputs] == ["input_ids", "attention_mask", "position_ids", "beam_idx"]
    assert [t.name for t in art.outputs] == ["logits"] and art.outputs[0].shape[-1] == llm.model.config.vocab_size
    model = ov.Core().read_model(str(llm.xml))
    ops = [op.get_type_name() for op in model.get_ops()]
    layers = llm.model.config.num_hidden_layers
    assert ops.count("ReadValue") == ops.count("Assign") == 2 * layers
    assert llm.facts == {"stateful": True, "kv_layers": layers}
    assert {w.get_type_name() for op in model.get_ops() if op.get_type_name() == "Constant"
            for w in [op.get_output_element_type(0)]} <= {"f32", "i64", "i32", "boolean", "u8"}  # no fp16 weights


def test_greedy_tokens_equal_transformers_generate(llm):
    from optkit.backends.openvino_llm_compile import greedy_mismatches

    assert greedy_mismatches(llm.model, llm.xml, llm.prompts, max_new_tokens=10) == []


def test_start_resets_the_cache_and_gives_every_position_logits(llm):
    import torch

    ids = llm.prompts[1]
    with torch.no_grad():
        full = llm.model(torch.as_tensor(ids)).logits[0].numpy()
    with _lm(llm.xml) as lm:
        first = lm.start(ids)
        lm.step(5)
        again = lm.start(ids)  # the cache of the first sequence is gone
        nxt = lm.step(int(first[-1].argmax()))
    assert first.shape == full.shape and np.abs(first - full).max() < 1e-4
    np.testing.assert_array_equal(first, again)
    with torch.no_grad():
        longer = llm.model(torch.as_tensor(np.concatenate([ids, [[first[-1].argmax()]]], axis=1))).logits[0, -1]
    assert np.abs(nxt - longer.numpy()).max() < 1e-4


def test_generators_registry_opens_an_ir(llm):
    from optkit.backends.generative import greedy, open_causal_lm
    from optkit.backends.openvino import open_ir

    with open_causal_lm(open_ir(llm.xml), threads=1) as lm:
        assert len(greedy(lm, llm.prompts[0], 4)) == 4


def test_int8_weights_keep_greedy_tokens(llm):
    from optkit.backends.openvino_llm_compile import WeightCompression, compress, reference_greedy

    model, facts = compress(llm.ov_model.clone(), WeightCompression("int8"))
    xml = _save(model, llm.root / "int8.xml")
    assert facts["mode"] == "int8_asym" and facts["weight_types"].get("u8", 0) >= 2 * 7 + 2
    from optkit.backends.generative import greedy

    with _lm(xml) as lm:
        assert greedy(lm, llm.prompts[0], 6) == reference_greedy(llm.model, llm.prompts[0], 6)
    assert xml.with_suffix(".bin").stat().st_size < 0.4 * llm.xml.with_suffix(".bin").stat().st_size


def test_int4_weights_are_4_bit_and_smaller(llm):
    from optkit.backends.generative import greedy
    from optkit.backends.openvino_llm_compile import WeightCompression, compress

    model, facts = compress(llm.ov_model.clone(), WeightCompression("int4", group_size=16, ratio=1.0))
    xml = _save(model, llm.root / "int4.xml")
    assert facts["mode"] == "int4_sym" and facts["group_size"] == 16 and facts["weight_types"]["i4"] == 14
    int8 = llm.root / "int8.bin"
    assert xml.with_suffix(".bin").stat().st_size < (int8.stat().st_size if int8.exists() else 1e12)
    with _lm(xml) as lm:
        assert len(greedy(lm, llm.prompts[0], 6)) == 6


@pytest.mark.slow
def test_int4_asymmetric_data_aware(llm):
    from optkit.backends.generative import greedy
    from optkit.backends.openvino_llm_compile import WeightCompression, compress

    how = WeightCompression("int4", group_size=16, ratio=0.5, symmetric=False, awq=True, scale_estimation=True)
    model, facts = compress(llm.ov_model.clone(), how, samples=llm.prompts)
    assert facts["mode"] == "int4_asym" and facts["calibration_samples"] == 3 and facts["awq"]
    assert facts["weight_types"]["u4"] > 0 and facts["weight_types"]["u8"] > 2  # half the layers int8
    with _lm(_save(model, llm.root / "awq.xml")) as lm:
        assert len(greedy(lm, llm.prompts[0], 4)) == 4


def test_bad_compression_requests_are_usage_errors(llm):
    from optkit.backends.openvino_llm_compile import WeightCompression, compress
    from optkit.types.errors import UsageError

    with pytest.raises(UsageError, match="needs calibration text"):
        compress(llm.ov_model, WeightCompression("int4", awq=True))
    with pytest.raises(UsageError, match="apply to int4"):
        compress(llm.ov_model, WeightCompression("int8", scale_estimation=True), samples=llm.prompts)
    with pytest.raises(UsageError, match="int8 or int4"):
        compress(llm.ov_model, WeightCompression("fp16"))


def test_a_stateless_ir_is_refused_by_the_generator(tmp_path):
    import openvino as ov
    from openvino import opset13

    from optkit.backends.openvino import open_ir
    from optkit.backends.openvino_causal import OVCausalLM
    from optkit.types.errors import UsageError

    x = opset13.parameter([1, 4], ov.Type.f32, name="input")
    ov.save_model(ov.Model([opset13.relu(x)], [x]), str(tmp_path / "plain.xml"))
    with pytest.raises(UsageError, match="not a stateful causal-LM IR"):
        OVCausalLM(open_ir(tmp_path / "plain.xml"))


def _request(llm, out: Path, precision: str = "fp32"):
    from optkit.backends.compiling import CompileOptions, CompileRequest
    from optkit.types.artifact import Artifact
    from optkit.types.ui import UI

    source = Artifact(path=llm.folder, format="torch", task="text-generation")
    return CompileRequest(source=source, out=out, precision=precision, options=CompileOptions(), ui=UI(quiet=True))


def test_compile_route_verifies_fp32_and_records_compression(llm, tmp_path, monkeypatch):
    import optkit.backends.openvino_llm_compile as lc
    from optkit.backends.openvino_llm_compile import WeightCompression, compile_causal_lm

    monkeypatch.setattr(lc, "stateful_model", lambda model: llm.ov_model.clone())  # converted once, in the fixture

    built = compile_causal_lm(_request(llm, tmp_path / "fp32.xml"), llm.model, None, llm.prompts, max_new_tokens=6)
    assert built.artifact.format == "openvino" and built.artifact.task == "text-generation"
    assert built.artifact.runtime == {"inference_precision": "f32", "device": "CPU"}
    assert built.facts.to_json() == {"stateful": True, "kv_layers": 2, "verified_prompts": 3}
    how = WeightCompression("int8")
    built = compile_causal_lm(_request(llm, tmp_path / "int8.xml", "int8"), llm.model, how, llm.prompts[:1], None, 4)
    facts = built.facts.to_json()
    assert facts["nncf"]["mode"] == "int8_asym" and 0 <= facts["greedy_agreement"] <= 1


def test_fp32_ir_that_disagrees_with_generate_fails_the_build(llm, tmp_path, monkeypatch):
    import optkit.backends.openvino_llm_compile as lc
    from optkit.types.errors import StepError

    monkeypatch.setattr(lc, "stateful_model", lambda model: llm.ov_model.clone())
    monkeypatch.setattr(lc, "reference_greedy", lambda model, ids, n: [0] * n)  # transformers "says" otherwise
    with pytest.raises(StepError, match="differ from transformers' generate on 3 of 3 prompts"):
        lc.compile_causal_lm(_request(llm, tmp_path / "bad.xml"), llm.model, None, llm.prompts, max_new_tokens=3)


def test_plain_runner_gives_every_position_logits_of_padded_rows(llm):
    import torch

    from optkit.backends.openvino import OpenVINORunner, open_ir

    a, b = llm.prompts[1], llm.prompts[0]
    ids = np.full((2, a.shape[1]), 2, dtype=np.int64)
    mask = np.zeros_like(ids)
    ids[0], mask[0] = a[0], 1
    ids[1, :b.shape[1]], mask[1, :b.shape[1]] = b[0], 1
    runner = OpenVINORunner(open_ir(llm.xml))
    for _ in range(2):  # the cache is reset per call
        logits = runner.infer({"input_ids": ids, "attention_mask": mask})["logits"]
        with torch.no_grad():
            ref = llm.model(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)).logits.numpy()
        np.testing.assert_allclose(logits[mask == 1], ref[mask == 1], atol=1e-4)


def _step_context(llm, tmp_path):
    from optkit.eval.data import EvalData
    from optkit.eval.measure import MeasureSettings
    from optkit.steps.base import StepContext
    from optkit.types.ui import UI

    ids = np.full((3, 8), 2, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, p in enumerate(llm.prompts):
        n = min(8, p.shape[1])
        ids[i, :n], mask[i, :n] = p[0, :n], 1
    return StepContext(ui=UI(quiet=True), data=EvalData(inputs={"input_ids": ids, "attention_mask": mask}, labels=None),
                       settings=MeasureSettings(), out_tmp=tmp_path / "m.xml", companion=lambda s: tmp_path / f"m{s}")


def test_compile_step_routes_a_text_generation_model_to_the_stateful_ir(llm, tmp_path, monkeypatch):
    import optkit.backends.openvino_llm_compile as lc
    import optkit.types.lazy as lazy
    from optkit.steps.compile import CAUSAL_LOADER, CompileConfig, CompileStep
    from optkit.types.artifact import Artifact

    real = lazy.load_dotted
    monkeypatch.setattr(lazy, "load_dotted", lambda target: (lambda art: llm.model) if target == CAUSAL_LOADER
                        else real(target))
    monkeypatch.setattr(lc, "stateful_model", lambda model: llm.ov_model.clone())
    source = Artifact(path=llm.folder, format="torch", task="text-generation")
    config = CompileConfig(target="openvino-cpu", precision="int4", group_size=16, ratio=0.5)
    assert "torch" in CompileStep.input_formats(config, "text-generation")
    assert "torch" not in CompileStep.input_formats(config, "classification")  # refused at planning, as before
    result = CompileStep().run(_step_context(llm, tmp_path), source, config)
    assert result.artifact is not None and result.artifact.task == "text-generation"
    details = result.details.to_json()
    assert details["target"] == "openvino-cpu" and details["precision"] == "int4"
    assert details["nncf"]["mode"] == "int4_asym" and details["nncf"]["ratio"] == 0.5 and details["stateful"]
    assert CompileStep.describe(result.details) == "openvino-cpu int4; NNCF weights int4_asym group 16 ratio 0.5"


@pytest.mark.slow  # two CLI subprocesses
def test_compile_refuses_int4_and_torch_for_other_models(tiny, tiny_onnx, tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "out" / "m.xml"
    proc = run_cli("compile", str(tiny_onnx), "-o", str(out), "--target", "openvino-cpu", "--precision", "int4")
    assert proc.returncode == 2 and "int4 is the weight-only compression" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.parent.exists()
    proc = run_cli("compile", str(tiny["folder"]), "-o", str(out), "--target", "openvino-cpu")
    assert proc.returncode == 2 and "takes onnx models" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out.parent.exists()
