"""A fake backend: artifacts whose 'runtime' is a few lines of numpy with a chosen cost, so the engine's
measuring, timing, caching, gates and reports can be tested fast and without torch or ONNX Runtime.

A fake artifact is a JSON file ``NAME.fake.json`` holding ``{"scale": s, "cost_us": c}``: its one input
``x`` is ``batch x 4``, its one output ``y`` is ``x * scale``, and each call busy-waits ``c`` microseconds
(a model of known speed). With the ``fake_engine`` fixture such a file is a MODEL like any other
(``open_artifact`` recognises it through its ``Backend`` in ``BACKENDS``), the ``fake`` step turns one into another (faster,
slower, less accurate, or failing, as its options say; ``fake_export`` is the same under another name) and
``profile`` measures one, so whole recipes run through the real engine, cache, gates and reports.
"""
from __future__ import annotations

import json
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from optkit.backends import BACKENDS, Backend, Runner
from optkit.steps.base import STEPS, Step, StepContext, StepResult
from optkit.steps.profile import ProfileStep
from optkit.types.artifact import Artifact, TensorSpec

SUFFIX = ".fake.json"
INPUTS = [TensorSpec("x", ("batch", 4), "float32")]
OUTPUTS = [TensorSpec("y", ("batch", 4), "float32")]


class FakeRunner(Runner):
    format = "fake"

    def __init__(self, artifact: Artifact, threads: int = 1) -> None:
        spec = json.loads(Path(artifact.path).read_text())
        self.scale, self.cost = float(spec["scale"]), float(spec["cost_us"]) / 1e6
        self.input_names, self.output_names = [i.name for i in artifact.inputs], ["y"]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        end = time.perf_counter() + self.cost
        while time.perf_counter() < end:
            pass
        return {"y": feed[self.input_names[0]].astype(np.float32) * self.scale}


def open_fake(path: Path) -> Artifact:
    """``open_artifact``'s reader for ``*.fake.json`` files (``FAKE_BACKEND.open``)."""
    return Artifact(path=Path(path), format="fake", inputs=list(INPUTS), outputs=list(OUTPUTS))


FAKE_BACKEND = Backend(format="fake", runner=FakeRunner, recognises=lambda path: path.name.endswith(SUFFIX),
                       open=open_fake)


def fake_artifact(folder: Path, name: str, *, scale: float = 1.0, cost_us: float = 200.0) -> Artifact:
    return open_fake(write_fake(folder / f"{name}{SUFFIX}", scale=scale, cost_us=cost_us))


def write_fake(path: Path, *, scale: float = 1.0, cost_us: float = 200.0, **extra: Any) -> Path:
    path.write_text(json.dumps({"scale": scale, "cost_us": cost_us, **extra}, sort_keys=True))
    return path


class FakeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    scale: float = Field(1.0, description="multiplies the output (1 keeps it; -1 turns every top-1 answer wrong)")
    cost: float = Field(1.0, gt=0, description="multiplies the time a call takes (0.5: twice as fast)")
    fail: bool = Field(False, description="raise inside the step, as a library failing would")
    tag: str = Field("", description="written into the output file: changes its bytes, not what it computes")


class FakeStep(Step):
    """fake -> fake: the input's scale and cost multiplied by the options'. The file also names its input's
    digest, so every step of a chain writes different bytes, and the same input and options the same ones."""

    name = "fake"
    summary = "a fake transform of known speed and accuracy"
    accepts = ("fake",)
    produces = "fake"
    suffix = SUFFIX
    Config = FakeConfig

    def run(self, ctx: StepContext, artifact: Artifact, config: FakeConfig) -> StepResult:
        if config.fail:
            raise RuntimeError("the fake step failed, as asked")
        spec = json.loads(artifact.path.read_text())
        write_fake(ctx.out_tmp, scale=spec["scale"] * config.scale, cost_us=spec["cost_us"] * config.cost,
                   input_sha256=artifact.digest(), **({"tag": config.tag} if config.tag else {}))
        return StepResult(artifact=Artifact(path=ctx.out_tmp, format="fake", task=artifact.task,
                                            inputs=list(artifact.inputs), outputs=list(artifact.outputs)))


class FakeSlowConfig(FakeConfig):
    sleep_s: float = Field(0.0, ge=0, description="how long the step takes (a long build: NNCF's accuracy control)")
    stubborn: bool = Field(False, description="ignore SIGTERM, as native code that never returns to Python does")


