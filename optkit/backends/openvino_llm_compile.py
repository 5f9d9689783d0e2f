"""A Hugging Face causal LM -> an OpenVINO IR with its KV cache as internal state, as openvino-genai runs it; then,
optionally, NNCF weight-only compression (int8, int4) of that IR.

The IR's interface is openvino-genai's: inputs ``input_ids``, ``attention_mask`` (the whole sequence so far),
``position_ids`` (the new tokens' positions), ``beam_idx`` (which cached row each batch row continues); output
``logits``. Past keys and values never leave the model: ``convert_model`` traces a wrapper that takes and returns
them as tensors, then ``apply_make_stateful_transformation`` turns each (past input, present output) pair into a
ReadValue/Assign state, and every past input is first reordered by ``beam_idx`` (a Gather on the batch axis) and
its state initialised as an empty cache of the prompt's batch size, as optimum-intel's ``patch_stateful`` does
(optimum-intel is not used: the graph surgery is these few lines over OpenVINO's own API).

``compress_weights`` is NNCF's weight-only quantization: int8 (asymmetric, per output channel) or int4
(symmetric or asymmetric, per group of ``group_size`` input channels, ``ratio`` of the layers int4 and the rest
int8), data-free or data-aware (AWQ, scale estimation) on token-id samples run through the stateful IR.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.backends.compiling import CompileFacts
from optkit.types.errors import UsageError
from optkit.types.lazy import require

if TYPE_CHECKING:
    import numpy as np

    from optkit.backends.compiling import Compiled, CompileRequest

BATCH_AXIS = 0  # of every past key/value: [batch, kv_heads, seq, head_dim]


@dataclass(frozen=True)
class WeightCompression:
    """What NNCF's ``compress_weights`` is asked: ``precision`` int8 or int4; int4's group size, share of layers
    (the rest int8) and symmetry; the data-aware methods, which need ``dataset`` samples."""

    precision: str  # "int8" | "int4"
    group_size: int = 128
    ratio: float = 1.0
    symmetric: bool = True
    awq: bool = False
    scale_estimation: bool = False

    @property
    def data_aware(self) -> bool:
        return self.awq or self.scale_estimation


def kv_shape(config: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of a transformers causal-LM config."""
    text = config.get_text_config(decoder=True)
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return text.num_hidden_layers, getattr(text, "num_key_value_heads", None) or heads, head_dim


def _wrapper(model: Any) -> Any:
    """A module whose forward takes the past as flat tensors and returns (logits, *presents): what TorchScript
    tracing sees of a transformers model with a ``DynamicCache`` (filled directly: its lazy first ``update``
    concatenates to an empty constant the tracer cannot give a rank)."""
    import torch
    from transformers import DynamicCache

    class WithPast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.model.config)
            for i, layer in enumerate(cache.layers):
                layer.keys, layer.values = past[2 * i], past[2 * i + 1]
                layer.is_initialized, layer.device = True, past[0].device
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=True)
            return (out.logits, *(t for layer in out.cache.layers for t in (layer.keys, layer.values)))

    return WithPast().eval()


def stateful_model(model: Any) -> Any:
    """The ``ov.Model`` of a transformers causal LM (``*ForCausalLM``, eval mode) with a stateful KV cache."""
    import numpy as np
    import torch

    ov = require("openvino", "OpenVINO IR export of a causal LM")
    layers, kv_heads, head_dim = kv_shape(model.config)
    new, past, batch = 3, 2, 2  # example sizes: a prefill of 3 tokens after 2 cached ones, batch 2
    example = (torch.ones(batch, new, dtype=torch.long), torch.ones(batch, past + new, dtype=torch.long),
               torch.arange(past, past + new).repeat(batch, 1),
               *(torch.zeros(batch, kv_heads, past, head_dim, dtype=model.dtype) for _ in range(2 * layers)))
    pasts = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    presents = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    try:
        with torch.no_grad():
            ov_model = ov.convert_model(_wrapper(model), example_input=example)
    except Exception as exc:
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise UsageError(f"OpenVINO cannot convert this {type(model).__name__} with its KV cache ({text[:200]})",
                         hint="Export it to ONNX instead (compile --target ort-cpu)") from exc
    for port, name in zip(ov_model.inputs, ["input_ids", "attention_mask", "position_ids", *pasts]):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, ["logits", *presents]):
        port.get_tensor().set_names({name})
    _reorder_by_beam(ov, ov_model, pasts)
    from openvino._offline_transformations import apply_make_stateful_transformation

    apply_make_stateful_transformation(ov_model, dict(zip(pasts, presents)))
    _empty_initial_state(ov, ov_model)
    ov_model.set_rt_info(np.int64(layers), ["optkit", "kv_layers"])
    return ov_model


