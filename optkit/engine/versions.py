"""The library versions a result depends on: recorded in every sidecar, and part of every cache key and manifest."""
from __future__ import annotations

import platform
from importlib import metadata

_VERSIONED = ("optkit", "torch", "torch-pruning", "onnx", "onnxruntime", "onnxscript", "numpy")
_BACKENDS = ("onnxslim", "onnxsim", "openvino", "nncf", "neural-compressor", "onnxruntime-gpu", "tensorrt",
             "litert-torch", "ai-edge-litert", "ai-edge-quantizer")


def tool_versions(all_backends: bool = False) -> dict[str, str]:
    """Versions recorded in every sidecar; ``all_backends`` adds the optional ones (cache keys, manifests)."""
    versions = {"python": platform.python_version()}
    for dist in _VERSIONED + (_BACKENDS if all_backends else ()):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions
