"""Recipes: a model, its data, measurement settings and a list of steps, validated before running.

YAML form::

    model: ../sample_models/digits_cnn      # paths are relative to the recipe file
    output_dir: ../out/digits_cnn_cpu
    measure: {batch_sizes: [1, 8], threads: 1, budget_s: 1.0}
    steps:
      - export: {opset: 18}
      - profile

Every command is a one-step recipe run by the same engine (``optkit.core.engine``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from optkit.core.errors import UsageError
from optkit.core.step import Step, step_class


class MeasureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="measure every step's output (accuracy, latency, size)")
    batch_sizes: list[int] = Field([1], min_length=1, description="batch sizes timed; the first is the ledger's")
    threads: int = Field(1, ge=0, description="intra-op threads (0: the runtime's default)")
    budget_s: float = Field(1.0, gt=0, description="seconds spent timing each (artifact, batch size)")

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b <= 0 for b in v):
            raise ValueError("batch sizes must be positive")
        return v


class StepEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    options: dict[str, Any] = {}
    output: str | None = None  # explicit output path (commands use it; recipes default to output_dir)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="sample-model folder, factory 'file.py:build', TorchScript, .pt2 or .onnx")
    weights: str | None = Field(None, description="state_dict for a factory model (loaded with weights_only=True)")
    input_shapes: dict[str, list[int]] | None = Field(None, description="input name -> shape, e.g. {input: [1, 1, 32, 32]}")
    eval_data: str | None = Field(None, description=".npz with arrays named after the inputs, plus labels")
    output_dir: str = "optkit-out"
    measure: MeasureConfig = MeasureConfig()
    steps: list[StepEntry] = Field(min_length=1)

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_from_yaml(cls, raw: Any) -> Any:
        """Accept ``- profile``, ``- export: {opset: 18}`` and ``- {name: export, options: {...}}``."""
        if not isinstance(raw, list):
            return raw
        out = []
        for item in raw:
            if isinstance(item, str):
                out.append({"name": item})
            elif isinstance(item, dict) and len(item) == 1 and "name" not in item:
                (name, options), = item.items()
                options = dict(options or {})
                output = options.pop("output", None)
                out.append({"name": name, "options": options, "output": output})
            else:
                out.append(item)
        return out


@dataclass
class PlannedStep:
    index: int
    step: Step
    config: BaseModel
    output: Path | None


def _loc(loc: tuple) -> str:
    parts = []
    for p in loc:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def validation_message(exc: ValidationError, origin: str) -> UsageError:
    err = exc.errors()[0]
    where = _loc(tuple(err["loc"]))
    if err["type"] == "extra_forbidden":
        return UsageError(f"{origin}: unknown key '{err['loc'][-1]}' at {where}", hint="Remove or correct it")
    return UsageError(f"{origin}: {where}: {err['msg']}", hint="Fix the recipe")


def load_recipe(path: Path, overrides: dict[str, Any] | None = None) -> tuple[Recipe, Path]:
    """Parse and validate a recipe file (safe YAML); returns the recipe and its base folder."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"recipe {path} does not exist", hint="Check the path")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}", hint="Fix the YAML syntax") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"{path} must be a YAML mapping with at least 'model' and 'steps'")
    raw.update(overrides or {})
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise validation_message(exc, str(path)) from exc
    return recipe, path.resolve().parent


def plan(recipe: Recipe, base: Path) -> list[PlannedStep]:
    """Resolve every step class and validate its options before anything runs."""
    planned = []
    for i, entry in enumerate(recipe.steps):
        try:
            cls = step_class(entry.name)
        except UsageError as exc:
            raise UsageError(f"steps[{i}]: {exc.message}", hint=exc.hint) from exc
        try:
            config = cls.Config.model_validate(entry.options)
        except ValidationError as exc:
            raise validation_message(exc, f"steps[{i}] ({entry.name})") from exc
        output = None
        fmt, suffix = cls.output_format(config)
        if fmt is not None:
            output = Path(entry.output) if entry.output else Path(recipe.output_dir) / f"{i:02d}_{entry.name}{suffix}"
            output = (output if output.is_absolute() else base / output).resolve()
        planned.append(PlannedStep(i, cls(), config, output))
    return planned


def resolve(base: Path, value: str | None) -> str | None:
    """A recipe path relative to the recipe's folder; ``pkg.module:fn`` references stay as they are."""
    if value is None:
        return None
    target, sep, attr = value.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{target if Path(target).is_absolute() else base / target}:{attr}"
    if sep and target and "/" not in target and not Path(value).exists():
        return value
    return value if Path(value).is_absolute() else str(base / value)
