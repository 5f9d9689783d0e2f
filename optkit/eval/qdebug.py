"""Which layers does quantization hurt? Match a float model's tensors with its int8 model's and rank them.

Static (QDQ) models: both models are run on the same samples with every quantized tensor exposed:

- an activation's *local* error: the float model's tensor through the int8 model's own scale and
  zero point (signal-to-quantization-noise ratio in dB, per channel, median and worst: higher is
  better), i.e. what quantizing this one tensor costs, independent of errors upstream. (ONNX
  Runtime's ``qdq_loss_debug`` compares the int8 model's tensor before and after its QDQ pair, which
  reads a Relu folded into the pair as quantization error, so optkit measures it this way.)
- its *accumulated* error: the float model's tensor vs the int8 model's dequantized one (SQNR, cosine);
- a weight's error: the float initializer vs its dequantized int8 copy (ORT's ``create_weight_matching``).

Each tensor is mapped to the nodes whose quantization puts a QDQ pair on it (its quantized producer
and consumers): excluding those nodes keeps the tensor in float. Dynamic int8 models have no QDQ
pairs: each MatMul/Gemm's activation input is simulated the way ONNX Runtime quantizes it at run time
(uint8 over the batch's range) and its weight by its int8 round trip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from optkit.eval.data import EvalData

if TYPE_CHECKING:  # rich is imported when a table is drawn
    from rich.console import Console


class QdqPair(NamedTuple):
    """One activation's QDQ pair in a static int8 model."""

    tensor: str  # the float tensor quantized
    dequantized: str  # its dequantized copy
    nodes: list[str]  # the quantized nodes around it: excluding them keeps the tensor in float


@dataclass(frozen=True)
class DebugRanking:
    """``optkit debug``'s answer: the int8 model's tensors ranked against its float model's, worst first, and the
    node groups they reduce to. ``layers`` and ``groups`` are the quantize guard's entries (``rank_static``,
    ``exclusion_groups``), which it keeps in its sidecar facts as they are."""

    float_model: str
    int8_model: str
    mode: str  # static | dynamic
    data: str  # the .npz the samples came from
    samples: int
    layers: list[dict[str, Any]]
    groups: list[dict[str, Any]]

    def exclude_snippet(self, worst: int) -> str:
        """The recipe line that keeps the ``worst`` groups in float."""
        return "exclude: [" + ", ".join(n for g in self.groups[:worst] for n in g["nodes"]) + "]"

    def to_json(self, suggest: int) -> dict[str, Any]:
        """The ranking ``-o`` and ``--json`` write (``optkit_debug`` marks a file optkit may replace)."""
        return {"optkit_debug": 1, "float": self.float_model, "int8": self.int8_model, "mode": self.mode,
                "data": self.data, "samples": self.samples, "layers": self.layers, "groups": self.groups,
                "exclude_snippet": self.exclude_snippet(suggest)}


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    eps = np.finfo(np.float32).eps
    return 20 * math.log10(max(np.linalg.norm(ref), eps) / max(np.linalg.norm(ref - got), eps))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)


def _feeds(data: EvalData, samples: int, batch_size: int) -> list[dict[str, np.ndarray]]:
    """The first ``samples`` of ``data`` in batches, the last one short (not padded)."""
    n = min(samples, len(data))
    return [{k: v[i:i + batch_size] for k, v in data.inputs.items()} for i in range(0, n, batch_size)]


