"""What a dynamo FX graph takes and gives, and the graph as a plain module optkit's export can trace.

Dynamo hands a backend every parameter and buffer as a graph input (``inline_inbuilt_nn_modules``), symbolic
sizes as ``SymInt`` inputs when shapes are dynamic, and the user's tensors. For deployment the weights must be
constants of the artifact and the sizes must come from the tensors, so :class:`Frozen` keeps the weights as
buffers and computes each size input from the tensor dimension dynamo derived it from; its inputs are the user's
tensors only.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GraphInputs:
    """How the graph's placeholders map to what the compiled callable is given."""

    names: list[str]                         # exported input names (the user's tensors), in order
    tensor_positions: list[int]              # their positions among the graph's inputs
    static_positions: list[int]              # parameters and buffers: baked into the artifact
    size_inputs: dict[int, tuple[int, int]]  # position of a SymInt input -> (tensor position, dim)
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)  # name -> {dim: symbol}
    unsupported: str | None = None           # why optkit cannot build this graph (it runs eagerly)


def _symbol(value: Any) -> str | None:
    node = getattr(value, "node", None)
    expr = getattr(node, "expr", None)
    return str(expr) if expr is not None and not str(expr).isdigit() else None


def _source(node) -> str:
    """Where dynamo read a graph input from, e.g. ``L['x']`` or ``L['self']._modules['ln'].eps``."""
    arg = node.meta.get("grapharg")
    source = getattr(arg, "source", None)
    if source is None:
        return ""
    try:
        name = source.name
        return str(name() if callable(name) else name)
    except Exception:  # a source kind without a name
        return ""


def _input_name(node, taken: set[str]) -> str:
    """``L['kwargs']['input_ids']`` -> ``input_ids``; ``L['x']`` -> ``x``; unique among the inputs."""
    keys = re.findall(r"\['([^']+)'\]", _source(node))
    name = keys[-1] if keys else re.sub(r"^L_+|_+$", "", str(node.target)) or "input"
    name = re.sub(r"[^0-9A-Za-z_]", "_", name).lower()
    base, n = name, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def analyse(gm, example_inputs: list[Any]) -> GraphInputs:
    import torch

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    taken: set[str] = set()
    inputs = GraphInputs([], [], [], {})
    symbols: dict[str, tuple[int, int]] = {}
    if len(placeholders) != len(example_inputs):
        inputs.unsupported = "the graph's inputs do not match its example inputs"
        return inputs
    for pos, (node, value) in enumerate(zip(placeholders, example_inputs)):
        if isinstance(value, torch.Tensor):
            # parameters, buffers and the module's own numbers (eps, scaling: tensors under dynamic=True)
            if (isinstance(value, torch.nn.Parameter) or getattr(value, "_dynamo_static_input_type", None)
                    or _source(node).startswith("L['self']")):
                inputs.static_positions.append(pos)
                continue
            if value.dim() == 0:
                inputs.unsupported = f"a Python number argument ({_source(node) or node.target}) the artifact would bake in"
            if value.device.type != "cpu":
                inputs.unsupported = f"an input on {value.device.type} (optkit's targets here run on the CPU)"
            if value.dtype.is_complex:
                inputs.unsupported = f"a {value.dtype} input (ONNX has no complex tensors)"
            name = _input_name(node, taken)
            inputs.names.append(name)
            inputs.tensor_positions.append(pos)
            fake = node.meta.get("example_value")
            for dim, size in enumerate(getattr(fake, "shape", ())):
                sym = _symbol(size)
                if sym is not None:
                    inputs.dynamic.setdefault(name, {})[dim] = sym
                    symbols.setdefault(sym, (pos, dim))
        elif isinstance(value, (int, torch.SymInt)):
            inputs.size_inputs[pos] = (-1, -1)
        else:
            inputs.unsupported = f"a {type(value).__name__} input"
    for pos in list(inputs.size_inputs):  # a size input: the dimension of a tensor input carrying its symbol
        sym = _symbol(placeholders[pos].meta.get("example_value"))
        if sym is None or sym not in symbols:
            inputs.unsupported = f"a size input ({placeholders[pos].target}) no input tensor's shape carries"
            continue
        inputs.size_inputs[pos] = symbols[sym]
    if not inputs.names:
        inputs.unsupported = "a graph with no tensor inputs"
    return inputs


