"""A Hugging Face causal LM -> one ONNX graph with past key/values (prefill and decode alike), verified by greedy
tokens against transformers' own ``generate(do_sample=False)``.

Inputs ``input_ids`` [batch, sequence], ``attention_mask`` [batch, total_sequence], ``position_ids`` [batch,
sequence] and ``past_key_values.{i}.key/value`` [batch, kv_heads, past_sequence, head_dim]; outputs ``logits``
[batch, sequence, vocab] and ``present.{i}.key/value`` [batch, kv_heads, total_sequence, head_dim]. The prompt runs
against an empty past (past_sequence 0). Exported with torch's TorchScript exporter through a wrapper that builds
transformers' ``DynamicCache`` from the flat past tensors and flattens the cache it returns (the layout
``backends/onnx_causal.OrtCausalLM`` and ONNX Runtime GenAI read); traced at batch 2, past 3, sequence 4, so no
size is baked in. The export step calls ``export_text_generation``; nothing here imports torch at module level.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.types.errors import StepError, UsageError, first_line
from optkit.types.records import Record, Verification

if TYPE_CHECKING:
    import numpy as np

    from optkit.steps.base import StepContext
    from optkit.types.artifact import Artifact

CAUSAL_OPSET = 17
VERIFY_PROMPTS = 3
VERIFY_NEW_TOKENS = 16
PROMPT_MAX_TOKENS = 64


class GreedyCheck(Record):
    """The export's greedy continuation of each evaluation prompt vs transformers' ``generate(do_sample=False)``."""

    prompts: int
    prompt_tokens: list[int]
    new_tokens: int  # asked per prompt (fewer where both stopped at an end-of-sequence token)
    same: bool
    max_prefill_logit_diff: float  # the prompts' logits, ONNX Runtime vs torch


@dataclass(frozen=True)
class CausalLayout:
    """The KV cache's shape: what the flat past/present names and dynamic axes are made of."""

    layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config: Any) -> "CausalLayout":
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return cls(text.num_hidden_layers, getattr(text, "num_key_value_heads", None) or heads, head_dim)

    def past_names(self) -> list[str]:
        return [f"past_key_values.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]

    def present_names(self) -> list[str]:
        return [f"present.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = {
            "input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
        axes.update({n: {0: "batch", 2: "past_sequence"} for n in self.past_names()})
        axes.update({n: {0: "batch", 2: "total_sequence"} for n in self.present_names()})
        return axes


def _wrapper(model: Any, layout: CausalLayout) -> Any:
    """A module taking the flat tensors the graph takes, calling ``model`` with a ``DynamicCache`` built of them."""
    import torch
    from transformers import DynamicCache

    class _WithPast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layout.layers)],
                                 config=self.model.config)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            flat = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits, *flat)

    return _WithPast().eval()


def export_causal_lm(model: Any, path: Path, opset: int = CAUSAL_OPSET) -> CausalLayout:
    """Write ``model`` (a transformers ``*ForCausalLM``, float32, eval) to ``path`` as one graph with past
    key/values; the layout of its cache. A failing exporter is the step's failure (StepError)."""
    import torch

    from optkit.types.ui import quiet_libraries

    layout = CausalLayout.of(model.config)
    batch, past_len, seq = 2, 3, 4
    past = [torch.zeros(batch, layout.kv_heads, past_len, layout.head_dim) for _ in range(2 * layout.layers)]
    args = (torch.randint(3, 10, (batch, seq)), torch.ones(batch, past_len + seq, dtype=torch.int64),
            torch.arange(past_len, past_len + seq).repeat(batch, 1), *past)
    inputs = ["input_ids", "attention_mask", "position_ids", *layout.past_names()]
    try:
        with quiet_libraries(), torch.no_grad():
            torch.onnx.export(_wrapper(model, layout), args, str(path), dynamo=False, input_names=inputs,
                              output_names=["logits", *layout.present_names()], dynamic_axes=layout.dynamic_axes(),
                              opset_version=opset, do_constant_folding=True)
    except Exception as exc:
        raise StepError(f"torch.onnx could not export the causal LM with past key/values: {first_line(exc)}",
                        hint="Check that transformers runs this architecture with a DynamicCache") from exc
    return layout


def hf_greedy(model: Any, prompt: list[int], max_new_tokens: int) -> list[int]:
    """transformers' own greedy continuation, stopping where its generation config stops; the settings a folder's
    generation_config.json may hold that would change plain argmax decoding are set neutral here."""
    import torch

    ids = torch.tensor([prompt], dtype=torch.int64)
    config = model.generation_config
    pad = config.pad_token_id if config.pad_token_id is not None else model.config.eos_token_id
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, repetition_penalty=1.0,
                             no_repeat_ngram_size=0, min_length=0)
    return [int(t) for t in out[0, len(prompt):]]


