"""The Artifact handle passed between steps, and its JSON sidecar (the lineage ledger).

An artifact is a model in one format (``torch`` or ``onnx`` for now) with its tensor specs, the
data splits it is measured on, and - when optkit wrote it - a record of how it was made and what
was measured, plus the records of every ancestor back to the original model. That chain lives in
``<artifact>.optkit.json`` next to the file, so ``optkit report`` needs nothing else.

Nothing here imports torch or onnxruntime: formats are recognised from file contents.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from optkit.types.errors import UsageError
from optkit.types.files import check_path_text, files_digest, is_inside
from optkit.types.lazy import load_dotted
from optkit.types.records import Record, Serving, StepRecord

SIDECAR_SUFFIX = ".optkit.json"
SIDECAR_VERSION = 1
MAX_SIDECAR_BYTES = 64 << 20  # a sidecar is a few KB of JSON; a bigger one is not read
MAX_SIDECAR_FILE_BYTES = 4 << 30  # a data split or reference outputs a sidecar names
_NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip (the second: one with no arrays)
_FACTORY_RE = re.compile(r"^(?P<target>[^:]+\.py|[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_]\w*)$")


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor; a string dimension is dynamic (e.g. ``"batch"``)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.shape) and not isinstance(self.shape[0], int)

    def at_batch(self, batch: int) -> "TensorSpec":
        """This tensor with its first dimension fixed at ``batch``."""
        return dataclasses.replace(self, shape=(batch, *self.shape[1:]))

    def shape_text(self) -> str:
        return "x".join(str(d) for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TensorSpec":
        shape = tuple(raw["shape"])
        if not isinstance(raw["name"], str) or not all(isinstance(d, (int, str)) for d in shape):
            raise ValueError(f"bad tensor spec {raw!r}"[:120])
        return cls(raw["name"], shape, str(raw.get("dtype", "float32")))


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``"input:1x1x32x32"`` -> ``("input", (1, 1, 32, 32))``."""
    name, sep, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
        if not sep or not name or any(d <= 0 for d in shape):
            raise ValueError
    except ValueError:
        raise UsageError(f"bad --input-shape '{text}'", hint="Write NAME:DIMS, e.g. input:1x1x32x32") from None
    return name, shape


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def portable_path(target: Path, relative_to: Path) -> str:
    """A path stored in a sidecar: relative to the sidecar's folder, so a moved tree keeps working."""
    try:
        return os.path.relpath(Path(target).resolve(), Path(relative_to).resolve())
    except ValueError:  # different drives on Windows
        return str(Path(target).resolve())


def resolve_stored(stored: str, base: Path) -> Path:
    return (base / stored).resolve()


