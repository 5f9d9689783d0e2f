"""The task metric: what "accuracy" means for a model, chosen by the user.

``--metric NAME`` (every measuring command) or ``metric: NAME`` (recipes). Built-ins:

================== ==================================================================== =========
top1               share of samples whose argmax of the first output equals the label    needs labels
cosine             mean per-sample cosine of every output vs the reference model's       reference
max_abs            max |output - reference| (lower is better, raw units)                 reference
ctc_string_match   share of samples whose greedy CTC decode of the first output          reference
                   ([batch, time, classes]) equals the reference's; ``ctc_string_match:B``
                   sets the blank index B (default 0)
mask_iou           mean IoU of the first output thresholded (default 0.5;                 reference
                   ``mask_iou:T``) vs the reference's thresholded map
================== ==================================================================== =========

A plugin is ``path/to/file.py:fn`` with ``fn(outputs, batch) -> {name: value}``: ``outputs`` maps output
names to arrays over every evaluation sample, ``batch`` is ``{"inputs": {...}, "labels": array or None,
"reference": outputs of the reference model or None}``. The first name is the one judged; the others are
recorded. Values are higher-is-better fractions unless the function says otherwise with attributes
``fn.higher_is_better = False`` and/or ``fn.points = False`` (not a fraction: budgets in raw units).

The reference is the original model in the ledger, and a step's input inside the step's own check
(quantize, compile, the accuracy guard, NNCF accuracy control). Drops are in points (x100) for fractions.
Without ``--metric``: top1 for a classifier with labels, else no task metric (cosine judges, ``--min-cosine``).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from optkit.types.errors import UsageError, first_line
from optkit.types.records import Accuracy, Fidelity

DEFAULT_MIN_COSINE = 0.99


@dataclass(frozen=True)
class Metric:
    spec: str                                   # as given: "top1", "mask_iou:0.3", "/abs/metric.py:fn"
    fn: Callable[[dict, dict], dict]            # (outputs, batch) -> {name: value}
    higher_is_better: bool = True
    points: bool = True                         # values are fractions: drops shown and budgeted in points (x100)
    needs_labels: bool = False
    digest: str = ""                            # a plugin's source sha256 (cache keys change when it does)

    @property
    def unit(self) -> str:
        return "pt" if self.points else ""

    def evaluate(self, outputs: dict[str, np.ndarray], inputs: dict[str, np.ndarray], labels: np.ndarray | None,
                 reference: dict[str, np.ndarray] | None) -> Accuracy | None:
        """The first value the metric returns, with every value it returned (``values``); None when it cannot be
        judged (no labels for a labelled metric, no reference outputs for a reference metric)."""
        if not outputs or (self.needs_labels and labels is None):
            return None
        try:
            values = self.fn(outputs, {"inputs": inputs, "labels": labels, "reference": reference})
        except _NoReference:
            return None
        except UsageError:
            raise
        except Exception as exc:  # a user's plugin can raise anything
            raise UsageError(f"metric '{self.spec}' failed: {first_line(exc, 200)}",
                             hint="Fix the metric function (it gets outputs and a batch dict, returns {name: value})") from exc
        if not isinstance(values, dict) or not values or not all(
                isinstance(k, str) and isinstance(v, (int, float, np.number)) and math.isfinite(float(v))
                for k, v in values.items()):
            raise UsageError(f"metric '{self.spec}' returned {type(values).__name__} {str(values)[:80]}",
                             hint="Return a non-empty dict of name -> finite number, e.g. {'f1': 0.93}")
        name, value = next(iter(values.items()))
        return Accuracy(metric=name, value=float(value), samples=len(next(iter(outputs.values()))),
                        higher_is_better=self.higher_is_better, points=self.points,
                        values={k: float(v) for k, v in values.items()})

    def drop(self, before: float, after: float) -> float:
        """How much worse ``after`` is than ``before`` (points for fractions; negative: better)."""
        diff = (before - after) if self.higher_is_better else (after - before)
        return 100 * diff if self.points else diff


class _NoReference(Exception):
    pass


# ----------------------------------------------------------------------------- built-ins

def _first(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(outputs.values()))


def _reference(batch: dict) -> dict[str, np.ndarray]:
    ref = batch.get("reference")
    if ref is None:
        raise _NoReference
    return ref


def _top1(outputs: dict, batch: dict) -> dict:
    from optkit.eval.data import check_labels_fit
    from optkit.eval.metrics import top1

    logits = _first(outputs)
    labels = batch["labels"]
    check_labels_fit(labels, int(logits.reshape(len(logits), -1).shape[1]), "the evaluation data")
    return {"top1": top1(logits, labels)}


def _fidelity(name: str, outputs: dict, batch: dict) -> Fidelity:
    from optkit.eval.metrics import fidelity

    fid = fidelity(outputs, _reference(batch))
    if fid is None:
        raise UsageError(f"metric '{name}': the outputs do not match the reference model's in shape",
                         hint="Pick a metric that compares what the model produces, or a plugin")
    return fid


def _cosine(outputs: dict, batch: dict) -> dict:
    fid = _fidelity("cosine", outputs, batch)
    return {"cosine": fid.cosine, "min_cosine": fid.min_cosine}


def _max_abs(outputs: dict, batch: dict) -> dict:
    fid = _fidelity("max_abs", outputs, batch)
    return {"max_abs": fid.max_abs_diff, "mean_abs": fid.mean_abs_diff}


def ctc_greedy_decode(scores: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """[batch, time, classes] scores -> one label sequence per sample: argmax per step, repeats merged,
    blanks dropped (what CTC recognizers such as CRNN/PaddleOCR's do at inference)."""
    if scores.ndim != 3:
        raise UsageError(f"metric 'ctc_string_match' needs a [batch, time, classes] first output, got shape "
                         f"{list(scores.shape)}", hint="Use a plugin (--metric file.py:fn) for other layouts")
    best = scores.argmax(axis=2)
    keep = np.ones_like(best, dtype=bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    return [tuple(int(c) for c in row[mask]) for row, mask in zip(best, keep)]


def _ctc(blank: int) -> Callable[[dict, dict], dict]:
    def ctc_string_match(outputs: dict, batch: dict) -> dict:
        got = ctc_greedy_decode(_first(outputs), blank)
        want = ctc_greedy_decode(_first(_reference(batch)), blank)
        return {"ctc_string_match": float(np.mean([g == w for g, w in zip(got, want)]))}
    return ctc_string_match


def _mask_iou(threshold: float) -> Callable[[dict, dict], dict]:
    def mask_iou(outputs: dict, batch: dict) -> dict:
        out, ref = _first(outputs), _first(_reference(batch))
        if out.shape != ref.shape:
            raise UsageError(f"metric 'mask_iou': output shape {list(out.shape)} differs from the reference's "
                             f"{list(ref.shape)}", hint="Compare models with the same output map")
        a = out.reshape(len(out), -1) > threshold
        b = ref.reshape(len(ref), -1) > threshold
        inter, union = (a & b).sum(axis=1), (a | b).sum(axis=1)
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)  # both empty: the same mask
        return {"mask_iou": float(iou.mean())}
    return mask_iou


BUILTINS = ("top1", "cosine", "max_abs", "ctc_string_match", "mask_iou")


def _builtin(name: str, arg: str | None, spec: str) -> Metric:
    def number(kind: type, what: str):
        try:
            return kind(arg)
        except (TypeError, ValueError):
            raise UsageError(f"--metric {spec}: '{arg}' is not a valid {what}",
                             hint=f"e.g. --metric {name}:{'0' if kind is int else '0.5'}") from None

    if arg is not None and name not in ("ctc_string_match", "mask_iou"):
        raise UsageError(f"--metric {spec}: {name} takes no argument", hint=f"Use --metric {name}")
    if name == "top1":
        return Metric(spec, _top1, needs_labels=True)
    if name == "cosine":
        return Metric(spec, _cosine)
    if name == "max_abs":
        return Metric(spec, _max_abs, higher_is_better=False, points=False)
    if name == "ctc_string_match":
        return Metric(spec, _ctc(number(int, "blank index") if arg is not None else 0))
    threshold = number(float, "threshold") if arg is not None else 0.5
    if not math.isfinite(threshold):
        raise UsageError(f"--metric {spec}: the threshold must be finite", hint="e.g. --metric mask_iou:0.3")
    return Metric(spec, _mask_iou(threshold))


def _plugin(path: Path, attr: str, spec: str) -> Metric:
    import importlib.util

    if not path.is_file():
        raise UsageError(f"--metric {spec}: {path} does not exist", hint="Give FILE.py:FUNCTION, or a built-in: "
                         + ", ".join(BUILTINS))
    source = path.read_bytes()
    name = f"optkit_metric_{path.stem}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:  # a name Python has no loader for
        raise UsageError(f"--metric {spec}: {path.name} is not a Python module", hint="Give FILE.py:FUNCTION")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:  # SystemExit too: a user's module must not end optkit
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UsageError(f"cannot import metric '{spec}': {first_line(exc, 200) or type(exc).__name__}",
                         hint="Fix the module or its dependencies, then retry") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"--metric {spec}: '{attr}' is not a function in {path.name}",
                         hint="Name a function fn(outputs, batch) -> {name: value}")
    flags = {k: getattr(fn, k) for k in ("higher_is_better", "points") if hasattr(fn, k)}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise UsageError(f"--metric {spec}: {', '.join(flags)} must be True or False", hint="e.g. fn.higher_is_better = False")
    return Metric(str(path.resolve()) + ":" + attr, fn, digest=hashlib.sha256(source).hexdigest(), **flags)


