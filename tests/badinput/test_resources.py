"""Inputs that would exhaust memory or the stack: refused before the allocation, one error line, exit 2.

Batch sizes whose memory an estimate from smaller batches puts beyond the available memory, a model whose fixed
batch dimension is 2**40, .npz archives whose headers declare more than they hold or than optkit loads, recipes and
model specs that are too big or nested too deep. Nothing here allocates more than a few hundred MB: the available
memory is lowered (monkeypatched) where a real machine's would make the case slow, and absurd sizes are only
ever declared, never written.
"""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.badinput.helpers import check_case

B = "--budget-s", "0.05"


def _low_memory(monkeypatch, nbytes: int) -> None:
    """The machine has ``nbytes`` available, as far as optkit can tell."""
    from optkit.eval import data

    monkeypatch.setattr(data, "available_memory", lambda: nbytes)


@pytest.fixture
def high_water_mark():
    """The estimate measures the process's resident high-water mark (Linux, /proc/self/clear_refs writable)."""
    from optkit.eval.memory import PeakMemory

    with PeakMemory(collect=False) as probe:
        pass
    if probe.peak_mb is None:
        pytest.skip("no resettable resident-memory high-water mark here")


def _npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def huge_npz(tiny, tmp_path_factory) -> dict[str, Path]:
    """Archives whose headers declare what their members do not hold (a few hundred bytes each)."""
    d = tmp_path_factory.mktemp("huge_npz")
    with np.load(tiny["eval"]) as ev:
        x, labels = ev["input"], ev["labels"]
    lab = _npy(labels)
    return {
        # 8 GiB declared (2**21 samples of 1x32x32 float32) in a 37-byte member: over the 4 GiB cap
        "declares_8gib": _zip(d / "declares_8gib.npz", {"input.npy": _npy_header((2**21, 1, 32, 32)) + b"\0" * 37,
                                                        "labels.npy": lab}),
        # 16 TiB declared
        "declares_16tib": _zip(d / "declares_16tib.npz", {"input.npy": _npy_header((2**36, 1, 8, 8)) + b"\0" * 64,
                                                          "labels.npy": lab}),
        # the right shape for the tiny model, but 100 of its 6,144 bytes
        "short_member": _zip(d / "short_member.npz", {"input.npy": _npy_header(x.shape) + b"\0" * 100,
                                                      "labels.npy": lab}),
        # a member numpy would hand back as bytes, not as an array
        "not_npy_member": _zip(d / "not_npy_member.npz", {"input.npy": _npy(x), "labels.npy": lab,
                                                          "notes.txt": b"hello"}),
        # honest, loadable in a real machine's memory, but not in 8 KiB
        "honest": _zip(d / "honest.npz", {"input.npy": _npy(x), "labels.npy": lab}),
    }


@pytest.fixture(scope="module")
def fixed_2e40_onnx(tiny_onnx, tmp_path_factory) -> Path:
    """tiny.onnx with its batch dimension fixed at 2**40."""
    import onnx

    model = onnx.load(str(tiny_onnx))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 2**40
    out = tmp_path_factory.mktemp("fixed_2e40") / "batch_2e40.onnx"
    onnx.save(model, str(out))
    return out


# ----------------------------------------------------------------------------------------- .npz headers

@pytest.mark.parametrize("key,needles", [
    pytest.param("declares_8gib", ("declares_8gib.npz", "'input'", "8.0 GiB"), id="npz-declares-8gib"),
    pytest.param("declares_16tib", ("declares_16tib.npz", "'input'", "16.0 TiB"), id="npz-declares-16tib"),
    pytest.param("short_member", ("short_member.npz", "'input'", "holds 100 bytes"), id="npz-member-shorter-than-declared"),
    pytest.param("not_npy_member", ("not_npy_member.npz", "notes.txt"), id="npz-member-not-npy"),
])
def test_npz_refused_from_its_headers(huge_npz, tiny_onnx, tmp_path, key, needles):
    check_case(["profile", tiny_onnx, "--eval-data", huge_npz[key], *B], 2, needles, tmp_path=tmp_path, timeout=30)


def test_npz_beyond_half_the_available_memory(huge_npz, tiny_onnx, tmp_path, monkeypatch):
    _low_memory(monkeypatch, 8 << 10)  # half of 8 KiB cannot hold the 6 KiB input and the labels
    check_case(["profile", tiny_onnx, "--eval-data", huge_npz["honest"], *B], 2,
               ("honest.npz", "'input'", "memory available"), tmp_path=tmp_path, timeout=30)


# -------------------------------------------------------------------------------------- batch memory

@pytest.mark.usefixtures("high_water_mark")
def test_batch_beyond_the_memory_estimate_is_refused_before_timing(tiny_onnx, tmp_path, monkeypatch):
    """65536 is inside the documented bound; the tiny model needs ~0.3 GiB there: over half of 48 MiB. The inputs
    alone (16 MiB) fit, so only the estimate from smaller batches can refuse it."""
    _low_memory(monkeypatch, 48 << 20)
    check_case(["profile", tiny_onnx, "--batch-sizes", "1,65536", *B], 2, ("65,536", "48 MiB available"),
               tmp_path=tmp_path, timeout=60)