@dataclass(frozen=True)
class Artifact:
    """A model in one format and what optkit knows of it. Frozen: a step's product is derived from its
    input in one place (``derive``), a sidecar read gives a new handle (``load_sidecar``)."""

    path: Path
    format: str
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    # torch sources: {"kind": "factory"|"torchscript"|"exported_program", "factory": ..., "weights": ..., "base": ...}
    source: dict[str, Any] = field(default_factory=dict)
    # data split name -> absolute path (eval, calib, train)
    data: dict[str, Path] = field(default_factory=dict)
    task: str = "classification"
    record: StepRecord | None = None  # this artifact's ledger row, when optkit made it
    lineage: list[StepRecord] = field(default_factory=list)  # ancestors' rows, original first
    reference: dict[str, Any] | None = None  # original model's outputs on the eval data
    # how the runtime must run it (e.g. OpenVINO inference precision, ORT session options), from compile
    runtime: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    def with_(self, **changes: Any) -> "Artifact":
        """A copy with ``changes`` (the handle itself never changes)."""
        return dataclasses.replace(self, **changes)

    def derive(self, made: "Artifact", *, record: StepRecord, reference: dict[str, Any] | None, path: Path) -> "Artifact":
        """The artifact a step ``made`` from this one, as the ledger knows it: this chain plus ``record``, the
        same task and data splits, the original's ``reference`` outputs, at its final ``path``."""
        return dataclasses.replace(made, path=path, lineage=self.chain(), task=self.task, data=dict(self.data),
                                   reference=reference, record=record.model_copy(update={"artifact": str(path)}))

    def files(self) -> list[Path]:
        """The files whose bytes make up this artifact (digest and size are taken over these)."""
        if self.format == "torch" and self.source.get("kind") == "hf":
            return [Path(f) for f in self.source["files"]]
        if self.format == "torch" and self.source.get("kind") == "factory":
            files = [Path(self.source["factory_file"])] if self.source.get("factory_file") else []
            if self.source.get("weights"):
                files.append(Path(self.source["weights"]))
            if self.source.get("structure"):  # the spec file carries the pruned shapes
                files.append(Path(self.source["spec"]))
            return files
        if self.format == "openvino":
            return [self.path, self.path.with_suffix(".bin")]
        return [self.path]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def digest(self) -> str:
        return files_digest(self.files())

    def chain(self) -> list[StepRecord]:
        """Ledger rows from the original model to this artifact."""
        return [*self.lineage, *([self.record] if self.record else [])]


# ----------------------------------------------------------------------------- recognising inputs

def _zip_kind(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("/archive_format") or n.endswith("models/model.json") for n in names):
        return "exported_program"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle"
    return None


def _looks_like_onnx(path: Path) -> bool:
    if path.suffix.lower() == ".onnx":
        return True
    # ModelProto starts with field 1 (ir_version, varint): byte 0x08.
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head[:1] == b"\x08" and path.suffix.lower() not in (".pt", ".pth", ".pt2", ".npz")


def _folder_artifact(folder: Path) -> Artifact:
    from optkit.types.model_spec import load_model_spec

    spec = load_model_spec(folder)
    factory = spec.factory
    m = _FACTORY_RE.match(factory)
    if not m:
        raise UsageError(f"{folder}: factory '{factory}' is not 'file.py:function' or 'module:function'")
    factory_file = (folder / m["target"]).resolve() if m["target"].endswith(".py") else None
    if factory_file is not None and not is_inside(factory_file, folder.resolve()):
        # optkit.yaml travels with downloaded folders: the code it runs must be the folder's own
        raise UsageError(f"{folder}: factory file {m['target']} is outside the model folder",
                         hint="Keep the factory file inside the folder, or pass it on the command line as 'file.py:build'")
    if factory_file is not None and not factory_file.is_file():
        raise UsageError(f"{folder}: factory file {m['target']} does not exist", hint="Fix 'factory' in optkit.yaml")
    weights = None
    if spec.weights:
        weights = (folder / spec.weights).resolve()
        if not weights.is_file():
            raise UsageError(f"{folder}: weights file {spec.weights} does not exist",
                             hint="Train the model first (see the folder's README) or fix 'weights' in optkit.yaml")
    data = {k: (folder / v).resolve() for k, v in spec.data.model_dump().items() if v}
    return Artifact(
        path=folder.resolve(), format="torch",
        inputs=[TensorSpec(t.name, tuple(t.shape), t.dtype) for t in spec.inputs],
        outputs=[TensorSpec(t.name, tuple(t.shape), t.dtype) for t in spec.outputs],
        source={"kind": "factory", "factory": factory if factory_file is None else f"{factory_file}:{m['attr']}",
                "factory_file": str(factory_file) if factory_file else None,
                "weights": str(weights) if weights else None, "name": spec.name,
                "spec": str((folder / "optkit.yaml").resolve()), "structure": spec.structure},
        data=data, task=spec.task,
    )


