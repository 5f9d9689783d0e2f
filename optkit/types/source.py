"""Where a torch artifact's model comes from: the record a backend fills in when it opens a MODEL argument.

A torch model is not one file: it is a factory (code plus an optional state_dict, and for a pruned model the
``optkit.yaml`` with its structure), a Hugging Face folder, or a TorchScript / ``.pt2`` file. ``TorchSource``
names those parts, so loading the model, taking its digest and telling the user what it is read attributes,
not dict keys. It is stored in the original's ledger row (``details.source``) with only the keys that hold
something, exactly as the dicts earlier optkit versions wrote, and read back from such rows keeping keys a later
version added. Artifacts of other formats carry an empty one (``kind`` None).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict

from optkit.types.records import Record, StepRecord

FACTORY, HF, TORCHSCRIPT, EXPORTED_PROGRAM = "factory", "hf", "torchscript", "exported_program"


class TorchSource(Record):
    """A torch model's parts, by ``kind``: ``factory`` (factory, factory_file, weights, spec, structure),
    ``hf`` (folder, task, model_type, trust_remote_code, files, modules, and the text_data / image_data it
    was measured on), ``torchscript`` / ``exported_program`` (path). ``name`` names the model in output names."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str | None = None
    name: str | None = None
    # factory: "module:attr" or "/abs/file.py:attr", the file it lives in, its state_dict, the folder's optkit.yaml
    factory: str | None = None
    factory_file: str | None = None
    weights: str | None = None
    spec: str | None = None
    structure: dict[str, dict[str, Any]] = {}  # module name -> attributes structural pruning changed
    # torchscript, exported_program
    path: str | None = None
    # hf: the snapshot folder, the transformers task, what config.json says, the files the bytes depend on
    folder: str | None = None
    task: str | None = None
    model_type: str | None = None
    trust_remote_code: bool = False
    files: list[str] = []
    modules: list[dict[str, Any]] = []  # sentence-transformers modules (type, path, Pooling config)
    text_data: dict[str, Any] | None = None  # the tokenized texts (eval/text_data.prepare), when given
    image_data: dict[str, Any] | None = None  # the preprocessed images (eval/image_data.prepare), when given

    @classmethod
    def recorded_in(cls, record: StepRecord) -> TorchSource:
        """The source an original model's ledger row recorded (``details.source``); empty where it has none."""
        return cls.model_validate(record.details.get("source") or {})

    def to_json(self) -> dict[str, Any]:
        """Only the keys that hold something: an unset weights, False trust_remote_code or empty structure is
        left out, as in the sidecars optkit has always written."""
        return {k: v for k, v in self.model_dump(mode="json").items() if v}

    @property
    def is_factory(self) -> bool:
        return self.kind == FACTORY

    @property
    def is_hf(self) -> bool:
        return self.kind == HF

    @property
    def is_image_model(self) -> bool:
        """A Hugging Face image classifier: its data is images (``--image-data``), its input ``pixel_values``."""
        return self.task == "image-classification"

    def digest_files(self) -> list[Path] | None:
        """The files whose bytes make up the model (digest, size); None where the artifact's own file does."""
        if self.is_hf:
            return [Path(f) for f in self.files]
        if self.is_factory:
            files = [Path(self.factory_file)] if self.factory_file else []
            if self.weights:
                files.append(Path(self.weights))
            if self.structure:  # the spec file carries the pruned shapes
                files.append(Path(self._needed("spec", self.spec)))
            return files
        return None

    @property
    def factory_ref(self) -> str:
        """The factory to call (``module:attr`` or ``/abs/file.py:attr``)."""
        return self._needed("factory", self.factory)

    @property
    def file_path(self) -> Path:
        """The TorchScript or ``.pt2`` file."""
        return Path(self._needed("path", self.path))

    @property
    def hf_folder(self) -> Path:
        return Path(self._needed("folder", self.folder))

    @property
    def hf_task(self) -> str:
        return self._needed("task", self.task)

    def _needed(self, key: str, value: str | None) -> str:
        """``value`` (the source's ``key``), which this kind of source always has: a ValueError names a record
        that lacks it (an edited ledger row), rather than a None met later."""
        if not value:
            raise ValueError(f"a {self.kind or 'torch'} model source without '{key}'")
        return value
