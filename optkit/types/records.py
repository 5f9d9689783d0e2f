"""Typed records: what a step measured and decided, as models the code reads by attribute.

``StepRecord`` is one row of the lineage ledger (stored in every sidecar); ``Check`` is an accuracy check
of a lossy step against its input; ``Details`` is the base of each step's own facts. They become dicts
only at the JSON boundary (``to_json``): a sidecar holds exactly the keys that were set, so the files
stay the version-1 format earlier optkit versions read, and a record read back keeps keys a later
version added (``extra="allow"``).
"""
from __future__ import annotations

from typing import Any

from pydantic import StrictStr

from optkit.types.generative import GenerationMetrics
from optkit.types.record import Record as Record  # its home (types/generative.py's records derive from it too)


class Accuracy(Record):
    """The task metric of an artifact on the evaluation data (``eval/task_metric.Metric.evaluate``; it also keeps
    every value the metric returned, ``values``, as an extra key)."""

    metric: StrictStr
    value: float
    samples: int | None = None
    higher_is_better: bool = True
    points: bool = True  # a fraction, shown and budgeted in points

    def drop_of(self, baseline: Accuracy) -> float:
        """How much worse this value is than ``baseline``'s, by the baseline's rules (points for fractions;
        negative: better). The drop ledger rows, gates and optimize's verdicts judge."""
        diff = baseline.value - self.value
        if not baseline.higher_is_better:
            diff = -diff
        return 100 * diff if baseline.points else diff


class Latency(Record):
    """One timing of an artifact at one batch size and thread count (``eval/timing.measure_latency``): p50/p90/p99,
    mean and min in milliseconds, throughput in samples per second over the timed calls."""

    batch_size: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float | None = None
    min_ms: float | None = None
    throughput: float  # samples per second
    iterations: int | None = None
    budget_s: float | None = None


class Fidelity(Record):
    """How far one model's outputs are from another's (``eval/metrics.fidelity``)."""

    max_abs_diff: float
    mean_abs_diff: float
    cosine: float
    min_cosine: float


class CpuInfo(Record):
    """The CPU figures are measured on (``types/machine.cpu_info``): model name, cores, and the SIMD flags that decide
    int8/bf16 speed (absent where /proc/cpuinfo could not be read)."""

    machine: str
    logical_cores: int | None = None
    model: str = "unknown"
    simd: list[str] | None = None

    @property
    def text(self) -> str:
        """``MODEL, N cores, FLAGS``: how every figure's machine is named."""
        return f"{self.model}, {self.logical_cores} cores, {' '.join(self.simd or [])}"


class Serving(Record):
    """The best serving setting ``optkit loadtest ARTIFACT`` measured for an artifact: the highest throughput whose
    p99 met the SLO, under closed-loop load from a client on the same machine."""

    config: dict[str, Any]           # the serve: section that got it
    throughput: float                # answered requests per second
    p50_ms: float
    p99_ms: float
    concurrency: int | None = None
    rows_per_request: int = 1
    slo_p99_ms: float | None = None
    settings_tried: int = 0
    cpu: StrictStr = ""
    measured_at: StrictStr = ""


class OutputStats(Record):
    """One output of an artifact on the evaluation data, as Polygraphy prints it (``eval/metrics.output_stats``):
    mean, std, min and max over its finite values, and the samples holding a NaN or infinity."""

    name: StrictStr
    shape: list[int] = []
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    nonfinite_samples: int = 0


class Metrics(Record):
    accuracy: Accuracy | None = None
    latency: list[Latency] | None = None
    peak_memory_mb: float | None = None
    fidelity: Fidelity | None = None         # vs the original model
    fidelity_parent: Fidelity | None = None  # vs the step's input
    macs: int | None = None
    params: int | None = None
    serving: Serving | None = None           # optkit loadtest ARTIFACT's best setting
    output_stats: list[OutputStats] | None = None  # each output's mean/std/min/max on the evaluation data
    generation: GenerationMetrics | None = None  # a causal LM's perplexity, token agreement, TTFT, decode tok/s

    def latency_at(self, batch_size: int | None = None, threads: int | None = None) -> Latency | None:
        for entry in self.latency or []:
            if (batch_size is None or entry.batch_size == batch_size) and (threads is None or entry.threads == threads):
                return entry
        return None


class ParentRef(Record):
    artifact: StrictStr
    sha256: StrictStr


class StepRecord(Record):
    """A ledger row: the artifact a step made (or the original model, step ``original``) and what was measured."""

    step: StrictStr
    artifact: StrictStr
    format: StrictStr
    sha256: StrictStr
    size_bytes: int
    params: dict[str, Any] = {}
    details: dict[str, Any] = {}  # the step's Details, as JSON
    parent: ParentRef | None = None
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    eval_data: dict[str, Any] | None = None
    versions: dict[str, str] = {}
    metrics: Metrics | None = None
    wall_time_s: float | None = None
    notes: list[str] = []
    summary: str = ""
    cache_key: str | None = None

    @property
    def measured(self) -> Metrics:
        """The metrics, empty when nothing was measured."""
        return self.metrics or Metrics()


class Check(Record):
    """A lossy step's output judged against its input: the task metric's drop and the cosine to its outputs.

    ``metric`` and the values after it are set only when a task metric judged (``value`` and ``drop`` not when the
    outputs were ``degenerate``: not measured on outputs that mean nothing); ``min_cosine`` only when cosine judged."""

    ok: bool
    limit: str
    cosine_vs_input: float | None = None
    max_abs_diff_vs_input: float | None = None
    metric: str | None = None
    input_value: float | None = None
    value: float | None = None
    drop: float | None = None
    points: bool = True
    higher_is_better: bool = True
    min_cosine: float | None = None
    degenerate: str | None = None  # why the outputs carry no answer where the input's do (eval/metrics.degenerate)

    @property
    def judged_metric(self) -> bool:
        return self.metric is not None

    @property
    def judged_cosine(self) -> bool:
        return self.min_cosine is not None


class Verification(Record):
    """An exact transform's output compared with its input, element by element, at each batch size."""

    batch_sizes: list[int]
    max_abs_diff: float
    atol: float
    rtol: float
    samples: str  # "evaluation data" or "synthetic"
    dynamic_axes_checked: dict[str, dict[str, str]] | None = None  # export: extra dynamic dims checked at a 2nd size


class Details(Record):
    """The base of a step's own facts for the ledger: each step subclasses it with its fields. The engine
    reads only these: what a step that changes the architecture counts, and the speed check it adds."""

    macs: int | None = None
    params: int | None = None
    speed_vs_input: dict[str, Any] | None = None  # a speed step run without measuring: its p50 vs its input's
