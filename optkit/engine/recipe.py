"""Recipes: a model, its data, measurement settings and a list of steps, validated before running.

YAML form::

    model: ../sample_models/digits_cnn      # paths are relative to the recipe file
    output_dir: ../out/digits_cnn_cpu
    measure: {batch_sizes: [1, 8], threads: 1, budget_s: 1.0}
    steps:
      - export: {opset: 18}
      - profile

Every command is a one-step recipe run by the same engine (``optkit.engine.run``).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from optkit.types.errors import UsageError
from optkit.types.textio import RECIPE_CAP, load_yaml, read_text_capped
from optkit.types.serve_config import ServeConfig
from optkit.engine.gates import Gate
from optkit.steps.base import STEPS, Step, step_class


MAX_BATCH = 65536
MAX_SEED = 2**32 - 1  # numpy's legacy seed range; torch.manual_seed overflows beyond 2**64
MAX_BUDGET_S = 3600.0


class MeasureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    enabled: bool = Field(True, description="measure every step's output (accuracy, latency, size)")
    batch_sizes: list[int] = Field([1], min_length=1, max_length=16, description="batch sizes timed; the first is the ledger's")
    threads: int = Field(1, ge=0, le=1024, description="intra-op threads (0: the runtime's default; more than the CPU has is clamped)")
    budget_s: float = Field(1.0, gt=0, le=MAX_BUDGET_S, description="seconds spent timing each (artifact, batch size)")

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b <= 0 or b > MAX_BATCH for b in v):
            raise ValueError(f"batch sizes must be positive and at most {MAX_BATCH}")
        return v


class StepEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    options: dict[str, Any] = {}
    output: str | None = None  # explicit output path (commands use it; recipes default to output_dir)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str = Field(description="sample-model folder, Hugging Face folder or hf:ORG/NAME, factory 'file.py:build', "
                       "TorchScript, .pt2 or .onnx")
    weights: str | None = Field(None, description="state_dict for a factory model (loaded with weights_only=True)")
    input_shapes: dict[str, list[int]] | None = Field(None, description="input name -> shape, e.g. {input: [1, 1, 32, 32]}")
    eval_data: str | None = Field(None, description=".npz with arrays named after the inputs, plus labels")
    metric: str | None = Field(None, description="task metric every row and accuracy budget is judged on: top1, cosine, "
                               "max_abs, ctc_string_match[:BLANK], mask_iou[:THRESHOLD] or FILE.py:FUNCTION")
    task: str | None = Field(None, description="Hugging Face models: feature-extraction, sentence-embedding, "
                             "text-classification, token-classification or image-classification (default: detected)")
    text_data: str | None = Field(None, description="Hugging Face text models: .txt/.jsonl/.csv texts (label optional) "
                                  "tokenized with the model's tokenizer: first half evaluates, second half calibrates")
    image_data: str | None = Field(None, description="Hugging Face image classifiers: a folder of images, or of class "
                                   "sub-folders (the labels), preprocessed with the model's image processor")
    max_length: int = Field(128, ge=1, le=65536, description="text_data: tokens per text at most (truncated beyond)")
    seq_len: int | None = Field(None, ge=1, le=65536, description="text_data: pad every text to exactly this length")
    trust_remote_code: bool = Field(False, description="run a Hugging Face model's own code (auto_map); refused otherwise")
    output_dir: str = "optkit-out"
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds numpy and torch before the first step (0..2**32-1; steps "
                      "with a seed option keep theirs)")
    measure: MeasureConfig = MeasureConfig()
    steps: list[StepEntry] = Field(min_length=1)
    gates: list[Gate] = Field([], description="limits checked after the last step; a failed gate exits 3")
    serve: ServeConfig | None = Field(None, description="how 'optkit serve --config' serves the artifact")
    _origin: str | None = PrivateAttr(None)      # the recipe file, for error messages
    _text: str | None = PrivateAttr(None)        # its text, for line and column of errors
    _raw_steps: list[Any] | None = PrivateAttr(None)  # the steps as written (names for messages)
    _planned: tuple[tuple[str, str], list[PlannedStep]] | None = PrivateAttr(None)  # (what was planned, the plan)

    def output_path(self, base: Path) -> Path:
        """The run's output directory (relative to the recipe's folder unless absolute; ``~`` and ``$VAR`` expanded)."""
        from optkit.types.paths import expand_path, real_path

        at = _where(self._origin, self._text, ("output_dir",))
        what = f"{at}: output_dir" if at else "output_dir"
        out = Path(expand_path(self.output_dir, what))
        return real_path(out if out.is_absolute() else base / out, what)

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_from_yaml(cls, raw: Any) -> Any:
        """Accept ``- profile``, ``- export: {opset: 18}`` and ``- {name: export, options: {...}}``."""
        if not isinstance(raw, list):
            return raw
        out: list[Any] = []
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


def _loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def _allowed(loc: tuple[Any, ...], raw_steps: list[Any] | None) -> list[str]:
    """The keys allowed where an unknown key was found (for 'did you mean' and the list of choices)."""
    if loc[:1] == ("steps",) and len(loc) >= 4 and loc[2] == "options":
        name = _step_name(raw_steps, loc[1])
        if name in STEPS:
            return list(step_class(name).Config.model_fields)
    models: dict[str, type[BaseModel]] = {"measure": MeasureConfig, "gates": Gate, "steps": StepEntry,
                                          "serve": ServeConfig}
    model: type[BaseModel] | None = models.get(loc[0]) if len(loc) > 1 else Recipe
    return list(model.model_fields) if model else []


def _step_name(raw_steps: list[Any] | None, index: Any) -> str | None:
    if raw_steps is None:
        return None
    try:
        item = raw_steps[index]
    except (TypeError, IndexError, KeyError):
        return None
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return item.get("name") if "name" in item else next(iter(item), None)
    return None


def _where(origin: str | None, text: str | None, loc: tuple[Any, ...]) -> str:
    """``file:line:column`` of a key path when the recipe's text is known, else the file (or '')."""
    from optkit.engine.yaml_marks import locate

    mark = locate(text, loc) if text is not None and origin else None
    return f"{origin}:{mark[0]}:{mark[1]}" if mark else (origin or "")


