"""Tiny models built in fixtures, and helpers to drive the CLI in-process and as a subprocess."""
from __future__ import annotations

import gc
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from optkit.cli.app import app

TINY_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    class Tiny(nn.Module):
        """Conv + BatchNorm + pool + Linear on 1x8x8 inputs, 3 classes."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x)))
            x = torch.nn.functional.max_pool2d(x, 2)
            return self.fc(x.flatten(1))


    class ShapeTrap(nn.Module):
        """Exports wrongly with the TorchScript tracer: the batch size is baked in as a constant."""

        def forward(self, x):
            return x.flatten(1) * float(x.shape[0])


    class Block(nn.Module):
        """Pre-norm encoder layer with explicit attention (the form ORT's transformer optimizer fuses)."""

        def __init__(self, dim, heads):
            super().__init__()
            self.heads, self.hd = heads, dim // heads
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def _split(self, x):
            b, n, _ = x.shape
            return x.view(b, n, self.heads, self.hd).permute(0, 2, 1, 3)

        def forward(self, x):
            h = self.norm1(x)
            q, k, v = self._split(self.query(h)), self._split(self.key(h)), self._split(self.value(h))
            att = (torch.matmul(q, k.transpose(-1, -2)) / self.hd ** 0.5).softmax(-1)
            ctx = torch.matmul(att, v).permute(0, 2, 1, 3).reshape(x.shape)
            x = x + self.out(ctx)
            return x + self.mlp(self.norm2(x))


    class TinyViT(nn.Module):
        """Two encoder layers on 1x8x8 inputs: 2x2 patches, dim 16, 2 heads."""

        def __init__(self, dim=16, heads=2):
            super().__init__()
            self.embed = nn.Conv2d(1, dim, 2, stride=2)
            self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
            self.blocks = nn.Sequential(Block(dim, heads), Block(dim, heads))
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, 3)

        def forward(self, x):
            x = self.blocks(self.embed(x).flatten(2).transpose(1, 2) + self.pos)
            return self.head(self.norm(x).mean(1))


    class TinyRes(nn.Module):
        """A residual conv net on 1x8x8 inputs (stem, one block with a shortcut add, pool, fc): for prune/distill."""

        def __init__(self, width=16, classes=3):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.fc = nn.Linear(width, classes)

        def forward(self, x):
            x = self.stem(x)
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return self.fc(torch.relu(x + y).mean((2, 3)))


    def build():
        return Tiny()


    def build_res():
        return TinyRes()


    def build_res_small():
        return TinyRes(width=8)


    def build_res_wrong():
        return TinyRes(width=8, classes=4)


    def build_vit():
        torch.manual_seed(0)
        return TinyViT().eval()


    def build_trap():
        return ShapeTrap()


    def build_broken():
        raise RuntimeError("boom")
