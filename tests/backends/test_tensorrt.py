"""TensorRT's pure parts run everywhere; building an engine needs a GPU and skips without one."""
from __future__ import annotations

import pytest

from optkit.backends.tensorrt import builder_flags, nvidia_gpu_present, parse_shapes, profile_shapes
from optkit.types.artifact import TensorSpec
from optkit.types.errors import UsageError


def test_profile_from_dynamic_batch():
    spec = [TensorSpec("input", ("batch", 1, 32, 32))]
    assert profile_shapes(spec) == {"input": ((1, 1, 32, 32), (1, 1, 32, 32), (32, 1, 32, 32))}
    assert profile_shapes(spec, max_batch=8, opt_batch=4)["input"][1] == (4, 1, 32, 32)


def test_static_input_gets_a_fixed_profile():
    assert profile_shapes([TensorSpec("x", (4, 3))]) == {"x": ((4, 3), (4, 3), (4, 3))}


def test_explicit_shapes_and_their_errors():
    shapes = parse_shapes("input:1x1x32x32,8x1x32x32,64x1x32x32; mask:1x16,1x16,1x16")
    assert shapes["input"][2] == (64, 1, 32, 32) and shapes["mask"][0] == (1, 16)
    with pytest.raises(UsageError, match="min <= opt <= max"):
        parse_shapes("input:8x1,1x1,16x1")
    with pytest.raises(UsageError, match="bad --shapes"):
        parse_shapes("input:1x1,2x2")
    with pytest.raises(UsageError, match="dynamic dimensions besides the batch"):
        profile_shapes([TensorSpec("tokens", ("batch", "seq"))])


def test_builder_flags():
    assert builder_flags("fp32") == [] and builder_flags("fp16") == ["FP16"] and "INT8" in builder_flags("int8")
    with pytest.raises(UsageError):
        builder_flags("bf16")


@pytest.mark.skipif(not nvidia_gpu_present(), reason="TensorRT engines need an NVIDIA GPU; none on this machine")
def test_build_engine_on_gpu(tiny_onnx, tmp_path):  # pragma: no cover - runs only on GPU machines
    pytest.importorskip("tensorrt")
    from tests.conftest import invoke

    out = tmp_path / "m.engine"
    result = invoke("compile", str(tiny_onnx), "-o", str(out), "--target", "tensorrt", "--precision", "fp16",
                    "--max-accuracy-drop", "50", "--budget-s", "0.05")
    assert result.exit_code == 0, result.output