def _qdq_pairs(qdq_model: Any) -> list[QdqPair]:
    """Every activation QDQ pair: the float tensor quantized, the dequantized tensor, and the quantized
    nodes around it (its producer, and the consumers of the dequantized copy)."""
    producers = {o: n for n in qdq_model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in qdq_model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name for t in qdq_model.graph.initializer}
    pairs = []
    for q in qdq_model.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in inits:
            continue
        tensor = q.input[0]
        for dq in (c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"):
            users = [c for c in consumers.get(dq.output[0], []) if c.op_type != "QuantizeLinear"]
            nodes = {c.name for c in users}
            prod = producers.get(tensor)
            if prod is not None and prod.op_type not in ("DequantizeLinear", "QuantizeLinear"):
                nodes.add(prod.name)
            pairs.append(QdqPair(tensor, dq.output[0], sorted(nodes)))
    return pairs


def _weight_entries(float_path: Path, qdq_model, inits: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Each quantized initializer (weights, and biases as int32) vs the float model's copy."""
    import onnx
    from onnx import numpy_helper

    floats = {t.name: t for t in onnx.load(str(float_path)).graph.initializer}
    users: dict[str, list[str]] = {}
    for n in qdq_model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n.name)
    entries = []
    for dq in qdq_model.graph.node:
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
            continue
        name = dq.input[0].removesuffix("_quantized")
        if name not in floats:
            continue
        q, scale = inits[dq.input[0]].astype(np.float64), inits[dq.input[1]].astype(np.float64)
        zp = inits[dq.input[2]].astype(np.float64) if len(dq.input) > 2 and dq.input[2] in inits else np.zeros_like(scale)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1 and q.ndim > 1:
            shape = [1] * q.ndim
            shape[axis % q.ndim] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        ref = numpy_helper.to_array(floats[name]).astype(np.float64)
        deq = (q - zp) * scale
        if deq.shape != ref.shape:
            continue
        entries.append({"tensor": name, "kind": "bias" if q.dtype == np.int32 or inits[dq.input[0]].dtype == np.int32
                        else "weight", "sqnr_db": sqnr_db(ref, deq),
                        "nodes": sorted(users.get(dq.output[0], []))})
    return entries


def _run_with_outputs(model_path: Path, names: list[str], data: EvalData, samples: int, batch_size: int,
                      scratch: Path, tag: str) -> dict[str, np.ndarray]:
    """Run a model with extra graph outputs (intermediate tensors), concatenated over batches."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    path = scratch / f"{tag}_outputs.onnx"
    onnx.save_model(model, str(path))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor as written
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    chunks: dict[str, list[np.ndarray]] = {}
    for feed in _feeds(data, samples, batch_size):
        for name, value in zip(names, session.run(names, feed)):
            chunks.setdefault(name, []).append(value)
    return {k: np.concatenate(v) for k, v in chunks.items()}


def _fake_quant(x: np.ndarray, scale: np.ndarray | np.float64, zero_point: np.ndarray) -> np.ndarray:
    info = np.iinfo(zero_point.dtype)
    q = np.clip(np.round(x / scale) + zero_point.astype(np.float64), info.min, info.max)
    return (q - zero_point.astype(np.float64)) * scale


def channel_sqnr_db(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(median, worst) SQNR over channels (axis 1 of NCHW, else the last axis): a few outlier channels
    dominate a whole-tensor norm and hide that every other channel was flattened."""
    axis = 1 if ref.ndim == 4 else ref.ndim - 1
    r = np.moveaxis(np.asarray(ref, np.float64), axis, 0).reshape(ref.shape[axis], -1)
    g = np.moveaxis(np.asarray(got, np.float64), axis, 0).reshape(ref.shape[axis], -1)
    eps = np.finfo(np.float32).eps
    per = 20 * np.log10(np.maximum(np.linalg.norm(r, axis=1), eps) / np.maximum(np.linalg.norm(r - g, axis=1), eps))
    per = per[np.linalg.norm(r, axis=1) > eps] if np.any(np.linalg.norm(r, axis=1) > eps) else per
    return float(np.median(per)), float(per.min())


def rank_static(float_path: Path, qdq_path: Path, data: EvalData, scratch: Path, *, samples: int = 64,
                batch_size: int = 16) -> list[dict[str, Any]]:
    """Every QDQ'd activation and weight, worst (lowest median-channel SQNR) first."""
    import onnx
    from onnx import numpy_helper
    from optkit.types.ui import quiet_libraries

    qdq_model = onnx.load(str(qdq_path))
    inits = {t.name: numpy_helper.to_array(t) for t in qdq_model.graph.initializer}
    float_names = {o for n in onnx.load(str(float_path)).graph.node for o in n.output} | \
        {i.name for i in qdq_model.graph.input}
    pairs = [p for p in _qdq_pairs(qdq_model) if p.tensor in float_names]
    quant_params = {}
    for node in qdq_model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) >= 3 and node.input[1] in inits and node.input[2] in inits:
            quant_params[node.input[0]] = (inits[node.input[1]].astype(np.float64), inits[node.input[2]])
    with quiet_libraries():
        ref = _run_with_outputs(float_path, sorted({p.tensor for p in pairs}), data, samples, batch_size, scratch, "float")
        got = _run_with_outputs(qdq_path, sorted({p.dequantized for p in pairs}), data, samples, batch_size, scratch, "qdq")
    entries = []
    for pair in pairs:
        x = ref.get(pair.tensor)
        if x is None or pair.tensor not in quant_params:
            continue
        scale, zp = quant_params[pair.tensor]
        median, worst = channel_sqnr_db(x, _fake_quant(x, scale, zp))
        entry = {"tensor": pair.tensor, "kind": "activation", "sqnr_db": median, "worst_channel_sqnr_db": worst,
                 "nodes": pair.nodes}
        y = got.get(pair.dequantized)
        if y is not None and y.shape == x.shape:
            entry.update({"accumulated_sqnr_db": sqnr_db(x, y), "cosine": _cosine(x, y)})
        entries.append(entry)
    entries += _weight_entries(float_path, qdq_model, inits)
    entries = [e for e in entries if e["nodes"]]
    return sorted(entries, key=lambda e: (e["sqnr_db"], e["tensor"]))