def validation_message(exc: ValidationError, origin: str, *, text: str | None = None, prefix: tuple[Any, ...] = (),
                       raw_steps: list[Any] | None = None) -> UsageError:
    """One line: where (file:line:column), what is wrong, and what is allowed."""
    err = exc.errors()[0]
    loc = (*prefix, *err["loc"])
    where = _loc(loc)
    step = _step_name(raw_steps, loc[1]) if loc[:1] == ("steps",) and len(loc) > 1 else None
    if step:
        where = f"{where} ({step})"
    at = _where(origin, text, loc)
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed(loc, raw_steps)
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = (f"Did you mean '{close[0]}'? " if close else "") + (f"Allowed: {', '.join(allowed)}" if allowed else "Remove it")
        return UsageError(f"{at}: unknown key '{key}' in {_loc(loc[:-1])}{f' ({step})' if step and len(loc) > 2 else ''}",
                          hint=hint)
    return UsageError(f"{at}: {where}: {err['msg']}", hint="Fix the recipe")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set steps.quantize.method=entropy`` / ``--set measure.budget_s=0.2`` on the raw recipe (values are YAML)."""
    for item in overrides:
        key, sep, value_text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not sep or not parts:
            raise UsageError(f"bad --set '{item}'", hint="Write KEY.PATH=VALUE, e.g. steps.quantize.method=entropy")
        try:
            value = load_yaml(value_text) if value_text.strip() else None
        except yaml.YAMLError:
            value = value_text
        if parts[0] == "steps":
            if len(parts) != 3:
                raise UsageError(f"bad --set '{item}'", hint="Steps take steps.STEP_NAME_OR_INDEX.OPTION=VALUE")
            steps = raw.get("steps")
            if not isinstance(steps, list):
                raise UsageError(f"--set {key}: the recipe has no list of steps")
            idx = [int(parts[1])] if parts[1].isdigit() and int(parts[1]) < len(steps) else \
                [i for i in range(len(steps)) if _step_name(steps, i) == parts[1]]
            if len(idx) != 1:
                names = ", ".join(str(_step_name(steps, i)) for i in range(len(steps)))
                raise UsageError(f"--set {key}: {'no' if not idx else 'more than one'} step '{parts[1]}' in the recipe",
                                 hint=f"Steps: {names}; an index (steps.2.{parts[2]}) picks one")
            i = idx[0]
            item_raw = steps[i]
            if isinstance(item_raw, str):
                item_raw = steps[i] = {item_raw: {}}
            opts = item_raw.get("options") if isinstance(item_raw, dict) and "name" in item_raw else \
                next(iter(item_raw.values())) if isinstance(item_raw, dict) and len(item_raw) == 1 else False
            if opts is not None and not isinstance(opts, dict):
                raise UsageError(f"--set {key}: steps[{i}] is not written as '- STEP: {{OPTION: VALUE}}'",
                                 hint="Fix that step in the recipe first")
            opts = {**(opts or {}), parts[2]: value}
            if "name" in item_raw:
                item_raw["options"] = opts
            else:
                item_raw[next(iter(item_raw))] = opts
            continue
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {key}: '{p}' is not a mapping in the recipe")
        node[parts[-1]] = value
    return raw


def load_recipe(path: Path, overrides: list[str] | None = None) -> tuple[Recipe, Path]:
    """Parse and validate a recipe file (safe YAML) and every step's options; returns the recipe and its base folder."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"recipe {path} does not exist", hint="Check the path")
    try:
        read = read_text_capped(path, RECIPE_CAP, "recipe")
        raw = load_yaml(read)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}",
                         hint="Fix the YAML syntax") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"{path} must be a YAML mapping with at least 'model' and 'steps'")
    text: str | None = read
    if overrides:
        raw = apply_overrides(raw, overrides)
        text = None  # positions in the file no longer match
    raw_steps = raw.get("steps") if isinstance(raw.get("steps"), list) else None
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise validation_message(exc, str(path), text=text, raw_steps=raw_steps) from exc
    except (TypeError, ValueError) as exc:  # e.g. a step entry pydantic cannot even shape
        raise UsageError(f"{path}: {str(exc).splitlines()[0]}", hint="Fix the recipe") from exc
    recipe._origin, recipe._text, recipe._raw_steps = str(path), text, raw_steps
    base = path.resolve().parent
    plan(recipe, base)  # every step name and option checked now, with the file's line numbers
    return recipe, base


