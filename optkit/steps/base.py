"""Step base class and the one registry of steps (dotted paths, imported only when used)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, model_validator

from optkit.types.errors import UsageError
from optkit.types.lazy import load_dotted
from optkit.types.ledger import Profile
from optkit.types.records import Details as DetailsRecord

if TYPE_CHECKING:
    import numpy as np

    from optkit.types.artifact import Artifact
    from optkit.types.ui import UI
    from optkit.eval.data import EvalData
    from optkit.eval.measure import MeasureSettings

STEPS: dict[str, str] = {
    "export": "optkit.steps.export:ExportStep",
    "simplify": "optkit.steps.simplify:SimplifyStep",
    "fuse": "optkit.steps.fuse:FuseStep",
    "quantize": "optkit.steps.quantize:QuantizeStep",
    "prune": "optkit.steps.prune:PruneStep",
    "distill": "optkit.steps.distill:DistillStep",
    "compile": "optkit.steps.compile:CompileStep",
    "profile": "optkit.steps.profile:ProfileStep",
}


@dataclass
class StepContext:
    """What a step gets besides its input artifact and its config."""

    ui: "UI"
    data: "EvalData"
    settings: "MeasureSettings"
    out_tmp: Path | None = None    # where a producing step writes its artifact
    out_final: Path | None = None  # where it will be renamed to once measured
    parent_outputs: Callable[[], dict[str, np.ndarray]] | None = None  # the input artifact's outputs on ctx.data (cached)
    base: Path = field(default_factory=Path.cwd)  # relative paths in step options resolve here (the recipe's folder)
    companion: Callable[[str], Path] | None = None  # staged path for a file beside the output, e.g. ".bin"

    # A producing step always gets the three above (a measuring one none): these say so to the type checker.
    @property
    def out_path(self) -> Path:
        """``out_tmp``: where a producing step writes its artifact."""
        if self.out_tmp is None:
            raise RuntimeError("a measuring step's context has no output path")
        return self.out_tmp

    @property
    def final_path(self) -> Path:
        """``out_final``: where the engine renames the artifact to once it is measured."""
        if self.out_final is None:
            raise RuntimeError("a measuring step's context has no output path")
        return self.out_final

    def input_outputs(self) -> dict[str, np.ndarray]:
        """The input artifact's outputs on ``data`` (computed once, by the engine)."""
        if self.parent_outputs is None:
            raise RuntimeError("a measuring step's context has no input outputs")
        return self.parent_outputs()


@dataclass
class StepResult:
    artifact: "Artifact | None" = None   # producing steps: the new artifact, at ctx.out_tmp
    details: DetailsRecord = field(default_factory=DetailsRecord)  # step-specific facts for the ledger (the step's Details)
    profile: Profile | None = None  # measuring steps
    outputs: dict[str, np.ndarray] | None = None  # measuring steps: the artifact's outputs on ctx.data


class Step:
    """A step. Its methods take ``config`` as an instance of its own ``Config`` (the engine validates every step's
    options with it before anything runs) and ``describe`` its own ``Details``, so a subclass names those
    classes: typed ``Any`` here, as a registry of classes with one Config each cannot say it to the type checker."""

    name: ClassVar[str]
    summary: ClassVar[str]
    accepts: ClassVar[tuple[str, ...]]
    produces: ClassVar[str | None] = None  # output format; None for steps that only measure
    suffix: ClassVar[str] = ""
    Config: ClassVar[type[BaseModel]]
    Details: ClassVar[type[DetailsRecord]] = DetailsRecord  # what the step records (a record's JSON reads back with it)
    for_speed: ClassVar[bool] = False  # its point is speed: an output slower than its input is flagged
    build_cpus: ClassVar[int] = 1  # CPUs a build of this step keeps busy: what a Ray build task asks for

    def run(self, ctx: StepContext, artifact: "Artifact", config: Any) -> StepResult:
        raise NotImplementedError

    def precheck(self, config: Any, source: "Artifact", base: Path) -> None:
        """Check inputs the options name (data files, other models) against the recipe's source model,
        before anything runs or is measured; raise UsageError. Most steps need nothing here."""

    @classmethod
    def input_formats(cls, config: Any, task: str | None = None) -> tuple[str, ...]:
        """Formats this step takes with ``config`` for a model of ``task`` (quantize's engine decides; compile
        takes a text-generation torch model for OpenVINO); default: ``accepts``."""
        return cls.accepts

    @classmethod
    def output_format(cls, config: Any) -> tuple[str | None, str]:
        """(format, file suffix) this step produces with ``config``; compile overrides it per target."""
        return cls.produces, cls.suffix

    @classmethod
    def num_cpus(cls, config: Any) -> int:
        """CPUs a build of this step with ``config`` keeps busy (training steps more than one)."""
        return cls.build_cpus

    @staticmethod
    def describe(details: Any) -> str:
        """One line for the ledger's 'what changed' column."""
        return ""


# Renamed option keys: old -> new. A step's Config lists its own in ``RENAMED`` (a ClassVar) and moves them with
# ``renamed_keys`` in a "before" validator; the command line offers each old spelling as a hidden flag.
_SHOWN: set[str] = set()


def deprecated(old: str, new: str, text: str | None = None) -> None:
    """One deprecation line per old name and process (a recipe is validated more than once)."""
    if old in _SHOWN:
        return
    _SHOWN.add(old)
    from optkit.types.ui import UI

    UI().warn(text or f"{old} is deprecated; use {new}")


def renamed_keys(data: Any, renamed: dict[str, str], *, switch: str | None = None) -> Any:
    """``data`` (a step's raw options) with every old key moved to its new name; the new key wins when both
    are given. ``switch``: a search that giving the new key turns on by default; an old key alone (which never
    turned it on) sets it off, unless the options set it themselves."""
    if not isinstance(data, dict) or not set(data) & set(renamed):
        return data
    data = dict(data)
    if switch and any(old in data and new not in data for old, new in renamed.items()):
        data.setdefault(switch, False)
    for old, new in renamed.items():
        if old in data:
            value = data.pop(old)
            deprecated(old, new)
            data.setdefault(new, value)
    return data


class BudgetSearchConfig(BaseModel):
    """A step Config whose budget ``max_drop`` was once ``max_accuracy_drop``, and whose search ``SEARCH`` (quantize's
    accuracy guard, compile's NNCF accuracy control) is on by default when ``max_drop`` is given, where it applies
    (``search_applies``): the old key alone never turned it on, so it keeps it off."""

    RENAMED: ClassVar[dict[str, str]] = {"max_accuracy_drop": "max_drop"}
    SEARCH: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return renamed_keys(data, cls.RENAMED, switch=cls.SEARCH)

    @model_validator(mode="after")
    def _search_default(self) -> "BudgetSearchConfig":
        if getattr(self, self.SEARCH) is None:
            setattr(self, self.SEARCH, "max_drop" in self.model_fields_set and self.search_applies())
        return self

    def search_applies(self) -> bool:
        return True


def step_class(name: str) -> type[Step]:
    target = STEPS.get(name)
    if target is None:
        close = difflib.get_close_matches(name, STEPS, n=1)
        hint = f"Did you mean '{close[0]}'? " if close else ""
        raise UsageError(f"unknown step '{name}'", hint=f"{hint}Known steps: {', '.join(STEPS)}")
    return load_dotted(target)
