"""What prune and distill share: training options and data, a seeded training loop with a progress
bar and best-checkpoint selection, and writing a torch model as a folder artifact.

Model selection (early stopping, the best epoch) uses a *validation* split - the model's
calibration split by default, which is held out from training - never the evaluation split: picking
the best epoch on the data that reports accuracy would overstate it.
"""
from __future__ import annotations

import contextlib
import copy
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import yaml
from pydantic import BaseModel, ConfigDict, Field

from optkit.types.artifact import Artifact, Split, portable_path
from optkit.types.errors import UsageError


if TYPE_CHECKING:  # numpy and the data readers load with the first step that trains, not with --help
    import numpy as np

    from optkit.eval.data import EvalData


class TrainOptions(BaseModel):
    """Training options shared by ``prune`` (recovery fine-tuning) and ``distill``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    train_data: str | None = Field(None, description=".npz with arrays named after the inputs (+ labels); default: the model's train split")
    val_data: str | None = Field(None, description=".npz for choosing the best epoch; default: the calibration split (never the eval split)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (cosine-decayed to zero)")
    batch_size: int = Field(64, ge=1, le=65536, description="training batch size")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    augment: bool = Field(True, description="image inputs (N,C,H,W): random shifts of up to 2 pixels")
    patience: int = Field(0, ge=0, description="stop after this many epochs without a better validation accuracy (0: never)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds initialisation, shuffling and augmentation (runs are deterministic)")
    train_threads: int = Field(0, ge=0, description="torch threads while training (0: all cores)")


def data_path(value: str | None, artifact: Artifact, split: Split, base: Path) -> Path | None:
    if value:
        path = Path(value)
        return path if path.is_absolute() else (base / path)
    return artifact.split(split)


def load_split(path: Path | None, artifact: Artifact, what: str) -> EvalData | None:
    """An .npz checked against the model's inputs: a mismatch is a usage error naming the array."""
    if path is None:
        return None
    try:
        from optkit.eval.data import load_npz

        return load_npz(path, artifact.inputs)
    except UsageError as exc:
        raise UsageError(f"{what}: {exc.message}", hint=exc.hint) from exc


def train_split(options: TrainOptions, artifact: Artifact, base: Path) -> EvalData:
    data = load_split(data_path(options.train_data, artifact, "train", base), artifact, "training data")
    if data is None:
        raise UsageError(f"no training data for {artifact.path.name}",
                         hint="Pass --train-data FILE.npz (arrays named after the model inputs, plus labels)")
    return data


def val_split(options: TrainOptions, artifact: Artifact, base: Path) -> EvalData | None:
    return load_split(data_path(options.val_data, artifact, "calib", base), artifact, "validation data")


# ----------------------------------------------------------------------------- torch helpers

def torch_module():
    from optkit.types.lazy import require

    return require("torch", "training")


def param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def macs_of(module, artifact: Artifact, data: EvalData) -> int | None:
    from optkit.backends.torch import count_macs

    return count_macs(module, data.batch(1), [i.name for i in artifact.inputs])


def predict(module, data: EvalData, batch_size: int = 256) -> np.ndarray:
    """First output (logits) for every sample, in eval mode."""
    import numpy as np

    torch = torch_module()
    from optkit.backends.torch import flatten_outputs

    names = list(data.inputs)
    module.eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            args = [torch.from_numpy(np.asarray(data.inputs[n][start:start + batch_size], dtype=np.float32)) for n in names]
            outs.append(flatten_outputs(module(*args))[0].float().numpy())
    return np.concatenate(outs)


def top1_of(module, data: EvalData | None) -> float | None:
    if data is None or data.labels is None:
        return None
    return float((predict(module, data).argmax(-1) == data.labels).mean())


@contextlib.contextmanager
def deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seeded, deterministic kernels, and the training thread count; restored afterwards."""
    torch = torch_module()
    import os

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.manual_seed(seed)
    cores = os.cpu_count() or 1
    torch.set_num_threads(min(threads, cores) if threads else cores)  # more threads than CPUs only slows training
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def _shift(x, gen, max_shift: int = 2):
    """Random translation by up to ``max_shift`` pixels, padded with the batch's minimum (the background)."""
    torch = torch_module()
    n, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (max_shift,) * 4, value=float(x.min()))
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    return torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    best_val: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch, "best_val_top1": self.best_val,
                "history": self.history, "seconds": round(self.seconds, 2)}


# loss_fn(outputs of the model being trained, the batch's input tensors, labels or None, step index) -> loss
LossFn = Callable[[list, list, Any], Any]


def _check_classes(module, *splits: EvalData | None) -> None:
    """Labels of every split must index the model's classes: checked before training, not met as a crash in it."""
    import numpy as np

    torch = torch_module()
    from optkit.backends.torch import flatten_outputs
    from optkit.eval.data import check_labels_fit

    labelled = [(d, d.labels) for d in splits if d is not None and d.labels is not None]
    if not labelled:
        return
    with torch.no_grad():
        first = labelled[0][0]
        sample = [torch.from_numpy(np.asarray(first.inputs[k][:1], dtype=np.float32)) for k in first.inputs]
        was_training = module.training
        module.eval()
        classes = flatten_outputs(module(*sample))[0].reshape(1, -1).shape[1]
        module.train(was_training)
    for d, labels in labelled:
        check_labels_fit(labels, classes, str(d.path))


