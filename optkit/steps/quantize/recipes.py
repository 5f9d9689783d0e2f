"""Static int8 recipes the accuracy guard tries before keeping single nodes in float.

What fixes transformer int8 in practice is rarely one node: it is which op types get Q/DQ pairs,
which activation-by-activation MatMuls stay float, the calibration method, symmetric activations,
SmoothQuant. Each recipe is one full re-quantization; the guard measures every one on the task
metric, keeps the fastest that meets the budget (timed side by side with the input), and starts the
node-by-node bisection from the one that came closest when none does.

Measured on the 4-layer BERT-style encoder of ``benchmarks/real_models.py`` (fused graph, batch 1, one
thread, Xeon with AVX-512 VNNI + AMX, ONNX Runtime 1.32): plain static int8 (every op type: Q/DQ around
SkipLayerNorm, BiasGelu, residual Adds) runs 5.49 ms against the fp32 input's ~5.3 ms; "compute ops only"
runs 2.90 vs 5.20 ms side by side (1.79x) at cosine 0.99998. A probe with ONNX Runtime 1.23 found
symmetric *int8* activations leave the LayerNorm-fed MatMuls in fp32 (0.5-0.7x fp32), so only symmetric
uint8 is tried. ORT's SmoothQuant needs neural-compressor 2.x's ONNX adaptor, not installable beside
numpy 2: it is listed as unavailable when missing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

COMPUTE_ONLY = ("MatMul", "Gemm", "Conv")
LAYER_NORMS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
               "EmbedLayerNormalization")


@dataclass(frozen=True)
class Int8Recipe:
    name: str
    why: str
    op_types: tuple[str, ...] | None = None  # op_types_to_quantize (None: every op type ORT quantizes)
    float_groups: tuple[str, ...] = ()       # node groups kept float: act_matmul, ln_fed_matmul, softmax
    method: str | None = None                # calibration method (None: the step's)
    activation_symmetric: bool = False       # uint8 activations with a fixed zero point of 128
    smooth_quant: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES = (
    Int8Recipe("compute ops only", "Q/DQ only around MatMul/Gemm/Conv: LayerNorm, Softmax, GELU and residual "
               "Adds stay float", op_types=COMPUTE_ONLY),
    Int8Recipe("compute ops, act x act float", "as above, and MatMuls of two activations (attention scores, "
               "attention x V) stay float", op_types=COMPUTE_ONLY, float_groups=("act_matmul",)),
    Int8Recipe("compute ops, act x act float, percentile", "as above, calibrated on the 99.999th percentile "
               "(outliers clipped)", op_types=COMPUTE_ONLY, float_groups=("act_matmul",), method="percentile"),
    Int8Recipe("symmetric activations", "uint8 activations with zero point 128", activation_symmetric=True),
    Int8Recipe("SmoothQuant", "activation outliers migrated into the weights (alpha 0.5)", smooth_quant=True),
    Int8Recipe("compute ops, LayerNorm-fed MatMuls float", "Q/K/V and FFN-in MatMuls (fed by LayerNorm) and "
               "act x act MatMuls stay float: accuracy first", op_types=COMPUTE_ONLY,
               float_groups=("act_matmul", "ln_fed_matmul")),
)


def _constants(model) -> set[str]:
    names = {t.name for t in model.graph.initializer}
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _weight_of(name: str, producers: dict, constants: set[str]) -> bool:
    """A tensor that is a constant, possibly behind a Transpose/Cast/DequantizeLinear."""
    seen = 0
    while name not in constants and seen < 4:
        node = producers.get(name)
        if node is None or node.op_type not in ("Transpose", "Cast", "DequantizeLinear", "Reshape"):
            return False
        name, seen = node.input[0], seen + 1
    return name in constants


def group_nodes(model, groups: tuple[str, ...]) -> list[str]:
    """Names of the nodes in ``groups``: act_matmul (MatMul of two activations), ln_fed_matmul (MatMul/Gemm
    reading a LayerNorm's output), softmax."""
    producers = {o: n for n in model.graph.node for o in n.output}
    constants = _constants(model)
    names = set()
    for node in model.graph.node:
        if "act_matmul" in groups and node.op_type == "MatMul" and len(node.input) == 2 and not any(
                _weight_of(i, producers, constants) for i in node.input):
            names.add(node.name)
        if "ln_fed_matmul" in groups and node.op_type in ("MatMul", "Gemm") and node.input and \
                producers.get(node.input[0]) is not None and producers[node.input[0]].op_type in LAYER_NORMS:
            names.add(node.name)
        if "softmax" in groups and node.op_type == "Softmax":
            names.add(node.name)
    return sorted(names)


def smooth_quant_unavailable() -> str | None:
    """Why ORT's SmoothQuant cannot run here (it imports neural-compressor 2.x's ONNX adaptor), or None."""
    import importlib.util

    try:
        found = importlib.util.find_spec("neural_compressor.adaptor.ox_utils.smooth_quant") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else ("ONNX Runtime's SmoothQuant needs neural-compressor 2.x's ONNX adaptor "
                               "(neural_compressor.adaptor), which is not installed (2.x needs numpy < 2)")


def applicable(model) -> list[tuple[Int8Recipe, str | None]]:
    """Every recipe with why it is skipped on this model (None: it is tried). A recipe that would build the
    same model as an earlier one (no MatMul of two activations, no LayerNorm) is skipped as a duplicate."""
    ops = {n.op_type for n in model.graph.node}
    seen: dict[tuple, str] = {}
    out = []
    for recipe in RECIPES:
        if recipe.smooth_quant:
            out.append((recipe, smooth_quant_unavailable()))
            continue
        key = (recipe.op_types if ops - set(recipe.op_types or ops) else None,
               tuple(group_nodes(model, recipe.float_groups)), recipe.method, recipe.activation_symmetric)
        if key == (None, (), None, False):
            out.append((recipe, "same as plain int8 on this model"))
        elif key in seen:
            out.append((recipe, f"same as '{seen[key]}' on this model"))
        else:
            seen[key] = recipe.name
            out.append((recipe, None))
    return out
