"""TensorRT backend: build a serialized engine from ONNX with the TensorRT Python API, and run it.

TensorRT needs an NVIDIA GPU and NVIDIA's wheels, neither of which exists on CPU machines: every
entry point first calls ``require_tensorrt()``, which says exactly which is missing. The pure
parts - optimization-profile shapes from dynamic dimensions, builder flags from a precision - are
plain functions, unit-tested everywhere.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from optkit.backends import Backend, Runner
from optkit.backends.compiling import Compiled, CompileFacts, CompileRequest, CompileTarget
from optkit.types.artifact import Artifact, TensorSpec
from optkit.types.errors import MissingDependencyError, StepError, UsageError

DEFAULT_MAX_BATCH = 32


def nvidia_gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def require_tensorrt():
    """The tensorrt module, or a one-line error naming what is missing: the package or the GPU."""
    try:
        import tensorrt as trt
    except ImportError:
        gpu = "an NVIDIA GPU is present" if nvidia_gpu_present() else "and no NVIDIA GPU was found either"
        raise MissingDependencyError(
            f"the tensorrt package is not installed ({gpu})",
            hint="On a machine with an NVIDIA GPU: pip install 'optkit[tensorrt]' (TensorRT wheels come from NVIDIA)")
    if not nvidia_gpu_present():
        raise UsageError("TensorRT is installed but no NVIDIA GPU was found (nvidia-smi lists none)",
                         hint="Build engines on the GPU model they will run on")
    return trt


def parse_shapes(text: str) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """``"input:1x1x32x32,8x1x32x32,32x1x32x32;mask:..."`` -> {name: (min, opt, max)}."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, dims = item.rpartition(":")
        try:
            triple = tuple(tuple(int(d) for d in shape.split("x")) for shape in dims.split(","))
            if not sep or len(triple) != 3 or len({len(s) for s in triple}) != 1:
                raise ValueError
        except ValueError:
            raise UsageError(f"bad --shapes entry '{item}'",
                             hint="Write NAME:MIN,OPT,MAX with shapes like 1x1x32x32, inputs separated by ';'") from None
        if any(lo > op or op > hi for lo, op, hi in zip(*triple)):
            raise UsageError(f"--shapes for '{name}' must satisfy min <= opt <= max in every dimension")
        out[name] = triple
    return out


def profile_shapes(inputs: list[TensorSpec], shapes: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                   opt_batch: int = 1) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """One optimization profile: given ``--shapes``, else the batch dimension spans 1..max_batch (opt 1)."""
    given = parse_shapes(shapes) if shapes else {}
    profiles = {}
    for spec in inputs:
        if spec.name in given:
            profiles[spec.name] = given[spec.name]
            continue
        dynamic = [i for i, d in enumerate(spec.shape) if not isinstance(d, int)]
        if any(i != 0 for i in dynamic):
            raise UsageError(f"input '{spec.name}' has dynamic dimensions besides the batch ({spec.shape_text()})",
                             hint=f"Give them with --shapes '{spec.name}:MIN,OPT,MAX'")
        rest = tuple(int(d) for d in spec.shape[1:])
        if dynamic:
            profiles[spec.name] = ((1, *rest), (opt_batch, *rest), (max_batch, *rest))
        else:
            fixed = tuple(int(d) for d in spec.shape)
            profiles[spec.name] = (fixed, fixed, fixed)
    return profiles


def builder_flags(precision: str) -> list[str]:
    """TensorRT BuilderFlag names for a precision (int8 expects an explicitly quantized QDQ network)."""
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}
    if precision not in flags:
        raise UsageError(f"TensorRT precision '{precision}' is not supported", hint="Use fp32, fp16 or int8")
    return flags[precision]


def build_engine(onnx_path: Path, engine_path: Path, *, precision: str,
                 profiles: dict[str, tuple], workspace_gb: float = 4.0) -> dict[str, Any]:
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StepError(f"TensorRT's ONNX parser rejected the model: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    for flag in builder_flags(precision):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StepError("TensorRT could not build an engine for this model (see the TensorRT log above)")
    Path(engine_path).write_bytes(bytes(serialized))
    return {"tensorrt": trt.__version__, "precision": precision, "flags": builder_flags(precision),
            "profiles": {k: [list(s) for s in v] for k, v in profiles.items()}, "workspace_gb": workspace_gb}


class TensorRTRunner(Runner):
    """Runs a serialized engine; device buffers come from torch's CUDA allocator."""

    format = "tensorrt"

    def __init__(self, artifact: Artifact, threads: int = 1) -> None:
        trt = require_tensorrt()
        import torch

        self._torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(artifact.path).read_bytes())
        if self.engine is None:
            raise UsageError(f"{artifact.path} is not a TensorRT engine for this GPU/TensorRT version",
                             hint="Rebuild it with 'optkit compile --target tensorrt' on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream()

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        keep = []
        for name in self.input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(feed[name])).cuda()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=np.dtype(
                self.engine.get_tensor_dtype(name).itemsize == 2 and "float16" or "float32"))).dtype
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return {n: t.float().cpu().numpy() for n, t in outputs.items()}


def compile_engine(request: CompileRequest) -> Compiled:
    """tensorrt: one engine with one optimization profile; int8 only from an explicitly quantized (QDQ) model."""
    from optkit.backends.onnx_io import is_qdq

    source = request.source
    if request.precision == "int8" and not is_qdq(source.path):
        raise UsageError("TensorRT int8 needs an explicitly quantized (QDQ) model",
                         hint="Run 'optkit quantize --mode static' first, then compile the QDQ model")
    profiles = profile_shapes(source.inputs, request.options.shapes)
    facts = build_engine(source.path, request.out, precision=request.precision, profiles=profiles,
                         workspace_gb=request.options.workspace_gb)
    out = Artifact(path=request.out, format="tensorrt", task=source.task, inputs=source.inputs,
                   outputs=source.outputs, runtime={"device": "cuda"})
    return Compiled(out, CompileFacts.model_validate(facts))


BACKEND = Backend(format="tensorrt", runner=TensorRTRunner,
                  compile_targets={"tensorrt": CompileTarget(compile_engine, require=require_tensorrt)})
