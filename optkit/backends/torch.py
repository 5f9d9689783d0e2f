"""PyTorch backend: load a torch artifact safely, run it, count its MACs.

Loading never unpickles arbitrary objects: weights go through ``torch.load(weights_only=True)``;
TorchScript through ``torch.jit.load`` (TorchScript's own unpickler, which builds tensors and TorchScript
classes, never Python callables); ``.pt2`` through ``torch.export.load`` only after every member it
would unpickle has loaded under the weights-only unpickler (``torch.export.load`` itself falls back to
unrestricted unpickling when that fails), from the very bytes that were checked.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from optkit.backends import Runner
from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError, first_line
from optkit.types.lazy import require


def _torch():
    return require("torch", "PyTorch models")


@contextlib.contextmanager
def _on_path(folder: Path):
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


class _FactoryExit(BaseException):
    """Raised in place of ``os._exit`` while a user's factory module is imported or called."""


@contextlib.contextmanager
def _no_process_exit():
    """User code may call ``sys.exit`` (SystemExit, caught by the caller) or ``os._exit``, which would end
    optkit with that code having written nothing: ``os._exit`` raises instead while user code runs."""
    real = os._exit

    def refuse(code: int = 0) -> None:
        raise _FactoryExit(code)

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real


def _user_code_exited(ref: str, exc: BaseException, when: str) -> UsageError:
    code = exc.code if isinstance(exc, SystemExit) else exc.args[0] if exc.args else 0
    how = "os._exit" if isinstance(exc, _FactoryExit) else "sys.exit"
    hint = ("Move script code under `if __name__ == \"__main__\":` so importing the module only defines the model"
            if when == "during import" else "The factory must return the model, not end the process")
    return UsageError(f"the factory '{ref}' exited {when} ({how}({code!r}))", hint=hint)


def import_factory(ref: str):
    """``/abs/file.py:build`` or ``pkg.module:build`` -> the callable."""
    target, _, attr = ref.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            # a stable name keeps exported graphs' metadata byte-identical; registered in sys.modules
            # because torch.export / PT2E quantizers resolve classes through it
            name = f"optkit_user_{path.stem}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                with _on_path(path.parent), _no_process_exit():
                    spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            with _no_process_exit():
                module = importlib.import_module(target)
    except (SystemExit, _FactoryExit) as exc:
        raise _user_code_exited(ref, exc, "during import") from None
    except Exception as exc:  # a user's module can raise anything at import time
        raise UsageError(f"cannot import factory '{ref}': {first_line(exc, 200)}",
                         hint="Fix the module or its dependencies, then retry") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"factory '{ref}': '{attr}' is not a callable in {target}", hint="Name a function that builds the model")
    return factory


def load_state_dict(path: Path) -> dict[str, Any]:
    torch = _torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights_only" in str(exc) or type(exc).__name__ == "UnpicklingError":
            raise UsageError(
                f"{path} is a full pickle checkpoint (it stores Python objects, not only tensors); optkit loads "
                "weights with weights_only=True and will not unpickle it",
                hint="Re-save it with torch.save(model.state_dict(), path)") from exc
        raise UsageError(f"cannot read weights {path}: {first_line(exc, 200)}", hint="Pass a state_dict saved with torch.save") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path} is not a state_dict (a mapping of names to tensors)",
                         hint="Save weights with torch.save(model.state_dict(), path)")
    return state


def structure_of(pruned, original) -> dict[str, dict[str, Any]]:
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


def apply_structure(model, structure: dict[str, dict[str, Any]], state: dict[str, Any]) -> None:
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
        current = getattr(module, attr, None) if module is not None else None
        if not isinstance(current, torch.Tensor) or current.shape == tensor.shape:
            continue
        if isinstance(current, torch.nn.Parameter):
            setattr(module, attr, torch.nn.Parameter(torch.empty_like(tensor), requires_grad=current.requires_grad))
        else:
            module._buffers[attr] = torch.empty_like(tensor)


