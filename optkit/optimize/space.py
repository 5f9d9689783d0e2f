"""The candidates ``optkit optimize`` builds: each a short recipe the engine already runs, chosen from cheap facts.

Facts first (the model's op mix, attention, calibration data, the CPU's flags, which runtimes are installed), so
a candidate that cannot win here is skipped with the reason instead of built: dynamic int8 on a conv net runs
ConvInteger (several times slower than fp32 on x86), bf16 without native support is emulated (4-18x slower),
full-range int8 saturates without VNNI. Every candidate starts from the same fp32 ONNX model.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from optkit.types.machine import int8_dot_product, native_bf16

TARGETS = ("ort-cpu", "openvino-cpu")


@dataclass(frozen=True)
class ModelFacts:
    """What decides which candidates are worth building."""

    ops: frozenset[str]
    attention: bool           # a transformer: attention blocks the optimizers recognise
    calibration: bool         # a calibration split or --calib-data exists (static int8 needs one)
    flags: frozenset[str]     # the CPU's flags

    @property
    def matmul_heavy(self) -> bool:
        return bool(self.ops & {"MatMul", "Gemm", "Attention"}) and not self.conv_net

    @property
    def conv_net(self) -> bool:
        return "Conv" in self.ops


@dataclass(frozen=True)
class Budget:
    """The fidelity every candidate must keep vs the original: a task-metric drop, or a mean cosine."""

    max_drop: float | None = None     # points for fractions, raw units otherwise
    min_cosine: float | None = None

    @property
    def drop_limit(self) -> float:
        """The task-metric drop allowed: ``max_drop``, else what every lossy step allows by default (1 point)."""
        return self.max_drop if self.max_drop is not None else 1.0

    def step_options(self, step: str) -> dict[str, Any]:
        """The lossy steps' own checks, set to the same budget (their input is the fp32 model); the budget alone,
        without quantize's guard or compile's accuracy control (the candidates that search are their own)."""
        out: dict[str, Any] = {}
        if self.max_drop is not None:
            out.update({"max_drop": self.max_drop, {"quantize": "guard", "compile": "accuracy_control"}[step]: False})
        if self.min_cosine is not None:
            out["min_cosine"] = self.min_cosine
        return out


@dataclass(frozen=True)
class CandidateRecipe:
    name: str
    target: str                  # the runtime it deploys on
    precision: str               # fp32 | int8 | bf16
    steps: list[dict[str, Any]]  # recipe step entries after the shared fp32 ONNX model
    what: str                    # one line for the report
    simplicity: int = 0          # lower is simpler: preferred when two are within timing noise
    fallback_for: str | None = None  # built only when this candidate was rejected (a costlier search for the same idea)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    name: str
    why: str


def build_order(cands: list[CandidateRecipe]) -> list[CandidateRecipe]:
    """Every target's primary candidates first, then the fallbacks, the nearest first (a fallback of a fallback
    last): a fallback is a costlier search for an idea that already missed, so it gets the time left and never
    keeps another target's primary from being built. At each depth the targets take turns, each in the order
    listed (fp32, then int8, ...): a tight budget still builds every target's likeliest candidates."""
    by_name = {c.name: c for c in cands}

    def depth(cand: CandidateRecipe) -> int:
        n = 0
        while cand.fallback_for in by_name and n < len(cands):
            cand, n = by_name[cand.fallback_for], n + 1
        return n

    order: list[CandidateRecipe] = []
    for level in sorted({depth(c) for c in cands}):
        queues: dict[str, list[CandidateRecipe]] = {}
        for cand in cands:
            if depth(cand) == level:
                queues.setdefault(cand.target, []).append(cand)
        while any(queues.values()):
            order += [queue.pop(0) for queue in queues.values() if queue]
    return order


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def candidate_space(facts: ModelFacts, targets: tuple[str, ...], budget: Budget,
                    calib_data: str | None = None) -> tuple[list[CandidateRecipe], list[Skipped]]:
    """The candidates to build, cheapest and most likely first, and the ones skipped with the reason."""
    cands: list[CandidateRecipe] = []
    skipped: list[Skipped] = []
    lossy, lossy_compile = budget.step_options("quantize"), budget.step_options("compile")
    calib = {"calib_data": calib_data} if calib_data else {}
    fuse = {"fuse": {"level": "basic"}}
    if "ort-cpu" in targets:
        cands.append(CandidateRecipe("ort-fp32", "ort-cpu", "fp32", [fuse, {"compile": {"target": "ort-cpu"}}],
                                     "ONNX Runtime fp32: fusions, offline graph optimization, the fastest session settings"))
        if facts.matmul_heavy or facts.attention:
            dynamic = {"mode": "dynamic", **lossy}
            if int8_dot_product(set(facts.flags)):
                dynamic["reduce_range"] = False  # VNNI/AMX: full-range weights do not saturate
            cands.append(CandidateRecipe("ort-int8-dynamic", "ort-cpu", "int8", [fuse, {"quantize": dynamic}],
                                         "ONNX Runtime dynamic int8 (weights int8, activations at run time)", simplicity=1))
        else:
            skipped.append(Skipped("ort-int8-dynamic", "a conv net: dynamic int8 runs ConvInteger, several times "
                                                       "slower than fp32 on x86 CPUs"))
        if facts.calibration:
            full = int8_dot_product(set(facts.flags))
            static = {"mode": "static", **lossy, **calib}
            if full:  # no u8s8 saturation with VNNI/AMX: every conv int8 at full range
                static.update({"skip_small_convs": 0, "reduce_range": False})
            why = ("full range, every conv (VNNI/AMX: no u8s8 saturation)" if full else
                   "7-bit weights, small convs float (no VNNI: u8s8 kernels saturate)")
            cands.append(CandidateRecipe("ort-int8-static", "ort-cpu", "int8", [fuse, {"quantize": static}],
                                         f"ONNX Runtime static QDQ int8, minmax calibration, {why}", simplicity=2))
            cands.append(CandidateRecipe("ort-int8-static-entropy", "ort-cpu", "int8",
                                         [fuse, {"quantize": {**static, "method": "entropy"}}],
                                         "ONNX Runtime static QDQ int8, entropy calibration", simplicity=3,
                                         fallback_for="ort-int8-static"))
            # the guard's budget is the search's (1 point by default, as every lossy step's)
            guard = {**static, "max_drop": budget.drop_limit, "guard": True}
            cands.append(CandidateRecipe("ort-int8-guarded", "ort-cpu", "int8", [fuse, {"quantize": guard}],
                                         "ONNX Runtime static int8 with the accuracy guard (int8 recipes: op types, "
                                         "SmoothQuant, symmetric activations; then sensitive nodes float)",
                                         simplicity=4, fallback_for="ort-int8-static-entropy"))
        else:
            skipped.append(Skipped("ort-int8-static", "no calibration data (a calib split beside the model or "
                                                      "--calib-data)"))
        skipped.append(Skipped("ort-fp16", "ONNX Runtime's CPU provider has no fast fp16 path on x86"))
    if "openvino-cpu" in targets:
        if not _installed("openvino"):
            skipped.append(Skipped("openvino-*", "OpenVINO is not installed: pip install 'optkit[openvino]'"))
        else:
            cands.append(CandidateRecipe("openvino-fp32", "openvino-cpu", "fp32",
                                         [{"compile": {"target": "openvino-cpu", "precision": "fp32"}}],
                                         "OpenVINO IR, fp32 inference precision", simplicity=1))
            if facts.calibration and _installed("nncf"):
                int8 = {"target": "openvino-cpu", "precision": "int8", **lossy_compile, **calib}
                cands.append(CandidateRecipe("openvino-int8", "openvino-cpu", "int8", [{"compile": int8}],
                                             "OpenVINO int8 via NNCF post-training quantization"
                                             + (" (transformer preset)" if facts.attention else ""), simplicity=2))
                cands.append(CandidateRecipe(
                    "openvino-int8-mixed", "openvino-cpu", "int8",
                    [{"compile": {**int8, "nncf_preset": "mixed", "fast_bias_correction": False}}],
                    "OpenVINO int8 via NNCF, mixed preset (asymmetric activations), full bias correction",
                    simplicity=3, fallback_for="openvino-int8"))
                cands.append(CandidateRecipe("openvino-int8-accuracy-control", "openvino-cpu", "int8",
                                             [{"compile": {**int8, "max_drop": budget.drop_limit,
                                                           "accuracy_control": True}}],
                                             "OpenVINO int8 via NNCF with accuracy control on the task metric",
                                             simplicity=4, fallback_for="openvino-int8-mixed"))
            elif not facts.calibration:
                skipped.append(Skipped("openvino-int8", "no calibration data (a calib split beside the model or "
                                                        "--calib-data)"))
            else:
                skipped.append(Skipped("openvino-int8", "NNCF is not installed: pip install 'optkit[openvino]'"))
            if native_bf16(set(facts.flags)):
                cands.append(CandidateRecipe("openvino-bf16", "openvino-cpu", "bf16",
                                             [{"compile": {"target": "openvino-cpu", "precision": "bf16", **lossy_compile}}],
                                             "OpenVINO bf16 (native on this CPU)", simplicity=2))
            else:
                skipped.append(Skipped("openvino-bf16", "no native bf16 on this CPU (avx512_bf16/amx_bf16): "
                                                        "emulated, measured 4-18x slower than fp32"))
    return cands, skipped
