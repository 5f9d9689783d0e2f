"""Import heavy or optional libraries only where a step needs them, with a clear message if absent."""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from optkit.types.errors import MissingDependencyError

# import name -> (pip distribution, optkit extra that installs it; None when it is a core dependency)
KNOWN = {
    "torch": ("torch", None),
    "onnx": ("onnx", None),
    "onnxruntime": ("onnxruntime", None),
    "onnxscript": ("onnxscript", None),
    "torch_pruning": ("torch-pruning", None),
    "openvino": ("openvino", "openvino"),
    "nncf": ("nncf", "openvino"),
    "neural_compressor": ("neural-compressor", "inc"),
    "torchao": ("torchao", "inc"),
    "tensorrt": ("tensorrt", "tensorrt"),
    "transformers": ("transformers", "hf"),
    "tokenizers": ("tokenizers", "hf"),
    "huggingface_hub": ("huggingface_hub", "hf"),
    "sentence_transformers": ("sentence-transformers", "hf"),
    "PIL": ("pillow", "hf"),
    "litert_torch": ("litert-torch", "tflite"),
    "ai_edge_litert": ("ai-edge-litert", "tflite"),
    "ai_edge_quantizer": ("ai-edge-quantizer", "tflite"),
}


def load_dotted(target: str) -> Any:
    """The object a registry entry ``"package.module:name"`` names, imported now (registries of steps, runners
    and spec readers name their code this way so nothing heavy is imported before it is used)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise a one-line error naming what to install.

    ``purpose`` completes "... is needed for <purpose>".
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        dist, extra = KNOWN.get(top, (top, None))
        fix = f"pip install 'optkit[{extra}]'" if extra else f"pip install {dist} (or reinstall optkit)"
        raise MissingDependencyError(
            f"the Python package '{dist}' is needed for {purpose} but could not be imported ({exc})",
            hint=f"Install it: {fix}",
        ) from exc
