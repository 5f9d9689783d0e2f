"""export: PyTorch -> one self-contained ONNX file, verified against the torch model.

The exported graph is checked with ``onnx.checker`` and then run in ONNX Runtime against the torch
model on evaluation samples at two batch sizes; any output outside ``atol + rtol*|ref|`` fails the
step and nothing is written.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from optkit.core.artifact import Artifact
from optkit.core.errors import StepError, UsageError, first_line
from optkit.core.step import Step, StepContext, StepResult
from optkit.core.ui import quiet_libraries

DEFAULT_OPSET = {"dynamo": 18, "torchscript": 17}


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    opset: int | None = Field(None, ge=7, le=23, description="ONNX opset (default: 18 for dynamo, 17 for torchscript)")
    dynamic_batch: bool = Field(True, description="leave the batch dimension dynamic")
    exporter: Literal["auto", "dynamo", "torchscript"] = Field(
        "auto", description="torch.onnx exporter: dynamo (torch.export based) or the TorchScript tracer; "
                            "auto uses dynamo except for TorchScript models")
    atol: float = Field(1e-4, ge=0, description="absolute tolerance of the ONNX-vs-torch check")
    rtol: float = Field(1e-3, ge=0, description="relative tolerance of the ONNX-vs-torch check")
    verify_batch_sizes: list[int] = Field([1, 8], min_length=1, description="batch sizes of the numeric check")


class ExportStep(Step):
    name = "export"
    summary = "PyTorch -> ONNX, verified numerically in ONNX Runtime"
    accepts = ("torch",)
    produces = "onnx"
    suffix = ".onnx"
    Config = ExportConfig

    def run(self, ctx: StepContext, artifact: Artifact, config: ExportConfig) -> StepResult:
        from optkit.backends.torch import count_macs, flatten_outputs, load_module, output_names
        from optkit.core.lazy import require

        torch = require("torch", "export")
        module = load_module(artifact)
        names = [i.name for i in artifact.inputs]
        fixed_batch = artifact.inputs[0].shape[0] if isinstance(artifact.inputs[0].shape[0], int) else None
        example_bs = 2 if config.dynamic_batch else (fixed_batch or 1)
        example = ctx.data.batch(example_bs)
        args = tuple(torch.from_numpy(example[n]) for n in names)
        try:
            with torch.inference_mode():
                reference = flatten_outputs(module(*args))
        except Exception as exc:
            shapes = ", ".join(f"{n}:{'x'.join(map(str, example[n].shape))}" for n in names)
            raise UsageError(f"input shape {shapes} does not fit the model ({first_line(exc)})",
                             hint="Pass the right --input-shape NAME:DIMS or evaluation data of the right shape") from exc
        outputs = output_names(artifact, len(reference))

        exporter = config.exporter
        if exporter == "auto":
            exporter = "torchscript" if isinstance(module, torch.jit.ScriptModule) else "dynamo"
        if exporter == "dynamo" and isinstance(module, torch.jit.ScriptModule):
            raise UsageError("the dynamo exporter cannot export a TorchScript model", hint="Use --exporter torchscript")
        opset = config.opset or DEFAULT_OPSET[exporter]
        if exporter == "dynamo" and opset < 18:
            raise UsageError(f"the dynamo exporter needs opset >= 18 (asked: {opset})",
                             hint="Pass --opset 18 or higher, or --exporter torchscript")

        ctx.ui.info(f"  exporting with the {exporter} exporter, opset {opset}, "
                    f"{'dynamic' if config.dynamic_batch else 'static'} batch")
        try:
            with quiet_libraries():
                if exporter == "dynamo":
                    dynamic = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},) * len(names) if config.dynamic_batch else None
                    torch.onnx.export(module, args, str(ctx.out_tmp), dynamo=True, input_names=names,
                                      output_names=outputs, dynamic_shapes=dynamic, opset_version=opset,
                                      external_data=False, optimize=True, verify=False)
                else:
                    axes = {n: {0: "batch"} for n in [*names, *outputs]} if config.dynamic_batch else None
                    torch.onnx.export(module, args, str(ctx.out_tmp), dynamo=False, input_names=names,
                                      output_names=outputs, dynamic_axes=axes, opset_version=opset,
                                      do_constant_folding=True)
        except Exception as exc:
            other = "torchscript" if exporter == "dynamo" else "dynamo"
            raise StepError(f"torch.onnx ({exporter}) could not export the model: {first_line(exc)}",
                            hint=f"Try --exporter {other}") from exc

        from optkit.core import onnx_io

        exported = onnx_io.produced_artifact(ctx.out_tmp, "export", artifact.task)
        from optkit.eval.compare import verify_outputs

        verification = verify_outputs(
            artifact, exported, ctx.data, atol=config.atol, rtol=config.rtol,
            batch_sizes=config.verify_batch_sizes if config.dynamic_batch else [fixed_batch or 1],
            threads=ctx.settings.threads, what="ONNX",
            hint="Try the other --exporter, or loosen --atol/--rtol if this drift is acceptable")
        model_proto = onnx_io.load_model(ctx.out_tmp)
        details = {
            "exporter": exporter, "opset": opset, "dynamic_batch": config.dynamic_batch,
            "nodes": onnx_io.node_count(model_proto), "verification": verification,
            "macs": count_macs(module, ctx.data.batch(1), names),
        }
        return StepResult(artifact=exported, details=details)

    @staticmethod
    def describe(details: dict) -> str:
        check = details["verification"]
        return (f"{details['exporter']} opset {details['opset']}, {details['nodes']} nodes; vs torch at batch "
                f"{','.join(map(str, check['batch_sizes']))}: max|Δ| {check['max_abs_diff']:.1e}")
