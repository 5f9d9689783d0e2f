"""Train a bundled sample model and write its weights and data splits into its folder.

    python sample_models/train.py digits_cnn
    python sample_models/train.py digits_vit

Deterministic: seeded data splits, seeded initialisation and augmentation, deterministic torch
algorithms. Writes ``weights.pt`` (a plain state_dict, loadable with ``weights_only=True``) and
``train.npz`` / ``calib.npz`` / ``eval.npz`` (arrays named after the model input, plus ``labels``).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _digits  # noqa: E402

RECIPES = {
    "digits_cnn": dict(epochs=12, lr=3e-3, weight_decay=5e-4),
    "digits_vit": dict(epochs=80, lr=1e-3, weight_decay=0.05, warmup_epochs=5, label_smoothing=0.1),
}


def load_factory(folder: Path):
    spec = importlib.util.spec_from_file_location(f"{folder.name}_model", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(RECIPES))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    _digits.seed_everything()
    folder = HERE / args.model
    splits = _digits.digits_splits()
    model = load_factory(folder)()
    acc = _digits.train(model, splits, **RECIPES[args.model])
    model.eval()
    torch.save(model.state_dict(), folder / "weights.pt")
    _digits.save_splits(folder, splits)
    print(f"{args.model}: eval top-1 {acc:.4f}; wrote {folder / 'weights.pt'}")


if __name__ == "__main__":
    main()