class FakeSlowStep(FakeStep):
    """The fake step that takes ``sleep_s`` seconds with its output half written meanwhile: a build to stop. Not
    registered by the fixture; a test registers it as ``fake_slow`` itself."""

    name = "fake_slow"
    Config = FakeSlowConfig

    def run(self, ctx: StepContext, artifact: Artifact, config: FakeSlowConfig) -> StepResult:
        import signal

        ctx.out_tmp.write_text('{"half": ')  # what a stopped build must not leave behind
        if config.stubborn:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(config.sleep_s)
        return super().run(ctx, artifact, config)


class FakeExportStep(FakeStep):
    """The same under another name, for chains whose rows must be told apart by name (gates name one)."""

    name = "fake_export"


class FakeQuantizeStep(FakeStep):
    """A fake under the name of a step whose point is speed (the ledger flags one slower than its input);
    a test that needs it registers it as ``quantize`` itself."""

    name = "quantize"
    for_speed = True


# (registry, key, dotted path): what the fixture sets for one test and ``register`` for a subprocess's life
REGISTRATIONS = [(BACKENDS, "fake", "tests.fakes:FAKE_BACKEND"),
                 (STEPS, "fake", "tests.fakes:FakeStep"), (STEPS, "fake_export", "tests.fakes:FakeExportStep")]
PROFILE_ACCEPTS = (*ProfileStep.accepts, "fake")  # the real profile step measures fake models too


def register() -> None:
    """Register the fake backend for good (in a subprocess); tests use the ``fake_engine`` fixture."""
    for registry, key, value in REGISTRATIONS:
        registry[key] = value
    ProfileStep.accepts = PROFILE_ACCEPTS


@pytest.fixture
def fake_backend(monkeypatch):
    """Registers the fake backend for this test (BACKENDS maps a format to its descriptor's dotted path)."""
    monkeypatch.setitem(BACKENDS, "fake", "tests.fakes:FAKE_BACKEND")
    return fake_artifact


def fake_data(path: Path, samples: int = 32, *, labels: bool = True, seed: int = 0) -> Path:
    """Evaluation data for fake models: ``x`` (samples x 4) and, with ``labels``, each sample's top-1 class,
    so a model with a positive scale scores top-1 1.0 and one with a negative scale 0.0."""
    x = np.random.default_rng(seed).standard_normal((samples, 4)).astype(np.float32)
    arrays = {"x": x, "labels": x.argmax(1)} if labels else {"x": x}
    np.savez(path, **arrays)
    return path


@dataclass
class FakeProject:
    """A folder with a fake model (100 us a call), its evaluation data and recipes over them."""

    folder: Path

    @property
    def model(self) -> Path:
        return self.folder / f"model{SUFFIX}"

    @property
    def data(self) -> Path:
        return self.folder / "eval.npz"

    @property
    def out(self) -> Path:
        return self.folder / "out"

    def recipe(self, steps: str, *, gates: str = "[]", name: str = "recipe.yaml", batch_sizes: str = "[1]",
               model: Path | None = None, eval_data: Path | None = None, measure: str = "true") -> Path:
        """A recipe over the fake model with a short timing budget; ``steps`` and ``gates`` are YAML flow lists."""
        path = self.folder / name
        path.write_text(textwrap.dedent(f"""\
            model: {model or self.model}
            eval_data: {eval_data or self.data}
            output_dir: {self.out}
            measure: {{enabled: {measure}, batch_sizes: {batch_sizes}, threads: 1, budget_s: 0.01}}
            steps: {steps}
            gates: {gates}
        """))
        return path

    def run(self, *extra: str, name: str = "recipe.yaml", env: dict | None = None):
        """``optkit run RECIPE --json`` in-process: the CliRunner result and report.json (None if not written)."""
        from typer.testing import CliRunner

        from optkit.cli.app import app

        result = CliRunner().invoke(app, ["run", str(self.folder / name), "--json", *extra], env=env,
                                    catch_exceptions=False)
        report = self.out / "report.json"
        return result, json.loads(report.read_text()) if report.is_file() else None


@pytest.fixture
def fake_engine(monkeypatch, tmp_path) -> FakeProject:
    """The fake backend registered for this test (runner, file opener, the ``fake`` step, ``profile`` taking
    fake models), and a project folder holding a fake model and its evaluation data."""
    for registry, key, value in REGISTRATIONS:
        monkeypatch.setitem(registry, key, value)
    monkeypatch.setattr(ProfileStep, "accepts", PROFILE_ACCEPTS)
    project = FakeProject(tmp_path)
    write_fake(project.model, cost_us=100.0)
    fake_data(project.data)
    return project  # long-lived objects are frozen while it runs: tests/conftest.py
