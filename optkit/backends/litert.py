"""LiteRT (TFLite) backend: torch -> ``.tflite`` with litert-torch, post-training quantization with
ai-edge-quantizer, and the interpreter from ai-edge-litert (XNNPACK, the CPU delegate it applies by default).

Dynamic batch: the module is exported with a symbolic batch dimension; reshapes whose target shape names that
symbol (``torch.flatten(x, 1)`` becomes ``view(x, [batch, C])``) are rewritten to ``-1`` before conversion, which
litert-torch's lowering cannot take otherwise, so one ``.tflite`` runs any batch (the runner resizes its inputs).
The result is run at batch 1 and 3 (the trace used 2) before it is accepted: a model whose lowering still needs a
concrete batch (seen: a ViT's ``cls_token.expand(batch, -1, -1)``, refused; a flatten of a spatial map, whose
reshape the lowering fixes at the traced batch) converts at a fixed batch - 1, or ``fixed_batch`` - and says so.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from optkit.backends import Backend, Runner
from optkit.backends.compiling import Calibration, Compiled, CompileFacts, CompileRequest, CompileTarget, Feed
from optkit.types.artifact import Artifact, TensorSpec, sidecar_path
from optkit.types.errors import MissingDependencyError, UsageError

EXTRA = "pip install 'optkit[tflite]'"
SIGNATURE = "serving_default"


def require_litert(purpose: str, converter: bool = False) -> None:
    """The interpreter (and with ``converter`` litert-torch and ai-edge-quantizer), or one line naming the extra."""
    names = ["ai_edge_litert"] + (["litert_torch", "ai_edge_quantizer"] if converter else [])
    for name in names:
        if sys.modules.get(name) is not None:
            continue
        try:
            with quiet_native():  # their imports log from C++ (absl, oneDNN, torchao's optional kernels)
                __import__(name)
        except ImportError as exc:
            raise MissingDependencyError(f"{purpose} needs {name.replace('_', '-')}, which is not installed ({exc})",
                                         hint=f"Install the LiteRT extra: {EXTRA}") from None


@contextlib.contextmanager
def quiet_native():
    """litert-torch, the TFLite converter and the interpreter log from C++ straight to the process's stdout and
    stderr: send both file descriptors to /dev/null for the duration (Python-level output included)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        from optkit.types.ui import quiet_libraries

        with quiet_libraries():
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


# ----------------------------------------------------------------------------------------------- conversion

def _symbolic_reshapes_to_minus_one(gm) -> int:
    """``view/reshape(x, [s, 192])`` with one symbolic size -> ``[-1, 192]``; returns how many were rewritten."""
    import torch

    targets = {torch.ops.aten.view.default, torch.ops.aten.reshape.default, torch.ops.aten._unsafe_view.default}
    count = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in targets:
            continue
        shape = list(node.args[1])
        symbolic = [i for i, d in enumerate(shape) if isinstance(d, torch.fx.Node)]
        if len(symbolic) == 1:
            shape[symbolic[0]] = -1
            node.args = (node.args[0], shape, *node.args[2:])
            count += 1
    if count:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return count


