"""A fake backend: artifacts whose 'runtime' is a few lines of numpy with a chosen cost, so the engine's
measuring, timing, ledger and gate logic can be tested fast and without torch or ONNX Runtime.

A fake artifact is a JSON file ``{"scale": s, "cost_us": c}``: its one output is ``input * scale`` and each
call busy-waits ``c`` microseconds (a model of known speed)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from optkit.backends import RUNNERS, Runner
from optkit.types.artifact import Artifact, TensorSpec


class FakeRunner(Runner):
    format = "fake"

    def __init__(self, artifact: Artifact, threads: int = 1) -> None:
        spec = json.loads(Path(artifact.path).read_text())
        self.scale, self.cost = float(spec["scale"]), float(spec["cost_us"]) / 1e6
        self.input_names, self.output_names = [i.name for i in artifact.inputs], ["y"]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        end = time.perf_counter() + self.cost
        while time.perf_counter() < end:
            pass
        return {"y": feed[self.input_names[0]].astype(np.float32) * self.scale}


def fake_artifact(folder: Path, name: str, *, scale: float = 1.0, cost_us: float = 200.0) -> Artifact:
    path = folder / f"{name}.fake.json"
    path.write_text(json.dumps({"scale": scale, "cost_us": cost_us}))
    return Artifact(path=path, format="fake", inputs=[TensorSpec("x", ("batch", 4), "float32")],
                    outputs=[TensorSpec("y", ("batch", 4), "float32")])


@pytest.fixture
def fake_backend(monkeypatch):
    """Registers the fake runner for this test (RUNNERS maps a format to a dotted path)."""
    monkeypatch.setitem(RUNNERS, "fake", "tests.fakes:FakeRunner")
    return fake_artifact
