from __future__ import annotations

import numpy as np
import pytest

from optkit.backends import open_runner, runner_class
from optkit.backends.opening import open_artifact
from optkit.types.errors import UsageError


def test_torch_and_onnxruntime_runners_agree(tiny, tiny_onnx):
    x = {"input": np.load(tiny["eval"])["input"][:6]}
    with open_runner(open_artifact(tiny["folder"])) as torch_runner, open_runner(open_artifact(tiny_onnx)) as ort_runner:
        a, b = torch_runner.infer(x), ort_runner.infer(x)
    assert list(a) == list(b) == ["logits"]
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-5)


def test_unknown_format():
    with pytest.raises(UsageError, match="no backend"):
        runner_class("coreml")