def fit(module, train: EvalData, val: EvalData | None, loss_fn: LossFn, options: TrainOptions, epochs: int,
        ui, title: str, extra_params: list | None = None) -> FitResult:
    """Train ``module`` in place; keeps the weights of the best validation epoch (the last without labels)."""
    import numpy as np

    torch = torch_module()
    from optkit.backends.torch import flatten_outputs

    start = time.perf_counter()
    names = list(train.inputs)
    n = len(train)
    steps_per_epoch = math.ceil(n / options.batch_size)
    with deterministic(options.seed, options.train_threads):
        gen = torch.Generator().manual_seed(options.seed)
        params = [p for p in module.parameters() if p.requires_grad] + list(extra_params or [])
        opt = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
        tensors = [torch.from_numpy(np.asarray(train.inputs[k], dtype=np.float32)) for k in names]
        labels = torch.from_numpy(train.labels.astype(np.int64)) if train.labels is not None else None
        _check_classes(module, train, val)
        best_val, best_epoch, best_state, stale = top1_of(module, val), 0, copy.deepcopy(module.state_dict()), 0
        history: list[dict[str, Any]] = [{"epoch": 0, "loss": None, "val_top1": best_val}]
        epoch = 0
        with _progress(ui, title, epochs) as advance:
            advance(0, None, best_val)
            for epoch in range(1, epochs + 1):
                module.train()
                order = torch.randperm(n, generator=gen)
                total = 0.0
                for s in range(steps_per_epoch):
                    idx = order[s * options.batch_size:(s + 1) * options.batch_size]
                    batch = [t[idx] for t in tensors]
                    if options.augment:
                        batch = [_shift(t, gen) if t.ndim == 4 else t for t in batch]
                    loss = loss_fn(flatten_outputs(module(*batch)), batch, labels[idx] if labels is not None else None)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(idx)
                val_acc = top1_of(module, val)
                history.append({"epoch": epoch, "loss": round(total / n, 5), "val_top1": val_acc})
                advance(epoch, total / n, val_acc)
                if val_acc is None or best_val is None or val_acc >= best_val:  # ties: the later, longer-trained epoch
                    best_val, best_epoch, best_state, stale = val_acc, epoch, copy.deepcopy(module.state_dict()), 0
                else:
                    stale += 1
                    if options.patience and stale >= options.patience:
                        ui.info(f"  early stop: no better validation accuracy for {stale} epochs")
                        break
        module.load_state_dict(best_state)
        module.eval()
    return FitResult(epochs_run=epoch, best_epoch=best_epoch, best_val=best_val, history=history,
                     seconds=time.perf_counter() - start)


@contextlib.contextmanager
def _progress(ui, title: str, epochs: int):
    """A rich progress bar on a terminal; one line per epoch in logs (CI)."""
    def fmt(loss, acc) -> str:
        return (f"loss {loss:.4f}" if loss is not None else "loss —") + (f"  val top-1 {100 * acc:.2f}%" if acc is not None else "")

    if ui.quiet or not ui.err.is_terminal:
        def advance(epoch, loss, acc):
            if epoch:
                ui.info(f"  {title}: epoch {epoch}/{epochs}  {fmt(loss, acc)}")
        yield advance
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                  TimeElapsedColumn(), console=ui.err, transient=False) as progress:
        task = progress.add_task(f"  {title} (epochs)", total=epochs, stats="")

        def advance(epoch, loss, acc):
            progress.update(task, completed=epoch, stats=fmt(loss, acc))
        yield advance


# ----------------------------------------------------------------------------- writing a torch artifact

def factory_model_check(art: Artifact) -> None:
    if not art.source.is_factory:
        raise UsageError(f"{art.path.name} is a {art.source.kind} model; prune and distill write models built "
                         "by a factory (a sample-model folder or 'file.py:build')",
                         hint="Start from the model's folder or factory reference")


def factory_model(art: Artifact):
    """The architecture as ``art``'s factory builds it (untrained): what pruned shapes are recorded against."""
    from optkit.backends.torch_factory import import_factory

    factory_model_check(art)
    return import_factory(art.source.factory_ref)()


def write_folder(module, like: Artifact, out_dir: Path, final_dir: Path, structure: dict[str, dict[str, Any]],
                 name: str, data: dict[str, Path] | None = None) -> Artifact:
    """Write ``module`` as a model folder (optkit.yaml + the factory's file + weights.pt) and open it.

    The folder is a MODEL argument like the sample models: ``export`` and every torch step accept it.
    Weights are a plain state_dict (loads with ``weights_only=True``); the pruned shapes are plain
    attributes in optkit.yaml's ``structure`` (see ``backends.torch.apply_structure``).
    """
    torch = torch_module()
    from optkit.backends.opening import open_artifact

    source = like.source
    out_dir.mkdir(parents=True, exist_ok=False)
    factory = source.factory_ref
    if source.factory_file:
        src = Path(source.factory_file)
        shutil.copy2(src, out_dir / src.name)
        factory = f"{src.name}:{factory.rpartition(':')[2]}"
    torch.save({k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}, out_dir / "weights.pt")
    spec = {
        "name": name, "factory": factory, "weights": "weights.pt",
        "inputs": [t.to_dict() for t in like.inputs], "outputs": [t.to_dict() for t in like.outputs],
        "task": like.task,
        "data": {k: portable_path(v, final_dir) for k, v in sorted((data or like.data).items())},
        "structure": structure,
    }
    header = "# Written by optkit: a model folder (factory + weights + pruned shapes); pass it to any optkit command.\n"
    (out_dir / "optkit.yaml").write_text(header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None))
    return open_artifact(out_dir).with_(data=dict(data or like.data))


def example_inputs(artifact, data) -> tuple:
    """One sample of ``data`` as the torch tensors the model's forward takes, in input order."""
    torch = torch_module()
    feed = data.batch(1)
    return tuple(torch.from_numpy(feed[i.name]) for i in artifact.inputs)