''')

FAST = ["--budget-s", "0.05"]
_TESTS = itertools.count(1)


@pytest.fixture(autouse=True)
def _long_lived_objects_frozen():
    """Measuring collects garbage first (timing, memory: a dozen times a run); in a test process that has imported
    torch and transformers, each full collection walks every long-lived object (0.2 s and more). Frozen for the
    test, they are skipped; what the test itself allocates is still collected. Every 20th test first collects in
    full, so what earlier tests left in reference cycles is freed."""
    if next(_TESTS) % 20 == 0:
        gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def _write_spec(folder: Path, name: str, factory: str, data: str) -> None:
    """optkit.yaml for a tiny model folder (1x8x8 inputs, 3 classes)."""
    (folder / "optkit.yaml").write_text(textwrap.dedent(f'''
        name: {name}
        factory: model.py:{factory}
        weights: weights.pt
        inputs: [{{name: input, shape: [batch, 1, 8, 8], dtype: float32}}]
        outputs: [{{name: logits, shape: [batch, 3], dtype: float32}}]
        data: {data}
    '''))


def _make_tiny(folder: Path) -> dict[str, Path]:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(TINY_SOURCE)
    sys.path.insert(0, str(folder))
    try:
        import importlib

        module = importlib.import_module("model")
        importlib.reload(module)
    finally:
        sys.path.remove(str(folder))
    torch.manual_seed(0)
    net = module.build().eval()
    with torch.no_grad():  # give BatchNorm non-trivial statistics
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), folder / "weights.pt")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        pred = net(torch.from_numpy(x)).argmax(1).numpy()
    labels = np.where(np.arange(24) % 4 == 0, (pred + 1) % 3, pred)  # 75% "accurate"
    np.savez(folder / "eval.npz", input=x, labels=labels)
    np.savez(folder / "calib.npz", input=rng.standard_normal((20, 1, 8, 8)).astype(np.float32))
    _write_spec(folder, "tiny", "build", "{eval: eval.npz, calib: calib.npz}")
    return {"folder": folder, "model_py": folder / "model.py", "weights": folder / "weights.pt",
            "eval": folder / "eval.npz", "calib": folder / "calib.npz"}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A sample-model folder: factory file, state_dict, eval data with labels, optkit.yaml."""
    return _make_tiny(tmp_path_factory.mktemp("tiny"))


def _make_tiny_res(folder: Path) -> dict[str, Path]:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(TINY_SOURCE)
    spec = importlib.util.spec_from_file_location("tiny_res_model", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(1)
    net = module.build_res().eval()
    torch.save(net.state_dict(), folder / "weights.pt")
    rng = np.random.default_rng(1)
    for split, n in (("train", 96), ("calib", 32), ("eval", 48)):
        x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
        with torch.no_grad():
            labels = net(torch.from_numpy(x)).argmax(1).numpy()  # the model is "right": pruning costs accuracy
        np.savez(folder / f"{split}.npz", input=x, labels=labels)
    _write_spec(folder, "tiny_res", "build_res", "{eval: eval.npz, calib: calib.npz, train: train.npz}")
    return {"folder": folder, "model_py": folder / "model.py", "weights": folder / "weights.pt",
            "train": folder / "train.npz", "eval": folder / "eval.npz", "calib": folder / "calib.npz"}


@pytest.fixture(scope="session")
def tiny_res(tmp_path_factory) -> dict[str, Path]:
    """A residual sample-model folder with train / calib / eval splits (labels = its own predictions)."""
    return _make_tiny_res(tmp_path_factory.mktemp("tiny_res"))


@pytest.fixture(scope="session")
def tiny_onnx(tiny, tmp_path_factory) -> Path:
    """The tiny model exported once (with its sidecar), for tests that start from ONNX."""
    out = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    result = invoke("export", str(tiny["folder"]), "-o", str(out), *FAST)
    assert result.exit_code == 0, result.output
    return out


def invoke(*args: str):
    """Run the CLI in-process; bugs surface as real tracebacks (catch_exceptions=False)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m optkit`` as a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("OPTKIT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "optkit", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


def sidecar(path: Path) -> dict:
    return json.loads(Path(str(path) + ".optkit.json").read_text())


@pytest.fixture(scope="session")
def outlier_onnx(tmp_path_factory) -> Path:
    """sample_models/outlier_mlp.py at width 128, exported: plain static int8 ruins it; two nodes are why."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sample_models"))
    try:
        from outlier_mlp import make
    finally:
        sys.path.pop(0)
    folder = make(tmp_path_factory.mktemp("outlier") / "outlier_mlp", width=128, epochs=30)
    out = folder.parent / "fp32.onnx"
    # the planted outliers cancel in float, but summation order differs between torch and ORT at 1e4
    result = invoke("export", str(folder), "-o", str(out), "--atol", "0.01", *FAST)
    assert result.exit_code == 0, result.output
    return out


LAST_MODULES = ("test_litert.py", "test_compile_tflite.py")


def pytest_collection_modifyitems(session, config, items):
    """The LiteRT tests run last: litert-torch imports JAX, whose threads make any later fork (some libraries fork
    workers) unsafe in this process; its own note says such a fork will likely deadlock."""
    items.sort(key=lambda item: item.path.name in LAST_MODULES)  # stable: every other test keeps its order