def _reorder_by_beam(ov: Any, ov_model: Any, pasts: list[str]) -> None:
    """Add ``beam_idx`` (i32 [batch]) and gather every past along the batch axis by it (openvino-genai feeds it)."""
    from openvino import opset13

    beam = opset13.parameter(ov.PartialShape([-1]), ov.Type.i32, name="beam_idx")
    beam.output(0).get_tensor().set_names({"beam_idx"})
    ov_model.add_parameters([beam])
    for name in pasts:
        port = ov_model.input(name)
        consumers = list(port.get_target_inputs())
        gather = opset13.gather(port, beam, opset13.constant(BATCH_AXIS))
        for consumer in consumers:
            consumer.replace_source_output(gather.output(0))
    ov_model.validate_nodes_and_infer_types()


def _empty_initial_state(ov: Any, ov_model: Any) -> None:
    """Each ReadValue starts as zeros of [batch of input_ids, heads, 0, head_dim]: a fresh sequence's empty cache."""
    import numpy as np
    from openvino import opset13

    ids = ov_model.input("input_ids")
    batch = opset13.gather(opset13.shape_of(ids, output_type="i64"), opset13.constant([0]), opset13.constant(0))
    for op in ov_model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims: list[Any] = [dim.get_min_length() for dim in op.get_output_partial_shape(0)]
        dims[BATCH_AXIS] = batch
        parts = [opset13.constant(np.array([d], dtype=np.int64)) if isinstance(d, int) else d for d in dims]
        zero = opset13.constant(np.array(0, dtype=op.get_output_element_type(0).to_dtype()))
        op.set_arguments([opset13.broadcast(zero, opset13.concat(parts, axis=0))])
    ov_model.validate_nodes_and_infer_types()


def compress(ov_model: Any, how: WeightCompression, samples: list["np.ndarray"] | None = None) -> tuple[Any, dict[str, Any]]:
    """NNCF weight-only compression of a stateful causal-LM IR; ``samples``: token-id prompts ([1, T] int64) for
    the data-aware methods (each a whole sequence from an empty cache). Returns the model and the facts."""
    nncf = require("nncf", "OpenVINO weight compression")
    if how.precision == "int8":
        mode, extra = nncf.CompressWeightsMode.INT8_ASYM, {}
    elif how.precision == "int4":
        mode = nncf.CompressWeightsMode.INT4_SYM if how.symmetric else nncf.CompressWeightsMode.INT4_ASYM
        extra = {"group_size": how.group_size, "ratio": how.ratio}
    else:
        raise UsageError(f"weight compression takes int8 or int4, not {how.precision}", hint="Use --precision int8|int4")
    dataset = None
    if how.data_aware:
        if how.precision != "int4":
            raise UsageError("AWQ and scale estimation apply to int4 weights", hint="Use --precision int4")
        if not samples:
            raise UsageError("data-aware weight compression (AWQ, scale estimation) needs calibration text",
                             hint="Give --text-data FILE")
        from optkit.backends.openvino_causal import sequence_feed

        dataset = nncf.Dataset(samples, lambda ids: sequence_feed(ids, 0))
        extra.update(awq=how.awq, scale_estimation=how.scale_estimation, subset_size=len(samples))
    compressed = nncf.compress_weights(ov_model, mode=mode, dataset=dataset, **extra)
    facts = {"version": getattr(nncf, "__version__", "?"), "mode": mode.value, **extra,
             "calibration_samples": len(samples) if dataset is not None and samples else 0,
             "weight_types": weight_types(compressed)}
    return compressed, facts


def weight_types(ov_model: Any) -> dict[str, int]:
    """How many weight constants (of two or more dimensions) the IR holds per element type (u4, i4, u8, f32...)."""
    counts: dict[str, int] = {}
    for op in ov_model.get_ops():
        if op.get_type_name() == "Constant" and len(op.get_output_partial_shape(0)) >= 2:
            name = op.get_output_element_type(0).get_type_name()
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def export_ir(model: Any, xml_out: Path, how: WeightCompression | None = None,
              samples: list["np.ndarray"] | None = None) -> dict[str, Any]:
    """Convert, compress if asked, save at full precision (``compress_to_fp16`` off) as ``xml_out`` + ``.bin``."""
    ov = require("openvino", "OpenVINO IR export of a causal LM")
    from optkit.backends.openvino import _stable_names

    from optkit.types.ui import quiet_libraries

    facts: dict[str, Any] = {"stateful": True, "kv_layers": kv_shape(model.config)[0]}
    with quiet_libraries():  # the tracer's warnings, NNCF's tables and progress bars
        ov_model = stateful_model(model)
        if how is not None:
            ov_model, facts["weight_compression"] = compress(ov_model, how, samples)
    _stable_names(ov_model)
    ov.save_model(ov_model, str(xml_out), compress_to_fp16=False)
    return facts