def _hf_artifact(folder: Path, task: str | None, trust_remote_code: bool) -> Artifact:
    from optkit.types.hf import hf_source, hf_specs, optkit_task, read_config

    source = hf_source(folder, task, trust_remote_code)
    inputs, outputs = hf_specs(source, read_config(folder))
    return Artifact(path=folder.resolve(), format="torch", inputs=[TensorSpec(*t) for t in inputs],
                    outputs=[TensorSpec(*t) for t in outputs], source=source, task=optkit_task(source["task"]))


def _factory_artifact(ref: str, weights: Path | None) -> Artifact:
    m = _FACTORY_RE.match(ref)
    assert m is not None
    factory_file = None
    if m["target"].endswith(".py"):
        factory_file = Path(m["target"]).resolve()
        if not factory_file.is_file():
            raise UsageError(f"factory file {m['target']} does not exist", hint="Check the path before ':'")
    if weights is not None and not Path(weights).is_file():
        raise UsageError(f"weights file {weights} does not exist", hint="Check --weights")
    path = factory_file if factory_file else Path(ref)
    return Artifact(
        path=path, format="torch",
        source={"kind": "factory", "factory": f"{factory_file}:{m['attr']}" if factory_file else ref,
                "factory_file": str(factory_file) if factory_file else None,
                "weights": str(Path(weights).resolve()) if weights else None, "name": m["attr"]},
    )


# ----------------------------------------------------------------------------- sidecars

class OrtSessionSettings(BaseModel):
    """ONNX Runtime session settings, exactly those ``compile --target ort-cpu`` records (steps/compile.ORT_SESSIONS).

    A sidecar is applied to the session, so nothing else may pass: an edited one could otherwise set
    ``optimized_model_filepath`` (a file written anywhere), ``profile_file_prefix`` or 256 threads."""

    model_config = ConfigDict(extra="forbid", strict=True)
    graph_optimization_level: Literal["disabled", "basic", "extended", "all"] | None = None
    enable_mem_pattern: StrictBool | None = None
    enable_cpu_mem_arena: StrictBool | None = None
    allow_spinning: StrictBool | None = None


class RuntimeSettings(BaseModel):
    """A sidecar's ``runtime``: how a compiled artifact must be run, as ``steps/compile.py`` writes it."""

    model_config = ConfigDict(extra="forbid", strict=True)
    session: OrtSessionSettings | None = None  # ort-cpu
    providers: list[Literal["CPUExecutionProvider", "CUDAExecutionProvider"]] | None = None  # ort-cpu, ort-cuda
    inference_precision: Literal["f32", "bf16"] | None = None  # openvino-cpu (backends/openvino.PRECISION_HINT)
    device: Literal["CPU", "cuda"] | None = None  # openvino-cpu, tensorrt
    layout: Literal["nchw", "nhwc"] | None = None  # tflite
    delegate: Literal["xnnpack"] | None = None  # tflite


def checked_runtime(raw: dict[str, Any] | None) -> dict[str, Any]:
    """``raw`` if every key and value is one optkit writes (else UsageError naming the key), as a plain dict."""
    try:
        return RuntimeSettings.model_validate(raw or {}).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise UsageError(f"runtime settings refused: {validation_text(exc, ('runtime',))}",
                         hint="Re-create the artifact with 'optkit compile'") from None


def validation_text(exc: ValidationError, prefix: tuple = ()) -> str:
    err = exc.errors()[0]
    where = ".".join(map(str, (*prefix, *err["loc"])))
    if err["type"] == "extra_forbidden":
        return f"{where} is not a setting optkit writes"
    return f"{where}: {err['msg']}"


class _Sidecar(Record):
    """The shape every reader of a sidecar relies on."""

    optkit_sidecar: int
    record: StepRecord
    lineage: list[StepRecord] = []
    task: StrictStr = "classification"
    data: dict[str, StrictStr] = {}
    reference: dict[str, Any] | None = None
    runtime: RuntimeSettings | None = None


class SidecarRefused(ValueError):
    """A sidecar that parses but names something optkit never writes (a setting, a file it must not read)."""


