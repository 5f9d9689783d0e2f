"""Task metrics and fidelity (how far one model's outputs are from another's)."""
from __future__ import annotations

import numpy as np


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.reshape(len(labels), -1).argmax(axis=1) == labels).mean())


def fidelity(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float] | None:
    """Max/mean absolute difference and per-sample cosine similarity, over every output both share.

    Outputs are matched by name, falling back to position when names differ (export may rename).
    """
    if not outputs or not reference:
        return None
    pairs = [(outputs[k], reference[k]) for k in outputs if k in reference]
    if not pairs:
        pairs = list(zip(outputs.values(), reference.values()))
    max_abs, abs_sum, count, cosines = 0.0, 0.0, 0, []
    for out, ref in pairs:
        if out.shape != ref.shape:
            return None
        a = out.reshape(len(out), -1).astype(np.float64)
        b = ref.reshape(len(ref), -1).astype(np.float64)
        diff = np.abs(a - b)
        max_abs = max(max_abs, float(diff.max(initial=0.0)))
        abs_sum, count = abs_sum + float(diff.sum()), count + diff.size
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
        cosines.append(cos)
    cos_all = np.clip(np.concatenate(cosines), -1.0, 1.0)
    return {
        "max_abs_diff": max_abs,
        "mean_abs_diff": abs_sum / max(count, 1),
        "cosine": float(cos_all.mean()),
        "min_cosine": float(cos_all.min()),
    }


def mismatch(out: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> tuple[bool, float, float]:
    """(within tolerance?, max |out-ref|, worst ratio of |out-ref| to atol + rtol*|ref|)."""
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    allowed = atol + rtol * np.abs(ref.astype(np.float64))
    ratio = float((diff / allowed).max(initial=0.0))
    return ratio <= 1.0, float(diff.max(initial=0.0)), ratio
