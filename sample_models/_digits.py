"""Shared data preparation and training loop for the bundled sample models.

The digits come from scikit-learn's bundled ``load_digits`` (8x8, 16 grey levels), so nothing is
downloaded. Images are upsampled to 32x32 with bilinear interpolation and scaled to [-1, 1].
Splits are stratified and seeded: ``train`` (used for training), ``calib`` (held out from training,
for quantization calibration) and ``eval`` (held out, for every accuracy figure optkit prints).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SEED = 0
EVAL_SIZE = 360
CALIB_SIZE = 200
INPUT_NAME = "input"


def seed_everything(seed: int = SEED) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)


def digits_splits(seed: int = SEED) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return {"train"|"calib"|"eval": (images float32 [N,1,32,32], labels int64 [N])}."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    with torch.no_grad():
        big = F.interpolate(torch.from_numpy(images)[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    images = ((big.numpy() - 0.5) / 0.5).astype(np.float32)

    rest_x, eval_x, rest_y, eval_y = train_test_split(
        images, labels, test_size=EVAL_SIZE, stratify=labels, random_state=seed)
    train_x, calib_x, train_y, calib_y = train_test_split(
        rest_x, rest_y, test_size=CALIB_SIZE, stratify=rest_y, random_state=seed)
    return {"train": (train_x, train_y), "calib": (calib_x, calib_y), "eval": (eval_x, eval_y)}


def save_splits(folder: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``<split>.npz`` with the model input array and ``labels``.

    The training split is stored as float16 to keep the folder small; optkit casts arrays to the
    model's input dtype when it reads them.
    """
    for name, (x, y) in splits.items():
        stored = x.astype(np.float16) if name == "train" else x
        np.savez_compressed(folder / f"{name}.npz", **{INPUT_NAME: stored, "labels": y})


def augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (zero-padded with the background value)."""
    n = x.shape[0]
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    for i in range(n):
        out[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    logits = torch.cat([model(torch.from_numpy(x[i:i + 128])) for i in range(0, len(x), 128)])
    return float((logits.argmax(1).numpy() == y).mean())


def train(model: torch.nn.Module, splits, *, epochs: int, lr: float, weight_decay: float,
          batch_size: int = 64, warmup_epochs: int = 1, label_smoothing: float = 0.0) -> float:
    """AdamW with linear warm-up then cosine decay; returns top-1 on the eval split."""
    train_x, train_y = (torch.from_numpy(a) for a in splits["train"])
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    total, warm = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    for epoch in range(epochs):
        model.train()
        start, seen, loss_sum = time.perf_counter(), 0, 0.0
        for idx in torch.randperm(len(train_x), generator=gen).split(batch_size):
            xb, yb = augment(train_x[idx], gen), train_y[idx]
            loss = F.cross_entropy(model(xb), yb, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss) * len(idx)
            seen += len(idx)
        acc = accuracy(model, *splits["eval"])
        print(f"epoch {epoch + 1:3d}/{epochs}  loss {loss_sum / seen:.4f}  eval top-1 {acc:.4f}  "
              f"({time.perf_counter() - start:.1f}s)", flush=True)
    return accuracy(model, *splits["eval"])
