"""export: PyTorch -> one self-contained ONNX file, verified against the torch model.

The exported graph is checked with ``onnx.checker`` and then run in ONNX Runtime against the torch
model on evaluation samples at two batch sizes; any output outside ``atol + rtol*|ref|`` fails the
step and nothing is written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from optkit.types.artifact import Artifact
from optkit.types.errors import StepError, UsageError, first_line
from optkit.steps._causal_export import GreedyCheck
from optkit.steps.base import Step, StepContext, StepResult
from optkit.types.records import Details, Verification
from optkit.types.ui import quiet_libraries

DEFAULT_OPSET = {"dynamo": 18, "torchscript": 17}
_AXIS_RE = re.compile(r"^(?P<name>[^:]+):(?P<dim>[1-9]\d*)(?::(?P<label>[A-Za-z_]\w*))?$")


def parse_axis(text: str) -> tuple[str, int, str]:
    """``"input_ids:1:sequence"`` -> ``("input_ids", 1, "sequence")``; the label defaults to ``NAME_dimD``."""
    m = _AXIS_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad dynamic axis '{text}': write NAME:DIM[:LABEL], e.g. input_ids:1:sequence (DIM >= 1; "
                         "the batch, dim 0, is --dynamic-batch)")
    return m["name"], int(m["dim"]), m["label"] or f"{m['name']}_dim{m['dim']}"


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    opset: int | None = Field(None, ge=7, le=23, description="ONNX opset (default: 18 for dynamo, 17 for torchscript)")
    dynamic_batch: bool = Field(True, description="dynamic batch dimension (default) or fixed")
    exporter: Literal["auto", "dynamo", "torchscript"] = Field(
        "auto", description="torch.onnx exporter: dynamo (torch.export based) or the TorchScript tracer; "
                            "auto uses dynamo, except for TorchScript models and where the TorchScript export's "
                            "attention fuses in ONNX Runtime and dynamo's does not (both measured)")
    atol: float = Field(1e-4, ge=0, description="absolute tolerance of the ONNX-vs-torch check")
    rtol: float = Field(1e-3, ge=0, description="relative tolerance of the ONNX-vs-torch check")
    verify_batch_sizes: list[int] = Field([1, 8], min_length=1, description="batch sizes of the numeric check")
    dynamic_axes: list[str] | None = Field(
        None, description="dynamic dimensions besides the batch, NAME:DIM[:LABEL], e.g. input_ids:1:sequence (inputs "
                          "sharing a LABEL share the size); default: dim 1 of integer token inputs; empty: only the batch")

    @field_validator("dynamic_axes")
    @classmethod
    def _axes(cls, value: list[str] | None) -> list[str] | None:
        for text in value or []:
            parse_axis(text)
        return value


def dynamic_axes_for(artifact: Artifact, config: ExportConfig) -> dict[str, dict[int, str]]:
    """{input name: {dim: label}} for the axes besides the batch (the user's, or the token-input default)."""
    specs = {i.name: i for i in artifact.inputs}
    if config.dynamic_axes is None:  # token ids and masks: the sequence length varies
        return {s.name: {1: "sequence"} for s in artifact.inputs if s.dtype in ("int64", "int32") and len(s.shape) >= 2}
    axes: dict[str, dict[int, str]] = {}
    for text in config.dynamic_axes:
        name, dim, label = parse_axis(text)
        if name not in specs:
            raise UsageError(f"--dynamic-axis {text}: the model has no input '{name}'",
                             hint=f"Inputs: {', '.join(specs)}")
        if dim >= len(specs[name].shape):
            raise UsageError(f"--dynamic-axis {text}: input '{name}' has {len(specs[name].shape)} dimensions",
                             hint="Count dimensions from 0 (the batch)")
        axes.setdefault(name, {})[dim] = label
    return axes


def _shorter(data, axes: dict[str, dict[int, str]]):
    """The evaluation data cut to a different size along every dynamic axis (half its length): the export must
    hold at a second size of each axis, not only the one it was traced at."""
    from optkit.eval.data import EvalData

    inputs = {}
    for name, arr in data.inputs.items():
        for dim in sorted(axes.get(name, {})):
            size = arr.shape[dim]
            arr = arr.take(range(max(1, size // 2)), axis=dim) if size > 1 else arr
        inputs[name] = arr
    return EvalData(inputs=inputs, labels=None, path=data.path, sha256=data.sha256, synthetic=data.synthetic)


def _attention_fused(path) -> int | None:
    """Attention nodes ONNX Runtime's transformer optimizer makes of an exported graph (None: it has no attention)."""
    from optkit.backends import onnx_io
    from optkit.steps._transformer import has_attention, optimize_transformer

    model = onnx_io.load_model(path)
    if not has_attention(model):
        return None
    with quiet_libraries():
        _, stats, _ = optimize_transformer(model)
    return stats.get("Attention", 0) + stats.get("MultiHeadAttention", 0)


def _eager_attention(module) -> int:
    """Switch Hugging Face models inside ``module`` from SDPA to eager attention; how many were switched."""
    switched = 0
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(sub, "set_attn_implementation"):
            try:
                sub.set_attn_implementation("eager")
                switched += 1
            except Exception:  # a model without an eager implementation keeps SDPA
                continue
    return switched


def _choose_exporter_for_attention(ctx: StepContext, eager: str | None, export_with, asked_opset: int | None, opset: int):
    """``--exporter auto`` on a graph with attention: export it with the TorchScript exporter too and keep the
    graph whose attention ONNX Runtime's optimizer fuses (measured here, e.g. a BERT encoder from torch 2.13's
    dynamo exporter fuses none of its attention blocks, the TorchScript export all of them)."""
    import shutil

    from optkit.types.files import scratch_folder

    dynamo_fused = _attention_fused(ctx.out_path)
    if dynamo_fused is None:
        return "dynamo", opset, None
    ts_opset = asked_opset or DEFAULT_OPSET["torchscript"]
    with scratch_folder() as tmp:
        alt = tmp / "torchscript.onnx"
        try:
            export_with("torchscript", alt, ts_opset)
            ts_fused = _attention_fused(alt) or 0
        except StepError:
            ts_fused = -1
        choice = {"dynamo": {"attention_fused": dynamo_fused}, "torchscript": {"attention_fused": max(ts_fused, 0)},
                  "attention": eager}
        if ts_fused > dynamo_fused:
            shutil.copyfile(alt, ctx.out_path)
            choice.update(chosen="torchscript", why=f"its attention fuses ({ts_fused} Attention vs {dynamo_fused} from dynamo)")
            ctx.ui.info(f"  exporter auto: torchscript, whose graph fuses {ts_fused} attention block(s) "
                        f"(dynamo's: {dynamo_fused})")
            return "torchscript", ts_opset, choice
    if ts_fused < 0:
        why = "the TorchScript exporter failed"
    elif dynamo_fused:
        why = f"its attention fuses ({dynamo_fused} Attention; torchscript: {ts_fused})"
    else:
        why = "neither exporter's attention fuses in ONNX Runtime"
    choice.update(chosen="dynamo", why=why)
    return "dynamo", opset, choice


class ExportDetails(Details):
    exporter: str
    opset: int
    dynamic_batch: bool
    dynamic_axes: dict[str, dict[str, str]]  # dynamic dims besides the batch: input -> {dim: label}
    exporter_choice: dict[str, Any] | None = None  # exporter auto: what was compared and why one won
    nodes: int
    verification: Verification
    generation: GreedyCheck | None = None  # text-generation: greedy tokens vs transformers' generate


class ExportStep(Step):
    name = "export"
    summary = "PyTorch -> ONNX, verified numerically in ONNX Runtime"
    accepts = ("torch",)
    produces = "onnx"
    suffix = ".onnx"
    Config = ExportConfig
    Details = ExportDetails

    def run(self, ctx: StepContext, artifact: Artifact, config: ExportConfig) -> StepResult:
        from optkit.backends.torch import count_macs, load_module
        from optkit.backends import onnx_io
        from optkit.types.lazy import require

        require("torch", "export")  # named for this step before the model's own loading asks for it
        if artifact.task == "text-generation":
            return _export_causal(ctx, artifact, config)
        module = load_module(artifact)
        names = [i.name for i in artifact.inputs]
        fixed_batch = artifact.inputs[0].shape[0] if isinstance(artifact.inputs[0].shape[0], int) else None
        args, outputs = _example(module, ctx, artifact, 2 if config.dynamic_batch else (fixed_batch or 1))
        exporter, opset = _exporter_and_opset(module, config)
        extra_axes = dynamic_axes_for(artifact, config)
        axes_text = "".join(f", {n}[{d}] {label}" for n, dims in extra_axes.items() for d, label in dims.items())
        ctx.ui.info(f"  exporting with the {exporter} exporter, opset {opset}, "
                    f"{'dynamic' if config.dynamic_batch else 'static'} batch{axes_text}")
        per_input = {n: {**({0: "batch"} if config.dynamic_batch else {}), **extra_axes.get(n, {})} for n in names}
        export_with = _Export(module, args, names, outputs, per_input, config.dynamic_batch)

        eager = None
        if config.exporter == "auto" and (switched := _eager_attention(module)):
            # SDPA attention exports as a graph no optimizer recognises (no Softmax at all from dynamo); eager
            # attention is the same computation on the same weights, as MatMul/Softmax, which ONNX Runtime fuses
            eager = f"{switched} Hugging Face module(s) exported with eager attention instead of sdpa (same weights)"
            ctx.ui.info(f"  exporter auto: {eager}")
        export_with(exporter, ctx.out_path, opset)
        choice = None
        if config.exporter == "auto" and exporter == "dynamo":
            exporter, opset, choice = _choose_exporter_for_attention(ctx, eager, export_with, config.opset, opset)

        exported = onnx_io.produced_artifact(ctx.out_path, "export", artifact.task)
        verification = _verify(ctx, artifact, exported, config, extra_axes, fixed_batch)
        details = ExportDetails(
            exporter=exporter, opset=opset, dynamic_batch=config.dynamic_batch,
            dynamic_axes={n: {str(d): label for d, label in dims.items()} for n, dims in extra_axes.items()},
            exporter_choice=choice, nodes=onnx_io.node_count(onnx_io.load_model(ctx.out_path)),
            verification=verification, macs=count_macs(module, ctx.data.batch(1), names))
        return StepResult(artifact=exported, details=details)

    @staticmethod
    def describe(details: ExportDetails) -> str:
        check = details.verification
        axes = details.dynamic_axes or {}
        choice = details.exporter_choice
        why = f" (auto: {choice['why']})" if choice else ""
        if details.generation:
            gen = details.generation
            return (f"{details.exporter} opset {details.opset}, {details.nodes} nodes, past key/values in and out; "
                    f"greedy tokens = transformers' on {gen.prompts} prompt(s) x {gen.new_tokens} new tokens "
                    f"(prefill logits max|Δ| {gen.max_prefill_logit_diff:.1e})")
        dynamic = "".join(f", {n}[{d}] {label} dynamic" for n, dims in axes.items() for d, label in dims.items())
        return (f"{details.exporter}{why} opset {details.opset}, {details.nodes} nodes{dynamic}; vs torch at batch "
                f"{','.join(map(str, check.batch_sizes))}{' and a second size of each axis' if axes else ''}: "
                f"max|Δ| {check.max_abs_diff:.1e}")


def _export_causal(ctx: StepContext, artifact: Artifact, config: ExportConfig) -> StepResult:
    """A text-generation model: one graph with past key/values, verified by greedy tokens (``_causal_export``)."""
    from optkit.backends import onnx_io
    from optkit.steps._causal_export import CAUSAL_OPSET, export_text_generation

    unused = [flag for flag, used in (("--exporter", config.exporter not in ("auto", "torchscript")),
                                      ("--dynamic-axis", config.dynamic_axes is not None),
                                      ("--no-dynamic-batch", not config.dynamic_batch)) if used]
    if unused:
        ctx.ui.warn(f"{', '.join(unused)} ignored: a text-generation model is exported with the TorchScript exporter, "
                    "dynamic batch, sequence and past length, and verified by greedy tokens")
    exported, check, verification, layout = export_text_generation(ctx, artifact, config.opset)
    axes = layout.dynamic_axes()
    details = ExportDetails(
        exporter="torchscript", opset=config.opset or CAUSAL_OPSET, dynamic_batch=True,
        dynamic_axes={n: {str(d): label for d, label in dims.items()} for n, dims in axes.items() if "." not in n},
        nodes=onnx_io.node_count(onnx_io.load_model(ctx.out_path)), verification=verification, generation=check)
    return StepResult(artifact=exported, details=details)


def _example(module: Any, ctx: StepContext, artifact: Artifact, batch: int) -> tuple[tuple[Any, ...], list[str]]:
    """(the example arguments the exporter traces with, the output names): the model run once on ``batch``
    evaluation samples, which also proves the input shapes fit (else exit 2)."""
    from optkit.backends.torch import flatten_outputs, output_names
    from optkit.types.lazy import require

    torch = require("torch", "export")
    names = [i.name for i in artifact.inputs]
    example = ctx.data.batch(batch)
    args = tuple(torch.from_numpy(example[n]) for n in names)
    try:
        with torch.inference_mode():
            reference = flatten_outputs(module(*args))
    except Exception as exc:
        shapes = ", ".join(f"{n}:{'x'.join(map(str, example[n].shape))}" for n in names)
        raise UsageError(f"input shape {shapes} does not fit the model ({first_line(exc)})",
                         hint="Pass the right --input-shape NAME:DIMS or evaluation data of the right shape") from exc
    return args, output_names(artifact, len(reference))


def _exporter_and_opset(module: Any, config: ExportConfig) -> tuple[str, int]:
    """The exporter ``auto`` means for this model (TorchScript for a TorchScript model), and its opset."""
    from optkit.types.lazy import require

    torch = require("torch", "export")
    exporter = config.exporter
    if exporter == "auto":
        exporter = "torchscript" if isinstance(module, torch.jit.ScriptModule) else "dynamo"
    if exporter == "dynamo" and isinstance(module, torch.jit.ScriptModule):
        raise UsageError("the dynamo exporter cannot export a TorchScript model", hint="Use --exporter torchscript")
    opset = config.opset or DEFAULT_OPSET[exporter]
    if exporter == "dynamo" and opset < 18:
        raise UsageError(f"the dynamo exporter needs opset >= 18 (asked: {opset})",
                         hint="Pass --opset 18 or higher, or --exporter torchscript")
    return exporter, opset


@dataclass
class _Export:
    """One model exported by either exporter with the same names and dynamic dimensions: ``auto`` may export it
    twice to compare (``_choose_exporter_for_attention``). ``per_input``: {input: {dim: label}}."""

    module: Any
    args: tuple[Any, ...]
    names: list[str]
    outputs: list[str]
    per_input: dict[str, dict[int, str]]
    dynamic_batch: bool

    def __call__(self, which: str, path: Path, version: int) -> None:
        from optkit.types.lazy import require

        torch = require("torch", "export")
        names, outputs = self.names, self.outputs
        try:
            with quiet_libraries():
                if which == "dynamo":
                    dims: dict[str, object] = {}  # one Dim per label: inputs that share a label share the size
                    dynamic = tuple({d: dims.setdefault(label, torch.export.Dim(label, min=1, max=1 << 16))
                                     for d, label in self.per_input[n].items()} or None for n in names)
                    torch.onnx.export(self.module, self.args, str(path), dynamo=True, input_names=names,
                                      output_names=outputs, dynamic_shapes=dynamic if any(dynamic) else None,
                                      opset_version=version, external_data=False, optimize=True, verify=False)
                else:
                    axes = {n: self.per_input[n] for n in names if self.per_input[n]}
                    if self.dynamic_batch:
                        axes.update({o: {0: "batch"} for o in outputs})
                    torch.onnx.export(self.module, self.args, str(path), dynamo=False, input_names=names,
                                      output_names=outputs, dynamic_axes=axes or None, opset_version=version,
                                      do_constant_folding=True)
        except Exception as exc:
            other = "torchscript" if which == "dynamo" else "dynamo"
            raise StepError(f"torch.onnx ({which}) could not export the model: {first_line(exc)}",
                            hint=f"Try --exporter {other}") from exc


def _verify(ctx: StepContext, artifact: Artifact, exported: Artifact, config: ExportConfig,
            extra_axes: dict[str, dict[int, str]], fixed_batch: int | None) -> Verification:
    """The ONNX model against the torch model at each batch size, then at a second size of every dynamic axis
    (e.g. half the sequence length); any output past the tolerance fails the step."""
    from optkit.eval.compare import verify_outputs

    verification = verify_outputs(
        artifact, exported, ctx.data, atol=config.atol, rtol=config.rtol,
        batch_sizes=config.verify_batch_sizes if config.dynamic_batch else [fixed_batch or 1],
        threads=ctx.settings.threads, what="ONNX",
        hint="Try the other --exporter, or loosen --atol/--rtol if this drift is acceptable")
    if extra_axes:
        shorter = _shorter(ctx.data, extra_axes)
        second = verify_outputs(
            artifact, exported, shorter, atol=config.atol, rtol=config.rtol, batch_sizes=[1], threads=ctx.settings.threads,
            what=f"ONNX (at {', '.join(f'{n}:' + 'x'.join(map(str, a.shape[1:])) for n, a in shorter.inputs.items())})",
            hint="The export may have baked in a size: try the other --exporter, or drop that --dynamic-axis")
        verification.dynamic_axes_checked = {n: {str(d): label for d, label in dims.items()} for n, dims in extra_axes.items()}
        verification.max_abs_diff = max(verification.max_abs_diff, second.max_abs_diff)
    return verification
