"""The Artifact handle passed between steps, and the tensor specs it carries.

An artifact is a model in one format with its tensor specs, the data splits it is measured on, and - when
optkit wrote it - a record of how it was made and what was measured, plus the records of every ancestor back to
the original model. That chain lives in ``<artifact>.optkit.json`` next to the file (``types/sidecar.py``), so
``optkit report`` needs nothing else.

Nothing here knows a format: a backend (``optkit/backends``) recognises a file, opens it into an Artifact and
says which sibling files belong to it (``companions``); the record only carries what it was told.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from optkit.types.errors import UsageError
from optkit.types.files import files_digest
from optkit.types.records import StepRecord
from optkit.types.source import TorchSource

SIDECAR_SUFFIX = ".optkit.json"
Split = Literal["eval", "calib", "train"]  # the data splits an artifact is measured, calibrated and trained on


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
    source: TorchSource = field(default_factory=TorchSource)  # a torch model's parts; empty for other formats
    # data split name -> absolute path, as the sidecar stores it; read through ``split`` / ``eval_data`` / ``calib_data``
    data: dict[str, Path] = field(default_factory=dict)
    task: str = "classification"
    record: StepRecord | None = None  # this artifact's ledger row, when optkit made it
    lineage: list[StepRecord] = field(default_factory=list)  # ancestors' rows, original first
    reference: dict[str, Any] | None = None  # original model's outputs on the eval data
    # how the runtime must run it (e.g. OpenVINO inference precision, ORT session options), from compile
    runtime: dict[str, Any] = field(default_factory=dict)
    # suffixes of the files beside ``path`` that belong to it (an OpenVINO IR's ".bin"), as its backend says
    companions: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    def split(self, name: Split) -> Path | None:
        """The data split ``name``'s file, if the artifact has one."""
        return self.data.get(name)

    @property
    def eval_data(self) -> Path | None:
        return self.split("eval")

    @property
    def calib_data(self) -> Path | None:
        return self.split("calib")

    def with_split(self, name: Split, path: Path) -> "Artifact":
        """A copy measured (eval), calibrated (calib) or trained (train) on ``path``; the other splits kept."""
        return dataclasses.replace(self, data={**self.data, name: path})

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
        named = self.source.digest_files() if self.format == "torch" else None
        if named is not None:
            return named
        return [self.path, *(self.path.with_suffix(suffix) for suffix in self.companions)]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def digest(self) -> str:
        return files_digest(self.files())

    def chain(self) -> list[StepRecord]:
        """Ledger rows from the original model to this artifact."""
        return [*self.lineage, *([self.record] if self.record else [])]
