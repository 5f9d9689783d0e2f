"""What ``quantize`` takes (its options, validated before anything runs) and what it records in the ledger."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator

from optkit.steps._budget import MAX_DROP_HELP
from optkit.steps.base import BudgetSearchConfig
from optkit.types.records import Check, Details, Record

FP16_KEEP_FP32 = ["Softmax", "LayerNormalization", "SkipLayerNormalization", "ReduceMean", "Pow", "Sqrt",
                  "Exp", "Log", "Erf", "Range"]


class QuantizeConfig(BudgetSearchConfig):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    mode: Literal["static", "dynamic", "fp16", "weight-only", "auto"] = Field(
        "auto", description="quantization mode (auto: build the modes that apply, keep the fastest within tolerance; "
                            "weight-only: int4/int8 MatMul weights in blocks, ONNX Runtime's MatMulNBits)")
    method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="static calibration method")
    percentile: float = Field(99.999, gt=0, le=100, description="percentile for --method percentile")
    per_channel: bool = Field(True, description="weight scales per channel (default) or per tensor; per channel "
                                                   "needs opset >= 13 (upgraded if needed)")
    reduce_range: bool = Field(True, description="7-bit weights: avoids u8s8 saturation on x86")
    calib_data: str | None = Field(None, description=".npz for calibration (default: the model's calib split)")
    calib_from_eval: bool = Field(False, description="allow calibrating on the evaluation split (optimistic)")
    calib_samples: int = Field(256, ge=1, description="calibration samples used at most")
    calib_batch_size: int = Field(16, ge=1, description="calibration batch size")
    exclude: list[str] = Field([], description="node names or op types kept in float")
    skip_small_convs: int = Field(4, ge=0, description="static: convs with fewer input channels stay fp32 (0: off)")
    keep_io_types: bool = Field(True, description="fp16: keep model inputs/outputs fp32")
    fp16_keep_fp32_ops: list[str] = Field(FP16_KEEP_FP32, description="fp16: op types kept fp32")
    max_drop: float = Field(1.0, ge=0, description=f"{MAX_DROP_HELP}; past it the step fails (or the guard searches)")
    guard: bool | None = Field(None, description="accuracy guard: when int8 misses --max-drop, int8 recipes then the most "
                                                 "sensitive nodes go back to float until within it (static/dynamic); "
                                                 "default: on when --max-drop is given")
    guard_max_trials: int = Field(10, ge=1, description="accuracy guard: most re-quantizations tried")
    guard_allow_slower: bool = Field(False, description="accuracy guard: keep a result that is not faster than the input "
                                                        "(by default the guard fails rather than ship it)")
    engine: Literal["ort", "inc"] = Field("ort", description="ort: ONNX Runtime on an ONNX model; inc: Intel Neural "
                                          "Compressor PT2E autotune on a PyTorch model, exported to QDQ ONNX "
                                          "(pip install 'optkit[inc]')")
    inc_max_trials: int = Field(3, ge=1, le=3, description="engine inc: configurations tried (s8s8 minmax, s8s8 kl, u8s8)")
    bits: int = Field(4, description="weight-only: bits per weight, 4 or 8")
    group_size: int = Field(128, description="weight-only: weights sharing one scale (block size along the input "
                                             "dimension): 16, 32, 64, 128 or 256")
    symmetric: bool = Field(False, description="weight-only: symmetric blocks (no zero point) or asymmetric")
    accuracy_level: int = Field(4, ge=0, le=4, description="weight-only: MatMulNBits compute type (0: unset, 1: "
                                "fp32, 2: fp16, 3: bf16, 4: int8 activations per block; measured on a 27M Llama, "
                                "1 thread: 4 decodes int8 weights 11x and int4 1.8x faster than 0)")
    lm_head: bool = Field(True, description="weight-only: quantize the output projection (lm_head) too")
    embedding: bool = Field(False, description="weight-only: quantize the token embedding too (Gather -> "
                                               "GatherBlockQuantized; 4 bits only)")
    min_cosine: float | None = Field(None, ge=-1, le=1, description="fail below this mean cosine vs the input's outputs "
                                     "(default: 0.99 when no task metric judges, else not checked)")

    SEARCH: ClassVar[str] = "guard"

    @field_validator("bits")
    @classmethod
    def _bits(cls, value: int) -> int:
        if value not in (4, 8):
            raise ValueError(f"weight-only quantizes to 4 or 8 bits, not {value}")
        return value

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, value: int) -> int:
        if value not in (16, 32, 64, 128, 256):
            raise ValueError(f"ONNX Runtime's blocks are 16, 32, 64, 128 or 256 weights, not {value}")
        return value


class GenerativeCheck(Record):
    """A quantized causal LM against its input on the evaluation prompts: greedy continuations and logits."""

    prompts: int
    new_tokens: int  # asked per prompt
    token_agreement: float  # share of the input's greedy new tokens the product repeats before its first difference
    same_continuations: int  # prompts whose greedy continuation is the input's, token for token
    logits_cosine: float  # mean over the prompts' positions
    min_cosine: float


class QuantizeDetails(Details):
    """What the chosen mode did (ORT static/dynamic/fp16/weight-only or neural-compressor), how it was judged and
    chosen."""

    mode: Literal["static", "dynamic", "fp16", "weight-only"]
    check: Check
    format: str | None = None  # "QDQ"
    engine: str | None = None  # "inc" for neural-compressor
    method: str | None = None
    per_channel: bool | None = None
    reduce_range: bool | None = None
    activations: str | None = None
    weights: str | None = None
    recipe: str | None = None  # the guard's int8 recipe
    calib_source: str | None = None
    calib_samples: int | None = None
    calib_batch_size: int | None = None
    skip_small_convs: int | None = None
    excluded: list[str] | None = None
    excluded_by_user: list[str] | None = None
    excluded_small_convs: list[str] | None = None
    exclude_not_found_after_preprocess: list[str] | None = None
    preprocess: str | None = None
    opset_upgraded: list[int] | None = None
    nodes: dict[str, Any] | None = None  # compute nodes int8 / float and why (fp16: nodes kept fp32)
    dynamic_convs: int | None = None
    keep_io_types: bool | None = None
    kept_fp32_ops: list[str] | None = None
    tuned_on: str | None = None  # inc: the split autotune judged on, its trials and choice
    inc_trials: list[dict[str, Any]] | None = None
    chosen: str | None = None
    quantize_linear_nodes: int | None = None
    int8_weights: int | None = None  # inc: constant weights folded to int8
    tolerable_loss: float | None = None
    guard: dict[str, Any] | None = None  # --guard: recipes and trials, what went back to float, timings
    bits: int | None = None  # weight-only: its settings, what lm_head and the embedding became
    group_size: int | None = None
    symmetric: bool | None = None
    accuracy_level: int | None = None
    lm_head: str | None = None
    embedding: str | None = None
    generation: GenerativeCheck | None = None  # weight-only on a causal LM: how it was judged
    auto: dict[str, Any] | None = None  # --mode auto: each candidate's check and p50, and why one was chosen