def stop_tokens(model: Any) -> tuple[int, ...]:
    eos = model.generation_config.eos_token_id
    return tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))


def verify_greedy(model: Any, exported: "Artifact", prompts: list[list[int]], max_new_tokens: int = VERIFY_NEW_TOKENS,
                  threads: int = 1) -> GreedyCheck:
    """Greedy tokens of ONNX Runtime on ``exported`` vs transformers' ``generate`` for every prompt; the first
    prompt and position that differ fail the step (StepError)."""
    import numpy as np
    import torch

    from optkit.backends.generative import greedy
    from optkit.backends.onnx_causal import OrtCausalLM

    stop = stop_tokens(model)
    worst = 0.0
    with OrtCausalLM(exported, threads=threads) as lm:
        for n, prompt in enumerate(prompts):
            ids = np.array([prompt], dtype=np.int64)
            with torch.no_grad():
                expected_logits = model(torch.from_numpy(ids)).logits[0].numpy()
            worst = max(worst, float(np.abs(lm.start(ids) - expected_logits).max()))
            got, want = greedy(lm, ids, max_new_tokens, stop), hf_greedy(model, prompt, max_new_tokens)
            if got != want:
                at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                raise StepError(f"the ONNX export's greedy tokens differ from transformers' generate on prompt "
                                f"{n + 1} of {len(prompts)} ({len(prompt)} tokens) at new token {at + 1}: "
                                f"{got[at:at + 1] or 'end'} vs {want[at:at + 1] or 'end'}",
                                hint="The export does not reproduce the model; report it with the model's config")
    return GreedyCheck(prompts=len(prompts), prompt_tokens=[len(p) for p in prompts], new_tokens=max_new_tokens,
                       same=True, max_prefill_logit_diff=worst)


def prompts_of(data: Any, count: int = VERIFY_PROMPTS, max_tokens: int = PROMPT_MAX_TOKENS) -> list[list[int]]:
    """The first ``count`` evaluation texts as token prompts (padding dropped by the attention mask, at most
    ``max_tokens`` each)."""
    ids: np.ndarray | None = data.inputs.get("input_ids")
    if ids is None:
        raise UsageError("a text-generation export needs evaluation text as input_ids to verify against",
                         hint="Pass --text-data FILE (txt or jsonl)")
    mask = data.inputs.get("attention_mask")
    prompts = []
    for row in range(ids.shape[0]):
        tokens = ids[row][mask[row].astype(bool)] if mask is not None else ids[row]
        if len(tokens):
            prompts.append([int(t) for t in tokens[:max_tokens]])
        if len(prompts) == count:
            break
    if not prompts:
        raise UsageError("the evaluation text has no tokens to verify the export with",
                         hint="Pass --text-data with non-empty lines")
    return prompts


def load_causal_lm(artifact: "Artifact") -> Any:
    """The transformers model of a text-generation folder, float32, eval, local files only."""
    from optkit.types.lazy import require

    require("torch", "export")
    transformers = require("transformers", "export")
    from optkit.types.ui import quiet_libraries

    with quiet_libraries():
        model = transformers.AutoModelForCausalLM.from_pretrained(str(artifact.path), local_files_only=True,
                                                                   use_safetensors=True, dtype="float32")
    return model.eval()


def export_text_generation(ctx: "StepContext", artifact: "Artifact", opset: int | None,
                           model: Any = None) -> tuple["Artifact", GreedyCheck, Verification, CausalLayout]:
    """The export step on a ``text-generation`` artifact: export with past key/values, then verify by greedy
    tokens on the evaluation prompts (else StepError, nothing written)."""
    from optkit.backends import onnx_io

    model = model if model is not None else load_causal_lm(artifact)
    prompts = prompts_of(ctx.data)
    ctx.ui.info(f"  exporting the causal LM with past key/values (TorchScript exporter, opset {opset or CAUSAL_OPSET})")
    layout = export_causal_lm(model, ctx.out_path, opset or CAUSAL_OPSET)
    exported = onnx_io.produced_artifact(ctx.out_path, "export", artifact.task)
    with ctx.ui.status(f"export: greedy tokens on {len(prompts)} prompt(s), ONNX Runtime vs transformers"):
        check = verify_greedy(model, exported, prompts, threads=ctx.settings.threads)
    verification = Verification(batch_sizes=[1], max_abs_diff=check.max_prefill_logit_diff, atol=0.0, rtol=0.0,
                                samples="evaluation prompts (greedy tokens equal)")
    return exported, check, verification, layout