def plan(recipe: Recipe, base: Path) -> list[PlannedStep]:
    """Resolve every step class and validate its options before anything runs (once per recipe and folder:
    loading a recipe plans it, and the engine reuses that plan while the recipe is unchanged)."""
    key = (str(base), recipe.model_dump_json())
    if recipe._planned is not None and recipe._planned[0] == key:
        return recipe._planned[1]
    planned: list[PlannedStep] = []
    origin, text, raw_steps = recipe._origin, recipe._text, recipe._raw_steps
    _check_input_paths(recipe, base)
    for i, entry in enumerate(recipe.steps):
        try:
            cls = step_class(entry.name)
        except UsageError as exc:
            at = _where(origin, text, ("steps", i, "name"))
            raise UsageError(f"{at + ': ' if at else ''}steps[{i}]: {exc.message}", hint=exc.hint) from exc
        try:
            config = cls.Config.model_validate(entry.options)
        except ValidationError as exc:
            raise validation_message(exc, origin or f"steps[{i}] ({entry.name})", text=text,
                                     prefix=("steps", i, "options"), raw_steps=raw_steps) from exc
        output = None
        fmt, suffix = cls.output_format(config)
        if fmt is not None:
            output = _output_of(recipe, base, i, entry, fmt, suffix)
        earlier = next((ps for ps in planned if output is not None and ps.output == output), None)
        if earlier is not None:
            at = _where(origin, text, ("steps", i, "output") if entry.output else ("steps", i))
            raise UsageError(f"{at + ': ' if at else ''}steps[{i}] ({entry.name}) writes {output}, which steps[{earlier.index}] "
                             f"({earlier.step.name}) writes too", hint="Give each step its own output path")
        planned.append(PlannedStep(i, cls(), config, output))
    _check_gates(recipe, planned)
    recipe._planned = (key, planned)
    return planned


# the recipe keys that name input files, and the command-line options that fill them
INPUT_PATHS = {"model": "MODEL", "weights": "--weights", "eval_data": "--eval-data", "text_data": "--text-data",
               "image_data": "--image-data"}


def _check_input_paths(recipe: Recipe, base: Path) -> None:
    """Every input path as ``resolve_ref`` will read it: no NUL byte or control character, no unset $VAR, no
    symbolic link loop (each named by its key, or by its option for a command's one-step recipe)."""
    from optkit.types.paths import resolve_ref

    for key, flag in INPUT_PATHS.items():
        value = getattr(recipe, key)
        if value is not None:
            at = _where(recipe._origin, recipe._text, (key,))
            resolve_ref(base, value, f"{at}: {key}" if at else (flag if recipe._origin is None else key))


