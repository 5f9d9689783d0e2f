"""distill: train a smaller student to imitate a teacher (knowledge distillation, Hinton et al. 2015).

Loss per batch: ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))`` plus
``(1 - alpha) * cross-entropy(labels)`` when the training data has labels (``alpha: 0`` is plain
supervised training of the same student: the baseline the benchmark compares against), plus,
with ``feature_weight > 0``, the mean squared error between same-named top-level blocks of teacher
and student, bridged by a learned 1x1 projection when their channel counts differ (FitNets).

Who is who (the step's input is the model the chain carries):
  student set         the student is that model; the teacher is the input (or ``teacher``).
  student_width set   the student is the teacher narrowed to that channel width (student_macs:
                      the widest narrowing with at most that fraction of the teacher's MACs) by
                      structured pruning (torch-pruning), initialised from the teacher's kept weights
                      (``student_init: teacher``) or re-initialised (``random``).
  neither             the student is the input (e.g. a pruned model); the teacher is ``teacher``
                      or, by default, the chain's original model.
Training keeps the best epoch on the validation split (see ``_training.py``) and can stop early.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from optkit.types.artifact import Artifact
from optkit.backends.opening import open_artifact
from optkit.types.errors import StepError, UsageError
from optkit.types.records import Details
from optkit.types.source import TorchSource
from optkit.types.paths import resolve_ref as resolve
from optkit.steps.base import Step, StepContext, StepResult
from optkit.steps import _training as tr


class DistillConfig(tr.TrainOptions):
    teacher: str | None = Field(None, description="teacher model (folder, factory, .pt2); default: the input, or the original model")
    student: str | None = Field(None, description="student model (folder, factory 'file.py:build', .pt2 or a pruned folder)")
    student_weights: str | None = Field(None, description="state_dict for a factory student")
    student_width: float | None = Field(None, gt=0, lt=1, description="derive the student: the teacher at this fraction of its channel width")
    student_macs: float | None = Field(None, gt=0, lt=1, description="derive the student: the widest narrowing of the teacher with at most this fraction of its MACs")
    student_init: Literal["teacher", "random"] = Field("teacher", description="derived student (--student-width/--student-macs): start from the teacher's kept weights, or re-initialise")
    epochs: int = Field(20, ge=1, le=1000, description="training epochs (the best validation epoch is kept)")
    temperature: float = Field(4.0, gt=0, description="softmax temperature of the soft targets")
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft-target loss (0: labels only, no teacher)")
    feature_weight: float = Field(0.0, ge=0, description="weight of intermediate-feature matching (0: off)")

    @model_validator(mode="after")
    def _one_student(self) -> "DistillConfig":
        if sum(x is not None for x in (self.student, self.student_width, self.student_macs)) > 1:
            raise ValueError("give one of student, student_width or student_macs")
        return self

    @property
    def derived(self) -> bool:
        return self.student_width is not None or self.student_macs is not None


def _resolve_ref(value: str, base: Path) -> str:
    return resolve(base, value) or value


def _open_torch(ref: str, weights: str | None, base: Path, role: str) -> Artifact:
    try:
        art = open_artifact(_resolve_ref(ref, base), weights=Path(_resolve_ref(weights, base)) if weights else None)
    except UsageError as exc:
        raise UsageError(f"{role} {ref}: {exc.message}", hint=exc.hint) from exc
    if art.format != "torch":
        raise UsageError(f"{role} {ref} is a {art.format} model; distillation trains PyTorch models",
                         hint=f"Pass the {role}'s PyTorch folder or factory")
    return art


def _original_of(artifact: Artifact) -> Artifact:
    """The chain's original torch model, rebuilt from the source recorded in its ledger row."""
    if not artifact.lineage:
        return artifact
    source = TorchSource.recorded_in(artifact.lineage[0])
    if source.is_factory and source.spec:
        return open_artifact(Path(source.spec).parent)
    if source.is_factory:
        return open_artifact(source.factory_ref, weights=Path(source.weights) if source.weights else None)
    if source.path:
        return open_artifact(source.path)
    raise UsageError("cannot tell the chain's original model to use as teacher", hint="Set teacher: in the distill options")


def roles(artifact: Artifact, config: DistillConfig, base: Path) -> tuple[Artifact, Artifact | None]:
    """(teacher, explicit student or None); see the module docstring."""
    explicit_teacher = _open_torch(config.teacher, None, base, "teacher") if config.teacher else None
    if config.student:
        student = _open_torch(config.student, config.student_weights, base, "student")
        if not student.inputs:
            student = student.with_(inputs=artifact.inputs, outputs=artifact.outputs)
        return explicit_teacher or artifact, student
    if config.derived:
        return explicit_teacher or artifact, None
    return explicit_teacher or _original_of(artifact), artifact