def _check_sidecar(raw: Any) -> _Sidecar:
    """A sidecar that was edited, truncated or written by something else is refused here, not met as a crash later."""
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    if raw.get("optkit_sidecar") != SIDECAR_VERSION:
        raise ValueError(f"unsupported sidecar version {raw.get('optkit_sidecar')!r}")
    try:
        sidecar = _Sidecar.model_validate(raw)
        for spec in raw["record"].get("inputs", []) + raw["record"].get("outputs", []):
            TensorSpec.from_dict(spec)
        if raw.get("reference") is not None and not isinstance(raw["reference"].get("path"), str):
            raise ValueError("reference.path is not a string")
    except ValidationError as exc:
        if exc.errors()[0]["loc"][:1] == ("runtime",):
            raise SidecarRefused(validation_text(exc)) from None
        raise ValueError(validation_text(exc)) from None
    return sidecar


def _read_sidecar_text(path: Path) -> str:
    """The sidecar's text; a device, FIFO or oversized file is refused before it is opened."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise SidecarRefused("it is not a regular file")
    if st.st_size > MAX_SIDECAR_BYTES:
        raise SidecarRefused(f"it is {st.st_size} bytes; a sidecar is at most {MAX_SIDECAR_BYTES} bytes")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_SIDECAR_BYTES + 1).decode()


def checked_sidecar_file(key: str, stored: str, base: Path) -> Path:
    """The file a sidecar names under ``key`` (a data split, the reference outputs), resolved against the
    sidecar's folder ``base``. It may be missing (a moved tree; the step that needs it says so), but an
    existing one must be a regular .npz file no larger than MAX_SIDECAR_FILE_BYTES, reached without a
    symbolic link that leads out of ``base``: never a device, a FIFO, /etc/shadow or a 10 GB file.
    ``os.stat`` decides before anything is opened; the open is non-blocking."""
    root = base.resolve()
    target = (base / stored).resolve()
    lexical = Path(os.path.normpath(root / stored))
    if target != lexical and not is_inside(target, root):  # optkit writes these paths from resolved ones
        raise SidecarRefused(f"{key} {stored} leads through a symbolic link to {target}, outside {root}")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise SidecarRefused(f"{key} {stored} cannot be checked ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise SidecarRefused(f"{key} {stored} is not a regular file (a folder, device or FIFO)")
    if st.st_size > MAX_SIDECAR_FILE_BYTES:
        raise SidecarRefused(f"{key} {stored} is {st.st_size} bytes, over the {MAX_SIDECAR_FILE_BYTES}-byte limit "
                             "for a file a sidecar names")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise SidecarRefused(f"{key} {stored} cannot be opened ({exc.strerror or type(exc).__name__})") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # swapped since the stat
            raise SidecarRefused(f"{key} {stored} is not a regular file")
        head = fh.read(4)
    if head not in _NPZ_MAGIC:
        raise SidecarRefused(f"{key} {stored} is not an .npz file")
    return target


def load_sidecar(artifact: Artifact) -> Artifact:
    """``artifact`` with its record, lineage, data paths and reference from the sidecar, if there is one."""
    path = sidecar_path(artifact.path)
    if not path.is_file():
        return artifact
    try:
        sidecar = _check_sidecar(json.loads(_read_sidecar_text(path)))
        base = path.parent
        reference = None
        if sidecar.reference:
            reference = {**sidecar.reference,
                         "path": str(checked_sidecar_file("reference.path", sidecar.reference["path"], base))}
        data = {k: checked_sidecar_file(f"data.{k}", v, base) for k, v in sidecar.data.items()}
        inputs, outputs = artifact.inputs, artifact.outputs
        if not inputs:
            inputs = [TensorSpec.from_dict(t) for t in sidecar.record.inputs]
            outputs = [TensorSpec.from_dict(t) for t in sidecar.record.outputs]
        runtime = sidecar.runtime.model_dump(exclude_none=True) if sidecar.runtime else {}
        return artifact.with_(record=sidecar.record, lineage=list(sidecar.lineage), task=sidecar.task,
                              data=data, runtime=runtime, reference=reference, inputs=inputs, outputs=outputs)
    except SidecarRefused as exc:
        raise UsageError(f"sidecar {path} refused: {str(exc)[:300]}",
                         hint="optkit reads only what it writes there; re-create the artifact, or delete the "
                              "sidecar to treat the model as a fresh original") from exc
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, OSError) as exc:
        raise UsageError(f"sidecar {path} is unreadable ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})",
                         hint="Delete it to treat the model as a fresh original, or re-create it") from exc


def optkit_wrote(path: Path) -> bool:
    """Whether the existing file or folder ``path`` is an output optkit may replace: a sidecar beside it that
    parses as optkit's, and whose recorded sha256 is the one of ``path``'s files - or ``path`` sits in a run
    folder optkit made (its step cache rebuilds an entry whose files changed). A ``{}`` or copied sidecar
    beside a user's file does not make it optkit's."""
    from optkit.types.files import RUN_MARKER

    car = sidecar_path(path)
    try:
        sidecar = _check_sidecar(json.loads(_read_sidecar_text(car)))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, OSError):
        return False
    if (path.parent / RUN_MARKER).is_file():
        return True
    try:
        files = recorded_files(path, sidecar.record.format)
        return files is not None and regular_files_digest(files) == sidecar.record.sha256
    except (UsageError, OSError):
        return False


def recorded_files(path: Path, fmt: str) -> list[Path] | None:
    """The files a record's sha256 covers for an artifact of format ``fmt`` at ``path`` (None: not known)."""
    if path.is_dir():
        return _folder_artifact(path).files() if (path / "optkit.yaml").is_file() else None
    return Artifact(path=path, format=fmt).files()


