"""prune: make the network smaller - structured channel pruning (torch-pruning), or unstructured sparsity.

structured    removes whole channels / features with torch-pruning's dependency graph, so every
              layer coupled to a pruned one (residual adds, BatchNorm, the next layer's inputs, a
              transformer's MLP width) shrinks consistently. ``ratio`` prunes that fraction of each
              group's channels (``global_pruning``: ranked across layers instead, capped per layer);
              ``target_macs`` searches the ratio whose result has at most that fraction of the
              input's MACs. Channel counts stay multiples of ``round_to`` (SIMD-friendly). The
              layers that produce the model's outputs are never pruned; attention projections are
              kept unless asked (most attention code hard-codes its head layout).
unstructured  global magnitude pruning of Conv/Linear weights to ``sparsity``. Reported honestly:
              the weights stay dense, so ONNX Runtime and OpenVINO on CPU run no faster; the gain is
              in compressed size (measured and shown).

Both can fine-tune afterwards to recover accuracy (``finetune_epochs``, see ``_training.py``),
with the best validation epoch kept. The result is a model folder (factory + weights + pruned
shapes in optkit.yaml) that ``export`` accepts and that reloads without pickle.
"""
from __future__ import annotations

import copy
import zlib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from optkit.types.artifact import Artifact
from optkit.types.errors import StepError
from optkit.types.records import Details
from optkit.types.lazy import require
from optkit.steps import _training as tr
from optkit.steps._budget import MAX_DROP_HELP, check_vs_input
from optkit.steps._pruning import ChannelPruning, ignored_layers, prune_structured, search_ratio
from optkit.steps.base import Step, StepContext, StepResult, renamed_keys


class PruneConfig(tr.TrainOptions):
    ratio: float | None = Field(None, gt=0, lt=1, description="structured: fraction of channels removed per group")
    target_macs: float | None = Field(None, gt=0, lt=1, description="structured: keep at most this fraction of the input's MACs")
    importance: Literal["l1", "l2", "taylor"] = Field("l2", description="channel importance (taylor: first-order, needs labelled training data)")
    global_pruning: bool = Field(False, description="rank channels across layers (default: the same ratio in every layer)")
    max_layer_ratio: float = Field(0.9, gt=0, le=1, description="global pruning: at most this fraction of any layer")
    round_to: int = Field(8, ge=1, description="keep channel counts multiples of this")
    ignore: list[str] = Field([], description="module names (glob patterns) never pruned; output layers always are")
    prune_attention: bool = Field(False, description="also prune attention projections (only if the model's forward derives head sizes from the weights)")
    unstructured: bool = Field(False, description="unstructured global magnitude pruning instead (no speedup on dense runtimes)")
    sparsity: float | None = Field(None, gt=0, lt=1, description="unstructured: fraction of Conv/Linear weights set to zero")
    finetune_epochs: int = Field(0, ge=0, le=1000, description="recovery fine-tuning epochs after pruning")
    max_drop: float | None = Field(None, ge=0, description=f"{MAX_DROP_HELP}; past it the step fails (default: not "
                                                           "checked)")

    RENAMED: ClassVar[dict[str, str]] = {"max_accuracy_drop": "max_drop"}

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return renamed_keys(data, cls.RENAMED)

    @model_validator(mode="after")
    def _one_mode(self) -> "PruneConfig":
        if self.unstructured:
            if self.sparsity is None:
                raise ValueError("unstructured pruning needs sparsity (e.g. 0.5)")
            if self.ratio is not None or self.target_macs is not None:
                raise ValueError("ratio / target_macs are for structured pruning; unstructured takes sparsity")
        else:
            if self.sparsity is not None:
                raise ValueError("sparsity is for unstructured pruning (add unstructured: true), structured takes ratio or target_macs")
            if (self.ratio is None) == (self.target_macs is None):
                raise ValueError("give exactly one of ratio (e.g. 0.3) or target_macs (e.g. 0.5)")
        return self

    def channel_pruning(self) -> ChannelPruning:
        return ChannelPruning(importance=self.importance, global_pruning=self.global_pruning,
                              max_layer_ratio=self.max_layer_ratio, round_to=self.round_to, ignore=tuple(self.ignore),
                              prune_attention=self.prune_attention)


# ----------------------------------------------------------------------------- structured

def channel_changes(original, pruned) -> list[str]:
    torch = tr.torch_module()
    before = dict(original.named_modules())
    changes = []
    for name, m in pruned.named_modules():
        ref = before[name]  # a pruned deep copy: the same module names
        if isinstance(m, torch.nn.modules.conv._ConvNd) and m.out_channels != ref.out_channels:
            changes.append(f"{name} {ref.out_channels}->{m.out_channels}")
        elif isinstance(m, torch.nn.Linear) and m.out_features != ref.out_features:
            changes.append(f"{name} {ref.out_features}->{m.out_features}")
    return changes


