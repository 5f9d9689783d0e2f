"""Task metrics and fidelity (how far one model's outputs are from another's), and the degenerate-output
detector every verdict calls first: a check that cannot fail is a bug."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from optkit.types.records import Fidelity, OutputStats

CONSTANT_SPREAD = 1e-6  # an output whose spread across samples is below this share of the reference's is constant
_CHUNK = 1 << 22  # elements per float64 block (32 MB): large outputs are compared a few samples at a time


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.reshape(len(labels), -1).argmax(axis=1) == labels).mean())


def pairs(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, output, reference) for every output both share: by name, else by position (export may rename)."""
    matched = [(k, outputs[k], reference[k]) for k in outputs if k in reference]
    return matched or [(k, out, ref) for (k, out), ref in zip(outputs.items(), reference.values())]


def fidelity(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> Fidelity | None:
    """Max/mean absolute difference and per-sample cosine similarity, over every output both share.

    Outputs are matched by name, falling back to position when names differ (export may rename). A sample's
    cosine is 1 only when both sides point the same way, or both are all zero; an all-zero side against a
    non-zero one is 0 (it carries nothing of the other). A sample with a NaN or infinity on either side has
    cosine 0 and an infinite difference, unless both sides are the same there, NaN for NaN.
    """
    if not outputs or not reference:
        return None
    max_abs, abs_sum, count, cosines = 0.0, 0.0, 0, []
    for _, out, ref in pairs(outputs, reference):
        if out.shape != ref.shape:
            return None
        flat_out, flat_ref = out.reshape(len(out), -1), ref.reshape(len(ref), -1)
        step = max(1, _CHUNK // max(1, flat_out.shape[1]))  # float64 copies of a few samples at a time
        for start in range(0, len(flat_out), step):
            a = flat_out[start:start + step].astype(np.float64)
            b = flat_ref[start:start + step].astype(np.float64)
            diff, same = _difference(a, b)
            max_abs = max(max_abs, float(diff.max(initial=0.0)))
            abs_sum, count = abs_sum + float(diff.sum()), count + diff.size
            cosines.append(_cosines(a, b, same))
    cos_all = np.clip(np.concatenate(cosines), -1.0, 1.0) if cosines else np.ones(1)
    return Fidelity(max_abs_diff=max_abs, mean_abs_diff=abs_sum / max(count, 1), cosine=float(cos_all.mean()),
                    min_cosine=float(cos_all.min()))


def _difference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|a - b|, where a == b). Equal values (NaN for NaN, inf for inf) differ by 0; a NaN or infinity against
    anything else differs by inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        diff = np.where(same, 0.0, np.abs(a - b))
    diff[~np.isfinite(diff)] = np.inf  # NaN against a number: as far apart as it gets
    return diff, same


def _cosines(a: np.ndarray, b: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Per-sample cosine of rows: 1 for two all-zero rows, 0 for an all-zero row against a non-zero one, and for
    a row with a NaN or infinity 1 only when both rows are the same (``same``: where their elements are equal)."""
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        both = finite & (na > 0) & (nb > 0)
        cos = np.where(both, (a * b).sum(axis=1) / np.where(both, na * nb, 1.0),
                       np.where((na == 0) & (nb == 0), 1.0, 0.0))
    return np.where(finite, cos, np.all(same, axis=1).astype(np.float64))


def _nonfinite_kind(arr: np.ndarray) -> str:
    nan, inf = bool(np.isnan(arr).any()), bool(np.isinf(arr).any())
    return "NaN or infinite" if nan and inf else "NaN" if nan else "infinite"


def _per_sample(arr: np.ndarray) -> np.ndarray:
    flat = arr.reshape(len(arr), -1) if arr.ndim else arr.reshape(1, -1)
    return flat.view(np.uint8) if flat.dtype == np.bool_ else flat


def _spread(flat: np.ndarray) -> float:
    """The largest range, over the elements, of their values across samples (0: every sample the same)."""
    if len(flat) < 2 or flat.shape[1] == 0:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.nanmax((flat.max(axis=0).astype(np.float64) - flat.min(axis=0).astype(np.float64)),
                               initial=0.0))


def nonfinite_samples(arr: np.ndarray) -> np.ndarray:
    """Which samples of an output hold a NaN or an infinity (all False for integer outputs)."""
    flat = _per_sample(arr)
    if flat.dtype.kind not in "fc":
        return np.zeros(len(flat), dtype=bool)
    return ~np.isfinite(flat).all(axis=1)


def degenerate(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray] | None = None,
               reference_name: str = "the reference's") -> str | None:
    """Why ``outputs`` carry no answer where ``reference`` does, or None: the first of these, output by output:

    - non-finite: NaN or infinity on some sample where the reference's same sample is finite (without a
      reference: on any sample; the model as given is judged alone);
    - all zero: every value exactly 0 where the reference has a non-zero one;
    - constant: every sample gives the same output (its spread across samples is below a millionth of the
      reference's) where the reference's varies.

    Outputs are matched to the reference's as ``fidelity`` matches them; ``reference_name`` names the reference's
    output in the reason ("the input's"). A reference that is itself constant or all zero (a tiny model on a few
    samples) makes the same in ``outputs`` no fault: only the candidate that lost what its reference had is
    degenerate."""
    if not outputs:
        return None
    if reference is None:
        for name, out in outputs.items():
            bad = nonfinite_samples(out)
            if bad.any():
                return (f"output '{name}' is {_nonfinite_kind(out)} on {int(bad.sum())} of {len(bad)} "
                        f"sample{'s' if len(bad) != 1 else ''}")
        return None
    for name, out, ref in pairs(outputs, reference):
        n = len(out) if out.ndim else 1
        bad, ref_bad = nonfinite_samples(out), nonfinite_samples(ref)
        if ref_bad.shape == bad.shape:
            bad = bad & ~ref_bad
        if bad.any():
            return (f"output '{name}' is {_nonfinite_kind(out)} on {int(bad.sum())} of {n} sample{'s' if n != 1 else ''} "
                    f"where {reference_name} is finite")
        if out.size and not np.count_nonzero(out) and np.count_nonzero(ref):
            return f"output '{name}' is all zero on {'all ' if n > 1 else ''}{n} sample{'s' if n != 1 else ''} where {reference_name} is not"
        if n >= 2 and out.ndim and ref.ndim and len(ref) == n:
            ref_spread = _spread(_per_sample(ref))
            if ref_spread > 0 and _spread(_per_sample(out)) <= CONSTANT_SPREAD * ref_spread:
                return f"output '{name}' is the same on all {n} samples where {reference_name} varies"
    return None


def output_stats(outputs: dict[str, np.ndarray]) -> list[OutputStats]:
    """Per output, as Polygraphy prints them: mean, std, min, max over every finite value, and how many samples
    hold a NaN or infinity; a collapsed output (std 0, min = max = 0) shows in the ledger. Only the figures an
    output has are set (a string output has none; one without finite values no moments)."""
    stats = []
    for name, out in outputs.items():
        flat = _per_sample(out)
        shape = [int(d) for d in out.shape]
        if flat.dtype.kind in "biuf" and flat.size:
            stats.append(OutputStats(name=name, shape=shape, **_moments(flat),
                                     nonfinite_samples=int(nonfinite_samples(out).sum())))
        else:
            stats.append(OutputStats(name=name, shape=shape))
    return stats


def _blocks(flat: np.ndarray) -> Iterator[np.ndarray]:
    """The finite values of ``flat`` (samples x elements) as float64, a few samples at a time."""
    step = max(1, _CHUNK // max(1, flat.shape[1]))
    for start in range(0, len(flat), step):
        block = flat[start:start + step].astype(np.float64).ravel()
        yield block[np.isfinite(block)]


def _moments(flat: np.ndarray) -> dict[str, float]:
    """Mean, std (two passes: a constant output has std exactly 0), min and max of the finite values."""
    count, total, lo, hi = 0, 0.0, np.inf, -np.inf
    for block in _blocks(flat):
        if block.size:
            count, total = count + block.size, total + float(block.sum())
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    if not count:
        return {}
    mean = total / count
    if lo == hi:  # one value: no rounding in the mean may show as spread
        return {"mean": lo, "std": 0.0, "min": lo, "max": hi}
    squares = sum(float(((block - mean) ** 2).sum()) for block in _blocks(flat))
    return {"mean": mean, "std": (squares / count) ** 0.5, "min": lo, "max": hi}


def mismatch(out: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> tuple[bool, float, float]:
    """(within tolerance?, max |out-ref|, worst ratio of |out-ref| to what is allowed): elementwise
    ``|out - ref| <= atol * min(1, scale) + rtol * |ref|``, where ``scale`` is the output's largest finite |ref|.

    ``atol`` is an absolute tolerance for outputs of unit scale or more; below it, it shrinks with the output's
    scale, so a check on outputs far below the tolerance still compares them (a random-weight model's 1e-9
    logits against all zeros fails, where a plain ``atol 1e-4`` passes anything under 1e-4 and checks nothing).
    A reference that is exactly zero everywhere keeps ``atol``. A NaN or infinity that the reference does not
    have at the same place fails."""
    a, b = out.astype(np.float64), ref.astype(np.float64)
    size = np.abs(np.where(np.isfinite(b), b, 0.0))
    scale = float(size.max(initial=0.0))
    allowed = (atol * min(1.0, scale) if scale > 0 else atol) + rtol * size
    diff, _ = _difference(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_each = np.where(diff == 0, 0.0, diff / allowed)  # x/0 is inf: any difference fails a zero tolerance
    ratio = float(ratio_each.max(initial=0.0))
    return ratio <= 1.0, float(diff.max(initial=0.0)), ratio
