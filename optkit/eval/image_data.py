"""Image folders as the data of a Hugging Face image classifier: read, preprocessed with the model's own
image processor, split.

``--image-data DIR``: either class sub-folders (``DIR/cat/*.jpg``, ``DIR/dog/*.png``: the folder names are the
labels, matched to the model's ``label2id`` or read as class ids) or images directly in ``DIR`` (no labels; the
metric then judges against the original model's outputs). Images are read with Pillow, converted to RGB (or L
for one-channel models) and preprocessed by the folder's ``AutoImageProcessor`` (resize, crop, rescale,
normalise exactly as the model was trained). The order is sorted by path, so the split is stable: the first
half evaluates, the second half calibrates, as for ``--text-data``; the ``.npz`` files land in ``optkit-data/``
named after the folder and a digest of every image, the processor config and the settings.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from optkit.eval.text_data import DATA_FOLDER, label_ids, split_rows, write_npz
from optkit.types.errors import UsageError
from optkit.types.files import sha256_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(folder: Path) -> tuple[list[Path], list[str] | None]:
    """(image paths sorted, class names per image or None): class sub-folders, or images directly in ``folder``."""
    if not folder.is_dir():
        raise UsageError(f"--image-data {folder}: no such folder",
                         hint="Pass a folder of images, or of class sub-folders of images")

    def images(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes:
        if images(folder):
            raise UsageError(f"--image-data {folder.name}: holds both images and class sub-folders",
                             hint="Put every image in its class's sub-folder, or use no sub-folders")
        paths, names = [], []
        for d in classes:
            found = images(d)
            paths += found
            names += [d.name] * len(found)
        if not paths:
            raise UsageError(f"--image-data {folder.name}: its sub-folders hold no images "
                             f"({', '.join(IMAGE_SUFFIXES)})", hint="Put the images in class sub-folders")
        return paths, names
    paths = images(folder)
    if not paths:
        raise UsageError(f"--image-data {folder.name} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                         hint="Pass a folder of images, or of class sub-folders of images")
    return paths, None


def preprocess(model_folder: Path, paths: list[Path], channels: int) -> np.ndarray:
    """pixel_values (N, C, H, W) float32 from the model's own image processor."""
    from optkit.types.lazy import require

    transformers = require("transformers", "preprocessing --image-data")
    image = require("PIL.Image", "reading --image-data")
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(str(model_folder), use_fast=False)
    except Exception as exc:  # no preprocessor_config.json, or one transformers cannot read
        raise UsageError(f"{model_folder.name} has no image processor transformers can load ({type(exc).__name__})",
                         hint="Save the processor into the model folder (processor.save_pretrained)") from exc
    pictures = []
    for path in paths:
        try:
            with image.open(path) as im:
                pictures.append(im.convert("L" if channels == 1 else "RGB"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--image-data: {path.name} is not an image Pillow can read ({type(exc).__name__})",
                             hint="Remove it or convert it to PNG/JPEG") from exc
    out = processor(images=pictures, return_tensors="np")["pixel_values"]
    return np.ascontiguousarray(out, dtype=np.float32)


def _digest(paths: list[Path], model_folder: Path, extra: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for p in paths:
        h.update(p.name.encode() + b"\0" + sha256_file(p).encode())
    config = model_folder / "preprocessor_config.json"
    if config.is_file():
        h.update(sha256_file(config).encode())
    return h.hexdigest()[:12]


def prepare(image_folder: Path, model_folder: Path, out_folder: Path, *, channels: int,
            label2id: dict[str, int] | None) -> dict[str, Any]:
    """Preprocess the images in ``image_folder`` into eval and calib .npz files in ``out_folder``;
    {"eval": path, "calib": path, "images": n, "labels": bool, "digest": ..., "processor": {file: sha256}}."""
    paths, names = list_images(image_folder)
    ids = label_ids(names, label2id, image_folder, option="--image-data") if names is not None else None
    pixels = preprocess(model_folder, paths, channels)
    rel = [p.relative_to(image_folder) for p in paths]
    digest = _digest(paths, model_folder, {"files": [str(r) for r in rel], "channels": channels, "version": 1})
    config = model_folder / "preprocessor_config.json"
    out: dict[str, Any] = {"images": len(paths), "labels": ids is not None, "digest": digest,
                           "source": str(image_folder.resolve()),
                           "processor": {config.name: sha256_file(config)} if config.is_file() else {}}
    for split, rows in split_rows(len(paths)).items():
        part = {"pixel_values": pixels[rows]}
        if ids is not None:
            part["labels"] = ids[rows]
        path = out_folder / DATA_FOLDER / f"{image_folder.name}-{digest}-{split}.npz"
        write_npz(path, part, "--image-data")
        out[split] = path
    return out