# ----------------------------------------------------------------------------- unstructured

def _prunable(module, ignored: list) -> list:
    torch = tr.torch_module()
    skip = {id(m) for m in ignored}
    return [m for m in module.modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)) and id(m) not in skip]


def prune_unstructured(module, layers: list, sparsity: float) -> None:
    tr.torch_module()  # a clear error if torch is missing
    from torch.nn.utils import prune

    prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured, amount=sparsity)


def finalize_unstructured(layers: list) -> None:
    from torch.nn.utils import prune

    for m in layers:
        if prune.is_pruned(m):
            prune.remove(m, "weight")


def sparsity_facts(module, layers: list) -> dict[str, Any]:
    weights = [m.weight.detach() for m in layers]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    every = sum(p.numel() for p in module.parameters())
    raw = b"".join(w.float().numpy().tobytes() for w in weights)
    return {"weights_sparsity": zeros / total, "params_sparsity": zeros / every, "pruned_layers": len(layers),
            "compressed_weights_bytes": len(zlib.compress(raw, 6)), "raw_weights_bytes": len(raw)}


# ----------------------------------------------------------------------------- the step

REMEDY = "Prune less, fine-tune longer (--finetune-epochs) or distill"

class PruneDetails(Details):
    mode: Literal["structured", "unstructured"]
    macs_before: int
    params_before: int
    macs_ratio: float | None = None
    ratio: float | None = None  # structured: the ratio used (searched for --target-macs)
    channels: list[str] | None = None  # structured: "layer: channels before -> after", per changed layer
    val_top1_before_finetune: float | None = None
    finetune: dict[str, Any] | None = None
    weights_sparsity: float | None = None  # unstructured: sparsity and what compression would save
    params_sparsity: float | None = None
    pruned_layers: int | None = None
    compressed_weights_bytes: int | None = None
    raw_weights_bytes: int | None = None