def regular_files_digest(files: list[Path]) -> str:
    """``Artifact.digest`` over ``files``, each checked to be a regular file first (OSError otherwise): a FIFO
    or device a sidecar names is never read."""
    for f in files:
        if not stat.S_ISREG(os.stat(f).st_mode):
            raise OSError(f"{f} is not a regular file")
    return files_digest(files)


def record_serving(artifact: Artifact, serving: Serving) -> Path:
    """Put ``serving`` into the artifact's own sidecar record (temp file, then rename); its lineage is unchanged."""
    from optkit.types.files import Staging

    if artifact.record is None:
        raise UsageError(f"{artifact.path} has no optkit sidecar to record the serving figures in",
                         hint="Serve an artifact optkit wrote, or leave out -o/--record")
    metrics = artifact.record.measured.model_copy(update={"serving": serving})
    updated = artifact.with_(record=artifact.record.model_copy(update={"metrics": metrics}))
    path = sidecar_path(artifact.path)
    with Staging() as stage:
        stage.write_text(path, write_sidecar_text(updated, path))
        stage.commit()
    return path


def write_sidecar_text(artifact: Artifact, final_path: Path) -> str:
    """Sidecar JSON for ``artifact`` as it will sit at ``final_path``."""
    base = final_path.parent
    ref = None
    if artifact.reference:
        ref = dict(artifact.reference)
        ref["path"] = portable_path(Path(ref["path"]), base)
    from optkit.types.files import dumps_json

    return dumps_json({
        "optkit_sidecar": SIDECAR_VERSION,
        "record": artifact.record.to_json() if artifact.record else None,
        "lineage": [rec.to_json() for rec in artifact.lineage],
        "task": artifact.task,
        "data": {k: portable_path(v, base) for k, v in sorted(artifact.data.items())},
        "reference": ref,
        "runtime": artifact.runtime,
    })


