"""The spec file that makes a folder a MODEL argument (``optkit.yaml`` inside the folder)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optkit.types.errors import UsageError

SPEC_FILE = "optkit.yaml"


class TensorEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    shape: list[int | str] = Field(description="dimensions; a string names a dynamic dimension, e.g. 'batch'")
    dtype: str = "float32"


class DataEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    eval: str | None = None
    calib: str | None = None
    train: str | None = None


class ModelSpec(BaseModel):
    """A PyTorch model described by a factory, its weights, its tensors and its data splits."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    factory: str = Field(description="'file.py:function' relative to the folder, or 'package.module:function'")
    weights: str | None = Field(None, description="a state_dict saved with torch.save, relative to the folder")
    inputs: list[TensorEntry]
    outputs: list[TensorEntry] = []
    task: Literal["classification", "other"] = "classification"
    data: DataEntry = DataEntry()
    # Written by prune / distill: attributes of modules whose shapes changed (e.g. {"layer1.conv1": {"out_channels": 32}}).
    # Loading builds the factory's model, sets these, resizes parameters to the weights' shapes, then loads the weights.
    structure: dict[str, dict[str, Any]] = Field({}, description="module name -> attributes changed by structural pruning")


def load_model_spec(folder: Path) -> ModelSpec:
    path = folder / SPEC_FILE
    if not path.is_file():
        raise UsageError(f"{folder} is a folder without {SPEC_FILE}",
                         hint=f"Add a {SPEC_FILE} (see sample_models/digits_cnn/{SPEC_FILE}) or pass a model file")
    try:
        raw = yaml.safe_load(path.read_text())
        return ModelSpec.model_validate(raw)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise UsageError(f"{path}: {where}: {err['msg']}", hint="Fix the model spec file") from exc
