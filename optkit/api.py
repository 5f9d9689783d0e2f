"""Python API for deployment code: ``optkit.load(path)`` runs an artifact on its own backend.

    model = optkit.load("optkit-out/digits_cnn_cpu/03_quantize.onnx")
    logits = model(x)                 # numpy arrays or torch tensors, positional in input order
    outputs = model.run({"input": x}) # dict in, dict out

Compiled artifacts carry their runtime settings (tuned ONNX Runtime session options, OpenVINO
precision hint) in their sidecar; ``load`` applies them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value)


class Deployed:
    def __init__(self, path: str | Path, threads: int = 0) -> None:
        from optkit.backends import open_runner
        from optkit.backends.opening import open_artifact

        self.artifact = open_artifact(path)
        self.runner = open_runner(self.artifact, threads)
        self.input_names = list(self.runner.input_names)
        self.output_names = list(self.runner.output_names)

    def run(self, feed: dict[str, Any]) -> dict[str, np.ndarray]:
        dtypes = {i.name: i.dtype for i in self.artifact.inputs}
        return self.runner.infer({n: _as_numpy(feed[n]).astype(dtypes.get(n, "float32"), copy=False)
                                  for n in self.input_names})

    def __call__(self, *inputs: Any, **named: Any):
        feed = dict(zip(self.input_names, inputs), **named)
        out = self.run(feed)
        values = [out[n] for n in self.output_names]
        return values[0] if len(values) == 1 else tuple(values)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "Deployed":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Deployed({self.artifact.path.name}, format={self.artifact.format}, inputs={self.input_names})"


def load(path: str | Path, threads: int = 0) -> Deployed:
    """Open an artifact for inference (threads: 0 = the runtime's default)."""
    return Deployed(path, threads)