# a format whose files only its backend can read names that backend's reader (imported when used: the
# basic types stay below the backends, as the layers contract in pyproject.toml requires)
SPEC_READERS = {"openvino": "optkit.backends.openvino:read_io_specs",
                "tflite": "optkit.backends.litert:read_io_specs"}
# a format recognised by its file name's ending: ending -> dotted path of ``opener(path) -> Artifact``
# (empty in the product; the tests' fake backend registers one)
OPENERS: dict[str, str] = {}


def _backend_spec_reader(fmt: str):
    return load_dotted(SPEC_READERS[fmt])


def open_artifact(ref: str | Path, *, weights: Path | None = None, task: str | None = None,
                  trust_remote_code: bool = False) -> Artifact:
    """Recognise a MODEL argument: sample-model folder, Hugging Face folder or ``hf:`` id, factory reference,
    TorchScript, .pt2, ONNX. ``task`` and ``trust_remote_code`` apply to Hugging Face models only."""
    from optkit.types.hf import HF_PREFIX, is_hf_folder, resolve_hub

    text = check_path_text(str(ref), "MODEL")  # every command's model, named before the file system sees it
    path = Path(text)
    if text.startswith(HF_PREFIX):
        return _hf_artifact(resolve_hub(text), task, trust_remote_code)
    if path.is_dir() and is_hf_folder(path) and not (path / "optkit.yaml").is_file():
        return _hf_artifact(path, task, trust_remote_code)
    if task is not None:
        raise UsageError(f"--task applies to Hugging Face models; {path.name or text} is not one",
                         hint="Drop --task, or pass a folder with config.json and weights (or hf:ORG/NAME)")
    if path.is_dir():
        artifact = _folder_artifact(path)
        return load_sidecar(artifact)  # a folder optkit wrote (prune, distill) has one beside it
    if path.is_file():
        if path.stat().st_size == 0:
            raise UsageError(f"{path} is empty", hint="Re-create the model file")
        opener = next((target for ending, target in OPENERS.items() if path.name.endswith(ending)), None)
        kind = None if opener else _zip_kind(path)
        if opener:
            artifact = load_dotted(opener)(path.resolve())
        elif kind in ("torchscript", "exported_program"):
            artifact = Artifact(path=path.resolve(), format="torch",
                                source={"kind": kind, "path": str(path.resolve()), "name": path.stem})
        elif kind == "pickle":
            raise UsageError(
                f"{path} is a pickled PyTorch checkpoint, which optkit does not load as a model (unpickling runs arbitrary code)",
                hint="Pass a factory ('file.py:build') with --weights STATE_DICT, or save the model with "
                     "torch.export.save (.pt2) or torch.jit.save")
        elif path.suffix.lower() == ".tflite":
            # one optkit wrote keeps its record's tensor names (the model's own); any other is named by its signature
            inputs, outputs = ([], []) if sidecar_path(path).is_file() else _backend_spec_reader("tflite")(path)
            artifact = Artifact(path=path.resolve(), format="tflite", inputs=inputs, outputs=outputs)
        elif path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
            inputs, outputs = _backend_spec_reader("openvino")(path)
            artifact = Artifact(path=path.resolve(), format="openvino", inputs=inputs, outputs=outputs)
        elif _looks_like_onnx(path):
            from optkit.types.onnx_io import read_io_specs

            inputs, outputs = read_io_specs(path.resolve())
            artifact = Artifact(path=path.resolve(), format="onnx", inputs=inputs, outputs=outputs)
        else:
            raise UsageError(
                f"{path} is not a model optkit can read",
                hint="Pass a sample-model folder (with optkit.yaml), a factory 'file.py:build', "
                     "a TorchScript or torch.export (.pt2) file, an .onnx file, an OpenVINO .xml or a .tflite")
        return load_sidecar(artifact)
    if _FACTORY_RE.match(text) and not text.endswith((".onnx", ".pt", ".pt2")):
        return _factory_artifact(text, weights)
    raise UsageError(f"{text}: no such file or folder", hint="Check the path")