def _check_pair(teacher, student, example: tuple, student_art: Artifact) -> None:
    torch = tr.torch_module()
    from optkit.backends.torch import flatten_outputs

    with torch.no_grad():
        t_out = [tuple(o.shape) for o in flatten_outputs(teacher(*example))]
        try:
            s_out = [tuple(o.shape) for o in flatten_outputs(student(*example))]
        except Exception as exc:
            raise UsageError(f"the student {student_art.path.name} does not run on the teacher's inputs "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})",
                             hint="The student must take the same inputs as the teacher") from exc
    if s_out != t_out:
        raise UsageError(f"the student's output shape {s_out} differs from the teacher's {t_out}",
                         hint="Distillation needs a student with the teacher's outputs (same classes)")


def _narrow(teacher, example: tuple, config: DistillConfig, count) -> tuple:
    """(student, width): the teacher with channels removed by structured pruning, optionally re-initialised."""
    from optkit.steps._pruning import ChannelPruning, prune_structured, search_ratio

    if config.student_macs is not None:
        teacher_macs = count(teacher)
        if teacher_macs is None:
            raise StepError("cannot count the teacher's MACs, so --student-macs has nothing to aim at",
                            hint="Give --student-width instead")
        ratio, student, _ = search_ratio(teacher, example, ChannelPruning(), config.student_macs, teacher_macs, count)
    else:
        assert config.student_width is not None, "a derived student has a width or a MACs target"
        ratio = 1 - config.student_width
        student = prune_structured(teacher, example, ChannelPruning(), ratio)
    if config.student_init == "random":
        torch = tr.torch_module()
        torch.manual_seed(config.seed)
        for m in student.modules():
            if hasattr(m, "reset_parameters") and m is not student:
                m.reset_parameters()
    return student, round(1 - ratio, 4)


# ----------------------------------------------------------------------------- losses

class _Features:
    """Outputs of same-named top-level blocks of teacher and student, with 1x1 projections where widths differ."""

    def __init__(self, teacher, student, example: tuple) -> None:
        torch = tr.torch_module()
        self.t: dict[str, Any] = {}
        self.s: dict[str, Any] = {}
        self.hooks: list[Any] = []
        t_children, s_children = dict(teacher.named_children()), dict(student.named_children())
        shapes_t, shapes_s = self._shapes(teacher, t_children, example), self._shapes(student, s_children, example)
        self.pairs, self.proj = [], torch.nn.ModuleDict()
        for name, ts in shapes_t.items():
            ss = shapes_s.get(name)
            if ss is None or len(ts) != len(ss) or len(ts) < 2 or ts[2:] != ss[2:]:
                continue
            self.pairs.append(name)
            if ts[1] != ss[1]:
                self.proj[name] = (torch.nn.Conv2d(ss[1], ts[1], 1, bias=False) if len(ts) == 4
                                   else torch.nn.Linear(ss[-1], ts[-1], bias=False) if ts[:-1] == ss[:-1] else None)
                if self.proj[name] is None:
                    self.pairs.pop()
        for name in self.pairs:
            self.hooks.append(t_children[name].register_forward_hook(self._keep(self.t, name)))
            self.hooks.append(s_children[name].register_forward_hook(self._keep(self.s, name)))

    @staticmethod
    def _keep(store: dict, name: str):
        def hook(_m, _i, out):
            if hasattr(out, "shape"):
                store[name] = out
        return hook

    @staticmethod
    def _shapes(model, children: dict, example: tuple) -> dict[str, tuple]:
        torch = tr.torch_module()
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = []
        for name, child in children.items():
            hooks.append(child.register_forward_hook(
                lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape)) if hasattr(out, "shape") else None))
        try:
            with torch.no_grad():
                model(*example)
        finally:
            for h in hooks:
                h.remove()
        return shapes

    def loss(self):
        torch = tr.torch_module()
        terms = []
        for name in self.pairs:
            s = self.s.get(name)
            t = self.t.get(name)
            if s is None or t is None:
                continue
            if name in self.proj:
                s = self.proj[name](s)
            terms.append(torch.nn.functional.mse_loss(s, t.detach()))
        return sum(terms) / len(terms) if terms else None

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def kd_loss(teacher, config: DistillConfig, features: _Features | None):
    torch = tr.torch_module()
    F = torch.nn.functional
    from optkit.backends.torch import flatten_outputs

    T, alpha = config.temperature, config.alpha

    def loss(outs, batch, labels):
        with torch.no_grad():
            t_logits = flatten_outputs(teacher(*batch))[0] if alpha > 0 or features else None
        s_logits = outs[0]
        total = 0.0
        if alpha > 0:
            total = alpha * T * T * F.kl_div(F.log_softmax(s_logits / T, -1), F.log_softmax(t_logits / T, -1),
                                             reduction="batchmean", log_target=True)
        if labels is not None and alpha < 1:
            total = total + (1 - alpha) * F.cross_entropy(s_logits, labels)
        elif labels is None and alpha == 0:
            raise UsageError("alpha 0 trains on labels only, but the training data has no labels",
                             hint="Use alpha > 0 or training data with labels")
        if features is not None:
            extra = features.loss()
            if extra is not None:
                total = total + config.feature_weight * extra
        return total

    return loss