def reference_greedy(model: Any, input_ids: "np.ndarray", max_new_tokens: int) -> list[int]:
    """transformers' own greedy continuation (``generate(do_sample=False)``, batch 1), ending at end-of-sequence."""
    import torch

    ids = torch.as_tensor(input_ids, dtype=torch.long)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                             max_new_tokens=max_new_tokens, repetition_penalty=1.0, pad_token_id=_eos(model)[0])
    return [int(t) for t in out[0, ids.shape[1]:]]


def _eos(model: Any) -> tuple[int, ...]:
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    eos = model.config.eos_token_id if eos is None else eos
    return tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (int(eos),))


def greedy_mismatches(model: Any, xml: Path, prompts: list["np.ndarray"], max_new_tokens: int = 16,
                      threads: int = 1) -> list[tuple[int, list[int], list[int]]]:
    """The prompts (index, IR tokens, transformers tokens) whose greedy continuation by the IR differs from
    transformers' ``generate``; empty when every one agrees (what an fp32 export must give)."""
    from optkit.backends.generative import greedy
    from optkit.backends.openvino import open_ir
    from optkit.backends.openvino_causal import OVCausalLM

    stop, bad = _eos(model), []
    with OVCausalLM(open_ir(xml), threads=threads) as lm:
        for i, ids in enumerate(prompts):
            ours, theirs = greedy(lm, ids, max_new_tokens, stop), reference_greedy(model, ids, max_new_tokens)
            if ours != theirs:
                bad.append((i, ours, theirs))
    return bad


class CausalIRFacts(CompileFacts):
    """What compiling a causal LM to a stateful IR records (the compile details' keys): the cache layout, NNCF's
    weight compression (``nncf``: mode, group size, ratio, data-aware methods, the weight element types), and the
    greedy-token check against transformers' ``generate`` on the evaluation prompts."""

    stateful: bool = True
    kv_layers: int | None = None
    verified_prompts: int | None = None  # fp32: every one gave transformers' tokens, or the build failed
    greedy_agreement: float | None = None  # compressed: share of the prompts whose greedy tokens are transformers'


def compile_causal_lm(request: "CompileRequest", model: Any, how: WeightCompression | None,
                      prompts: list["np.ndarray"], samples: list["np.ndarray"] | None = None,
                      max_new_tokens: int = 16) -> "Compiled":
    """openvino-cpu for a text-generation model: ``model`` (the source's transformers causal LM) -> the stateful
    IR at ``request.out``, weight-compressed when ``how`` says so (on ``samples`` when data-aware). An uncompressed
    IR must give transformers' greedy tokens on every prompt (else ``StepError``); a compressed one records how
    many of the prompts it keeps."""
    from optkit.backends.compiling import Compiled
    from optkit.backends.openvino import open_ir
    from optkit.types.errors import StepError

    with request.ui.status("OpenVINO: converting the causal LM with a stateful KV cache"
                           + (f" and compressing its weights to {how.precision} (NNCF)" if how else "")):
        raw = export_ir(model, request.out, how, samples)
    facts = CausalIRFacts(stateful=True, kv_layers=raw["kv_layers"])
    if "weight_compression" in raw:
        facts.nncf = raw["weight_compression"]
    bad = greedy_mismatches(model, request.out, prompts, max_new_tokens, threads=request.threads)
    if how is None and bad:
        i, ours, theirs = bad[0]
        raise StepError(f"the OpenVINO IR's greedy tokens differ from transformers' generate on {len(bad)} of "
                        f"{len(prompts)} prompts (prompt {i}: {ours[:8]} vs {theirs[:8]})",
                        hint="Report it; meanwhile compile this model with --target ort-cpu")
    if how is None:
        facts.verified_prompts = len(prompts)
    else:
        facts.greedy_agreement = 1 - len(bad) / max(1, len(prompts))
    out = open_ir(request.out).with_(task=request.source.task, runtime={"inference_precision": "f32", "device": "CPU"})
    return Compiled(out, facts)


def prompt_rows(input_ids: "np.ndarray", attention_mask: "np.ndarray | None", count: int,
                max_tokens: int) -> list["np.ndarray"]:
    """Up to ``count`` prompts ([1, T] int64) from a tokenized split's rows: each row's real tokens (its mask),
    at most ``max_tokens`` of them; empty rows are skipped."""
    import numpy as np

    rows: list[np.ndarray] = []
    for i in range(len(input_ids)):
        n = int(attention_mask[i].sum()) if attention_mask is not None else input_ids.shape[1]
        if n > 0:
            rows.append(input_ids[i: i + 1, :min(n, max_tokens)].astype(np.int64))
        if len(rows) == count:
            break
    return rows