def _output_of(recipe: Recipe, base: Path, i: int, entry: StepEntry, fmt: str, suffix: str) -> Path:
    """Where step ``i`` writes: its ``output`` (``-o``) with ``~``/``$VAR`` expanded, else OUTPUT_DIR/NN_STEP.SUFFIX.
    Refused before any work: a path of control characters or an unset variable, a link (writing would replace what
    it points at), a link loop, and a trailing '/' (a folder) where the step writes one file."""
    from optkit.types.paths import expand_path, real_path, refuse_link

    if entry.output:
        at = _where(recipe._origin, recipe._text, ("steps", i, "output"))
        what = f"{at}: steps[{i}].output" if at else ("-o/--output" if recipe._origin is None else f"steps[{i}].output")
        given = expand_path(entry.output, what)
        if given.endswith(("/", "\\")) and fmt not in ("torch", "openvino"):  # torch: a model folder; IR: NAME.xml in it
            raise UsageError(f"{what} {entry.output} ends in '/' (a folder), but {what} names the one file "
                             f"{entry.name} writes", hint=f"Give a file name, e.g. {given}model{suffix}")
        output = Path(given)
    else:
        what = f"steps[{i}] ({entry.name}) output"
        output = recipe.output_path(base) / f"{i:02d}_{entry.name}{suffix}"
    output = output if output.is_absolute() else base / output
    resolved = real_path(output, what)
    refuse_link(output, what)
    if fmt == "openvino" and entry.output:
        resolved = _ir_path(given, resolved, suffix)
    return resolved


def _ir_path(given: str, resolved: Path, suffix: str) -> Path:
    """An OpenVINO IR is two files (NAME.xml + NAME.bin): a folder (existing, or written with a trailing
    slash) gets model.xml inside; any other name must end in .xml. Checked before any work."""
    if resolved.is_dir() or given.endswith(("/", "\\")):
        return resolved / f"model{suffix}"
    if resolved.suffix.lower() != suffix:
        raise UsageError(f"the OpenVINO IR output {given} must end in {suffix} (its weights go beside it as .bin)",
                         hint=f"Give -o NAME{suffix} or a folder")
    return resolved


def _check_gates(recipe: Recipe, planned: list[PlannedStep]) -> None:
    """A gate may only name a step that writes an artifact (a ledger row), by name or index."""
    rows = {"original"} | {ps.step.name for ps in planned if ps.output} | \
        {str(ps.index) for ps in planned if ps.output}
    for i, gate in enumerate(recipe.gates):
        for field_name in ("step", "baseline"):
            value = getattr(gate, field_name)
            if value is None or value in rows or (field_name == "step" and value == "original"):
                continue
            at = _where(recipe._origin, recipe._text, ("gates", i, field_name))
            names = sorted(r for r in rows if not r.isdigit())
            raise UsageError(f"{at + ': ' if at else ''}gates[{i}].{field_name}: no step '{value}' writes an artifact in this recipe",
                             hint=f"Use one of: {', '.join(names)}")


def json_schema() -> dict[str, Any]:
    """JSON Schema of a recipe file, each step's options included (for editor completion and CI linting)."""
    schema = Recipe.model_json_schema()
    defs = schema.setdefault("$defs", {})
    variants: list[dict[str, Any]] = []
    for name in STEPS:
        options = step_class(name).Config.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(options.pop("$defs", {}))
        options.setdefault("properties", {})["output"] = {
            "type": "string", "description": "output path (default: OUTPUT_DIR/NN_STEP.SUFFIX)"}
        options["additionalProperties"] = False
        defs[f"{name}_options"] = options
        variants += [
            {"const": name},
            {"type": "object", "properties": {name: {"anyOf": [{"$ref": f"#/$defs/{name}_options"}, {"type": "null"}]}},
             "required": [name], "additionalProperties": False},
        ]
    schema["properties"]["steps"] = {"type": "array", "minItems": 1, "items": {"anyOf": variants},
                                     "description": "steps in order: '- profile' or '- quantize: {mode: static}'"}
    schema["title"] = "optkit recipe"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
