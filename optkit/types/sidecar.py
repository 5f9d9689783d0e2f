"""An artifact's JSON sidecar (``<artifact>.optkit.json``): read, validated, written.

A sidecar is input like any other file: it is validated before use (size, shape, the ``runtime`` section as a
typed model holding only the settings optkit writes, data and reference paths as regular ``.npz`` files of
bounded size reached without a link out of its folder), and a refused one names what it holds that optkit
never writes.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from optkit.types.artifact import Artifact, TensorSpec, portable_path, sidecar_path
from optkit.types.errors import UsageError
from optkit.types.files import Staging, dumps_json, files_digest
from optkit.types.paths import is_inside
from optkit.types.records import Record, Serving, StepRecord

SIDECAR_VERSION = 1
MAX_SIDECAR_BYTES = 64 << 20  # a sidecar is a few KB of JSON; a bigger one is not read
MAX_SIDECAR_FILE_BYTES = 4 << 30  # a data split or reference outputs a sidecar names
_NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip (the second: one with no arrays)


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


def validation_text(exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
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


def check_sidecar(raw: Any) -> _Sidecar:
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


def read_sidecar_text(path: Path) -> str:
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
        sidecar = check_sidecar(json.loads(read_sidecar_text(path)))
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


def regular_files_digest(files: list[Path]) -> str:
    """``Artifact.digest`` over ``files``, each checked to be a regular file first (OSError otherwise): a FIFO
    or device a sidecar names is never read."""
    for f in files:
        if not stat.S_ISREG(os.stat(f).st_mode):
            raise OSError(f"{f} is not a regular file")
    return files_digest(files)


def record_serving(artifact: Artifact, serving: Serving) -> Path:
    """Put ``serving`` into the artifact's own sidecar record (temp file, then rename); its lineage is unchanged."""
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
    return dumps_json({
        "optkit_sidecar": SIDECAR_VERSION,
        "record": artifact.record.to_json() if artifact.record else None,
        "lineage": [rec.to_json() for rec in artifact.lineage],
        "task": artifact.task,
        "data": {k: portable_path(v, base) for k, v in sorted(artifact.data.items())},
        "reference": ref,
        "runtime": artifact.runtime,
    })