@pytest.mark.usefixtures("high_water_mark")
def test_batch_beyond_the_memory_estimate_in_a_recipe(tiny_onnx, tmp_path, monkeypatch):
    _low_memory(monkeypatch, 48 << 20)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {tiny_onnx}\noutput_dir: out\nmeasure: {{batch_sizes: [65536], budget_s: 0.05}}\n"
                      "steps:\n  - simplify\n")
    check_case(["run", recipe], 2, ("65,536", "memory"), tmp_path=tmp_path, watch=[tiny_onnx.parent], timeout=60)


@pytest.mark.usefixtures("high_water_mark")
def test_side_by_side_timing_beyond_the_memory_estimate(tiny_onnx, tmp_path, monkeypatch):
    _low_memory(monkeypatch, 48 << 20)
    check_case(["compare", tiny_onnx, tiny_onnx, "--batch-sizes", "65536", *B], 2, ("65,536", "side by side"),
               tmp_path=tmp_path, timeout=60)


def test_a_fixed_batch_of_2e40_is_refused_before_allocating(fixed_2e40_onnx, tmp_path):
    check_case(["simplify", fixed_2e40_onnx, "-o", tmp_path / "out" / "m.onnx", *B], 2, ("1,099,511,627,776",),
               tmp_path=tmp_path, timeout=30)


def test_an_input_shape_of_2e40_is_refused_before_allocating(tiny, tmp_path):
    check_case(["export", tiny["folder"], "-o", tmp_path / "out" / "m.onnx",
                "--input-shape", "input:1099511627776x1x8x8", *B], 2, ("1099511627776x1x8x8",),
               tmp_path=tmp_path, watch=[tiny["folder"]], timeout=30)


@pytest.mark.usefixtures("high_water_mark")
def test_the_estimate_extrapolates_from_small_batches():
    """A fake model that holds 64 KiB per sample: refused at 4096 with 64 MiB available (needs 256 MiB), after
    running batches of at most a quarter of that; accepted at 256 (16 MiB) after batches of at most half of it."""
    from optkit.eval.memory import check_batch_memory
    from optkit.types.errors import UsageError

    ran: list[int] = []

    def run_at(size: int) -> None:
        ran.append(size)
        block = np.ones(size * 16384, np.float32)  # 64 KiB a sample, touched
        assert block.sum() > 0

    with pytest.raises(UsageError, match="4,096") as info:
        check_batch_memory(run_at, 4096, "the fake model", available=64 << 20)
    assert "64 MiB available" in info.value.message
    assert ran and max(ran) <= 1024, ran
    ran.clear()
    check_batch_memory(run_at, 256, "the fake model", available=64 << 20)
    assert ran and max(ran) <= 128, ran


def test_a_nested_estimate_keeps_the_outer_peak():
    from optkit.eval.memory import PeakMemory

    with PeakMemory() as outer:
        block = np.ones(32 << 18, np.float32)  # 32 MiB, touched, then freed
        assert block.sum() > 0
        del block
        with PeakMemory():
            pass
    if outer.peak_mb is not None:  # Linux
        assert outer.peak_mb >= 24, outer.peak_mb


# --------------------------------------------------------------------------------- recipes and specs

def _recipe(tmp_path: Path, tiny, extra: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"model: {tiny['folder']}\noutput_dir: out\nsteps:\n  - export\n{extra}")
    return path


LAUGHS = "lol0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))


@pytest.mark.parametrize("extra,needles", [
    pytest.param("serve: " + "[" * 100_000 + "]" * 100_000 + "\n", ("recipe.yaml", "nested"), id="yaml-nested-100000"),
    pytest.param("serve: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", ("recipe.yaml", "nested"), id="yaml-mappings-5000"),
    pytest.param(LAUGHS, ("recipe.yaml", "1,000,000 values"), id="yaml-billion-laughs"),
    pytest.param("# " + "x" * (1 << 20) + "\n", ("recipe.yaml", "1 MiB"), id="recipe-over-1mib"),
])
def test_recipe_too_big_or_too_deep(tiny, tmp_path, extra, needles):
    check_case(["run", _recipe(tmp_path, tiny, extra)], 2, needles, tmp_path=tmp_path, watch=[tiny["folder"]],
               timeout=30)


def test_model_spec_over_1mib(tiny, tmp_path):
    folder = tmp_path / "big_spec"
    shutil.copytree(tiny["folder"], folder, ignore=shutil.ignore_patterns("__pycache__"))
    spec = folder / "optkit.yaml"
    spec.write_text(spec.read_text() + "# " + "x" * (1 << 20) + "\n")
    check_case(["profile", folder, *B], 2, ("optkit.yaml", "1 MiB"), tmp_path=tmp_path, timeout=30)


def test_model_spec_nested_too_deep(tiny, tmp_path):
    folder = tmp_path / "deep_spec"
    shutil.copytree(tiny["folder"], folder, ignore=shutil.ignore_patterns("__pycache__"))
    spec = folder / "optkit.yaml"
    spec.write_text(spec.read_text() + "structure: " + "[" * 50_000 + "]" * 50_000 + "\n")
    check_case(["profile", folder, *B], 2, ("optkit.yaml", "nested"), tmp_path=tmp_path, timeout=30)


def test_serve_config_nested_too_deep(tiny_onnx, tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("serve: " + "[" * 100_000 + "]" * 100_000 + "\n")
    check_case(["serve", tiny_onnx, "--config", config], 2, ("serve.yaml", "nested"), tmp_path=tmp_path, timeout=30)
