"""What a backend's compile function takes and gives: plain inputs, a plain result.

Backends sit below steps and eval, so a compile function never sees a step's context: the compile step hands
it the input artifact, the staged output path, the precision and the target's options, calibration as a
callable (feeds are read by the step, from the run's data), and a UI for warnings and status lines. It returns
the artifact it wrote and the facts the step records (``CompileFacts``: the keys of the ledger's compile details
that the backend knows).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.types.records import Record
from optkit.types.ui import UI

if TYPE_CHECKING:
    import numpy as np

    from optkit.types.artifact import Artifact

Feed = dict[str, "np.ndarray"]


@dataclass(frozen=True)
class AccuracyControl:
    """NNCF's accuracy control: ``score(indices, outputs)`` rates the outputs of those validation samples (higher
    is better); quantization keeps layers float until the score is within ``max_drop`` of the float model's."""

    max_drop: float  # in the score's units
    score: Callable[[list[int], dict[str, "np.ndarray"]], float]
    budget: str  # e.g. "top1 drop <= 1 points", for the ledger


@dataclass(frozen=True)
class Calibration:
    """Calibration batches keyed by input name, what they were read from, and (OpenVINO int8) accuracy control
    scored on the same samples."""

    feeds: list[Feed]
    source: str
    accuracy_control: AccuracyControl | None = None


@dataclass(frozen=True)
class CompileOptions:
    """The compile step's target options, as plain values (each target reads its own)."""

    ort_session: dict[str, Any] | None = None  # ort-cpu: pinned session settings (None: tune)
    compress_to_fp16: bool = False  # openvino
    transformer: bool = False  # openvino int8 from fp32: the model has attention (NNCF's transformer scheme)
    nncf_preset: str = "performance"  # openvino int8 from fp32
    fast_bias_correction: bool = True  # openvino int8 from fp32
    accuracy_control_asked: bool = False  # openvino: given (warned about when the input is already QDQ)
    calib_data_given: bool = False  # int8: --calib-data given (warned about when nothing calibrates)
    shapes: str | None = None  # tensorrt
    workspace_gb: float = 4.0  # tensorrt
    layout: str = "nchw"  # tflite
    fixed_batch: int | None = None  # tflite


@dataclass(frozen=True)
class CompileRequest:
    """One compile: ``source`` -> ``out`` (a staged path; companions such as an IR's .bin are staged beside it)."""

    source: "Artifact"
    out: Path
    precision: str
    options: CompileOptions
    ui: UI
    threads: int = 1
    # per batch size: calibration batches of that many samples (int8 from a float model)
    calibration: Callable[[int], Calibration] | None = None
    example: Callable[[int], Feed] | None = None  # a batch of that many samples (tflite traces the torch model)
    time_candidates: Callable[[list["Artifact"]], list[float]] | None = None  # p50 of each, timed side by side


class CompileFacts(Record):
    """What a backend reports of a build (the compile details' backend keys); only the keys set are recorded."""

    tuning: list[dict[str, Any]] | None = None  # ort-cpu: every session setting tried, with its p50
    chosen: dict[str, Any] | None = None
    hardware_specific: bool | None = None
    int8_source: str | None = None
    bf16_native: bool | None = None
    compress_to_fp16: bool | None = None
    nncf: dict[str, Any] | None = None
    accuracy_control: dict[str, Any] | None = None
    fake_quantize_nodes: int | None = None
    tflite: dict[str, Any] | None = None  # converter, layout, batch, quantization recipe, ops and I/O dtypes


@dataclass(frozen=True)
class Compiled:
    artifact: "Artifact"
    facts: CompileFacts = field(default_factory=CompileFacts)


CompileFn = Callable[[CompileRequest], Compiled]


@dataclass(frozen=True)
class CompileTarget:
    """A ``compile --target`` a backend builds: its build, and the check that its runtime (and machine) is there."""

    build: CompileFn
    require: Callable[[], None]
