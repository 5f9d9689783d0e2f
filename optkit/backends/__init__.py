"""Backends: one Runner per runtime, one file each, all with the same small interface.

A Runner is made from an Artifact and a thread count, runs a feed of numpy arrays keyed by input
name and returns numpy arrays keyed by output name, and is closed when done. The registry maps an
artifact format to a dotted path, so a runner's heavy imports happen only when it is used.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from optkit.types.errors import UsageError
from optkit.types.lazy import load_dotted

if TYPE_CHECKING:
    import numpy as np

    from optkit.types.artifact import Artifact

RUNNERS: dict[str, str] = {
    "torch": "optkit.backends.torch:TorchRunner",
    "onnx": "optkit.backends.onnxruntime:OrtRunner",
    "openvino": "optkit.backends.openvino:OpenVINORunner",
    "tensorrt": "optkit.backends.tensorrt:TensorRTRunner",
    "tflite": "optkit.backends.litert:LiteRTRunner",
}


class Runner(ABC):
    format: ClassVar[str]
    input_names: list[str]
    output_names: list[str]

    @classmethod
    def preload(cls) -> None:
        """Import the runtime now, so its one-off import cost is not counted in a measurement."""

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch."""

    def close(self) -> None:
        """Release the runtime's resources."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def runner_class(fmt: str) -> type[Runner]:
    target = RUNNERS.get(fmt)
    if target is None:
        raise UsageError(f"no backend can run '{fmt}' artifacts", hint=f"Known formats: {', '.join(RUNNERS)}")
    return load_dotted(target)


def open_runner(artifact: "Artifact", threads: int = 1) -> Runner:
    return runner_class(artifact.format)(artifact, threads=threads)
