"""A MODEL argument as an Artifact: each backend is asked, in registry order, whether the argument is its own.

First every backend that reads arguments other than plain files (``open_reference``: the torch backend's
folders, ``hf:`` ids and factory references); then, for a file, the first backend that ``recognises`` it opens
it, and its sidecar (when optkit wrote it) adds the record, lineage and data.
"""
from __future__ import annotations

from pathlib import Path

from optkit.backends import OpenOptions, all_backends
from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError
from optkit.types.paths import check_path_text
from optkit.types.sidecar import load_sidecar


def open_artifact(ref: str | Path, *, weights: Path | None = None, task: str | None = None,
                  trust_remote_code: bool = False) -> Artifact:
    """Recognise a MODEL argument: sample-model folder, Hugging Face folder or ``hf:`` id, factory reference,
    TorchScript, .pt2, ONNX, OpenVINO IR, .tflite. ``task`` and ``trust_remote_code`` apply to Hugging Face
    models only."""
    text = check_path_text(str(ref), "MODEL")  # every command's model, named before the file system sees it
    options = OpenOptions(weights=weights, task=task, trust_remote_code=trust_remote_code)
    backends = list(all_backends())
    for backend in backends:
        if backend.open_reference is not None:
            artifact = backend.open_reference(text, options)
            if artifact is not None:
                return artifact
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"{text}: no such file or folder", hint="Check the path")
    if path.stat().st_size == 0:
        raise UsageError(f"{path} is empty", hint="Re-create the model file")
    for backend in backends:
        if backend.recognises is not None and backend.open is not None and backend.recognises(path):
            return load_sidecar(backend.open(path.resolve()))
    raise UsageError(
        f"{path} is not a model optkit can read",
        hint="Pass a sample-model folder (with optkit.yaml), a factory 'file.py:build', "
             "a TorchScript or torch.export (.pt2) file, an .onnx file, an OpenVINO .xml or a .tflite")
