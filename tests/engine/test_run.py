"""The engine on fake models: a recipe's chain, what each row measured, a failed step, a step that cannot
take its input, a model optkit did not write. Fast, and free of torch and ONNX Runtime; the real-model
runs are tests/test_recipes.py and tests/cli/test_run_ci.py."""
from __future__ import annotations

import json

import numpy as np

from tests.fakes import FakeProject, fake_engine  # noqa: F401 (fixture)


def test_a_recipe_runs_through_the_engine_and_leaves_its_lineage_in_sidecars(fake_engine):
    from optkit.engine.recipe import load_recipe
    from optkit.engine.run import run_recipe
    from optkit.types.ui import UI

    recipe, base = load_recipe(fake_engine.recipe("[fake, {fake: {scale: 2}}, profile]"))
    result = run_recipe(recipe, base, UI(quiet=True))
    out = fake_engine.out
    assert result.final.path == out / "01_fake.fake.json" and result.final.format == "fake"
    assert result.cached == [] and len(result.profiles) == 1 and len(result.ledger_latency) == 3
    assert {p.name for p in result.written} == {"00_fake.fake.json", "00_fake.fake.json.optkit.json",
                                                "00_fake.fake.json.optkit-ref.npz", "01_fake.fake.json",
                                                "01_fake.fake.json.optkit.json"}
    sidecar = json.loads((out / "01_fake.fake.json.optkit.json").read_text())
    assert [r["step"] for r in sidecar["lineage"]] == ["original", "fake"] and sidecar["record"]["step"] == "fake"
    assert sidecar["record"]["params"] == {"scale": 2.0, "cost": 1.0, "fail": False, "tag": ""}
    assert sidecar["record"]["parent"]["sha256"] == sidecar["lineage"][1]["sha256"]
    assert sidecar["record"]["metrics"]["fidelity_parent"]["cosine"] > 0.999  # the same direction, twice as long
    # the original's outputs are kept once, beside the first artifact, for every later step's drift
    with np.load(out / "00_fake.fake.json.optkit-ref.npz") as ref, np.load(fake_engine.data) as data:
        np.testing.assert_array_equal(ref["y"], data["x"])
    assert sidecar["reference"]["path"] == "00_fake.fake.json.optkit-ref.npz"
    assert sidecar["data"] == {"eval": "../eval.npz"}


def test_every_row_measures_accuracy_drift_and_speed_against_its_parent_and_the_original(fake_engine):
    fake_engine.recipe("[{fake: {cost: 3}}, {fake: {scale: -1}}]", batch_sizes="[1, 4]")
    result, report = fake_engine.run()
    assert result.exit_code == 0, result.output
    original, slower, wrong = report["steps"]
    assert original["accuracy"]["value"] == 1.0 and original["fidelity"]["max_abs_diff"] == 0.0
    assert slower["accuracy_delta_vs_original"] == 0.0 and slower["fidelity"]["max_abs_diff"] == 0.0
    x = np.load(fake_engine.data)["x"]
    assert wrong["accuracy"]["value"] == 0.0 and wrong["accuracy_delta_vs_parent"] == -1.0
    assert abs(wrong["fidelity"]["max_abs_diff"] - 2 * np.abs(x).max()) < 1e-5 and wrong["fidelity"]["cosine"] < -0.99
    assert [r["timing"] for r in report["steps"]] == ["interleaved"] * 3
    assert [lat["batch_size"] for lat in slower["latency_all"]] == [1, 4]
    assert slower["speedup_vs_original"] < 0.7 and wrong["speedup_vs_parent"] > 0.6  # 300 us vs 100 us, then the same


def test_run_recipe_end_to_end(fake_engine):  # was tests/engine/test_recipe.py (export + profile of a torch model)
    path = fake_engine.recipe("[fake, {profile: {batch_sizes: [1, 2]}}]", batch_sizes="[1, 4]")
    result, report = fake_engine.run()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == report
    assert [s["step"] for s in report["steps"]] == ["original", "fake"]
    assert [lat["batch_size"] for lat in report["profiles"][0]["latency"]] == [1, 2]
    assert [lat["batch_size"] for lat in report["steps"][1]["latency_all"]] == [1, 4]
    assert (path.parent / "out" / "00_fake.fake.json").is_file()
    assert json.loads((path.parent / "out" / "report.json").read_text())["steps"][1]["step"] == "fake"