def load_module(artifact: Artifact):
    """The artifact as an ``nn.Module`` in eval mode."""
    torch = _torch()
    kind = artifact.source.get("kind")
    if kind == "factory":
        factory = import_factory(artifact.source["factory"])
        try:  # seeded: a factory without weights (random init, e.g. a transformer built from a config) must
            # build the same model every time it is loaded, or the export would be checked against another model
            with _no_process_exit(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = factory()
        except (SystemExit, _FactoryExit) as exc:
            raise _user_code_exited(artifact.source["factory"], exc, "while building the model") from None
        except Exception as exc:
            raise UsageError(f"factory '{artifact.source['factory']}' failed: {first_line(exc, 200)}",
                             hint="The factory must build the model without arguments") from exc
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"factory '{artifact.source['factory']}' returned {type(model).__name__}, not a torch.nn.Module")
        if artifact.source.get("weights"):
            state = load_state_dict(Path(artifact.source["weights"]))
            if artifact.source.get("structure"):
                apply_structure(model, artifact.source["structure"], state)
            result = model.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise UsageError(
                    f"weights {Path(artifact.source['weights']).name} do not fit the factory's model "
                    f"(missing: {', '.join(result.missing_keys[:3]) or '-'}; unexpected: {', '.join(result.unexpected_keys[:3]) or '-'})",
                    hint="Pass the state_dict saved from this architecture")
    elif kind == "hf":
        from optkit.backends.hf import load_hf_module

        return load_hf_module(artifact)
    elif kind == "torchscript":
        try:
            model = torch.jit.load(artifact.source["path"], map_location="cpu")
        except Exception as exc:
            raise UsageError(f"cannot load TorchScript {artifact.path}: {first_line(exc, 200)}", hint="Re-save it with torch.jit.save") from exc
    elif kind == "exported_program":
        try:
            model = torch.export.load(io.BytesIO(checked_pt2_bytes(Path(artifact.source["path"])))).module()
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"cannot load torch.export program {artifact.path}: {first_line(exc, 200)}",
                             hint="Re-save it with torch.export.save") from exc
        return model
    else:
        raise UsageError(f"unknown torch source kind {kind!r} for {artifact.path}")
    return model.eval()


def _pickled_pt2_members(zf: zipfile.ZipFile) -> tuple[list[zipfile.ZipInfo], list[str]]:
    """(members ``torch.export.load`` would unpickle, members it must never be given).

    Unpickled: sample inputs, weights and tensor constants whose payload config says ``use_pickle``, and
    the serialized_*.pt members of the pre-2.8 format. Refused outright: opaque Python objects (plain
    ``pickle.loads``) and AOTInductor / ExecuTorch payloads (native code)."""
    from torch.export.pt2_archive import constants as c

    infos = zf.infolist()
    def rel(info: zipfile.ZipInfo) -> str:  # members sit under one archive-name folder (or none: old format)
        return info.filename.split("/", 1)[1] if "/" in info.filename else info.filename

    refused = [i.filename for i in infos if rel(i).startswith((c.AOTINDUCTOR_DIR, c.EXECUTORCH_DIR, c.MTIA_DIR))
               or rel(i).startswith(c.CONSTANTS_DIR + c.OPAQUE_OBJ_FILENAME_PREFIX)]
    pickled_names: set[str] = set()
    for info in infos:
        name = rel(info)
        if name.startswith(c.SAMPLE_INPUTS_DIR) or name in (
                "serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt"):
            pickled_names.add(info.filename)
        elif name.startswith((c.WEIGHTS_DIR, c.CONSTANTS_DIR)) and name.endswith("_config.json"):
            config = json.loads(zf.read(info)).get("config", {})
            folder = info.filename.rsplit("/", 1)[0]
            for meta in config.values():
                path_name = str(meta["path_name"])
                if meta.get("use_pickle") and not path_name.startswith(c.CUSTOM_OBJ_FILENAME_PREFIX):
                    pickled_names.add(f"{folder}/{path_name}")
                elif path_name.startswith(c.OPAQUE_OBJ_FILENAME_PREFIX):
                    refused.append(f"{folder}/{path_name}")
    return [i for i in infos if i.filename in pickled_names], refused


def checked_pt2_bytes(path: Path) -> bytes:
    """The bytes of a ``.pt2`` file whose every unpickled member loads with ``weights_only=True``.

    The caller loads these bytes (not the file again), so what was checked is what is loaded."""
    torch = _torch()
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            pickled, refused = _pickled_pt2_members(zf)
            if refused:
                raise UsageError(f"{path.name}: member '{refused[0]}' holds code or arbitrary Python objects "
                                 "(native code or a plain pickle), which optkit does not load",
                                 hint="Re-export the model with torch.export.save, without custom objects or AOTInductor packages")
            for info in pickled:  # every entry, duplicates of a name included: a reader may pick any of them
                try:
                    torch.load(io.BytesIO(zf.read(info)), map_location="cpu", weights_only=True)
                except Exception as exc:
                    raise UsageError(
                        f"{path.name}: member '{info.filename}' is a pickle that does not load with weights_only=True "
                        f"({type(exc).__name__}); optkit will not unpickle it (unpickling runs arbitrary code)",
                        hint="Re-save the model with torch.export.save from trusted code") from None
    except (zipfile.BadZipFile, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path.name} is not a readable torch.export archive ({first_line(exc, 120)})",
                         hint="Re-save it with torch.export.save") from exc
    return data


def flatten_outputs(result: Any) -> list:
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


def count_macs(module, example: dict[str, np.ndarray], input_names: list[str]) -> int | None:
    """Multiply-accumulates of one forward pass on ``example`` (torch's FlopCounterMode / 2)."""
    torch = _torch()
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module(*[torch.from_numpy(example[n]) for n in input_names])
        return int(counter.get_total_flops() // 2)
    except Exception:  # counting is informative only; a model it cannot trace still exports
        return None