_EVAL = "call model.eval() for an optkit build"
_BATCH_NORM_TRAINING = f"training mode (BatchNorm updates its running statistics): {_EVAL}"


def _training_flag(name: str, node) -> bool:
    """Whether a call runs in training mode: ``F.batch_norm``/``torch.batch_norm`` (``training``, 6th argument),
    ``F.dropout`` and its kin (``training``, 3rd), ``torch.dropout`` (``train``, 3rd); by keyword or position."""
    if node.kwargs.get("training") is True or node.kwargs.get("train") is True:
        return True
    if name == "batch_norm":
        return len(node.args) > 5 and node.args[5] is True
    return "dropout" in name and len(node.args) > 2 and node.args[2] is True


def unsupported_ops(gm) -> str | None:
    """Training-mode ops (dropout, batch norm statistics) and in-place updates of graph inputs: inference only.
    Training mode is looked for first: a BatchNorm in train() also adds to its ``num_batches_tracked`` buffer in
    place, and "in-place add_" would hide the reason and its remedy."""
    calls = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]
    named = [(getattr(n.target, "__name__", str(n.target)), n) for n in calls]
    for name, node in named:
        if _training_flag(name, node):
            if name == "batch_norm":
                return _BATCH_NORM_TRAINING
            return f"training mode ({name} is active): {_EVAL}"
    for name, node in named:
        mutates = name.endswith("_") and not name.startswith("_") and name not in ("and_", "or_", "not_")
        target = node.args[0] if node.args else None
        if mutates and target is not None and getattr(target, "op", None) == "placeholder":
            if "num_batches_tracked" in _source(target) or "num_batches_tracked" in str(target.target):
                return _BATCH_NORM_TRAINING
            return f"in-place {name} on an input (optkit artifacts do not write into their inputs)"
    return None


def make_frozen(gm, example_inputs: list[Any], inputs: GraphInputs):
    """A module whose forward takes the user's tensors only: weights as buffers, sizes read off the tensors."""
    import torch

    class Frozen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.graph_module = gm
            for k, pos in enumerate(inputs.static_positions):
                self.register_buffer(f"w{k}", example_inputs[pos].detach().clone())

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            full: list[Any] = [None] * len(example_inputs)
            for pos, t in zip(inputs.tensor_positions, tensors):
                full[pos] = t
            for k, pos in enumerate(inputs.static_positions):
                full[pos] = getattr(self, f"w{k}")
            for pos, (src, dim) in inputs.size_inputs.items():
                full[pos] = full[src].size(dim)
            out = self.graph_module(*full)
            out = tuple(out) if isinstance(out, (list, tuple)) else (out,)
            # a 0-d output (a sum a Python branch tests) travels as shape (1,); the runtime gives it back as 0-d
            return tuple(o.reshape(1) if isinstance(o, torch.Tensor) and o.dim() == 0 else o for o in out)

    return Frozen().eval()


def graph_digest(gm, example_inputs: list[Any], inputs: GraphInputs) -> str:
    """The graph's code, every weight's bytes, and the inputs' dtypes and shapes (symbols for dynamic dims)."""
    import torch

    h = hashlib.sha256(gm.code.encode())
    for pos in inputs.static_positions:
        t = example_inputs[pos].detach().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for name, pos in zip(inputs.names, inputs.tensor_positions):
        t = example_inputs[pos]
        dims = [inputs.dynamic.get(name, {}).get(d, s) for d, s in enumerate(t.shape)]
        h.update(f"{name}{t.dtype}{dims}".encode())
    return h.hexdigest()