def test_failed_step_exits_1_and_still_reports(fake_engine):  # was tests/engine/test_recipe.py (a torch trap)
    fake_engine.recipe("[{fake: {fail: true}}]")
    result, report = fake_engine.run()
    assert result.exit_code == 1 and "failed, as asked" in result.stderr and "Traceback" not in result.stderr
    assert report["status"] == "step failed" and "failed, as asked" in report["error"]
    assert [r["step"] for r in report["steps"]] == ["original"]
    assert not (fake_engine.out / "00_fake.fake.json").exists()


def test_a_step_failing_after_others_keeps_their_artifacts_and_rows(fake_engine):
    fake_engine.recipe("[fake, {fake: {fail: true}}, profile]", gates="[{max_size_mb: 1}]")
    result, report = fake_engine.run()
    assert result.exit_code == 1, result.output
    assert report["error"].startswith("step 'fake' failed") and report["gates"] == [] and report["profiles"] == []
    assert [r["step"] for r in report["steps"]] == ["original", "fake"]
    assert sorted(p.name for p in fake_engine.out.iterdir() if not p.name.startswith(".")) == [
        "00_fake.fake.json", "00_fake.fake.json.optkit-ref.npz", "00_fake.fake.json.optkit.json",
        "manifest.json", "report.html", "report.json", "report.md"]


def test_step_that_cannot_take_the_format(fake_engine):  # was tests/engine/test_recipe.py (ONNX into export)
    fake_engine.recipe("[export]")
    result, _ = fake_engine.run()
    assert result.exit_code == 2 and "takes torch models" in result.stderr
    assert not fake_engine.out.exists()


def test_a_model_optkit_did_not_write_is_row_0_and_fills_the_vs_original_columns(fake_engine):
    # was tests/cli/test_ledger_timing.py (a third-party ONNX file, simplified)
    fake_engine.recipe("[fake]")  # the model has no sidecar
    result, report = fake_engine.run()
    assert result.exit_code == 0, result.output
    rows = report["steps"]
    assert [r["step"] for r in rows] == ["original", "fake"] and rows[0]["format"] == "fake"
    assert rows[0]["latency"] and rows[0]["accuracy"] and rows[1]["speedup_vs_original"] is not None
    assert rows[1]["fidelity"]["max_abs_diff"] < 1e-4 and rows[1]["accuracy_delta_vs_original"] == 0
    assert (fake_engine.out / "00_fake.fake.json.optkit-ref.npz").is_file()  # later steps' drift: vs the given file
    assert "fake model as given" in rows[0]["summary"]


def test_a_chain_continues_from_an_artifact_optkit_wrote(fake_engine):
    fake_engine.recipe("[{fake: {scale: 2}}]")
    assert fake_engine.run()[0].exit_code == 0
    second = FakeProject(fake_engine.folder / "second")
    second.folder.mkdir()
    second.recipe("[{fake: {scale: 3}}]", model=fake_engine.out / "00_fake.fake.json", eval_data=fake_engine.data)
    result, report = second.run()
    assert result.exit_code == 0, result.output
    rows = report["steps"]
    assert [r["step"] for r in rows] == ["original", "fake", "fake"]  # the lineage comes from the sidecar
    x = np.abs(np.load(fake_engine.data)["x"]).max()
    assert abs(rows[2]["fidelity"]["max_abs_diff"] - 5 * x) < 1e-4  # 6x vs the original's outputs (the reference)



def test_unmeasured_speed_step_is_still_timed_against_its_input_and_gates_cannot_pass(fake_engine, monkeypatch):
    from optkit.steps.base import STEPS

    monkeypatch.setitem(STEPS, "quantize", "tests.fakes:FakeQuantizeStep")
    fake_engine.recipe("[{quantize: {cost: 3}}]", measure="false", gates="[{max_latency_ms: 100}]")
    result, report = fake_engine.run()
    assert result.exit_code == 3, result.output
    assert "quantize output is SLOWER than its input" in result.stderr
    assert "cannot judge" in report["gates"][0]["text"]  # CI never passes on a figure that was not taken
    assert all(r["latency"] is None and r["accuracy"] is None for r in report["steps"])
    sidecar = json.loads((fake_engine.out / "00_quantize.fake.json.optkit.json").read_text())
    speed = sidecar["record"]["details"]["speed_vs_input"]
    assert speed["timing"] == "interleaved, batch 1" and speed["speedup"] < 0.7
