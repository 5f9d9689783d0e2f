"""optkit optimize: the candidate space follows the model and the CPU, the search judges and times, the winner's
recipe rebuilds it."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml

from optkit.optimize.search import NOISE, _choose, parse_duration
from optkit.optimize.space import Budget, ModelFacts, candidate_space
from optkit.types.errors import UsageError
from tests.conftest import invoke, sidecar
from tests.fakes import fake_engine  # noqa: F401 (fixture)

VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma"})


def _facts(ops=("Conv", "Relu", "Gemm"), attention=False, calibration=True, flags=VNNI) -> ModelFacts:
    return ModelFacts(ops=frozenset(ops), attention=attention, calibration=calibration, flags=flags)


def _names(cands) -> list[str]:
    return [c.name for c in cands]


def _options(cands, name: str, step: str) -> dict:
    cand = next(c for c in cands if c.name == name)
    return next(s[step] for s in cand.steps if step in s)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1.5h", 5400), ("45", 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-5s", "ten minutes", "0"])
def test_a_bad_duration_is_a_usage_error(text):
    with pytest.raises(UsageError, match="--time-budget"):
        parse_duration(text)


def test_a_conv_net_skips_dynamic_int8_and_follows_the_cpu_flags():
    cands, skipped = candidate_space(_facts(flags=VNNI), ("ort-cpu", "openvino-cpu"), Budget(max_drop=0.5))
    assert "ort-int8-dynamic" not in _names(cands)
    assert any(s.name == "ort-int8-dynamic" and "ConvInteger" in s.why for s in skipped)
    full = _options(cands, "ort-int8-static", "quantize")
    assert full["skip_small_convs"] == 0 and full["reduce_range"] is False and full["max_drop"] == 0.5 and full["guard"] is False
    no_vnni, _ = candidate_space(_facts(flags=AVX2), ("ort-cpu",), Budget())
    assert "skip_small_convs" not in _options(no_vnni, "ort-int8-static", "quantize")  # the saturation-safe default


def test_a_transformer_gets_dynamic_int8_and_the_guard_only_as_a_fallback():
    cands, _ = candidate_space(_facts(ops=("MatMul", "Softmax", "Add"), attention=True), ("ort-cpu",), Budget(max_drop=1))
    assert _names(cands)[:2] == ["ort-fp32", "ort-int8-dynamic"]
    guarded = next(c for c in cands if c.name == "ort-int8-guarded")
    assert guarded.fallback_for == "ort-int8-static-entropy" and _options(cands, "ort-int8-guarded", "quantize")["max_drop"] == 1
    assert _options(cands, "ort-int8-guarded", "quantize")["guard"] is True


def test_without_calibration_data_static_int8_is_skipped_with_the_fix():
    cands, skipped = candidate_space(_facts(calibration=False), ("ort-cpu", "openvino-cpu"), Budget())
    assert not [n for n in _names(cands) if "static" in n or n == "openvino-int8"]
    assert all("--calib-data" in s.why for s in skipped if s.name in ("ort-int8-static", "openvino-int8"))


def test_bf16_only_where_the_cpu_has_it(monkeypatch):
    without, skipped = candidate_space(_facts(flags=VNNI), ("openvino-cpu",), Budget())
    assert "openvino-bf16" not in _names(without) and any("emulated" in s.why for s in skipped)
    with_bf16, _ = candidate_space(_facts(flags=VNNI | {"amx_bf16"}), ("openvino-cpu",), Budget())
    assert "openvino-bf16" in _names(with_bf16)


def test_a_missing_runtime_is_skipped_naming_the_extra(monkeypatch):
    import optkit.optimize.space as space

    monkeypatch.setattr(space, "_installed", lambda module: module != "openvino")
    cands, skipped = candidate_space(_facts(), ("openvino-cpu",), Budget())
    assert cands == [] and "pip install 'optkit[openvino]'" in skipped[0].why


def test_within_noise_the_simpler_candidate_wins():
    def outcome(name, p50, simplicity, size=100):
        return SimpleNamespace(status="built", p50_ms=p50, name=name, candidate=SimpleNamespace(simplicity=simplicity),
                               artifact=SimpleNamespace(size_bytes=lambda: size))

    fast_int8, fp32 = outcome("int8", 1.0, 2), outcome("fp32", 1.0 + NOISE / 2, 0)
    assert _choose([fast_int8, fp32]).name == "fp32"
    clearly_faster = outcome("int8", 0.5, 2)
    assert _choose([clearly_faster, fp32]).name == "int8"
    assert _choose([SimpleNamespace(status="rejected", p50_ms=None)]) is None


@pytest.mark.slow
def test_optimize_finds_a_winner_and_its_recipe_rebuilds_it(tiny_onnx, tmp_path):
    out = tmp_path / "opt"
    result = invoke("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--max-drop", "100",
                    "--budget-s", "0.2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    by_name = {c["name"]: c for c in report["candidates"]}
    assert {"ort-fp32", "ort-int8-static"} <= set(by_name) and report["winner"] in by_name
    assert all(c["p50_ms"] for c in report["candidates"] if c["status"] == "built")  # timed in the one pass
    if by_name["ort-int8-static"]["status"] == "built":  # its costlier fallbacks are not built, and say why
        assert by_name["ort-int8-static-entropy"]["why"] == by_name["ort-int8-guarded"]["why"] == \
            "not needed: ort-int8-static is within budget"
    assert report["environment"]["cpu"]["model"] and {"ort-int8-dynamic", "ort-fp16"} <= {s["name"] for s in report["skipped"]}
    winner = by_name[report["winner"]]
    best = out / "best.onnx"
    assert best.read_bytes() == open(winner["artifact"], "rb").read()
    recipe = yaml.safe_load((out / "best.yaml").read_text())
    assert recipe["model"] == str(tiny_onnx) and recipe["steps"] == winner["steps"]
    rebuilt = invoke("run", str(out / "best.yaml"), "--set", "measure.budget_s=0.05")
    assert rebuilt.exit_code == 0, rebuilt.output
    final = sorted((out / "best").glob("0*_*.onnx"))[-1]
    assert sidecar(final)["record"]["sha256"] == sidecar(winner["artifact"])["record"]["sha256"]
    assert report["judged_on"].startswith("the calibration split") and report["timing_reused_from"] is None
    assert all([v["split"] for v in c["verdicts"]] == ["calibration", "evaluation"]
               for c in report["candidates"] if c["status"] == "built")
    again = invoke("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--max-drop", "100",
                   "--budget-s", "0.2", "--json")
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert all(c["cached"] for c in rerun["candidates"] if c["status"] == "built")
    # a rerun with every candidate cached reuses the pass's figures and says when they were measured
    assert rerun["timing_reused_from"] and "timings reused from the pass measured at" in rerun["timing"]
    assert [c["p50_ms"] for c in rerun["candidates"]] == [c["p50_ms"] for c in report["candidates"]]
    retimed = json.loads(invoke("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--max-drop",
                                "100", "--budget-s", "0.2", "--json", "--retime").stdout)
    assert retimed["timing_reused_from"] is None and retimed["winner"]


@pytest.mark.slow
@pytest.mark.parametrize("only", ["ort-fp32", "ort-int8-static"])
def test_the_winners_recipe_pins_what_was_chosen_by_timing_and_rebuilds_it(only, tiny_onnx, tmp_path, monkeypatch):
    """compile ort-cpu picks session settings by timing, which can differ between runs: best.yaml names the one
    chosen (ort_session), so `optkit run best.yaml` writes the same bytes."""
    import optkit.optimize.search as opt

    def just(facts, targets, budget, calib_data=None):
        cands, skipped = candidate_space(facts, targets, budget, calib_data)
        return [c for c in cands if c.name == only], skipped

    monkeypatch.setattr(opt, "candidate_space", just)
    out = tmp_path / "opt"
    result = invoke("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--max-drop", "100",
                    "--budget-s", "0.05", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["winner"] == only
    steps = yaml.safe_load((out / "best.yaml").read_text())["steps"]
    if only == "ort-fp32":
        assert steps[-1]["compile"]["ort_session"] in ("default", "extended", "no-mem-pattern", "no-spinning")
    assert invoke("run", str(out / "best.yaml"), "--set", "measure.budget_s=0.05").exit_code == 0
    final = sorted((out / "best").glob("0*_*.onnx"))[-1]
    assert final.read_bytes() == (out / "best.onnx").read_bytes()


@pytest.mark.slow
def test_no_candidate_within_budget_exits_3_and_still_reports(tiny_onnx, tmp_path, monkeypatch):
    import optkit.optimize.search as opt

    def int8_only(facts, targets, budget, calib_data=None):  # one candidate that cannot keep cosine 1.0
        cands, skipped = candidate_space(facts, targets, budget, calib_data)
        return [c for c in cands if c.name == "ort-int8-static"], skipped

    monkeypatch.setattr(opt, "candidate_space", int8_only)
    out = tmp_path / "opt"
    result = invoke("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--min-cosine", "1.0",
                    "--budget-s", "0.05")
    assert result.exit_code == 3, result.output
    assert "no candidate is within the budget" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["winner"] is None and not (out / "best.yaml").exists()
    assert [c["status"] for c in report["candidates"]] == ["rejected"] and "cosine" in report["candidates"][0]["why"]


@pytest.mark.slow
def test_timings_are_not_reused_when_what_they_depend_on_changed(tiny_onnx, tmp_path, monkeypatch):
    """The key covers the timed artifacts, the data, the settings and the CPU: any change times again."""
    out = tmp_path / "opt"
    args = ("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--max-drop", "100", "--json")
    assert invoke(*args, "--budget-s", "0.05").exit_code == 0
    other_budget = json.loads(invoke(*args, "--budget-s", "0.06").stdout)
    assert other_budget["timing_reused_from"] is None
    import optkit.types.machine as machine

    same = json.loads(invoke(*args, "--budget-s", "0.06").stdout)
    assert same["timing_reused_from"] and all(c["cached"] for c in same["candidates"] if c["status"] == "built")
    real = machine.cpu_info
    monkeypatch.setattr(machine, "cpu_info", lambda: real().model_copy(update={"model": "another CPU"}))
    other_cpu = json.loads(invoke(*args, "--budget-s", "0.06").stdout)
    assert other_cpu["timing_reused_from"] is None
    (out / "work" / "timing.json").write_text("{not json")
    assert json.loads(invoke(*args, "--budget-s", "0.06").stdout)["timing_reused_from"] is None


@pytest.mark.slow
def test_a_candidate_outside_the_budget_on_the_calibration_split_is_rejected_and_its_fallback_built(
        tiny_onnx, tmp_path, monkeypatch):
    import optkit.optimize.search as opt
    from optkit.optimize.judge import CalibrationJudge
    from optkit.optimize.model import Verdict

    real = CalibrationJudge.verdict
    seen = []

    def verdict(self, artifact):
        got = real(self, artifact)
        seen.append(got)
        if "int8" in str(artifact.path) and "entropy" not in str(artifact.path):  # minmax: pretend it drifted
            return Verdict("calibration", cosine=0.5)
        return got

    def static_only(facts, targets, budget, calib_data=None):
        cands, skipped = candidate_space(facts, targets, budget, calib_data)
        return [c for c in cands if c.name in ("ort-int8-static", "ort-int8-static-entropy")], skipped

    monkeypatch.setattr(CalibrationJudge, "verdict", verdict)
    monkeypatch.setattr(opt, "candidate_space", static_only)
    result = invoke("optimize", str(tiny_onnx), "-o", str(tmp_path / "opt"), "--targets", "ort-cpu",
                    "--min-cosine", "0.9", "--budget-s", "0.05", "--json")
    assert result.exit_code == 0, result.output
    by_name = {c["name"]: c for c in json.loads(result.stdout)["candidates"]}
    assert by_name["ort-int8-static"]["status"] == "rejected"
    assert "on the calibration split: cosine 0.50000 < 0.9" in by_name["ort-int8-static"]["why"]
    assert by_name["ort-int8-static-entropy"]["status"] == "built"  # the fallback ran because of it
    assert all(v.split == "calibration" and v.cosine > 0.9 for v in seen)  # real verdicts: tiny int8 agrees


# ----------------------------------------------------------------------------- one optimize run, shared
# a PyTorch MODEL (exported first, timed as the original) and one cheap candidate, ort-fp32, whose compile picks its
# session by timing: best.yaml pins that choice, so optimize builds that one step once more into DIR/best/


@pytest.fixture(scope="module")
def optimized(tiny, tmp_path_factory):
    import optkit.optimize.search as opt

    def fp32_only(facts, targets, budget, calib_data=None):
        cands, skipped = candidate_space(facts, targets, budget, calib_data)
        return [c for c in cands if c.name == "ort-fp32"], skipped

    out = tmp_path_factory.mktemp("optimized") / "opt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(opt, "candidate_space", fp32_only)
        result = invoke("optimize", str(tiny["folder"]), "-o", str(out), "--targets", "ort-cpu", "--max-drop", "100",
                        "--budget-s", "0.05", "--json")
    assert result.exit_code == 0, result.output
    return SimpleNamespace(out=out, report=json.loads(result.stdout), output=result.output)


@pytest.mark.slow
def test_best_yaml_reuses_every_step_optimize_built(optimized):
    """Item 7: `optkit run DIR/best.yaml` takes every step from the cache (optimize ran that recipe into DIR/best/,
    seeded with the winner's own steps) and its artifact is the winner's bytes."""
    out = optimized.out
    result = invoke("run", str(out / "best.yaml"), "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    recipe = yaml.safe_load((out / "best.yaml").read_text())
    assert [next(iter(s)) for s in recipe["steps"]] == ["export", "fuse", "compile"]
    assert run["cached_steps"] == [0, 1, 2], result.output
    assert "rebuilding" not in result.output and result.output.count("from the cache") >= 3
    final = sorted((out / "best").glob("0*_*.onnx"))[-1]
    winner = next(c for c in optimized.report["candidates"] if c["name"] == optimized.report["winner"])
    assert final.read_bytes() == (out / "best.onnx").read_bytes() == open(winner["artifact"], "rb").read()
    assert recipe["measure"]["budget_s"] == 0.1 and recipe["steps"][-1]["compile"]["ort_session"] != "tune"


def test_the_winners_copy_and_the_output_folders_print_their_ledgers(optimized):
    """Item 6: best.onnx has a sidecar of its own (its paths the copy's, its digest the copy's bytes), so `optkit
    report DIR/best.onnx` prints the ledger; so does `optkit report DIR` (the candidates' table, then the winner's
    ledger) and `optkit report DIR/best` (a run folder: its final artifact's ledger, with the run's timings)."""
    from optkit.backends.opening import open_artifact

    out = optimized.out
    best = open_artifact(out / "best.onnx")
    assert best.record.artifact == str(out / "best.onnx") and best.digest() == best.record.sha256
    assert sidecar(out / "best.onnx")["record"]["artifact"] == str(out / "best.onnx")
    assert optimized.report["winner"] == "ort-fp32"
    one = invoke("report", str(out / "best.onnx"))
    assert one.exit_code == 0, one.output
    assert "optkit ledger: best.onnx" in one.output and "compile" in one.output and "export" in one.output
    folder = invoke("report", str(out))
    assert folder.exit_code == 0, folder.output
    assert "| # | candidate |" in folder.output and "ort-fp32 **(winner)**" in folder.output
    assert "optkit ledger: best.onnx" in folder.output
    as_json = json.loads(invoke("report", str(out), "--json").stdout)
    assert as_json["optimize"]["winner"] == "ort-fp32" and [r["step"] for r in as_json["steps"]] == \
        ["original", "export", "fuse", "compile"]
    assert invoke("run", str(out / "best.yaml")).exit_code == 0  # from the cache: writes the run's report
    run = invoke("report", str(out / "best"), "--markdown")
    assert run.exit_code == 0, run.output
    assert "| 3 | compile |" in run.output and "one interleaved round-robin pass over all 4 rows" in run.output
    not_ours = out / "work"  # a folder without report.json is still refused as an artifact, as before
    assert invoke("report", str(not_ours)).exit_code == 2


def test_a_copied_openvino_ir_keeps_its_bin_and_its_ledger(tiny_onnx, tmp_path):
    """Item 6 for a winner in OpenVINO IR: the .bin is copied beside the .xml and the sidecar's digest covers both."""
    from optkit.optimize.best import copy_artifact
    from optkit.backends.opening import open_artifact
    from optkit.types.files import Staging

    ir = tmp_path / "ir" / "model.xml"
    built = invoke("compile", str(tiny_onnx), "--target", "openvino-cpu", "-o", str(ir), "--budget-s", "0.05")
    assert built.exit_code == 0, built.output
    dst = tmp_path / "opt" / "best.xml"
    with Staging() as stage:
        copy_artifact(open_artifact(ir), dst, stage)
        stage.commit()
    assert dst.with_suffix(".bin").read_bytes() == ir.with_suffix(".bin").read_bytes()
    copy = open_artifact(dst)
    assert copy.format == "openvino" and copy.record.artifact == str(dst)
    assert copy.digest() == copy.record.sha256 == open_artifact(ir).record.sha256
    shown = invoke("report", str(dst))
    assert shown.exit_code == 0, shown.output
    assert "optkit ledger: best.xml" in shown.output


def test_the_summary_says_what_was_measured(optimized, tiny):
    """Item 8: the real calibration count, the time budget and the time used (measured, not an estimate), and the
    winner's speed-up vs the original PyTorch model timed in the same pass as the fp32 model and the candidates."""
    report, out = optimized.report, optimized.out
    winner = next(c for c in report["candidates"] if c["name"] == report["winner"])
    original = report["original"]
    assert original["format"] == "torch" and not original["same_as_fp32"] and original["not_timed"] is None
    assert original["p50_ms"] > 0 and winner["speedup_vs_original"] > 0
    if winner["timing_pass"] == 1:  # both ratios of one row come from the same pass
        assert winner["speedup_vs_original"] == pytest.approx(original["p50_ms"] / winner["p50_ms"])
    assert report["calibration_samples"] == 20 and "its 20 samples" in report["judged_on"]
    assert "256" not in report["judged_on"]
    assert report["time_budget_s"] == 600 and 0 < report["build_time_s"] <= report["wall_time_s"]
    md = (out / "report.md").read_text()
    assert f"the original torch model ({tiny['folder'].name})" in md and f"{report['build_time_s']:.0f}s of the 600s time budget" in md
    assert "s left" not in optimized.output and "of the 600s time budget used" in optimized.output
    html = (out / "report.html").read_text()
    assert "🏆" not in html and "🏆" not in md and '<span class="winner">winner</span>' in html
    assert "border-collapse" in html  # the run report's CSS
    index = next(i for i, c in enumerate(report["candidates"], 1) if c["name"] == report["winner"])
    assert '<th class="">#</th>' in html and f'class="winner-ring" data-index="{index}"' in html  # the chart's number
    assert f"<tr class='best'><td class=\"\">{index}</td>" in html


@pytest.mark.parametrize("runs", [True, False])
def test_the_original_is_timed_in_the_same_pass_or_said_not_to_be(runs, monkeypatch):
    """A PyTorch original joins the interleaved pass; when its runner fails the candidates are still timed and the
    report says 'original not timed' instead of a figure."""
    import optkit.eval.measure as measure
    from optkit.optimize.timing import _timed_pass
    from optkit.report.optimize import headline
    from optkit.types.optimize_report import Candidate, Original
    from optkit.types.records import Latency
    from tests.report.test_optimize import optimize_report

    fp32, original, cand = object(), object(), SimpleNamespace(artifact=object(), p50_ms=None)

    def side_by_side(arts, data, settings):
        if original in arts and not runs:
            raise RuntimeError("the factory needs a GPU")
        figures = {id(fp32): 2.0, id(original): 8.0, id(cand.artifact): 1.0}
        return [[Latency(batch_size=1, threads=1, p50_ms=figures[id(a)], p90_ms=figures[id(a)], p99_ms=figures[id(a)],
                         throughput=1e3 / figures[id(a)])] for a in arts]

    monkeypatch.setattr(measure, "measure_side_by_side", side_by_side)
    search = SimpleNamespace(source=fp32, original=original, original_not_timed=None, prefix=[{"name": "export"}],
                             batch_size=1, baseline_p50_ms=None, baseline_p90_ms=None, original_p50_ms=None,
                             original_p90_ms=None)
    _timed_pass(search, [cand], None, None, 1)
    assert cand.p50_ms == 1.0 and cand.speedup == 2.0
    assert cand.speedup_vs_original == (8.0 if runs else None)
    assert (search.original_not_timed is None) is runs
    report = optimize_report("c").model_copy(update={"model": "/m/tiny", "candidates": [Candidate(
        name="c", target="ort-cpu", precision="int8", what="", status="built", p50_ms=1.0, speedup_vs_fp32=2.0,
        speedup_vs_original=cand.speedup_vs_original)], "original": Original(
        artifact="/m/tiny", format="torch", same_as_fp32=False, not_timed=search.original_not_timed)})
    text = headline(report)
    assert ("8.00x the original torch model" in text) is runs
    assert ("; original not timed (it could not be timed with the candidates" in text) is not runs
    assert ("the factory needs a GPU" in text) is not runs


# ----------------------------------------------------------------------------- the time budget (issue 31 item 4)


def test_every_targets_primaries_are_built_before_any_fallback(monkeypatch):
    import optkit.optimize.space as space

    monkeypatch.setattr(space, "_installed", lambda module: True)
    cands, _ = candidate_space(_facts(flags=VNNI | {"amx_bf16"}), ("ort-cpu", "openvino-cpu"), Budget())
    order = space.build_order(cands)
    first = next(i for i, c in enumerate(order) if c.fallback_for)
    assert all(c.fallback_for for c in order[first:]) and len(order) == len(cands)
    assert {"ort-fp32", "ort-int8-static", "openvino-fp32", "openvino-int8", "openvino-bf16"} <= set(_names(order[:first]))
    # the targets take turns: a tight budget builds each target's fp32 and first int8 before a second of either
    assert [c.target for c in order[:4]] == ["ort-cpu", "openvino-cpu", "ort-cpu", "openvino-cpu"]
    assert _names(order[:2]) == ["ort-fp32", "openvino-fp32"]
    # the nearest fallbacks of every target first, the accuracy guard and NNCF's accuracy control last
    assert _names(order[first:]) == ["ort-int8-static-entropy", "openvino-int8-mixed", "ort-int8-guarded",
                                     "openvino-int8-accuracy-control"]


def test_a_candidate_with_too_little_time_left_is_skipped_saying_how_much_was_left():
    from optkit.optimize.clock import too_little as _too_little

    assert _too_little(30.0, "ort-int8-guarded", None, 600) is None
    assert _too_little(0.4, "ort-int8-guarded", None, 600) == \
        "0s left of the 600s time budget, too little for ort-int8-guarded (a build needs at least 2s to start)"
    why = _too_little(30.0, "openvino-int8-accuracy-control", 95.0, 600)  # stopped after 95s last time
    assert why == ("30s left of the 600s time budget, too little for openvino-int8-accuracy-control "
                   "(it ran 95s without finishing when last stopped)")


def test_a_local_build_runs_in_a_process_of_its_own_that_is_stopped_at_its_deadline():
    import os
    import time

    from optkit.engine.executor import Job, LocalExecutor, Stopped
    from optkit.types.errors import StepError

    ex = LocalExecutor()
    assert ex.build_until(Job("pid", os.getpid, ()), None) != os.getpid()
    t0 = time.perf_counter()
    with pytest.raises(Stopped) as stopped:
        ex.build_until(Job("sleep", time.sleep, (60,)), t0 + 1.0)
    assert 1.0 <= stopped.value.seconds < 2.0 and time.perf_counter() - t0 < 3.0  # SIGTERM unwinds it at once
    with pytest.raises(ProcessLookupError):
        os.kill(ex.timeline[-1].pid, 0)
    with pytest.raises(ValueError, match="invalid literal"):  # what the build raised, raised here
        ex.build_until(Job("raises", int, ("x",)), None)
    with pytest.raises(StepError, match=r"ended without a result \(exit code 3\)"):  # a crash is a failed build
        ex.build_until(Job("dies", os._exit, (3,)), None)
    assert [t.name for t in ex.timeline] == ["pid", "sleep", "raises", "dies"]


@pytest.mark.slow
def test_the_time_budget_bounds_the_search_and_a_build_past_it_is_stopped(fake_engine, monkeypatch):
    """A fake search: a primary outside the accuracy budget, its fallback a build that never ends and ignores
    SIGTERM (native code), that fallback's own fallback, and another target's primary that takes a while. The
    other target's primary is built before any fallback; the fallback gets only the time left and is stopped at
    the deadline (killed after the grace period), leaving nothing half-written; the run ends on the budget."""
    import os
    import re
    import time
    from pathlib import Path

    import optkit.engine.executor as executor
    import optkit.optimize.search as opt
    import optkit.optimize.timing as timing
    from optkit.optimize.model import OptimizeRun
    from optkit.optimize.space import CandidateRecipe
    from optkit.report.optimize import optimize_markdown, optimize_report
    from optkit.steps.base import STEPS
    from optkit.backends.opening import open_artifact
    from optkit.types.ui import UI

    monkeypatch.setitem(STEPS, "fake_slow", "tests.fakes:FakeSlowStep")
    monkeypatch.setattr(executor, "TERM_GRACE_S", 1.0)
    monkeypatch.setattr(timing, "LOAD_S", 0.0)  # the fake runners open at once

    def fp32(model, out_dir, common, *_):
        art = open_artifact(model)
        return art.with_split("eval", Path(common.eval_data)), [], None

    cands = [  # as listed: one target's fallbacks before the other target's primary
        CandidateRecipe("ort-wrong", "ort-cpu", "fp32", [{"fake": {"scale": -1}}], "outside the accuracy budget"),
        CandidateRecipe("ort-guard", "ort-cpu", "int8", [{"fake_slow": {"sleep_s": 120, "stubborn": True}}],
                        "a search that cannot finish in time", fallback_for="ort-wrong"),
        CandidateRecipe("ort-guard-2", "ort-cpu", "int8", [{"fake": {"tag": "2"}}], "the fallback's fallback",
                        fallback_for="ort-guard"),
        CandidateRecipe("ov-fp32", "openvino-cpu", "fp32", [{"fake_slow": {"sleep_s": 0.5, "cost": 0.5}}],
                        "another target's primary"),
    ]
    monkeypatch.setattr(opt, "_fp32_onnx", fp32)
    monkeypatch.setattr(opt, "_facts", lambda source, calib: _facts(calibration=False))
    monkeypatch.setattr(opt, "candidate_space", lambda facts, targets, budget, calib=None: (list(cands), []))
    budget, t0 = 8.0, time.time()
    search = opt.optimize(OptimizeRun(str(fake_engine.model), fake_engine.out, UI(quiet=True), budget=Budget(max_drop=1),
                                      time_budget_s=budget, timing_budget_s=0.05, eval_data=str(fake_engine.data)))
    wall = time.time() - t0
    by = {o.name: o for o in search.outcomes}
    assert [o.name for o in search.outcomes] == ["ort-wrong", "ov-fp32", "ort-guard", "ort-guard-2"]
    builds = [t for t in search.timeline if t.kind == "build"]
    assert [t.name for t in builds] == ["ort-wrong", "ov-fp32", "ort-guard"]
    assert by["ort-wrong"].status == "rejected" and by["ov-fp32"].status == "built"
    assert by["ort-guard"].status == "stopped", by["ort-guard"].why
    assert re.fullmatch(r"stopped at the time budget \(ran \d+s\)", by["ort-guard"].why)
    assert by["ort-guard-2"].status == "skipped" and by["ort-guard-2"].why == "ort-guard was stopped at the time budget"
    assert search.winner is by["ov-fp32"]
    # the fallback had only what was left: it started after the primaries and ended at the deadline (+ the grace)
    guard = builds[-1]
    assert guard.start >= builds[1].end and guard.end - t0 <= budget - search.timing_reserve_s + 1.0 + 1.0
    with pytest.raises(ProcessLookupError):  # its process (and its group) is gone
        os.kill(guard.pid, 0)
    assert search.wall_time_s <= budget + 2.0 and wall <= budget + 3.0, (search.wall_time_s, wall)
    leftovers = [p for p in fake_engine.out.rglob("*") if ".tmp-" in p.name or "optkit-scratch" in p.name]
    assert leftovers == [] and not list((fake_engine.out / "candidates" / "ort-guard").glob("*.fake.json"))
    stopped = json.loads((fake_engine.out / "work" / opt.STOP_TIMES_FILE).read_text())
    assert [k.split(":")[0] for k in stopped] == ["ort-guard"]
    report = optimize_report(search, str(fake_engine.model))
    assert report.time_budget_s == budget and 0 < report.build_time_s < report.wall_time_s
    md = optimize_markdown(report)
    assert "stopped at the time budget: ort-guard" in md and "| stopped |" in md
    print(f"time budget {budget}s: builds {search.build_time_s:.1f}s, wall {search.wall_time_s:.1f}s "
          f"(reserve {search.timing_reserve_s:.2f}s); builds " + ", ".join(f"{t.name} {t.start - t0:.1f}-{t.end - t0:.1f}s" for t in builds))


@pytest.mark.parametrize("time_left", [None, 0.0, 3600.0])
def test_the_finalists_second_pass_runs_only_when_it_fits_in_the_budget(time_left, monkeypatch, tmp_path):
    """Three survivors, two within 1.3x: the second pass of those two runs unless the budget's end comes first; then
    the first pass ranks, and the report says so."""
    import time

    import optkit.optimize.timing as timing
    import optkit.engine.setup as setup

    passes = []

    def timed_pass(search, outcomes, data, settings, number, executor=None):
        passes.append((number, [o.name for o in outcomes]))
        for o in outcomes:
            o.p50_ms = {"a": 1.0, "b": 1.1, "c": 3.0}[o.name]

    monkeypatch.setattr(timing, "_timed_pass", timed_pass)
    monkeypatch.setattr(timing, "timing_key", lambda *a: "key")
    monkeypatch.setattr(timing, "_save", lambda *a: None)
    monkeypatch.setattr(setup, "data_for", lambda *a: None)
    outcomes = [SimpleNamespace(name=n, status="built", cached=False, p50_ms=None, p90_ms=None, speedup=None,
                                timing_pass=None) for n in "abc"]
    search = SimpleNamespace(outcomes=outcomes, original=None, source=None, batch_size=1, threads=1, second_pass_skipped=False,
                             baseline_p50_ms=1.0, baseline_p90_ms=1.0, original_p50_ms=None, original_p90_ms=None,
                             original_not_timed=None)
    end_by = None if time_left is None else time.perf_counter() + time_left
    from optkit.types.ui import UI

    timing.time_survivors(search, tmp_path, 0.1, UI(quiet=True), end_by=end_by)
    second = time_left != 0.0
    assert passes == [(1, ["a", "b", "c"])] + ([(2, ["a", "b"])] if second else [])
    assert search.second_pass_skipped is not second


def test_a_rerun_whose_candidates_are_all_cached_starts_no_build_process(optimized, monkeypatch):
    """A build process costs a second or more to start; a candidate the step cache serves whole is read in-process."""
    import optkit.optimize.search as opt
    from optkit.engine.executor import LocalExecutor

    def no_process(*args, **kwargs):
        raise AssertionError("a build process was started for a fully cached candidate")

    monkeypatch.setattr(LocalExecutor, "build_until", no_process)

    def fp32_only(facts, targets, budget, calib_data=None):
        cands, skipped = candidate_space(facts, targets, budget, calib_data)
        return [c for c in cands if c.name == "ort-fp32"], skipped

    monkeypatch.setattr(opt, "candidate_space", fp32_only)
    model = optimized.report["model"]
    result = invoke("optimize", model, "-o", str(optimized.out), "--targets", "ort-cpu", "--max-drop", "100",
                    "--budget-s", "0.05", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(c["name"], c["status"], c["cached"]) for c in report["candidates"]] == [("ort-fp32", "built", True)]