def resolve_metric(spec: str | None, base: Path) -> Metric | None:
    """The metric a ``--metric``/``metric:`` value names; paths are relative to ``base``. A bad name is exit 2."""
    if spec is None:
        return None
    text = spec.strip()
    target, sep, attr = text.rpartition(":")
    if sep and target.endswith(".py"):
        if not attr.isidentifier():
            raise UsageError(f"--metric {spec}: '{attr}' is not a function name", hint="Give FILE.py:FUNCTION")
        path = Path(target)
        return _plugin(path if path.is_absolute() else base / path, attr, spec)
    name, _, arg = text.partition(":")
    if name in BUILTINS:
        return _builtin(name, arg or None, spec)
    import difflib

    close = difflib.get_close_matches(name, BUILTINS, n=1)
    raise UsageError(f"unknown metric '{spec}'", hint=(f"Did you mean '{close[0]}'? " if close else "")
                     + f"Built-ins: {', '.join(BUILTINS)}; or a plugin FILE.py:FUNCTION")


TOP1 = Metric("top1", _top1, needs_labels=True)


def default_metric(task: str, labels: np.ndarray | None) -> Metric | None:
    """Without ``--metric``: top-1 for a classifier with labels, else none (cosine judges lossy steps)."""
    return TOP1 if task == "classification" and labels is not None else None


def metric_for(metric: Metric | None, task: str, data) -> Metric | None:
    """The metric a run judges ``data`` on: the one asked for (one that needs labels the data lacks is exit 2),
    else the default."""
    if metric is not None and metric.needs_labels and data.labels is None:
        raise UsageError(f"--metric {metric.spec} needs labels, but {data.describe()} has none",
                         hint="Add 'labels' to the evaluation .npz, or pick a reference metric (cosine, max_abs, "
                              "ctc_string_match, mask_iou) or a plugin")
    return metric or default_metric(task, data.labels)
