"""Every bad input: one clear line on stderr, the right exit code, no traceback, no output file."""
from __future__ import annotations

import pytest

import torch

from tests.conftest import FAST, run_cli


def _assert_clean_failure(proc, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def _assert_nothing_written(folder) -> None:
    assert not folder.exists() or list(folder.iterdir()) == []


def test_missing_file(tmp_path):
    out = tmp_path / "out" / "m.onnx"
    proc = run_cli("export", str(tmp_path / "nope.pt2"), "-o", str(out))
    _assert_clean_failure(proc, 2, "no such file")
    _assert_nothing_written(out.parent)


def test_file_that_is_not_a_model(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    out = tmp_path / "out" / "m.onnx"
    proc = run_cli("export", str(bogus), "-o", str(out))
    _assert_clean_failure(proc, 2, "not a model")
    _assert_nothing_written(out.parent)


def test_truncated_onnx(tiny_onnx, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(tiny_onnx.read_bytes()[:700])
    for cmd in (["profile", str(broken)], ["report", str(broken)]):
        proc = run_cli(*cmd, *FAST[:0])
        _assert_clean_failure(proc, 2, "broken.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not really onnx at all")
    _assert_clean_failure(run_cli("profile", str(garbage)), 2, "garbage.onnx")


def test_input_shape_that_does_not_fit(tiny, tmp_path):
    out = tmp_path / "out" / "m.onnx"
    proc = run_cli("export", f"{tiny['model_py']}:build", "--weights", str(tiny["weights"]),
                   "--input-shape", "input:1x3x8x8", "-o", str(out))
    _assert_clean_failure(proc, 2, "does not fit")
    _assert_nothing_written(out.parent)


def test_eval_data_that_does_not_fit(tiny, tmp_path):
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 1, 9, 9), np.float32))
    out = tmp_path / "out" / "m.onnx"
    proc = run_cli("export", str(tiny["folder"]), "--eval-data", str(bad), "-o", str(out))
    _assert_clean_failure(proc, 2, "9x9")
    _assert_nothing_written(out.parent)


def test_factory_that_fails_to_import(tmp_path):
    broken = tmp_path / "broken_model.py"
    broken.write_text("import not_a_real_module_xyz\n")
    out = tmp_path / "out" / "m.onnx"
    proc = run_cli("export", f"{broken}:build", "--input-shape", "input:1x1x8x8", "-o", str(out))
    _assert_clean_failure(proc, 2, "cannot import factory", "not_a_real_module_xyz")
    _assert_nothing_written(out.parent)
    proc = run_cli("export", "not_a_pkg_xyz.models:build", "--input-shape", "input:1x1x8x8", "-o", str(out))
    _assert_clean_failure(proc, 2, "cannot import factory")


def test_factory_that_raises(tiny, tmp_path):
    proc = run_cli("export", f"{tiny['model_py']}:build_broken", "--input-shape", "input:1x1x8x8",
                   "-o", str(tmp_path / "m.onnx"))
    _assert_clean_failure(proc, 2, "failed", "boom")


def test_full_pickle_checkpoint_is_refused(tiny, tmp_path):
    pickled = tmp_path / "full.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)), pickled)  # a whole module: a real pickle
    out = tmp_path / "out" / "m.onnx"
    _assert_clean_failure(run_cli("export", str(pickled), "-o", str(out)), 2, "pickle")
    proc = run_cli("export", f"{tiny['model_py']}:build", "--weights", str(pickled),
                   "--eval-data", str(tiny["eval"]), "-o", str(out))
    _assert_clean_failure(proc, 2, "pickle", "weights_only")
    _assert_nothing_written(out.parent)


def test_weights_for_another_architecture(tiny, tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, other)
    proc = run_cli("export", f"{tiny['model_py']}:build", "--weights", str(other),
                   "--eval-data", str(tiny["eval"]), "-o", str(tmp_path / "m.onnx"))
    _assert_clean_failure(proc, 2, "do not fit")


@pytest.mark.slow
def test_numeric_mismatch_fails_the_step_and_writes_nothing(tiny, tmp_path):
    out = tmp_path / "out" / "trap.onnx"
    proc = run_cli("export", f"{tiny['model_py']}:build_trap", "--exporter", "torchscript",
                   "--eval-data", str(tiny["eval"]), "-o", str(out))
    _assert_clean_failure(proc, 1, "ONNX output")
    _assert_nothing_written(out.parent)


@pytest.mark.slow
def test_bad_option_values(tiny, tmp_path):
    out = str(tmp_path / "m.onnx")
    _assert_clean_failure(run_cli("export", str(tiny["folder"]), "-o", out, "--input-shape", "input=1x1"), 2, "--input-shape")
    _assert_clean_failure(run_cli("profile", str(tiny["folder"]), "--batch-sizes", "1,zero"), 2, "--batch-sizes")
    _assert_clean_failure(run_cli("export", str(tiny["folder"]), "-o", out, "--exporter", "magic"), 2, "exporter")
    _assert_clean_failure(run_cli("export", str(tiny["folder"]), "-o", out, "--opset", "13", "--exporter", "dynamo"), 2, "opset")


def test_report_without_sidecar(tiny_onnx, tmp_path):
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(tiny_onnx.read_bytes())
    _assert_clean_failure(run_cli("report", str(bare)), 2, "no optkit sidecar")
