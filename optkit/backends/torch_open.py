"""What a torch MODEL argument can be, told apart without importing torch: a sample-model folder (``optkit.yaml``),
a Hugging Face folder or ``hf:ORG/NAME`` id, a factory reference (``file.py:build``, ``package.module:build``), or
a TorchScript / ``.pt2`` file (a zip, told from its member names). A pickled checkpoint is refused: unpickling
runs arbitrary code.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

from optkit.backends import OpenOptions
from optkit.types.artifact import Artifact, TensorSpec
from optkit.types.errors import UsageError
from optkit.types.paths import is_inside
from optkit.types.source import FACTORY, TorchSource
from optkit.types.sidecar import load_sidecar

_FACTORY_RE = re.compile(r"^(?P<target>[^:]+\.py|[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_]\w*)$")


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



def _folder_artifact(folder: Path) -> Artifact:
    from optkit.backends.model_spec import load_model_spec

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
        source=TorchSource(kind=FACTORY, factory=factory if factory_file is None else f"{factory_file}:{m['attr']}",
                           factory_file=str(factory_file) if factory_file else None,
                           weights=str(weights) if weights else None, name=spec.name,
                           spec=str((folder / "optkit.yaml").resolve()), structure=spec.structure),
        data=data, task=spec.task,
    )


def _hf_artifact(folder: Path, task: str | None, trust_remote_code: bool) -> Artifact:
    from optkit.backends.hf_folder import hf_source, hf_specs, optkit_task, read_config

    source = hf_source(folder, task, trust_remote_code)
    inputs, outputs = hf_specs(source, read_config(folder))
    return Artifact(path=folder.resolve(), format="torch", inputs=[TensorSpec(*t) for t in inputs],
                    outputs=[TensorSpec(*t) for t in outputs], source=source, task=optkit_task(source.hf_task))


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
        source=TorchSource(kind=FACTORY, factory=f"{factory_file}:{m['attr']}" if factory_file else ref,
                           factory_file=str(factory_file) if factory_file else None,
                           weights=str(Path(weights).resolve()) if weights else None, name=m["attr"]),
    )



def torch_file(path: Path) -> bool:
    """A zip torch writes: TorchScript, torch.export, or a pickled checkpoint (refused when opened)."""
    return _zip_kind(path) is not None


def open_torch_file(path: Path) -> Artifact:
    kind = _zip_kind(path)
    if kind == "pickle":
        raise UsageError(
            f"{path} is a pickled PyTorch checkpoint, which optkit does not load as a model (unpickling runs arbitrary code)",
            hint="Pass a factory ('file.py:build') with --weights STATE_DICT, or save the model with "
                 "torch.export.save (.pt2) or torch.jit.save")
    return Artifact(path=path, format="torch", source=TorchSource(kind=kind, path=str(path), name=path.stem))


def open_reference(text: str, options: OpenOptions) -> Artifact | None:
    """A MODEL argument that is a folder, an ``hf:`` id or a factory reference, as an Artifact; None for a file.
    ``--task`` (and ``--trust-remote-code``) apply to Hugging Face models only: given for anything else, refused."""
    from optkit.backends.hf_folder import HF_PREFIX, is_hf_folder, resolve_hub

    path = Path(text)
    if text.startswith(HF_PREFIX):
        return _hf_artifact(resolve_hub(text), options.task, options.trust_remote_code)
    if path.is_dir() and is_hf_folder(path) and not (path / "optkit.yaml").is_file():
        return _hf_artifact(path, options.task, options.trust_remote_code)
    if options.task is not None:
        raise UsageError(f"--task applies to Hugging Face models; {path.name or text} is not one",
                         hint="Drop --task, or pass a folder with config.json and weights (or hf:ORG/NAME)")
    if path.is_dir():
        return load_sidecar(_folder_artifact(path))  # a folder optkit wrote (prune, distill) has one beside it
    if not path.is_file() and _FACTORY_RE.match(text) and not text.endswith((".onnx", ".pt", ".pt2")):
        return _factory_artifact(text, options.weights)
    return None


def folder_files(folder: Path) -> list[Path] | None:
    """A sample-model folder's files (what its digest covers); None for a folder without ``optkit.yaml``."""
    return _folder_artifact(folder).files() if (folder / "optkit.yaml").is_file() else None
