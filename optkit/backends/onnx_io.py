"""Reading and checking ONNX files, with one-line errors for corrupt or unreadable models."""
from __future__ import annotations

from pathlib import Path

from optkit.types.artifact import Artifact, TensorSpec
from optkit.types.errors import StepError, UsageError

_CORRUPT_HINT = "Re-export it (the file may be truncated or not ONNX at all)"


def load_model(path: Path, *, external_data: bool = True):
    """onnx.load with a clear error on a truncated or foreign file."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:  # protobuf DecodeError, OSError, ... all mean the same to the user
        raise UsageError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:120]})",
                         hint=_CORRUPT_HINT) from exc
    if not model.graph.output:
        raise UsageError(f"{path} is not a valid ONNX model (its graph has no outputs)", hint=_CORRUPT_HINT)
    return model


def check_model(path: Path) -> None:
    """``onnx.checker`` on the file (path-based, so models with external data work too)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise UsageError(f"{path} fails onnx.checker: {str(exc).splitlines()[0][:200]}", hint=_CORRUPT_HINT) from exc


def check_output(path: Path, step: str) -> None:
    """onnx.checker on a model a step produced: a failure is the step's fault (exit 1), not the user's."""
    try:
        check_model(path)
    except UsageError as exc:
        raise StepError(f"{step} produced an invalid ONNX model: {exc.message.split(': ', 1)[-1]}",
                        hint="Report it; try other options for this step") from exc


def produced_artifact(path: Path, step: str, task: str) -> Artifact:
    """The Artifact for an ONNX file a step just wrote: onnx.checker (a failure is the step's), then its specs."""
    check_output(path, step)
    inputs, outputs = read_io_specs(path)
    return Artifact(path=path, format="onnx", task=task, inputs=inputs, outputs=outputs)


def _specs(values, initializer_names: set[str]) -> list[TensorSpec]:
    from onnx import helper

    specs = []
    for i, value in enumerate(values):
        if value.name in initializer_names:
            continue
        ttype = value.type.tensor_type
        dims: list[int | str] = []
        for j, dim in enumerate(ttype.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or f"{value.name}_dim{j}")
        try:
            dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
        except (KeyError, TypeError):
            dtype = "float32"
        specs.append(TensorSpec(value.name or f"tensor_{i}", tuple(dims), dtype))
    return specs


KV_INPUT_PREFIX, KV_OUTPUT_PREFIX = "past_key_values.", "present."


def read_io_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The model's inputs and outputs as data feeds it. A causal LM exported with its KV cache is seen as its
    prefill: token ids and mask in, logits out (``OrtRunner`` gives the empty past and the positions itself)."""
    model = load_model(path, external_data=False)
    init = {t.name for t in model.graph.initializer}
    inputs, outputs = _specs(model.graph.input, init), _specs(model.graph.output, set())
    if any(i.name.startswith(KV_INPUT_PREFIX) for i in inputs):
        inputs = [i for i in inputs if not i.name.startswith(KV_INPUT_PREFIX) and i.name != "position_ids"]
        outputs = [o for o in outputs if not o.name.startswith(KV_OUTPUT_PREFIX)]
    return inputs, outputs


def has_kv_cache(path: Path) -> bool:
    """A causal LM exported with its KV cache (past key/values among the graph's inputs)."""
    model = load_model(path, external_data=False)
    return any(i.name.startswith(KV_INPUT_PREFIX) for i in model.graph.input)


def node_count(model) -> int:
    return len(model.graph.node)


def int8_kind(path: Path) -> str | None:
    """How an ONNX model is already quantized: 'QDQ' (static), 'dynamic' (integer ops), or None (float)."""
    ops = {n.op_type for n in load_model(path, external_data=False).graph.node}
    if "QuantizeLinear" in ops:
        return "QDQ"
    if ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"}:
        return "dynamic"
    return None


def is_qdq(path: Path) -> bool:
    return int8_kind(path) == "QDQ"


def looks_like_onnx(path: Path) -> bool:
    """An ONNX file: named .onnx, or starting as a ModelProto does (field 1, ir_version, a varint: byte 0x08)."""
    if path.suffix.lower() == ".onnx":
        return True
    if path.suffix.lower() in (".pt", ".pth", ".pt2", ".npz", ".tflite"):
        return False
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head[:1] == b"\x08"


def open_onnx(path: Path) -> Artifact:
    inputs, outputs = read_io_specs(path)
    return Artifact(path=path, format="onnx", inputs=inputs, outputs=outputs)