class PruneStep(Step):
    name = "prune"
    summary = "structured channel pruning (torch-pruning) or unstructured sparsity, with recovery fine-tuning"
    accepts = ("torch",)
    produces = "torch"
    suffix = ""  # a model folder
    Config = PruneConfig
    Details = PruneDetails

    @classmethod
    def num_cpus(cls, config: PruneConfig) -> int:
        return 2 if config.finetune_epochs else 1  # fine-tuning is a training loop

    def precheck(self, config: PruneConfig, source: Artifact, base: Path) -> None:
        if source.format != "torch":
            return
        tr.factory_model_check(source)
        if config.finetune_epochs or config.importance == "taylor":
            tr.train_split(config, source, base)
            tr.val_split(config, source, base)

    def run(self, ctx: StepContext, artifact: Artifact, config: PruneConfig) -> StepResult:
        from optkit.backends.torch import load_module, structure_of

        require("torch_pruning", "structured pruning")
        module = load_module(artifact)
        names = [i.name for i in artifact.inputs]
        example = tr.example_inputs(artifact, ctx.data)

        def count(m) -> int:
            return tr.macs_of(m, artifact, ctx.data) or 0

        base_macs, base_params = count(module), tr.param_count(module)
        needs_train = config.finetune_epochs > 0 or config.importance == "taylor"
        train = tr.train_split(config, artifact, ctx.base) if needs_train else None
        val = tr.val_split(config, artifact, ctx.base) if config.finetune_epochs else None
        details = PruneDetails(mode="unstructured" if config.unstructured else "structured",
                               macs_before=base_macs, params_before=base_params)
        if config.unstructured:
            pruned = copy.deepcopy(module)
            layers = _prunable(pruned, ignored_layers(pruned, example, config.channel_pruning()))
            assert config.sparsity is not None, "PruneConfig._one_mode: unstructured takes sparsity"
            prune_unstructured(pruned, layers, config.sparsity)
        else:
            with ctx.ui.status("pruning channels (torch-pruning dependency graph)"):
                options = config.channel_pruning()
                if config.target_macs is not None:
                    ratio, pruned, _ = search_ratio(module, example, options, config.target_macs, base_macs, count,
                                                    train, names)
                else:
                    assert config.ratio is not None, "PruneConfig._one_mode: a ratio or a MACs target"
                    ratio, pruned = config.ratio, prune_structured(module, example, options, config.ratio, train, names)
            details.ratio = round(ratio, 4)
            details.channels = channel_changes(module, pruned)
            if not details.channels:
                raise StepError("nothing was pruned: every prunable group is ignored or too small for the ratio",
                                hint="Raise --ratio, lower --round-to or --ignore fewer layers")
        self._check_runs(pruned, example, artifact)
        details.val_top1_before_finetune = tr.top1_of(pruned, val)
        if config.finetune_epochs:
            assert train is not None, "fine-tuning loaded its training split above"
            result = tr.fit(pruned, train, val, _label_loss(module, names), config, config.finetune_epochs, ctx.ui,
                            "fine-tuning")
            details.finetune = result.to_dict()
        if config.unstructured:
            finalize_unstructured(layers)
            for key, value in sparsity_facts(pruned, layers).items():
                setattr(details, key, value)
        details.macs, details.params = count(pruned), tr.param_count(pruned)
        details.macs_ratio = details.macs / base_macs if base_macs else None
        out = tr.write_folder(pruned, artifact, ctx.out_path, ctx.final_path, structure_of(pruned, tr.factory_model(artifact)),
                              name=f"{artifact.source.name or artifact.path.stem}_pruned")
        self._check_accuracy(ctx, out, config)  # judged as written, like every lossy step's product
        return StepResult(artifact=out, details=details)

    @staticmethod
    def _check_runs(pruned, example: tuple, artifact: Artifact) -> None:
        torch = tr.torch_module()
        from optkit.backends.torch import flatten_outputs

        try:
            with torch.no_grad():
                outs = flatten_outputs(pruned(*example))
        except Exception as exc:
            raise StepError(f"the pruned model no longer runs ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                            "its forward probably hard-codes a width that pruning changed",
                            hint="Keep those layers with --ignore NAME (glob), or prune less") from exc
        want = [tuple(o.shape[1:]) for o in artifact.outputs]
        got = [tuple(o.shape[1:]) for o in outs]
        if want and all(isinstance(d, int) for s in want for d in s) and got != want:
            raise StepError(f"pruning changed the output shape ({got} vs {want})", hint="--ignore the output layers")

    @staticmethod
    def _check_accuracy(ctx: StepContext, out: Artifact, config: PruneConfig) -> None:
        """``--max-drop``: the task metric's drop vs the input (``_budget.check_vs_input``, as quantize and compile
        judge). Without a task metric (no labels, no --metric) nothing judges it: said, not replaced by cosine
        (pruning before fine-tuning moves outputs far by design)."""
        if config.max_drop is None:
            return
        if ctx.settings.metric is None:
            ctx.ui.warn(f"--max-drop {config.max_drop:g} is a budget on the task metric, and there is none (no labels, "
                        "no --metric): the pruned model is not checked against it")
            return
        check = check_vs_input(ctx, out, config.max_drop, None)
        if check.ok:
            return
        if check.metric == "top1" and check.drop is not None:  # the words prune has always used for top-1
            before, after = check.input_value or 0.0, check.value or 0.0
            raise StepError(f"pruned top-1 {100 * after:.2f}% is {check.drop:.2f} points below the input's "
                            f"{100 * before:.2f}% (--max-drop {config.max_drop:g})", hint=REMEDY)
        from optkit.eval.compare import tolerance_error

        raise tolerance_error("pruning", check, [REMEDY[:1].lower() + REMEDY[1:]])

    @staticmethod
    def describe(details: PruneDetails) -> str:
        macs = ""
        if details.macs_before and details.macs:
            macs = (f"MACs {details.macs_before / 1e6:.1f}M -> {details.macs / 1e6:.1f}M "
                    f"({details.macs / details.macs_before:.2f}x), params {details.params_before / 1e3:.0f}k -> "
                    f"{(details.params or 0) / 1e3:.0f}k")
        if details.mode == "unstructured":  # an unstructured row sets every sparsity field
            text = (f"unstructured: {100 * (details.weights_sparsity or 0):.1f}% of Conv/Linear weights zero "
                    f"({100 * (details.params_sparsity or 0):.1f}% of all params); dense runtimes do not get faster; "
                    f"compressed weights {(details.compressed_weights_bytes or 0) / 1e3:.0f} kB vs "
                    f"{(details.raw_weights_bytes or 0) / 1e3:.0f} kB raw")
        else:
            text = f"structured, ratio {details.ratio}: {macs}"
        ft = details.finetune
        if ft:
            best = ft["best_val_top1"]
            text += (f"; fine-tuned {ft['epochs_run']} epochs, kept epoch {ft['best_epoch']}"
                     + (f" (val top-1 {100 * best:.2f}%)" if best is not None else ""))
        return text


def _label_loss(teacher, names: list[str]):
    """Cross-entropy with labels; without labels, match the unpruned model's outputs (self-distillation)."""
    torch = tr.torch_module()
    from optkit.backends.torch import flatten_outputs

    def loss(outs, batch, labels):
        if labels is not None:
            return torch.nn.functional.cross_entropy(outs[0], labels)
        with torch.no_grad():
            target = flatten_outputs(teacher(*batch))
        return sum(torch.nn.functional.mse_loss(o, t) for o, t in zip(outs, target))

    return loss