# ----------------------------------------------------------------------------- the step

class DistillDetails(Details):
    teacher: str
    student: str
    teacher_macs: int | None
    teacher_params: int
    teacher_val_top1: float | None
    teacher_eval_top1: float | None
    temperature: float
    alpha: float
    feature_pairs: list[str]  # layers whose features were matched
    training: dict[str, Any]  # epochs run, best epoch and its validation top-1, history, seconds


class DistillStep(Step):
    build_cpus = 2  # a training loop: torch keeps every core it is given busy
    name = "distill"
    summary = "knowledge distillation of a teacher into a smaller student (soft targets, labels, features)"
    accepts = ("torch",)
    produces = "torch"
    suffix = ""
    Config = DistillConfig
    Details = DistillDetails

    def precheck(self, config: DistillConfig, source: Artifact, base: Path) -> None:
        if source.format != "torch":
            return
        tr.factory_model_check(source)
        tr.train_split(config, source, base)
        tr.val_split(config, source, base)
        if config.teacher:
            _open_torch(config.teacher, None, base, "teacher")
        if config.student:
            from optkit.backends.torch import load_module

            student_art = _open_torch(config.student, config.student_weights, base, "student")
            student_art = student_art.with_(inputs=student_art.inputs or source.inputs)
            teacher = load_module(_open_torch(config.teacher, None, base, "teacher") if config.teacher else source)
            from optkit.eval.data import synthetic

            feed = synthetic(source.inputs, samples=2)
            torch = tr.torch_module()
            example = tuple(torch.from_numpy(feed.inputs[i.name]) for i in source.inputs)
            _check_pair(teacher, load_module(student_art), example, student_art)

    def run(self, ctx: StepContext, artifact: Artifact, config: DistillConfig) -> StepResult:
        from optkit.backends.torch import load_module, structure_of

        teacher_art, student_art = roles(artifact, config, ctx.base)
        teacher = load_module(teacher_art).eval()
        example = tr.example_inputs(artifact, ctx.data)

        def count(m) -> int | None:
            return tr.macs_of(m, artifact, ctx.data)

        width = None
        if student_art is None:  # narrowed before the teacher is frozen (torch-pruning skips frozen layers)
            student_art = teacher_art
            student, width = _narrow(teacher, example, config, count)
        else:
            student = load_module(student_art)
        for p in teacher.parameters():
            p.requires_grad_(False)
        _check_pair(teacher, student, example, student_art)

        train = tr.train_split(config, artifact, ctx.base)
        val = tr.val_split(config, artifact, ctx.base)
        features = _Features(teacher, student, example) if config.feature_weight > 0 else None
        try:
            result = tr.fit(student, train, val, kd_loss(teacher, config, features), config, config.epochs, ctx.ui,
                            "distilling" if config.alpha > 0 else "training (labels only)",
                            extra_params=list(features.proj.parameters()) if features else None)
        finally:
            if features:
                features.close()

        details = DistillDetails(
            teacher=str(teacher_art.path),
            student=student_art.path.name if width is None else f"{teacher_art.path.name} at width {width}",
            teacher_macs=count(teacher), teacher_params=tr.param_count(teacher),
            macs=count(student), params=tr.param_count(student),
            teacher_val_top1=tr.top1_of(teacher, val), teacher_eval_top1=tr.top1_of(teacher, ctx.data),
            temperature=config.temperature, alpha=config.alpha,
            feature_pairs=features.pairs if features else [], training=result.to_dict())
        like = teacher_art if width is not None else student_art  # whose factory builds the student
        out = tr.write_folder(student, like, ctx.out_path, ctx.final_path, structure_of(student, tr.factory_model(like)),
                              name=f"{like.source.name or like.path.stem}_distilled", data=artifact.data)
        return StepResult(artifact=out, details=details)

    @staticmethod
    def describe(details: DistillDetails) -> str:
        text = f"student {details.student}"
        if details.macs and details.teacher_macs:
            text += (f": MACs {details.macs / 1e6:.1f}M vs teacher {details.teacher_macs / 1e6:.1f}M "
                     f"({details.macs / details.teacher_macs:.2f}x), params {(details.params or 0) / 1e3:.0f}k")
        tr_ = details.training
        mode = f"T={details.temperature}, alpha={details.alpha}" if details.alpha > 0 else "labels only (no teacher)"
        text += f"; {mode}; {tr_['epochs_run']} epochs, kept epoch {tr_['best_epoch']}"
        if tr_.get("best_val_top1") is not None:
            text += f" (val top-1 {100 * tr_['best_val_top1']:.2f}%)"
        if details.teacher_eval_top1 is not None:
            text += f"; teacher top-1 {100 * details.teacher_eval_top1:.2f}%"
        return text