def rank_dynamic(float_path: Path, data: EvalData | None = None, scratch: Path | None = None, *,
                 per_channel: bool = True, reduce_range: bool = True, samples: int = 64,
                 batch_size: int = 16) -> list[dict[str, Any]]:
    """Dynamic int8: each MatMul/Gemm's activation input (quantized per batch to uint8 over its range at run
    time, simulated on the float model's tensors) and its weight (symmetric int8 round trip)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(float_path))
    inits = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node
             if n.op_type in ("MatMul", "Gemm") and len(n.input) >= 2 and n.input[1] in inits]
    qmax = 63 if reduce_range else 127
    entries = []
    for node in nodes:
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        axis = 0 if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute) else -1
        amax = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != (axis % w.ndim))) if per_channel and w.ndim > 1 \
            else np.abs(w).max()
        scale = np.where(amax > 0, amax / qmax, 1.0)
        shape = [1] * w.ndim
        if np.ndim(scale):
            shape[axis % w.ndim] = -1
            scale = scale.reshape(shape)
        deq = np.clip(np.round(w / scale), -qmax - 1, qmax) * scale
        entries.append({"tensor": node.input[1], "kind": "weight", "sqnr_db": sqnr_db(w, deq), "nodes": [node.name]})
    if data is not None and scratch is not None:
        acts = _run_with_outputs(float_path, sorted({n.input[0] for n in nodes}), data, samples, batch_size,
                                 scratch, "dynamic")
        for node in nodes:
            x = acts.get(node.input[0])
            if x is None or x.ndim < 2:
                continue
            lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
            act_scale = (hi - lo) / 255 if hi > lo else 1.0
            zp = np.array(np.clip(np.round(-lo / act_scale), 0, 255), dtype=np.uint8)
            median, worst = channel_sqnr_db(x, _fake_quant(x, np.float64(act_scale), zp))
            entries.append({"tensor": node.input[0], "kind": "activation", "sqnr_db": median,
                            "worst_channel_sqnr_db": worst, "nodes": [node.name]})
    return sorted(entries, key=lambda e: (e["sqnr_db"], e["tensor"]))


def exclusion_groups(entries: list[dict[str, Any]], already: set[str] | frozenset = frozenset()) -> list[dict[str, Any]]:
    """Entries reduced to distinct node groups, worst first: each group is one candidate for the guard."""
    seen: set[str] = set(already)
    groups = []
    for e in entries:
        new = [n for n in e["nodes"] if n not in seen]
        if not new:
            continue
        seen.update(new)
        groups.append({"nodes": new, "why": f"{e['kind']} {e['tensor']}: SQNR {e['sqnr_db']:.1f} dB"})
    return groups


def _unrelated(float_name: str, int8_name: str, why: str):
    from optkit.types.errors import UsageError

    return UsageError(f"{int8_name} was not quantized from {float_name}: {why}",
                      hint="Pass the float model and the int8 model 'optkit quantize' made from it")


def _check_related(fp32, int8) -> None:
    """Both models take the same inputs (the same samples go through both)."""
    a, b = [i.name for i in fp32.inputs], [i.name for i in int8.inputs]
    if a and b and set(a) != set(b):
        raise _unrelated(fp32.path.name, int8.path.name,
                         f"the models take different inputs ({fp32.path.name}: [{', '.join(a)}]; "
                         f"{int8.path.name}: [{', '.join(b)}])")
    shapes = {i.name: i for i in int8.inputs}
    for spec in fp32.inputs:
        other = shapes.get(spec.name)
        if other is not None and (len(other.shape) != len(spec.shape) or any(
                isinstance(x, int) and isinstance(y, int) and x != y for x, y in list(zip(spec.shape, other.shape))[1:])):
            raise _unrelated(fp32.path.name, int8.path.name, f"input '{spec.name}' is {spec.shape_text()} in "
                             f"{fp32.path.name} but {other.shape_text()} in {int8.path.name}")


def _check_weights_match(float_paths: list[Path], int8_model, float_name: str, int8_name: str) -> None:
    """The int8 model's quantized weights ('W_quantized', 'W_Transposed_quantized') are the float model's
    weights: at least half of them match one by name and size (two unrelated models share at most a name like
    'fc.bias' by chance; a ranking of those is noise)."""
    import onnx

    sizes: dict[str, int] = {}
    for path in float_paths:
        for t in onnx.load(str(path), load_external_data=False).graph.initializer:
            sizes[t.name] = int(np.prod(t.dims)) if t.dims else 1
    quantized = {}
    for t in int8_model.graph.initializer:
        if t.name.endswith("_quantized"):
            base = t.name.removesuffix("_quantized").removesuffix("_Transposed")
            quantized[base] = int(np.prod(t.dims)) if t.dims else 1
    matched = [n for n, size in quantized.items() if sizes.get(n) == size]
    if quantized and len(matched) * 2 < len(quantized):
        raise _unrelated(float_name, int8_name,
                         f"{len(matched)} of its {len(quantized)} quantized weights match a weight of "
                         f"{float_name} by name and size" + (f" ({', '.join(sorted(matched)[:3])})" if matched else ""))


def debug_models(float_ref: str, int8_ref: str, data_path: Path | None, *, samples: int = 64) -> DebugRanking:
    """``optkit debug``: rank the int8 model's layers against its float model on calibration samples."""
    import onnx

    from optkit.backends.opening import open_artifact
    from optkit.types.errors import UsageError
    from optkit.eval.data import load_npz
    from optkit.backends.onnxruntime import preprocess_for_quantization
    from optkit.types.files import scratch_dir

    fp32, int8 = open_artifact(float_ref), open_artifact(int8_ref)
    for art, role in ((fp32, "FLOAT"), (int8, "INT8")):
        if art.format != "onnx":
            raise UsageError(f"{role} {art.path.name} is a {art.format} model; optkit debug compares two ONNX models",
                             hint="Pass the float ONNX model and the int8 ONNX model made from it")
    _check_related(fp32, int8)
    path = data_path or fp32.calib_data or int8.calib_data or fp32.eval_data or int8.eval_data
    if path is None:
        raise UsageError("no samples to compare the models on", hint="Pass --data FILE.npz (arrays named after the inputs)")
    data = load_npz(Path(path), fp32.inputs)
    int8_model = onnx.load(str(int8.path), load_external_data=False)
    ops = {n.op_type for n in int8_model.graph.node}
    with scratch_dir() as scratch:
        floats = [fp32.path]
        if "QuantizeLinear" in ops:
            mode = "static"
            facts: dict = {}
            reference = preprocess_for_quantization(fp32.path, scratch / "float_pre.onnx", facts)  # the names quantize saw
            floats.append(reference)
            _check_weights_match(floats, int8_model, fp32.path.name, int8.path.name)
            entries = rank_static(reference, int8.path, data, scratch, samples=samples)
            if not entries:
                entries = rank_static(fp32.path, int8.path, data, scratch, samples=samples)
        elif ops & {"MatMulInteger", "DynamicQuantizeLinear", "ConvInteger", "DynamicQuantizeMatMul"}:
            mode = "dynamic"
            _check_weights_match(floats, int8_model, fp32.path.name, int8.path.name)
            entries = rank_dynamic(fp32.path, data, scratch, samples=samples)
        else:
            raise UsageError(f"{int8.path.name} has no int8 quantization (no QuantizeLinear, no integer ops)",
                             hint="Pass the model that 'optkit quantize' wrote")
        if not entries:
            raise _unrelated(fp32.path.name, int8.path.name, "the models share no quantized tensor or layer to compare")
    return DebugRanking(float_model=str(fp32.path), int8_model=str(int8.path), mode=mode, data=str(path),
                        samples=min(samples, len(data)), layers=entries, groups=exclusion_groups(entries))


def render_debug(console: Console, ranking: DebugRanking, top: int) -> None:
    from rich.table import Table

    table = Table(title=f"quantization error, {ranking.mode} int8, {ranking.samples} samples of "
                        f"{Path(ranking.data).name} (SQNR: higher is better)", header_style="bold")
    for h in ("#", "kind", "tensor", "SQNR dB (median ch)", "worst ch dB", "accumulated dB", "cosine", "nodes"):
        table.add_column(h, justify="left" if h in ("kind", "tensor", "nodes") else "right")
    for i, e in enumerate(ranking.layers[:top], 1):
        def fmt(key: str, spec: str) -> str:
            return format(e[key], spec) if e.get(key) is not None else "—"
        table.add_row(str(i), e["kind"], e["tensor"], f"{e['sqnr_db']:.1f}", fmt("worst_channel_sqnr_db", ".1f"),
                      fmt("accumulated_sqnr_db", ".1f"), fmt("cosine", ".5f"), ", ".join(e["nodes"]))
    console.print(table)
