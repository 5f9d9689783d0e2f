"""The spec file that makes a folder a MODEL argument (``optkit.yaml`` inside the folder)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optkit.types.errors import UsageError
from optkit.types.textio import RECIPE_CAP, load_yaml, read_text_capped

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
        raw = load_yaml(read_text_capped(path, RECIPE_CAP, "model spec"))
        return ModelSpec.model_validate(raw)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})", hint="Save it as UTF-8") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise UsageError(f"{path}: {where}: {err['msg']}", hint="Fix the model spec file") from exc


# modules a factory reference must not name: a 'factory' there is not a model builder (os:abort ends the process,
# subprocess:... runs programs); optkit's own code is not a model either
_NOT_FACTORY_MODULES = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names) | {"optkit"}


def check_factory_ref(ref: str) -> None:
    """A factory is ``FILE.py:FUNCTION`` or ``package.module:FUNCTION`` of the user's own code, returning a
    ``torch.nn.Module``; a function of the standard library (``os:abort``, ``subprocess:run``) or of optkit is
    refused before anything is imported or called."""
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise UsageError(f"factory '{ref}' is not 'file.py:function' or 'module:function'",
                         hint="Name the file or module that builds the model, and its function")
    if target.endswith(".py"):
        return
    top = target.split(".", 1)[0]
    if top in _NOT_FACTORY_MODULES:
        where = "optkit itself" if top == "optkit" else f"Python's standard library ({top})"
        raise UsageError(f"factory '{ref}' names a function of {where}, not a function that builds a model",
                         hint="A factory is FILE.py:FUNCTION or package.module:FUNCTION of your code, "
                              "returning a torch.nn.Module")
