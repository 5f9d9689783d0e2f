"""CI gates: limits on what a recipe run measured, judged on the ledger after the last step.

A gate names one measured quantity of one row (the last producing step unless ``step`` says
which) against a baseline row (the original model unless ``baseline`` names a step)::

    gates:
      - max_accuracy_drop: 0.5          # drop of the task metric below the baseline (points for fractions)
      - min_cosine: 0.99                # mean cosine of the outputs to the original model's
      - min_speedup: 1.5                # baseline p50 / judged p50, same batch size and threads
      - {max_latency_ms: 2.0, batch_size: 8}
      - max_size_mb: 1.0
      - {max_drift: 0.05, step: export} # max |output difference| vs the original model
      - max_ppl_increase: 5             # a causal LM: perplexity increase over the baseline's, in percent
      - min_tokens_per_s: 20            # a causal LM: decode tokens/s at batch 1

A gate that cannot be judged (nothing measured, no labels) fails: CI must not pass on a figure
that was never taken.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from optkit.types.ledger import GateResult, LedgerRow
from optkit.types.records import Latency

KINDS = ("max_accuracy_drop", "min_speedup", "max_latency_ms", "max_size_mb", "max_drift", "min_cosine",
         "max_ppl_increase", "min_tokens_per_s")
_AT_LEAST = ("min_speedup", "min_cosine", "min_tokens_per_s")  # the measured figure must reach the limit


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_accuracy_drop: float | None = Field(None, ge=0, description="drop of the task metric (--metric / metric:; "
                                            "default top-1) below the baseline, points for fractions")
    min_cosine: float | None = Field(None, ge=-1, le=1, description="mean cosine of the outputs to the original model's")
    min_speedup: float | None = Field(None, gt=0, description="baseline p50 / judged p50 (same batch size)")
    max_latency_ms: float | None = Field(None, gt=0, description="judged p50 in milliseconds")
    max_size_mb: float | None = Field(None, gt=0, description="judged artifact size in MB (10^6 bytes)")
    max_drift: float | None = Field(None, ge=0, description="max |output difference| vs the original model's outputs")
    max_ppl_increase: float | None = Field(None, description="a causal LM's perplexity increase over the baseline's, "
                                           "in percent (5: at most +5%)")
    min_tokens_per_s: float | None = Field(None, gt=0, description="a causal LM's decode tokens/s at batch 1")
    batch_size: int | None = Field(None, ge=1, description="latency gates: the batch size judged (default: the ledger's)")
    step: str | None = Field(None, description="the step judged (default: the last step that wrote an artifact)")
    baseline: str = Field("original", description="'original' or a step name")

    @model_validator(mode="after")
    def _one_kind(self) -> "Gate":
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a gate sets exactly one of {', '.join(KINDS)} (got {', '.join(given) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def limit(self) -> float:
        return float(getattr(self, self.kind))


def _row(rows: list[LedgerRow], name: str | None, outputs: dict[str, str]) -> LedgerRow | None:
    """The row a gate names: the last one, a step's name, or a step's index in the recipe (``steps[N]``: the row of
    the artifact it wrote, found by path, since ledger rows also count the original and earlier runs' rows)."""
    if name is None:
        return rows[-1] if rows else None
    hits = [r for r in rows if r.step == name or (name in outputs and r.artifact == outputs[name])]
    return hits[-1] if hits else None


def _latency(row: LedgerRow, batch_size: int | None) -> Latency | None:
    if batch_size is None:
        return row.latency
    return next((e for e in row.latency_all if e.batch_size == batch_size), None)


def _measure(gate: Gate, judged: LedgerRow, base: LedgerRow) -> tuple[float | None, str]:
    kind = gate.kind
    if kind == "max_accuracy_drop":
        if not judged.accuracy or not base.accuracy:
            return None, "no task metric was measured (no labels and no --metric / metric:)"
        return judged.accuracy.drop_of(base.accuracy), ""
    if kind == "min_cosine":
        if not judged.fidelity:
            return None, "cosine vs the original was not measured"
        return judged.fidelity.cosine, ""
    if kind in ("min_speedup", "max_latency_ms"):
        lat = _latency(judged, gate.batch_size)
        if not lat:
            return None, f"latency at batch {gate.batch_size or 'default'} was not measured"
        if kind == "max_latency_ms":
            return lat.p50_ms, ""
        ref = _latency(base, lat.batch_size)
        if not ref:
            return None, f"the baseline has no latency at batch {lat.batch_size}"
        return ref.p50_ms / lat.p50_ms, ""
    if kind in ("max_ppl_increase", "min_tokens_per_s"):
        return _generation(kind, judged, base)
    if kind == "max_size_mb":
        return judged.size_bytes / 1e6, ""
    if not judged.fidelity:
        return None, "drift vs the original was not measured"
    return judged.fidelity.max_abs_diff, ""


def _generation(kind: str, judged: LedgerRow, base: LedgerRow) -> tuple[float | None, str]:
    gen = judged.generation
    if gen is None:
        return None, "it is not a text-generation model measured per token (perplexity, decode tokens/s)"
    if kind == "min_tokens_per_s":
        tps = gen.decode_tokens_per_s
        return (tps, "") if tps is not None else (None, "decode tokens/s was not measured")
    if base.generation is None:
        return None, f"the baseline {base.step} has no perplexity"
    return 100 * (gen.perplexity / base.generation.perplexity - 1.0), ""


_UNITS = {"max_accuracy_drop": " pt", "min_speedup": "x", "max_latency_ms": " ms", "max_size_mb": " MB", "max_drift": "",
          "min_cosine": "", "max_ppl_increase": "%", "min_tokens_per_s": " tokens/s"}


def evaluate(gates: list[Gate], rows: list[LedgerRow], outputs: dict[str, str] | None = None) -> list[GateResult]:
    """``outputs``: each producing step's index in the recipe -> the path it wrote (gates may name a step by index)."""
    named = outputs or {}
    return [_judge(gate, rows, named) for gate in gates]


def _judge(gate: Gate, rows: list[LedgerRow], outputs: dict[str, str]) -> GateResult:
    judged = _row(rows, gate.step, outputs)
    base = _row(rows, gate.baseline, outputs) if gate.baseline != "original" else (rows[0] if rows else None)
    label = f"{gate.kind} {gate.limit:.10g}" + (f" at batch {gate.batch_size}" if gate.batch_size else "")
    if judged is None or base is None:
        missing = gate.step if judged is None else gate.baseline
        return GateResult(gate=label, step=str(gate.step), baseline=gate.baseline, measured=None, limit=gate.limit,
                          passed=False, text=f"{label}: no step named '{missing}' in this run")
    value, why = _measure(gate, judged, base)
    unit = _UNITS[gate.kind]
    if gate.kind == "max_accuracy_drop" and base.accuracy is not None and not base.accuracy.points:
        unit = ""  # a metric that is not a fraction (max_abs, a plugin's) drops in its own units
    if value is None:
        passed, text = False, f"{label} on {judged.step}: cannot judge, {why}"
    else:
        slack = 1e-9 * max(1.0, abs(gate.limit))  # 100 * (0.99 - 0.985) is 0.5000000000000004
        passed = value >= gate.limit - slack if gate.kind in _AT_LEAST else value <= gate.limit + slack
        vs = f" vs {base.step}" if gate.kind in ("max_accuracy_drop", "min_speedup", "max_ppl_increase") else ""
        # a cosine is shown to as many digits as the limit was written with, so a miss never reads as equal
        digits = max(5, len(f"{gate.limit:.10g}".partition(".")[2]) + 1)
        shown = {"max_drift": f"{value:.3g}", "min_cosine": f"{value:.{digits}f}",
                 "max_ppl_increase": f"{value:+.2f}"}.get(gate.kind, f"{value:.2f}")
        text = f"{label} on {judged.step}{vs}: measured {shown}{unit}, limit {gate.limit:.10g}{unit}"
    return GateResult(gate=label, step=judged.step, baseline=base.step, measured=value, limit=gate.limit,
                      passed=passed, text=text)
