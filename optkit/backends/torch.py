"""PyTorch backend: load a torch artifact safely, run it, count its MACs.

Loading never unpickles arbitrary objects: weights go through ``torch.load(weights_only=True)``
(``torch_factory.py``); TorchScript through ``torch.jit.load`` (TorchScript's own unpickler, which builds tensors
and TorchScript classes, never Python callables); ``.pt2`` through ``pt2.load_exported_program``, which checks the
archive first. What a torch MODEL argument can be (a folder, a factory, an ``hf:`` id, a file) is ``torch_open.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optkit.backends import Backend, Runner
from optkit.backends.pt2 import load_exported_program
from optkit.backends.torch_factory import build_from_factory, load_state_dict
from optkit.backends.torch_open import folder_files, open_reference, open_torch_file, torch_file
from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError, first_line
from optkit.types.lazy import require
from optkit.types.source import EXPORTED_PROGRAM, FACTORY, HF, TORCHSCRIPT


def _torch() -> Any:
    return require("torch", "PyTorch models")


def structure_of(pruned: Any, original: Any) -> dict[str, dict[str, Any]]:
    """Plain attributes (ints, floats, strings, tuples of them) that differ between two copies of a model.

    After structural pruning these are e.g. ``out_channels`` / ``in_features`` / ``normalized_shape`` or a
    custom module's ``head_dim``; with the pruned state_dict they are all a factory-built model needs to
    take the pruned shapes, so a pruned model reloads from its factory and plain tensors (no pickle).
    """
    def plain(v: Any) -> bool:
        return v is None or isinstance(v, (bool, int, float, str)) or (
            isinstance(v, (tuple, list)) and all(isinstance(x, (bool, int, float, str)) for x in v))

    before = dict(original.named_modules())
    changed: dict[str, dict[str, Any]] = {}
    for name, module in pruned.named_modules():
        ref = before.get(name)
        if ref is None:
            raise UsageError(f"pruned model has a module '{name}' the original does not", hint="Prune a copy of the factory's model")
        diff = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(module).items()
                if not k.startswith("_") and k != "training" and plain(v) and getattr(ref, k, None) != v}
        if diff:
            changed[name] = diff
    return changed


def apply_structure(model: Any, structure: dict[str, dict[str, Any]], state: dict[str, Any]) -> None:
    """Give a freshly built model the pruned shapes: set recorded attributes, resize tensors to ``state``'s."""
    torch = _torch()
    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        if name not in modules:
            raise UsageError(f"the model spec's structure names a module '{name}' that the factory's model lacks",
                             hint="The folder's model.py must be the architecture the model was pruned from")
        for key, value in attrs.items():
            setattr(modules[name], key, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state.items():
        owner, _, attr = key.rpartition(".")
        module = modules.get(owner)
        if module is None:
            continue
        current = getattr(module, attr, None)
        if not isinstance(current, torch.Tensor) or current.shape == tensor.shape:
            continue
        if isinstance(current, torch.nn.Parameter):
            setattr(module, attr, torch.nn.Parameter(torch.empty_like(tensor), requires_grad=current.requires_grad))
        else:
            module._buffers[attr] = torch.empty_like(tensor)


def _load_weights(model: Any, weights: Path, structure: dict[str, dict[str, Any]] | None) -> None:
    """``weights`` into the factory-built ``model`` (after giving it the pruned ``structure``), every tensor's shape
    checked: a state_dict of another architecture is a UsageError naming the first tensor that does not fit."""
    state = load_state_dict(weights)
    if structure:
        apply_structure(model, structure, state)
    name = weights.name
    current = model.state_dict()
    for key, tensor in state.items():
        if key in current and tuple(current[key].shape) != tuple(tensor.shape):
            raise UsageError(
                f"weights {name} do not fit the factory's model: '{key}' is {list(tensor.shape)} in the file "
                f"but {list(current[key].shape)} in the model", hint="Pass the state_dict saved from this architecture")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # anything else torch's copy refuses (e.g. a dtype it cannot cast)
        raise UsageError(f"weights {name} do not fit the factory's model: {first_line(exc, 200)}",
                         hint="Pass the state_dict saved from this architecture") from exc
    if result.missing_keys or result.unexpected_keys:
        raise UsageError(
            f"weights {name} do not fit the factory's model "
            f"(missing: {', '.join(result.missing_keys[:3]) or '-'}; unexpected: {', '.join(result.unexpected_keys[:3]) or '-'})",
            hint="Pass the state_dict saved from this architecture")


def load_module(artifact: Artifact) -> Any:
    """The artifact as an ``nn.Module`` in eval mode."""
    torch = _torch()
    source = artifact.source
    kind = source.kind
    if kind == FACTORY:
        model = build_from_factory(source.factory_ref)
        if source.weights:
            _load_weights(model, Path(source.weights), source.structure)
    elif kind == HF:
        from optkit.backends.hf import load_hf_module

        return load_hf_module(artifact)
    elif kind == TORCHSCRIPT:
        try:
            model = torch.jit.load(str(source.file_path), map_location="cpu")
        except Exception as exc:
            raise UsageError(f"cannot load TorchScript {artifact.path}: {first_line(exc, 200)}", hint="Re-save it with torch.jit.save") from exc
    elif kind == EXPORTED_PROGRAM:
        return load_exported_program(source.file_path)
    else:
        raise UsageError(f"unknown torch source kind {kind!r} for {artifact.path}")
    return model.eval()


def flatten_outputs(result: Any) -> list[Any]:
    torch = _torch()
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        return [t for v in result.values() for t in flatten_outputs(v)]
    if isinstance(result, (list, tuple)):
        return [t for v in result for t in flatten_outputs(v)]
    raise UsageError(f"the model returned {type(result).__name__}; optkit needs tensors (or tuples/dicts of tensors)")


def output_names(artifact: Artifact, count: int) -> list[str]:
    names = [o.name for o in artifact.outputs]
    if len(names) == count:
        return names
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


class TorchRunner(Runner):
    format = "torch"

    @classmethod
    def preload(cls) -> None:
        _torch()

    def __init__(self, artifact: Artifact, threads: int = 1) -> None:
        torch = _torch()
        if threads > 0:
            torch.set_num_threads(threads)
        self._torch = torch
        self.module = load_module(artifact)
        self.artifact = artifact
        self.input_names = [i.name for i in artifact.inputs]
        self.output_names: list[str] = [o.name for o in artifact.outputs]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(feed[name]) for name in self.input_names]
        with torch.inference_mode():
            outs = flatten_outputs(self.module(*args))
        if len(self.output_names) != len(outs):
            self.output_names = output_names(self.artifact, len(outs))
        return {n: t.detach().cpu().numpy() for n, t in zip(self.output_names, outs)}


def count_macs(module: Any, example: dict[str, np.ndarray], input_names: list[str]) -> int | None:
    """Multiply-accumulates of one forward pass on ``example`` (torch's FlopCounterMode / 2)."""
    torch = _torch()
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module(*[torch.from_numpy(example[n]) for n in input_names])
        return int(counter.get_total_flops() // 2)
    except Exception:  # counting is informative only; a model it cannot trace still exports
        return None


BACKEND = Backend(format="torch", runner=TorchRunner, recognises=torch_file, open=open_torch_file,
                  open_reference=open_reference, folder_files=folder_files)