def convert_torch(module, example: tuple, out: Path, *, dynamic_batch: bool, channels_last: bool,
                  fixed_batch: int | None = None) -> dict[str, Any]:
    """Convert ``module`` (traced with ``example``) into ``out``; returns what was done. ``fixed_batch``: convert
    at that batch size (also the fallback, else 1, when a dynamic batch does not convert)."""
    import litert_torch
    import torch

    details: dict[str, Any] = {"converter": f"litert-torch {litert_torch.__version__}",
                               "layout": "nhwc" if channels_last else "nchw"}
    if channels_last:  # litert-torch's own layout option: NHWC inputs, and transposes it can fold
        image_args = [i for i, t in enumerate(example) if t.dim() == 4]
        module = litert_torch.to_channel_last_io(module, args=image_args)
        example = tuple(t.permute(0, 2, 3, 1).contiguous() if t.dim() == 4 else t for t in example)
    model = None
    if dynamic_batch and not fixed_batch:
        batch = torch.export.Dim("batch", min=1, max=4096)
        shapes = tuple({0: batch} for _ in example)
        traced = (shapes,) if channels_last else shapes  # litert-torch's layout wrapper takes *args
        try:
            with quiet_native():
                program = torch.export.export(module, example, dynamic_shapes=traced).run_decompositions()
                graph = program.module()
                details["reshapes_made_batch_agnostic"] = _symbolic_reshapes_to_minus_one(graph)
                model = litert_torch.convert(graph, example, dynamic_shapes=shapes)
            details["batch"] = "dynamic"
        except Exception as exc:  # noqa: BLE001 - some graphs only lower at a fixed batch
            details["dynamic_batch_failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if model is not None:
        with quiet_native():
            model.export(str(out))
        problem = _batch_problem(out, example, sizes=(1, 3))  # neither is the traced batch (2)
        if problem:  # seen: a reshape whose target the lowering fixed at the traced batch
            details["dynamic_batch_failed"] = problem
            model = None
            details.pop("batch", None)
    if model is None:
        size = fixed_batch or (1 if dynamic_batch else int(example[0].shape[0]))
        fixed = tuple(t[:1].expand(size, *t.shape[1:]).contiguous() for t in example)
        with quiet_native():
            model = litert_torch.convert(module.eval(), fixed)
        details["batch"] = int(fixed[0].shape[0])
        with quiet_native():
            model.export(str(out))
    return details


def _batch_problem(path: Path, example: tuple, sizes: tuple[int, ...]) -> str | None:
    """Why a dynamic-batch ``.tflite`` does not run at each of ``sizes`` (resized, XNNPACK), or None."""
    interpreter = _interpreter(path, 1)
    ins, _ = signature_io(interpreter)
    for size in sizes:
        try:
            with quiet_native():
                for (_, detail), t in zip(ins, example):
                    interpreter.resize_tensor_input(detail["index"], [size, *t.shape[1:]], strict=False)
                interpreter.allocate_tensors()
                for (_, detail), t in zip(ins, example):
                    value = t[:1].expand(size, *t.shape[1:]).contiguous().numpy()
                    interpreter.set_tensor(detail["index"], value.astype(np.dtype(detail["dtype"])))
                interpreter.invoke()
        except Exception as exc:  # noqa: BLE001 - any failure means: not batch-agnostic
            return f"the converted model does not run at batch {size}: {str(exc).splitlines()[0][:160]}"
    return None


def quantize(src: Path, dst: Path, precision: str, calib: list[dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """ai-edge-quantizer on a float ``.tflite``: int8 (static: int8 weights and activations, calibrated on
    ``calib``, feeds keyed by the model's signature input names), int8-dynamic (int8 weights, activations
    quantized at run time) or fp16 (fp16 weights)."""
    import ai_edge_quantizer
    from ai_edge_quantizer import quantizer, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    if precision == "int8":
        rec, name = recipe.static_wi8_ai8(), "static_wi8_ai8"
    elif precision == "int8-dynamic":
        rec, name = recipe.dynamic_wi8_afp32(), "dynamic_wi8_afp32"
    elif precision == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                       algorithm_key=AlgorithmName.FLOAT_CASTING)
        rec, name = manager.get_quantization_recipe(), "weight_only fp16 (float casting)"
    else:
        raise ValueError(f"no LiteRT quantization for {precision}")
    with quiet_native():
        qt = quantizer.Quantizer(str(src), rec)
        result = None
        if qt.need_calibration:
            if not calib:
                raise UsageError("LiteRT int8 needs calibration data", hint="Pass --calib-data FILE.npz")
            result = qt.calibrate({SIGNATURE: calib}, num_threads=1)
        qt.quantize(result, enable_progress_report=False).export_model(str(dst), overwrite=True)
    version = getattr(ai_edge_quantizer, "__version__", None)
    return {"quantizer": f"ai-edge-quantizer {version}" if version else "ai-edge-quantizer", "recipe": name,
            "calibration_feeds": len(calib) if calib and precision == "int8" else None}


# ----------------------------------------------------------------------------------------------- the interpreter

def _interpreter(path: Path, threads: int, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with quiet_native():
        return Interpreter(model_path=str(path), num_threads=threads if threads > 0 else None,
                           experimental_op_resolver_type=resolver)


def _ordered(names: list[str]) -> list[str]:
    """Signature names in argument order: args_2 before args_10."""
    def key(name: str):
        m = re.search(r"(\d+)$", name)
        return (0, int(m.group(1))) if m else (1, name)
    return sorted(names, key=key)


def signature_io(interpreter) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """((signature name, tensor details) of each input in argument order, the same for outputs)."""
    sigs = interpreter.get_signature_list()
    if sigs:
        key = SIGNATURE if SIGNATURE in sigs else next(iter(sigs))
        runner = interpreter.get_signature_runner(key)
        ins, outs = runner.get_input_details(), runner.get_output_details()
        return ([(n, ins[n]) for n in _ordered(list(ins))], [(n, outs[n]) for n in _ordered(list(outs))])
    return ([(d["name"], d) for d in interpreter.get_input_details()],
            [(d["name"], d) for d in interpreter.get_output_details()])


def _spec(name: str, detail: dict, batch_label: str = "batch") -> TensorSpec:
    sig = list(detail.get("shape_signature", detail["shape"]))
    shape = tuple(batch_label if i == 0 and d < 0 else (f"d{i}" if d < 0 else int(d)) for i, d in enumerate(sig))
    return TensorSpec(name=name, shape=shape, dtype=np.dtype(detail["dtype"]).name)


def read_io_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of a ``.tflite`` file, named as its signature names them."""
    require_litert(f"reading {Path(path).name}")
    interpreter = _interpreter(Path(path), 1)
    ins, outs = signature_io(interpreter)
    return [_spec(n, d) for n, d in ins], [_spec(n, d) for n, d in outs]


def _affine(detail: dict) -> tuple[np.float32, int] | None:
    """(scale, zero point) of an integer tensor quantized per tensor; None for a float tensor."""
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind not in "iu" or not scale:
        return None
    return np.float32(scale), int(zero)


class LiteRTRunner(Runner):
    """The LiteRT interpreter (XNNPACK) on one ``.tflite``. Inputs keep the artifact's names and layout: an NHWC
    model (``runtime.layout``) gets its 4-D inputs transposed here, inside the timed call, as an app would."""

    format = "tflite"

    @classmethod
    def preload(cls) -> None:
        require_litert("running .tflite models")

    def __init__(self, artifact: Artifact, threads: int = 1) -> None:
        require_litert("running .tflite models")
        self.interpreter = _interpreter(artifact.path, threads)
        ins, outs = signature_io(self.interpreter)
        names_in = [s.name for s in artifact.inputs] or [n for n, _ in ins]
        names_out = [s.name for s in artifact.outputs] or [n for n, _ in outs]
        if len(names_in) != len(ins) or len(names_out) != len(outs):
            raise UsageError(f"{artifact.path.name} has {len(ins)} inputs and {len(outs)} outputs; its record names "
                             f"{len(names_in)} and {len(names_out)}", hint="Re-create it with optkit compile")
        self.input_names, self.output_names = names_in, names_out
        # a full-integer model takes and gives int8: floats are quantized with its input scale and zero point and
        # its outputs dequantized, here, as the app around it would
        self._inputs = [(name, d["index"], np.dtype(d["dtype"]), _affine(d)) for name, (_, d) in zip(names_in, ins)]
        self._outputs = [(name, d["index"], _affine(d)) for name, (_, d) in zip(names_out, outs)]
        self._nhwc = (artifact.runtime or {}).get("layout") == "nhwc"
        self._shapes: dict[int, tuple] = {}  # tensors are allocated on the first call, at its shapes

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self.interpreter
        arrays = []
        for name, index, dtype, affine in self._inputs:
            arr = feed[name]
            if self._nhwc and arr.ndim == 4:
                arr = arr.transpose(0, 2, 3, 1)
            if affine is not None and arr.dtype.kind == "f":
                info = np.iinfo(dtype)
                arr = np.clip(np.round(arr / affine[0]) + affine[1], info.min, info.max)
            arrays.append((index, np.ascontiguousarray(arr, dtype=dtype)))
        if any(self._shapes.get(index) != a.shape for index, a in arrays):
            for index, a in arrays:
                it.resize_tensor_input(index, list(a.shape), strict=False)
                self._shapes[index] = a.shape
            with quiet_native():  # the XNNPACK delegate announces itself on the first allocation
                it.allocate_tensors()
        for index, a in arrays:
            it.set_tensor(index, a)
        it.invoke()
        out = {}
        for name, index, affine in self._outputs:
            value = it.get_tensor(index)
            out[name] = value if affine is None else (value.astype(np.float32) - affine[1]) * affine[0]
        return out

    def close(self) -> None:
        self.interpreter = None


def model_summary(path: Path) -> dict[str, Any]:
    """What a ``.tflite`` holds, before any delegate takes its ops: operator counts, tensor dtypes, and the
    signature's input and output dtypes (a full-integer model's are int8)."""
    interpreter = _interpreter(Path(path), 1, delegates=False)
    ops: dict[str, int] = {}
    for op in interpreter._get_ops_details():  # the interpreter's own op list (one entry per node)
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    dtypes: dict[str, int] = {}
    for t in interpreter.get_tensor_details():
        name = np.dtype(t["dtype"]).name
        dtypes[name] = dtypes.get(name, 0) + 1
    ins, outs = signature_io(interpreter)
    return {"ops": dict(sorted(ops.items())), "tensor_dtypes": dict(sorted(dtypes.items())),
            "input_dtypes": [np.dtype(d["dtype"]).name for _, d in ins],
            "output_dtypes": [np.dtype(d["dtype"]).name for _, d in outs]}


def open_tflite(path: Path) -> Artifact:
    """A .tflite file: one optkit wrote keeps its record's tensor names (the model's own, from the sidecar); any
    other is named by its signature."""
    inputs, outputs = ([], []) if sidecar_path(path).is_file() else read_io_specs(path)
    return Artifact(path=path, format="tflite", inputs=inputs, outputs=outputs)


def _signature_feeds(calibration: Calibration, source: Artifact, channels_last: bool) -> list[Feed]:
    """Calibration feeds keyed by the .tflite signature's input names (args_0, ...), NHWC where the model takes it."""
    feeds = []
    for batch in calibration.feeds:
        feed = {}
        for k, spec in enumerate(source.inputs):
            value = batch[spec.name]
            feed[f"args_{k}"] = value.transpose(0, 2, 3, 1).copy() if channels_last and value.ndim == 4 else value
        feeds.append(feed)
    return feeds


def compile_tflite(request: CompileRequest) -> Compiled:
    """tflite: the torch model converted by litert-torch (fp32), then quantized by ai-edge-quantizer (fp16 weights,
    int8-dynamic, or int8 calibrated on whole batches of 8 - or of the fixed batch)."""
    import torch

    from optkit.backends.torch import load_module
    from optkit.types.files import scratch_dir

    source, ui, precision = request.source, request.ui, request.precision
    if request.example is None:
        raise ValueError("converting to .tflite needs an example batch")
    module = load_module(source)
    dynamic = source.inputs[0].dynamic_batch if source.inputs else True
    example = request.example(2 if dynamic else int(source.inputs[0].shape[0]))
    args = tuple(torch.from_numpy(example[spec.name]) for spec in source.inputs)
    channels_last = request.options.layout == "nhwc"
    with scratch_dir() as scratch:  # the float .tflite that quantization starts from
        float_path = request.out if precision == "fp32" else scratch / "float.tflite"
        with ui.status("LiteRT: converting with litert-torch"):
            details = convert_torch(module, args, float_path, dynamic_batch=dynamic, channels_last=channels_last,
                                    fixed_batch=request.options.fixed_batch)
        if details.get("dynamic_batch_failed"):
            ui.warn(f"litert-torch could not convert a dynamic batch ({details['dynamic_batch_failed'][:120]}); "
                    f"the .tflite takes batch {details['batch']} only (--fixed-batch N for another size)")
        if precision != "fp32":
            calib = None
            if precision == "int8":
                if request.calibration is None:
                    raise ValueError("int8 .tflite needs calibration data")
                per = details["batch"] if isinstance(details["batch"], int) else 8
                calibration = request.calibration(per)
                calib = _signature_feeds(calibration, source, channels_last)
                details["calibration"] = f"{len(calibration.feeds) * per} samples of {calibration.source}"
            with ui.status(f"LiteRT: quantizing ({precision}) with ai-edge-quantizer"):
                details.update(quantize(float_path, request.out, precision, calib))
    batch = details["batch"]
    inputs, outputs = source.inputs, source.outputs
    if isinstance(batch, int):
        inputs, outputs = [s.at_batch(batch) for s in inputs], [s.at_batch(batch) for s in outputs]
    summary = model_summary(request.out)
    details.update({"tflite_ops": summary["ops"], "tflite_io_dtypes": {"inputs": summary["input_dtypes"],
                                                                       "outputs": summary["output_dtypes"]}})
    out = Artifact(path=request.out, format="tflite", task=source.task, inputs=inputs, outputs=outputs,
                   runtime={"layout": request.options.layout, "delegate": "xnnpack"})
    return Compiled(out, CompileFacts(tflite=details))


BACKEND = Backend(format="tflite", runner=LiteRTRunner, recognises=lambda path: path.suffix.lower() == ".tflite",
                  open=open_tflite,
                  compile_targets={"tflite": CompileTarget(
                      compile_tflite, require=lambda: require_litert("--target tflite", converter=True))})
