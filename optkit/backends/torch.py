"""PyTorch backend: load a torch artifact safely, run it, count its MACs.

Loading never unpickles arbitrary objects: weights go through ``torch.load(weights_only=True)``;
TorchScript through ``torch.jit.load`` (TorchScript's own unpickler, which builds tensors and TorchScript
classes, never Python callables); ``.pt2`` through ``torch.export.load`` only after every member it
would unpickle, and every other member that looks like a pickle, has loaded under the weights-only unpickler
(``torch.export.load`` itself falls back to unrestricted unpickling when that fails), and only from an archive
rebuilt in memory from the very bytes that were checked, once its size, member count, names and inflated size
passed their bounds (``checked_pt2``).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import logging
import os
import sys
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from optkit.backends import Runner
from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError, first_line
from optkit.types.files import human_bytes
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
    from optkit.types.model_spec import check_factory_ref

    check_factory_ref(ref)  # never os:abort and the like
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
            name = Path(artifact.source["weights"]).name
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
    elif kind == "hf":
        from optkit.backends.hf import load_hf_module

        return load_hf_module(artifact)
    elif kind == "torchscript":
        try:
            model = torch.jit.load(artifact.source["path"], map_location="cpu")
        except Exception as exc:
            raise UsageError(f"cannot load TorchScript {artifact.path}: {first_line(exc, 200)}", hint="Re-save it with torch.jit.save") from exc
    elif kind == "exported_program":
        return load_exported_program(Path(artifact.source["path"]))
    else:
        raise UsageError(f"unknown torch source kind {kind!r} for {artifact.path}")
    return model.eval()


# A .pt2 is read whole into memory and rebuilt there: bounds on what that may cost.
PT2_MAX_BYTES = 4 << 30          # the file, and the sum of its members once inflated
PT2_MAX_MEMBERS = 20_000         # a large language model stores some thousand tensors, one member each
PT2_MAX_DIRECTORY = 16 << 20     # the zip's central directory, read before any member
PT2_MAX_EXPANSION = 16           # members may inflate to 16x the file's size (+ PT2_EXPANSION_SLACK)
PT2_EXPANSION_SLACK = 64 << 20
_SNIFF_OPS = 100_000             # a stream still parsing as pickle opcodes after this many counts as one
_LEGACY_PICKLES = ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt",
                   "serialized_state_dict.json", "serialized_constants.json")  # the pre-2.8 format, all unpickled


def _shown(name: str) -> str:
    """A member name as one printable line (control characters escaped)."""
    return ascii(name)[1:-1] if not name.isprintable() or not name.isascii() else name


def _pt2_roles(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> tuple[set[str], set[str], list[str]]:
    """(members ``torch.export.load`` would unpickle, members it reads without Python's unpickler, members it
    must never be given), over-approximating what torch 2.x does (torch/export/pt2_archive/_package.py and
    torch.export.load's fallback to the pre-2.8 format).

    Unpickled by torch's unrestricted unpickler (outright, or once the weights-only one fails): sample inputs;
    the legacy ``data/weights/<model>.pt`` and ``data/constants/<model>.pt``; weights and tensor constants whose
    payload config says ``use_pickle``; the pre-2.8 format's serialized_* members. Read as raw tensor bytes: payloads
    without ``use_pickle``; by TorchScript's unpickler (no Python callables): custom objects. Refused: opaque
    Python objects (plain ``pickle.loads``) and AOTInductor / ExecuTorch / MTIA payloads (native code)."""
    from torch.export.pt2_archive import constants as c

    def rel(name: str) -> str:  # members sit under one archive-name folder (or none: the old format)
        return name.split("/", 1)[1] if "/" in name else name

    refused = [i.filename for i in infos if rel(i.filename).startswith((c.AOTINDUCTOR_DIR, c.EXECUTORCH_DIR, c.MTIA_DIR))
               or rel(i.filename).startswith(c.CONSTANTS_DIR + c.OPAQUE_OBJ_FILENAME_PREFIX)]
    unpickled: set[str] = set()
    other_readers: set[str] = set()
    for info in infos:
        name = rel(info.filename)
        folder = info.filename.rsplit("/", 1)[0] if "/" in info.filename else ""
        if (name.startswith(c.SAMPLE_INPUTS_DIR) or info.filename in _LEGACY_PICKLES or name in _LEGACY_PICKLES
                or (name.startswith((c.WEIGHTS_DIR, c.CONSTANTS_DIR)) and name.endswith(".pt"))):
            unpickled.add(info.filename)
        elif name.startswith((c.WEIGHTS_DIR, c.CONSTANTS_DIR)) and name.endswith("_config.json"):
            config = json.loads(zf.read(info)).get("config", {})
            constants = name.startswith(c.CONSTANTS_DIR)
            for meta in config.values():
                path_name = str(meta["path_name"])
                member = f"{folder}/{path_name}"
                if constants and path_name.startswith(c.OPAQUE_OBJ_FILENAME_PREFIX):
                    refused.append(member)
                elif constants and path_name.startswith(c.CUSTOM_OBJ_FILENAME_PREFIX):
                    other_readers.add(member)
                elif meta.get("use_pickle"):
                    unpickled.add(member)
                else:
                    other_readers.add(member)
    return unpickled, other_readers - unpickled, refused


def _looks_pickled(blob: bytes) -> bool:
    """Whether ``torch.load`` could take these bytes for a checkpoint: a pickle of protocol 2 or later, a zip
    (torch's archive format: a data.pkl inside), a tar (torch's oldest format), or a protocol 0/1 pickle
    (a stream of pickle opcodes up to STOP; parsed by pickletools, which never executes anything)."""
    import pickletools

    if blob[:1] == b"\x80" or blob[:4] == b"PK\x03\x04" or blob[257:262] == b"ustar":
        return True
    try:
        for count, (opcode, _arg, _pos) in enumerate(pickletools.genops(io.BytesIO(blob))):
            if opcode.name == "STOP" or count >= _SNIFF_OPS:
                return True
    except Exception:  # noqa: BLE001 - not a pickle stream: genops raises ValueError (and kin) on any other bytes
        return False
    return False


def _pt2_layout(path: Path, fh) -> None:
    """Refuse an archive whose central directory alone would be too large to read."""
    read_end = getattr(zipfile, "_EndRecData", None)  # the stdlib's own (zip64-aware) reader of the end record
    endrec = read_end(fh) if read_end else None
    if endrec is None:
        return  # not a zip: zipfile.ZipFile raises BadZipFile, reported by the caller
    entries, directory = endrec[zipfile._ECD_ENTRIES_TOTAL], endrec[zipfile._ECD_SIZE]  # noqa: SLF001
    if entries > PT2_MAX_MEMBERS or directory > PT2_MAX_DIRECTORY:
        raise UsageError(f"{path.name} lists {entries} members in a {human_bytes(directory)} directory; "
                         f"optkit reads .pt2 archives of at most {PT2_MAX_MEMBERS} members",
                         hint="Re-save the model with torch.export.save")


def _pt2_members(path: Path, infos: list[zipfile.ZipInfo], size: int) -> None:
    """Refuse too many members, unsafe or duplicated names, encrypted members and members that inflate far beyond
    the file (a zip bomb): all before any member is read."""
    if len(infos) > PT2_MAX_MEMBERS:
        raise UsageError(f"{path.name} holds {len(infos)} members; optkit reads .pt2 archives of at most "
                         f"{PT2_MAX_MEMBERS}", hint="Re-save the model with torch.export.save")
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts) or not name.isprintable():
            raise UsageError(f"{path.name}: member '{_shown(name)}' has an unsafe path (absolute, '..', '.', an "
                             "empty part, a backslash or a control character), which torch.export.save never writes",
                             hint="Re-save the model with torch.export.save")
        if name in seen:
            raise UsageError(f"{path.name}: member '{_shown(name)}' appears more than once (readers disagree on which "
                             "copy counts)", hint="Re-save the model with torch.export.save")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise UsageError(f"{path.name}: member '{_shown(name)}' is encrypted", hint="Re-save the model with torch.export.save")
    total = sum(i.file_size for i in infos)
    if infos and (total > PT2_MAX_BYTES or total > PT2_MAX_EXPANSION * size + PT2_EXPANSION_SLACK):
        biggest = max(infos, key=lambda i: i.file_size)
        raise UsageError(f"{path.name}: its members inflate to {human_bytes(total)} from a {human_bytes(size)} "
                         f"file (member '{_shown(biggest.filename)}' alone {human_bytes(biggest.file_size)}); "
                         "optkit refuses archives that expand this far (a zip bomb)",
                         hint="Re-save the model with torch.export.save (it stores members uncompressed)")


def _member_bytes(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with zf.open(info) as fh:  # at most the declared size (+1 to notice more): a lying header cannot inflate further
        blob = fh.read(info.file_size + 1)
    if len(blob) != info.file_size:
        raise UsageError(f"{path.name}: member '{_shown(info.filename)}' holds {len(blob)} bytes, not the "
                         f"{info.file_size} its header declares", hint="Re-save the model with torch.export.save")
    return blob


def checked_pt2(path: Path) -> io.BytesIO:
    """A ``.pt2`` file rebuilt in memory from members that ``torch.export.load`` cannot turn into code execution.

    Every member torch would unpickle (see ``_pt2_roles``), and every other member whose bytes look like
    something ``torch.load`` accepts (``_looks_pickled``; raw tensor payloads, which torch never unpickles,
    aside), must load with ``torch.load(weights_only=True)``; native code and plain pickles are refused. The
    archive is bounded first (file size, members, names, inflated size) and then rebuilt from exactly the
    bytes that were checked, so the caller's ``torch.export.load`` reads no member twice, no duplicate, and
    no byte a different zip reader might find where Python's did not."""
    torch = _torch()
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {first_line(exc, 120)}", hint="Check the path") from exc
    if size > PT2_MAX_BYTES:
        raise UsageError(f"{path.name} is {human_bytes(size)}; optkit reads a .pt2 into memory and refuses archives "
                         f"over {human_bytes(PT2_MAX_BYTES)}",
                         hint="Export the model to ONNX with external data, or load it from its factory and weights")
    out = io.BytesIO()
    try:
        with open(path, "rb") as fh:
            _pt2_layout(path, fh)
            with zipfile.ZipFile(fh) as zf, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rebuilt:
                infos = zf.infolist()
                _pt2_members(path, infos, size)
                unpickled, other_readers, refused = _pt2_roles(zf, infos)
                if refused:
                    raise UsageError(f"{path.name}: member '{_shown(refused[0])}' holds code or arbitrary Python objects "
                                     "(native code or a plain pickle), which optkit does not load",
                                     hint="Re-export the model with torch.export.save, without custom objects or "
                                          "AOTInductor packages")
                for info in infos:
                    blob = _member_bytes(path, zf, info)
                    if info.filename in unpickled or (info.filename not in other_readers and _looks_pickled(blob)):
                        try:
                            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the line says it all
                                warnings.simplefilter("ignore")
                                torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
                        except Exception as exc:
                            raise UsageError(
                                f"{path.name}: member '{_shown(info.filename)}' is a pickle that does not load with "
                                f"weights_only=True ({type(exc).__name__}); optkit will not unpickle it (unpickling "
                                "runs arbitrary code)", hint="Re-save the model with torch.export.save from trusted "
                                                             "code") from None
                    rebuilt.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), blob)
    except UsageError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, KeyError, TypeError, AttributeError,
            NotImplementedError, RuntimeError, EOFError, OSError, zlib.error) as exc:
        raise UsageError(f"{path.name} is not a readable torch.export archive ({first_line(exc, 120)})",
                         hint="Re-save it with torch.export.save") from exc
    out.seek(0)
    return out


class _LoggedErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextlib.contextmanager
def _torch_export_quiet():
    """``torch.export.load`` logs a failed load's traceback (and warns) before raising a vaguer error of its own:
    keep its loggers and warnings off the terminal, and yield the exceptions they carried for the one error line."""
    names = {"torch.export", "torch._export"} | {
        n for n in list(logging.root.manager.loggerDict) if n.startswith(("torch.export.", "torch._export."))}
    capture = _LoggedErrors()
    saved = []
    for name in sorted(names):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers, logger.propagate = [capture], False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield capture.errors
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate


def load_exported_program(path: Path):
    """A ``.pt2`` as an ``nn.Module`` (``checked_pt2``), torch's own logging kept off the terminal."""
    torch = _torch()
    archive = checked_pt2(path)  # one copy in memory: the rebuilt archive torch reads
    with _torch_export_quiet() as logged:
        try:
            return torch.export.load(archive).module()
        except Exception as exc:
            cause = logged[0] if logged else exc  # torch's final error only says "see the warnings above"
            raise UsageError(f"cannot load torch.export program {path}: {first_line(cause, 200)}",
                             hint="Re-save it with torch.export.save") from exc


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
