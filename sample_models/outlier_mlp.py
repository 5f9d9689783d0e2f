"""A model built to lose accuracy under plain static int8: the accuracy guard's test model.

A residual MLP on scikit-learn's 8x8 digits (64 inputs) is trained for a few seconds, then a few units of
its penultimate layer get a huge bias (``OUTLIER``) that the output layer's bias cancels exactly in
float. The function is unchanged, but that activation's range explodes: one per-tensor uint8 scale
for it leaves the ordinary units a handful of levels, and plain int8 falls to chance. Two nodes (the
penultimate Gemm, whose output is quantized, and the output Gemm that reads it) are the whole problem,
out of ~25 quantized nodes: what ``quantize --max-drop`` must find.

    python sample_models/outlier_mlp.py OUT_FOLDER [--width 256]   # ~10 s; writes a model folder

The folder is a valid MODEL argument (optkit.yaml, model.py factory, weights.pt, eval/calib splits).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUTLIER = 20000.0
OUTLIER_UNITS = 4
DEPTH = 6


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class OutlierMLP(nn.Module):
    def __init__(self, width: int = 256, depth: int = DEPTH) -> None:
        super().__init__()
        self.inp = nn.Linear(64, width)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.pre = nn.Linear(width, width)
        self.out = nn.Linear(width, 10)

    def forward(self, x):
        return self.out(self.pre(self.blocks(torch.relu(self.inp(x)))))


def build(width: int = 256) -> OutlierMLP:
    return OutlierMLP(width).eval()


def make(folder: Path, width: int = 256, epochs: int = 40, seed: int = 0) -> Path:
    """Train, plant the outliers, and write the model folder; returns it."""
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend (and 2-core CI machines run tests in parallel)
    rng = np.random.default_rng(seed)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = rng.permutation(len(x))
    ev, cal, tr = order[:360], order[360:560], order[560:]
    net = OutlierMLP(width)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        perm = torch.from_numpy(rng.permutation(tr))
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    net.eval()
    with torch.no_grad():  # same function in float, an exploding activation range for int8
        units = list(range(OUTLIER_UNITS))
        net.pre.bias[units] += OUTLIER
        net.out.bias -= net.out.weight[:, units].sum(1) * OUTLIER
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "weights.pt")
    shutil.copyfile(__file__, folder / "model.py")
    np.savez(folder / "eval.npz", input=x[ev], labels=y[ev])
    np.savez(folder / "calib.npz", input=x[cal], labels=y[cal])
    (folder / "optkit.yaml").write_text(
        f"name: outlier_mlp\nfactory: model.py:build_{width}\nweights: weights.pt\n"
        "inputs:\n  - {name: input, shape: [batch, 64], dtype: float32}\n"
        "outputs:\n  - {name: logits, shape: [batch, 10], dtype: float32}\n"
        "task: classification\ndata: {eval: eval.npz, calib: calib.npz}\n")
    return folder


def build_256() -> OutlierMLP:
    return build(256)


def build_128() -> OutlierMLP:
    return build(128)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--width", type=int, default=256, choices=(128, 256))
    args = parser.parse_args()
    print(make(args.folder, args.width))
